package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
)

// zrun runs the zodb command in-process.
func zrun(t *testing.T, stdin []byte, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, bytes.NewReader(stdin), &out, &errb)
	return out.Bytes(), errb.Bytes(), code
}

// dataFiles returns the *.fs files of the reference data (names relative
// to its directory, which becomes the working directory of the test, as it
// was for the Python tools).
func dataFiles(t *testing.T) []string {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	t.Chdir(dir)
	files, err := filepath.Glob("*.fs")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.fs in %s", dir)
	}
	return files
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diffAt describes the first difference of two outputs.
func diffAt(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	line := bytes.Count(want[:i], []byte("\n")) + 1
	ctx := func(b []byte) string {
		lo := max(0, i-80)
		hi := min(len(b), i+80)
		return string(b[lo:hi])
	}
	return fmt.Sprintf("first difference at byte %d (line %d)\n--- got:\n%s\n--- want:\n%s", i, line, ctx(got), ctx(want))
}

// lastDumpedTid returns the tid of the last transaction of a dump.
func lastDumpedTid(zdump []byte) string {
	i := bytes.LastIndex(zdump, []byte("\ntxn "))
	if i < 0 {
		if !bytes.HasPrefix(zdump, []byte("txn ")) {
			return "0000000000000000"
		}
		i = -1
	}
	return string(zdump[i+5 : i+5+16])
}

func TestGoldenInfo(t *testing.T) {
	for _, fs := range dataFiles(t) {
		want := readFile(t, fs+".zinfo")
		// ZODB's read-only FileStorage reports as last transaction the
		// tid of a voted but unfinished transaction at the end of the
		// file (undo-voted.fs), although it does not iterate nor load it.
		// We report the last committed transaction (the last one dumped):
		// a head must never name data that is not committed.
		lines := strings.Split(string(want), "\n")
		zhead := strings.TrimPrefix(lines[2], "head=")
		if last := lastDumpedTid(readFile(t, fs+".zdump")); last != zhead {
			t.Logf("%s: ZODB reports head %s, a transaction that is not committed; expecting the last committed one, %s", fs, zhead, last)
			want = bytes.ReplaceAll(want, []byte(zhead), []byte(last))
			lines = strings.Split(string(want), "\n")
		}
		out, errb, code := zrun(t, nil, "info", fs)
		if code != 0 {
			t.Errorf("%s: info: exit %d: %s", fs, code, errb)
			continue
		}
		if !bytes.Equal(out, want) {
			t.Errorf("%s: info:\n%s", fs, diffAt(out, want))
		}
		if string(errb) != "W: last_tid is deprecated alias for head\n" {
			t.Errorf("%s: info: stderr %q", fs, errb)
		}
		out, errb, code = zrun(t, nil, "info", fs, "head", "size")
		exp := strings.TrimPrefix(lines[2], "head=") + "\n" + strings.TrimPrefix(lines[1], "size=") + "\n"
		if code != 0 || string(out) != exp || len(errb) != 0 {
			t.Errorf("%s: info head size: %d %q %q, want %q", fs, code, out, errb, exp)
		}
	}
}

func TestGoldenDump(t *testing.T) {
	for _, fs := range dataFiles(t) {
		for _, v := range []struct{ suffix, flag string }{{".zdump", ""}, {".zdump-hashonly", "--hashonly"}} {
			want := readFile(t, fs+v.suffix)
			args := []string{"dump"}
			if v.flag != "" {
				args = append(args, v.flag)
			}
			out, errb, code := zrun(t, nil, append(args, fs)...)
			if code != 0 {
				t.Errorf("%s: %v: exit %d: %s", fs, args, code, errb)
				continue
			}
			if !bytes.Equal(out, want) {
				t.Errorf("%s: %v:\n%s", fs, args, diffAt(out, want))
			}
		}
	}
}

