package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
)

func TestInfo(t *testing.T) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	out, errb, code := run(t, "info", filepath.Join(dir, "undo-voted.fs"))
	want := "magic=FS30\nsize=3365\nend=3206\nhead=03f6ed9730877277\nobjects=7\n"
	if code != 0 || string(out) != want {
		t.Errorf("info: exit %d %q %s, want %q", code, out, errb, want)
	}
	out, _, code = run(t, "info", filepath.Join(dir, "empty.fs"))
	if want := "magic=FS30\nsize=4\nend=4\nhead=0000000000000000\nobjects=0\n"; code != 0 || string(out) != want {
		t.Errorf("info empty: exit %d %q, want %q", code, out, want)
	}
}

func TestVerifyBroken(t *testing.T) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	undo, err := os.ReadFile(filepath.Join(dir, "undo.fs"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), undo...)) }
	for _, tc := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, "empty file"},
		{"header", []byte("XXXX"), "invalid file header"},
		{"truncated", undo[:len(undo)-3], "truncated possibly because of damaged records at 2823"},
		{"short", undo[:len(undo)-len(undo)+10], "truncated at 4"},
		{"status", mut(func(b []byte) []byte { b[4+16] = 'x'; return b }), "has invalid status 'x' at 4"},
		{"tid", mut(func(b []byte) []byte {
			b[166+7] = 0
			b[166+6] = 0
			b[166+5] = 0
			b[166+4] = 0
			b[166+3] = 0
			return b
		}), "time-stamp reduction at 166"},
		{"tloc", mut(func(b []byte) []byte { b[52+24+7] = 5; return b }), "data record exceeds transaction record at 52: tloc 5 != tpos 4"},
		{"trailer", mut(func(b []byte) []byte { b[158+7] ^= 1; return b }), "inconsistent transaction length"},
	} {
		path := filepath.Join(tmp, tc.name+".fs")
		if err := os.WriteFile(path, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, errb, code := run(t, "verify", path)
		if code != 1 || !strings.Contains(string(errb), tc.msg) {
			t.Errorf("%s: exit %d, stderr %q, want %q", tc.name, code, errb, tc.msg)
		}
		// the dumps report the damage too, or stop at it, without panic
		run(t, "dump", path)
		run(t, "dump", "-v", path)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nosuch"}, {"dump"}, {"verify", "a", "b"}, {"dump", "-x", "f"}} {
		if _, errb, code := run(t, args...); code != 2 || len(errb) == 0 {
			t.Errorf("%q: exit %d %q", args, code, errb)
		}
	}
	for _, args := range [][]string{{"help"}, {"help", "verify"}, {"dump", "-h"}} {
		if out, _, code := run(t, args...); code != 0 || len(out) == 0 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
	if _, errb, code := run(t, "dump-index", "/nonexistent.fs"); code != 1 || len(errb) == 0 {
		t.Errorf("dump-index of missing: exit %d", code)
	}
}
