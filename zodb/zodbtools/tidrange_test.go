package zodbtools

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris for the upstream table

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
)

// TestParseTidUpstream checks every uncommented line of zodbtools' table of
// time formats: "<reference time> <tid hex> <input>", evaluated at
// 2009-08-30T19:20:00Z in Europe/Paris.
func TestParseTidUpstream(t *testing.T) {
	dir, ok := testdir.Shared("zodb/upstream-zodbtools")
	if !ok {
		t.Skip("zodbtools' upstream test data (../shared/testdata/zodb/upstream-zodbtools) is absent")
	}
	f, err := os.Open(filepath.Join(dir, "tid-time-format.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	ref := TimeRef{Now: time.Unix(1251660000, 0), Loc: paris}
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			t.Fatalf("bad line %q", line)
		}
		want, err := zodb.ParseTid(f[1])
		if err != nil {
			t.Fatal(err)
		}
		n++
		got, err := ParseTid(f[2], ref)
		if err != nil {
			t.Errorf("%q: %v", f[2], err)
			continue
		}
		if got != want {
			t.Errorf("%q: got %v (%s), want %v (%s)", f[2], got, got.TimeString(), want, want.TimeString())
		}
	}
	if n < 20 {
		t.Fatalf("only %d cases read", n)
	}
}

func TestParseTidRange(t *testing.T) {
	ref := TimeRef{Now: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), Loc: time.UTC}
	for _, tc := range []struct {
		in     string
		lo, hi zodb.Tid
		bad    bool
	}{
		{in: "..", lo: 0, hi: zodb.TidMax},
		{in: "0285cbac258bf266..", lo: 0x0285cbac258bf266, hi: zodb.TidMax},
		{in: "..0285cbac258bf266", lo: 0, hi: 0x0285cbac258bf266},
		{in: "0000000000000001..0000000000000002", lo: 1, hi: 2},
		{in: "2018-01-01T10:30:00Z..", lo: 0x03c4857600000000, hi: zodb.TidMax},
		{in: "0285cbac258bf266", bad: true},
		{in: "a..b..c", bad: true},
		{in: "zzz..", bad: true},
		{in: "..2009-06-34T22:00:00Z", bad: true},
		{in: "2009-O6-01T22:00:00Z..", bad: true},
	} {
		lo, hi, err := ParseTidRange(tc.in, ref)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error", tc.in)
			}
			continue
		}
		if err != nil || lo != tc.lo || hi != tc.hi {
			t.Errorf("%q: got %v %v %v, want %v %v", tc.in, lo, hi, err, tc.lo, tc.hi)
		}
	}
}