// TestGoldenDumpUpstream checks the dumps of zodbtools' own test databases,
// written by ZODB on Python 2 (magic FS21) and 3.
func TestGoldenDumpUpstream(t *testing.T) {
	dir, ok := testdir.Shared("zodb/upstream-zodbtools")
	if !ok {
		t.Skip("zodbtools' upstream test data (../shared/testdata/zodb/upstream-zodbtools) is absent")
	}
	var dbs []string
	for _, pat := range []string{"1/*/data.fs", "1_nozext/*/data.fs"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, m...)
	}
	if len(dbs) == 0 {
		t.Fatalf("no data.fs under %s", dir)
	}
	for _, db := range dbs {
		// The files are opened read-only, in place.
		want := readFile(t, filepath.Join(filepath.Dir(db), "zdump.raw.ok"))
		out, errb, code := zrun(t, nil, "dump", db)
		name, _ := filepath.Rel(dir, db)
		if code != 0 {
			t.Errorf("%s: dump: exit %d: %s", name, code, errb)
			continue
		}
		if !bytes.Equal(out, want) {
			t.Errorf("%s: dump:\n%s", name, diffAt(out, want))
		}
		// restored into a new FileStorage (FS30), the dump is the same
		dst := filepath.Join(t.TempDir(), "restored.fs")
		if _, errb, code := zrun(t, want, "restore", dst); code != 0 {
			t.Errorf("%s: restore: exit %d: %s", name, code, errb)
			continue
		}
		if got, errb, code := zrun(t, nil, "dump", dst); code != 0 || !bytes.Equal(got, want) {
			t.Errorf("%s: dump of restored: exit %d %s\n%s", name, code, errb, diffAt(got, want))
		}
	}
}

type manifest struct {
	Files map[string]struct {
		RestoreCheck *struct {
			ByteIdentical bool `json:"byte_identical"`
		} `json:"restore_check"`
	} `json:"files"`
}

