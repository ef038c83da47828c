package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/adler32"
	"hash/crc32"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/mem"
	"github.com/neozodb/neo/zodb/zodbtools"
)

const txn1 = `user "alice"
description "first"
extension ""
obj 0000000000000001 5 sha1:` + "%s" + `
hello
obj 0000000000000002 5 null:00
world

`

func sha1hex(s string) string {
	return fmt.Sprintf("%x", sha1sum([]byte(s)))
}

func TestCommitCatobjDump(t *testing.T) {
	url := "mem://" + t.Name()
	in := fmt.Sprintf(txn1, sha1hex("hello"))
	out, errb, code := zrun(t, []byte(in), "commit", url, "0000000000000000")
	if code != 0 {
		t.Fatalf("commit: %d %s", code, errb)
	}
	tid1, err := zodb.ParseTid(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("commit printed %q: %v", out, err)
	}

	// a second commit based on an old view of oid 1 conflicts
	in2 := "user \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000001 2 null:00\nxx\n\n"
	if _, errb, code := zrun(t, []byte(in2), "commit", url, "0000000000000000"); code != 1 || !strings.Contains(string(errb), "conflict") {
		t.Errorf("stale commit: exit %d, %s", code, errb)
	}
	// based on tid1 it works; "from" copies old data (stored again, as
	// zodbtools does), "delete" deletes
	in3 := "user \"bob\"\ndescription \"copy\"\nextension \"\"\nobj 0000000000000001 from " + tid1.String() + "\nobj 0000000000000002 delete\n\n"
	out, errb, code = zrun(t, []byte(in3), "commit", url, tid1.String())
	if code != 0 {
		t.Fatalf("commit 2: %d %s", code, errb)
	}
	tid2, _ := zodb.ParseTid(strings.TrimSpace(string(out)))

	out, errb, code = zrun(t, nil, "catobj", url, "0000000000000001@"+tid2.String())
	want := fmt.Sprintf("obj 0000000000000001 5 sha1:%s\nhello\n", sha1hex("hello"))
	if code != 0 || string(out) != want {
		t.Errorf("catobj: %d %q %s, want %q", code, out, errb, want)
	}
	out, _, code = zrun(t, nil, "catobj", "--raw", url, tid1.String()+":0x02")
	if code != 0 || string(out) != "world" {
		t.Errorf("catobj --raw: %d %q", code, out)
	}
	out, _, code = zrun(t, nil, "catobj", "--hashonly", url, "0x"+tid1.String()+":2")
	if want := fmt.Sprintf("obj 0000000000000002 5 sha1:%s -\n", sha1hex("world")); code != 0 || string(out) != want {
		t.Errorf("catobj --hashonly: %d %q, want %q", code, out, want)
	}
	if _, errb, code := zrun(t, nil, "catobj", url, "0000000000000002@"+tid2.String()); code != 2 || !strings.Contains(string(errb), "E: object address not found in database") {
		t.Errorf("catobj of deleted: %d %s", code, errb)
	}
	if _, _, code := zrun(t, nil, "catobj", url, "zzz"); code != 2 {
		t.Errorf("catobj bad xid: exit %d", code)
	}

	// dump of both, then of ranges
	full, errb, code := zrun(t, nil, "dump", url)
	if code != 0 {
		t.Fatalf("dump: %d %s", code, errb)
	}
	wantFull := fmt.Sprintf("txn %s \" \"\nuser \"alice\"\ndescription \"first\"\nextension \"\"\n"+
		"obj 0000000000000001 5 sha1:%s\nhello\nobj 0000000000000002 5 sha1:%s\nworld\n\n"+
		"txn %s \" \"\nuser \"bob\"\ndescription \"copy\"\nextension \"\"\n"+
		"obj 0000000000000001 5 sha1:%s\nhello\nobj 0000000000000002 delete\n\n",
		tid1, sha1hex("hello"), sha1hex("world"), tid2, sha1hex("hello"))
	if string(full) != wantFull {
		t.Errorf("dump:\n%s", diffAt(full, []byte(wantFull)))
	}
	for _, tc := range []struct {
		rng  string
		txns int
	}{
		{"..", 2}, {tid1.String() + "..", 2}, {(tid1 + 1).String() + "..", 1},
		{".." + tid1.String(), 1}, {tid2.String() + ".." + tid2.String(), 1},
		{".." + (tid1 - 1).String(), 0}, {"..1999-01-01T00:00:00Z", 0}, {"2000-01-01T00:00:00Z..", 2},
	} {
		out, errb, code := zrun(t, nil, "dump", url, tc.rng)
		if n := bytes.Count(out, []byte("txn ")); code != 0 || n != tc.txns {
			t.Errorf("dump %s: exit %d, %d txns, want %d; %s", tc.rng, code, n, tc.txns, errb)
		}
	}
	if _, _, code := zrun(t, nil, "dump", url, "bad"); code != 2 {
		t.Errorf("dump bad range: exit %d", code)
	}
	if _, _, code := zrun(t, nil, "dump", "--pretty=nosuch", url); code != 2 {
		t.Errorf("dump --pretty=nosuch: exit %d", code)
	}
	// data that is not a pickle cannot be disassembled
	if _, errb, code := zrun(t, nil, "dump", "--pretty=zpickledis", url); code != 1 || !strings.Contains(string(errb), "invalid pickle") {
		t.Errorf("dump --pretty=zpickledis of non-pickles: exit %d %s", code, errb)
	}

	// restore into another storage: same dump
	url2 := url + "-restored"
	out, errb, code = zrun(t, full, "restore", url2)
	if code != 0 || string(out) != tid1.String()+"\n"+tid2.String()+"\n" {
		t.Fatalf("restore: %d %q %s", code, out, errb)
	}
	full2, _, _ := zrun(t, nil, "dump", url2)
	if !bytes.Equal(full2, full) {
		t.Errorf("dump of restored:\n%s", diffAt(full2, full))
	}
}

