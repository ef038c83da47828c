package netns_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/storage/fs1" // file:// driver
)

// TestVerifier: the checker of the partition tests accepts what was
// committed and rejects a lost transaction, wrong data, a wrong tid, tids
// out of order. It runs here on a FileStorage,
// without namespaces.
func TestVerifier(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	url := "file://" + filepath.Join(dir, "Data.fs")
	stor, err := zodb.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var counter zodb.Oid
	var serial zodb.Tid
	for n := 1; n <= 4; n++ {
		objs, tid, err := commitOnce(ctx, stor, n, &counter, serial)
		if err != nil {
			t.Fatal(err)
		}
		serial = tid
		line := fmt.Sprintf("ack %d %s", n, tid)
		for _, o := range objs {
			line += fmt.Sprintf(" %s=%s", o.oid, o.data)
		}
		lines = append(lines, line)
	}
	if err := stor.Close(); err != nil {
		t.Fatal(err)
	}
	verify := func(lines []string) error {
		file := filepath.Join(t.TempDir(), "acks")
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return verifyMain([]string{url, file})
	}
	if err := verify(lines); err != nil {
		t.Fatalf("what was committed: %v", err)
	}
	a3, err := parseAck(lines[2])
	if err != nil {
		t.Fatal(err)
	}
	a4, _ := parseAck(lines[3])
	format := func(a ack) string {
		s := fmt.Sprintf("ack %d %s", a.n, a.tid)
		for _, o := range a.objs {
			s += fmt.Sprintf(" %s=%s", o.oid, o.data)
		}
		return s
	}
	lost := a4
	lost.n, lost.tid = 5, a4.tid+1
	lost.objs = []object{{a4.objs[0].oid + 100, "t5.a"}, {a4.objs[2].oid, "counter.5"}}
	wrongData := a3
	wrongData.objs = append([]object(nil), a3.objs...)
	wrongData.objs[0].data = "something-else"
	wrongTid := a3
	wrongTid.tid = a4.tid
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"lost transaction", append(append([]string(nil), lines...), format(lost)), "after the last tid"},
		{"wrong data", []string{lines[0], lines[1], format(wrongData), lines[3]}, `"something-else"`},
		{"wrong tid", []string{lines[0], lines[1], format(wrongTid)}, "want"},
		{"out of order", []string{lines[0], lines[2], strings.Replace(lines[1], "ack 2 ", "ack 4 ", 1)}, "not after"},
	} {
		err := verify(tc.lines)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