// TestGoldenRestore restores every X.fs.zdump into a new FileStorage and
// checks that its dump is the original one, and that the file is
// byte-identical to X.fs where the manifest says ZODB's restore gives that.
func TestGoldenRestore(t *testing.T) {
	files := dataFiles(t)
	var m manifest
	if err := json.Unmarshal(readFile(t, "manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	nidentical := 0
	for _, fs := range files {
		zdump := readFile(t, fs+".zdump")
		dst := filepath.Join(tmp, fs)
		out, errb, code := zrun(t, zdump, "restore", dst)
		if code != 0 {
			t.Errorf("%s: restore: exit %d: %s", fs, code, errb)
			continue
		}
		if n, want := bytes.Count(out, []byte("\n")), bytes.Count(zdump, []byte("\ntxn "))+bytes.Count(zdump[:min(4, len(zdump))], []byte("txn ")); n != want {
			t.Errorf("%s: restore printed %d tids, want %d", fs, n, want)
		}
		got, errb, code := zrun(t, nil, "dump", dst)
		if code != 0 {
			t.Errorf("%s: dump of restored: exit %d: %s", fs, code, errb)
			continue
		}
		if !bytes.Equal(got, zdump) {
			t.Errorf("%s: dump of restored:\n%s", fs, diffAt(got, zdump))
		}
		rc := m.Files[fs].RestoreCheck
		if rc != nil && rc.ByteIdentical {
			nidentical++
			if a, b := readFile(t, dst), readFile(t, fs); !bytes.Equal(a, b) {
				t.Errorf("%s: restored file differs from the original:\n%s", fs, diffAt(a, b))
			}
		}
	}
	if nidentical == 0 {
		t.Errorf("manifest.json names no file to be restored byte-identical")
	}
}

func TestGoldenDumpZPickleDis(t *testing.T) {
	n := 0
	for _, fs := range dataFiles(t) {
		want, err := os.ReadFile(fs + ".zdump-zpickledis")
		if os.IsNotExist(err) {
			continue // not made for btrees.fs and large.fs (see README)
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		out, errb, code := zrun(t, nil, "dump", "--pretty=zpickledis", fs)
		if code != 0 {
			t.Errorf("%s: dump --pretty=zpickledis: exit %d: %s", fs, code, errb)
			continue
		}
		if !bytes.Equal(out, want) {
			t.Errorf("%s: dump --pretty=zpickledis:\n%s", fs, diffAt(out, want))
		}
	}
	if n == 0 {
		t.Fatal("no .zdump-zpickledis files")
	}
}

// normalizeBytesRepr drops the b prefix of bytes arguments: zodbtools'
// expected outputs made on Python 2 show bytes as '...' (its own tests
// normalize them the same way).
func normalizeBytesRepr(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("BINBYTES b'"), []byte("BINBYTES '"))
}

func TestGoldenDumpZPickleDisUpstream(t *testing.T) {
	dir, ok := testdir.Shared("zodb/upstream-zodbtools")
	if !ok {
		t.Skip("zodbtools' upstream test data (../shared/testdata/zodb/upstream-zodbtools) is absent")
	}
	dbs, _ := filepath.Glob(filepath.Join(dir, "1*", "*", "data.fs"))
	if len(dbs) == 0 {
		t.Fatalf("no data.fs under %s", dir)
	}
	for _, db := range dbs {
		want := readFile(t, filepath.Join(filepath.Dir(db), "zdump.zpickledis.ok"))
		out, errb, code := zrun(t, nil, "dump", "--pretty=zpickledis", db)
		name, _ := filepath.Rel(dir, db)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", name, code, errb)
			continue
		}
		if out, want := normalizeBytesRepr(out), normalizeBytesRepr(want); !bytes.Equal(out, want) {
			t.Errorf("%s: dump --pretty=zpickledis:\n%s", name, diffAt(out, want))
		}
	}
}

// TestGoldenCatobj checks catobj against the dumps: every data entry of
// X.fs.zdump, printed again by catobj at its transaction, is the same entry,
// and likewise with --pretty=zpickledis.
func TestGoldenCatobj(t *testing.T) {
	n := 0
	for _, fs := range dataFiles(t) {
		for _, v := range []struct{ suffix, pretty string }{{".zdump", "raw"}, {".zdump-zpickledis", "zpickledis"}} {
			zdump, err := os.ReadFile(fs + v.suffix)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			// pick the first data entry of every transaction
			var tid string
			for _, blk := range bytes.Split(zdump, []byte("\ntxn ")) {
				blk = bytes.TrimPrefix(blk, []byte("txn "))
				tid = string(blk[:16])
				i := bytes.Index(blk, []byte("\nobj "))
				if i < 0 || bytes.HasPrefix(blk[16:], []byte(` "p"`)) {
					// Transactions copied by pack have prev = 0 in
					// their records: ZODB (and we) cannot load the
					// revisions older than the last packed one.
					continue
				}
				entry := blk[i+1:]
				head, _, _ := bytes.Cut(entry, []byte("\n"))
				if bytes.Contains(head, []byte(" from ")) || bytes.Contains(head, []byte(" delete")) {
					continue
				}
				oid := string(entry[4:20])
				// the entry ends where the next one (or the txn end) starts
				if j := bytes.Index(entry, []byte("\n\nobj ")); j >= 0 && v.pretty == "zpickledis" {
					entry = entry[:j+2]
				} else if j := bytes.Index(entry, []byte("\nobj ")); j >= 0 && v.pretty == "raw" {
					entry = entry[:j+1]
				} else {
					entry = entry[:len(bytes.TrimRight(entry, "\n"))+1]
					if v.pretty == "zpickledis" {
						entry = append(entry, '\n')
					}
				}
				out, errb, code := zrun(t, nil, "catobj", "--pretty="+v.pretty, fs, oid+"@"+tid)
				n++
				if code != 0 || !bytes.Equal(out, entry) {
					t.Errorf("%s: catobj --pretty=%s %s@%s: exit %d %s\n%s", fs, v.pretty, oid, tid, code, errb, diffAt(out, entry))
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no entry checked")
	}
}

func TestGoldenAnalyze(t *testing.T) {
	for _, fs := range dataFiles(t) {
		want := readFile(t, fs+".zanalyze.csv")
		out, errb, code := zrun(t, nil, "analyze", "--csv", fs)
		if code != 0 || !bytes.Equal(out, want) {
			t.Errorf("%s: analyze --csv: exit %d %s\n%s", fs, code, errb, diffAt(out, want))
		}
		// the table form tells the same totals
		out, errb, code = zrun(t, nil, "analyze", fs)
		if code != 0 || (!bytes.Contains(out, []byte("Types used:")) && !bytes.Contains(out, []byte("No transactions processed"))) {
			t.Errorf("%s: analyze: exit %d %s\n%s", fs, code, errb, out)
		}
	}
}

func TestGoldenAnalyzeUpstream(t *testing.T) {
	dir, ok := testdir.Shared("zodb/upstream-zodbtools")
	if !ok {
		t.Skip("zodbtools' upstream test data (../shared/testdata/zodb/upstream-zodbtools) is absent")
	}
	dbs, _ := filepath.Glob(filepath.Join(dir, "1*", "*", "data.fs"))
	if len(dbs) == 0 {
		t.Fatalf("no data.fs under %s", dir)
	}
	for _, db := range dbs {
		want := readFile(t, filepath.Join(filepath.Dir(db), "zanalyze.csv.ok"))
		out, errb, code := zrun(t, nil, "analyze", "-c", db)
		if code != 0 || !bytes.Equal(out, want) {
			t.Errorf("%s: analyze -c: exit %d %s\n%s", db, code, errb, diffAt(out, want))
		}
	}
}