func TestRestoreHashes(t *testing.T) {
	data := "some data\nwith LF"
	s256 := sha256.Sum256([]byte(data))
	crc := crc32.ChecksumIEEE([]byte(data))
	adl := adler32.Checksum([]byte(data))
	for _, tc := range []struct {
		hash string
		ok   bool
	}{
		{"sha1:" + sha1hex(data), true},
		{"sha256:" + hex.EncodeToString(s256[:]), true},
		{"crc32:" + fmt.Sprintf("%08x", crc), true},
		{"adler32:" + fmt.Sprintf("%08x", adl), true},
		{"null:00", true},
		{"sha1:" + sha1hex("other"), false},
		{"crc32:" + fmt.Sprintf("%08x", crc+1), false},
		{"md5:00", false},
		{"null:01", false},
	} {
		dump := fmt.Sprintf("txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000000 %d %s\n%s\n\n", len(data), tc.hash, data)
		url := fmt.Sprintf("mem://%s-%s", t.Name(), strings.ReplaceAll(tc.hash, ":", "-"))
		out, errb, code := zrun(t, []byte(dump), "restore", url)
		if tc.ok != (code == 0) {
			t.Errorf("%s: exit %d, %q %s", tc.hash, code, out, errb)
		}
		if !tc.ok {
			if got, _, _ := zrun(t, nil, "dump", url); len(got) != 0 {
				t.Errorf("%s: restored despite the error:\n%s", tc.hash, got)
			}
		}
	}
}

func TestRestoreErrors(t *testing.T) {
	good := "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000000 1 null:00\nA\n\n"
	for _, tc := range []struct{ name, in, msg string }{
		{"no txn", "tx 0285cbac258bf266 \" \"\n", "no txn start"},
		{"bad status", "txn 0285cbac258bf266 \"  \"\n", "no txn start"},
		{"no user", "txn 0285cbac258bf266 \" \"\ndescription \"\"\n", "no user"},
		{"bad quote", "txn 0285cbac258bf266 \" \"\nuser \"\\u0041\"\n", "user"},
		{"eof", "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\n", "no obj"},
		{"short data", "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000000 10 null:00\nA\n", "EOF"},
		{"no LF", "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000000 1 null:00\nAB\n", "no LF"},
		{"hashonly", "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000000 1 sha1:00 -\n\n", "hashonly"},
		{"bad obj", "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 00 delete\n\n", "invalid obj"},
		{"second txn bad", good + "garbage\n", "stdin+8: invalid line: no txn start"},
	} {
		_, errb, code := zrun(t, []byte(tc.in), "restore", "mem://")
		if code != 1 || !strings.Contains(string(errb), tc.msg) {
			t.Errorf("%s: exit %d, stderr %q, want %q", tc.name, code, errb, tc.msg)
		}
	}
}

func TestWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := "mem://" + t.Name()
	stor, err := zodb.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- zodbtools.Watch(ctx, stor, pw, true, nil)
		pw.Close()
	}()
	br := bufio.NewReader(pr)
	readLine := func() string {
		t.Helper()
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return l
	}
	if l := readLine(); l != "# at 0000000000000000\n" {
		t.Fatalf("first line %q", l)
	}
	var tids []string
	for i := range 2 {
		in := fmt.Sprintf("user \"\"\ndescription \"\"\nextension \"\"\nobj 000000000000000%d 1 null:00\nA\nobj 0000000000000007 1 null:00\nB\n\n", i+1)
		at := "0000000000000000"
		if i > 0 {
			at = tids[0]
		}
		out, errb, code := zrun(t, []byte(in), "commit", url, at)
		if code != 0 {
			t.Fatalf("commit: %d %s", code, errb)
		}
		tids = append(tids, strings.TrimSpace(string(out)))
		if l := readLine(); l != "txn "+tids[i]+"\n" {
			t.Fatalf("got %q, want txn %s", l, tids[i])
		}
		var objs []string
		for {
			l := readLine()
			if l == "\n" {
				break
			}
			objs = append(objs, l)
		}
		want := []string{fmt.Sprintf("obj 000000000000000%d\n", i+1), "obj 0000000000000007\n"}
		if strings.Join(sortedCopy(objs), "") != strings.Join(want, "") {
			t.Errorf("txn %d: objs %q, want %q", i, objs, want)
		}
	}
	cancel()
	go io.Copy(io.Discard, br)
	if err := <-done; err != context.Canceled {
		t.Errorf("watch returned %v", err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nosuch"}, {"dump"}, {"info"}, {"catobj", "x"}, {"restore"}, {"watch"}, {"commit", "x"}, {"dump", "--bad", "x"}} {
		if _, errb, code := zrun(t, nil, args...); code != 2 || len(errb) == 0 {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb)
		}
	}
	for _, args := range [][]string{{"help"}, {"help", "dump"}, {"help", "tidrange"}, {"help", "zurl"}, {"dump", "-h"}} {
		if out, _, code := zrun(t, nil, args...); code != 0 || len(out) == 0 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
	if _, errb, code := zrun(t, nil, "info", "mem://", "bogus"); code != 1 || !strings.Contains(string(errb), "invalid parameter: bogus") {
		t.Errorf("info bogus: %d %s", code, errb)
	}
	if _, _, code := zrun(t, nil, "dump", "/nonexistent/x.fs"); code != 1 {
		t.Errorf("dump of missing file: exit %d", code)
	}
}

// TestFileStorageSize checks that info's size is the end of the last
// finished transaction, whatever follows it in the file.
func TestFileStorageSize(t *testing.T) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	voted := readFile(t, filepath.Join(dir, "undo-voted.fs"))
	undo := readFile(t, filepath.Join(dir, "undo.fs"))
	tmp := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		want int64
	}{
		{"complete", undo, int64(len(undo))},
		{"voted", voted, int64(len(undo))},
		{"voted-cut", voted[:len(voted)-20], int64(len(undo))},
		{"garbage", append(append([]byte(nil), undo...), "garbage"...), int64(len(undo))},
		{"empty", []byte("FS30"), 4},
	} {
		path := filepath.Join(tmp, tc.name+".fs")
		if err := os.WriteFile(path, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got, err := zodbtools.StorageSize(ctx, stor.Driver())
		stor.Close()
		if err != nil || got != tc.want {
			t.Errorf("%s: %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
}

// sizeless hides the Size method of the storage it wraps, as a storage
// that cannot tell its size (NEO).
type sizeless struct{ zodb.IStorageDriver }

func init() {
	zodb.RegisterDriver("sizeless", func(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
		mu := *u
		mu.Scheme = "mem"
		o := *opt
		o.NoCreate, o.ReadOnly = false, false // a new empty storage each time
		drv, at0, err := mem.OpenDriver(ctx, &mu, &o)
		if err != nil {
			return nil, 0, err
		}
		return sizeless{drv}, at0, nil
	})
}

// zodb info leaves out the size of a storage that cannot tell it, unless
// it is asked for.
func TestInfoWithoutSize(t *testing.T) {
	out, errb, code := zrun(t, nil, "info", "sizeless://")
	if code != 0 || strings.Contains(string(out), "size=") || !strings.Contains(string(out), "head=") {
		t.Errorf("info: exit %d, %q %s", code, out, errb)
	}
	if _, _, code := zrun(t, nil, "info", "sizeless://", "size"); code == 0 {
		t.Errorf("info size: exit 0 for a storage without size")
	}
}
