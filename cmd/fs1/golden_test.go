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

func run(t *testing.T, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return out.Bytes(), errb.Bytes(), code
}

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

func diffAt(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	line := bytes.Count(want[:i], []byte("\n")) + 1
	ctx := func(b []byte) string { return string(b[max(0, i-120):min(len(b), i+120)]) }
	return fmt.Sprintf("first difference at byte %d (line %d)\n--- got:\n%s\n--- want:\n%s", i, line, ctx(got), ctx(want))
}

type manifest struct {
	Tools []struct {
		Cmd    string `json:"cmd"`
		Output string `json:"output"`
		RC     int    `json:"rc"`
		Stderr string `json:"stderr"`
	} `json:"tools"`
}

// toolRun returns what the manifest records of the run that produced output.
func toolRun(t *testing.T, m *manifest, output string) (rc int, stderr string) {
	for _, r := range m.Tools {
		if r.Output == output {
			return r.RC, r.Stderr
		}
	}
	t.Fatalf("manifest.json has no run producing %s", output)
	return
}

func TestGoldenFsdump(t *testing.T) {
	for _, fs := range dataFiles(t) {
		for _, v := range []struct{ suffix, flag string }{{".fsdump", ""}, {".fsdump-verbose", "-v"}} {
			want := readFile(t, fs+v.suffix)
			args := []string{"dump"}
			if v.flag != "" {
				args = append(args, v.flag)
			}
			out, errb, code := run(t, append(args, fs)...)
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

func TestGoldenFstest(t *testing.T) {
	files := dataFiles(t)
	var m manifest
	if err := json.Unmarshal(readFile(t, "manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	nfail := 0
	for _, fs := range files {
		want := readFile(t, fs+".fstest")
		wantRC, wantErr := toolRun(t, &m, fs+".fstest")
		out, errb, code := run(t, "verify", "-v", "-v", fs)
		if !bytes.Equal(out, want) {
			t.Errorf("%s: verify -v -v:\n%s", fs, diffAt(out, want))
		}
		if (code == 0) != (wantRC == 0) || string(errb) != wantErr {
			t.Errorf("%s: verify: exit %d, stderr %q; want exit %d, stderr %q", fs, code, errb, wantRC, wantErr)
		}
		if wantRC != 0 {
			nfail++
		}
		// without -v: silent unless broken
		out, errb2, code2 := run(t, "verify", fs)
		if len(out) != 0 || code2 != code || !bytes.Equal(errb2, errb) {
			t.Errorf("%s: verify: %q %q %d", fs, out, errb2, code2)
		}
	}
	if nfail == 0 {
		t.Errorf("no reference file where fstest fails")
	}
}

type indexJSON struct {
	Pos     int64    `json:"pos"`
	Entries [][2]any `json:"entries"`
}

func TestGoldenIndex(t *testing.T) {
	files := dataFiles(t)
	tmp := t.TempDir()
	nchecked := 0
	for _, fs := range files {
		if _, err := os.Stat(fs + ".index"); err != nil {
			// undo-voted.fs: ZODB did not write one (the README says so)
			if _, err := os.Stat(fs + ".index.json"); err == nil {
				t.Errorf("%s: .index.json without .index", fs)
			}
			continue
		}
		nchecked++
		// dump-index vs the index as ZODB loads it
		var ij indexJSON
		if err := json.Unmarshal(readFile(t, fs+".index.json"), &ij); err != nil {
			t.Fatalf("%s.index.json: %v", fs, err)
		}
		var want strings.Builder
		fmt.Fprintf(&want, "pos %d\n", ij.Pos)
		for _, e := range ij.Entries {
			fmt.Fprintf(&want, "%s %d\n", e[0], int64(e[1].(float64)))
		}
		out, errb, code := run(t, "dump-index", fs)
		if code != 0 || string(out) != want.String() {
			t.Errorf("%s: dump-index: exit %d %s\n%s", fs, code, errb, diffAt(out, []byte(want.String())))
		}

		// verify-index agrees with ZODB's index
		if out, errb, code := run(t, "verify-index", "-v", fs); code != 0 || string(out) != "OK\n" {
			t.Errorf("%s: verify-index: exit %d %q %s", fs, code, out, errb)
		}

		// reindex of a copy gives ZODB's index, byte for byte, except for
		// files too small for ZODB to keep its index (it then writes the
		// one it scanned, the same).
		cp := filepath.Join(tmp, fs)
		if err := os.WriteFile(cp, readFile(t, fs), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, errb, code := run(t, "reindex", cp); code != 0 {
			t.Errorf("%s: reindex: exit %d %s", fs, code, errb)
			continue
		}
		if got, want := readFile(t, cp+".index"), readFile(t, fs+".index"); !bytes.Equal(got, want) {
			t.Errorf("%s: reindex: index differs from ZODB's:\n%s", fs, diffAt(got, want))
		}
	}
	if nchecked == 0 {
		t.Fatal("no .index files")
	}
}

func TestVerifyIndexDetectsDamage(t *testing.T) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	tmp := t.TempDir()
	src := filepath.Join(dir, "undo.fs")
	dst := filepath.Join(tmp, "undo.fs")
	if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
	// index of another file: positions differ
	if err := os.WriteFile(dst+".index", readFile(t, filepath.Join(dir, "small.fs.index")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errb, code := run(t, "verify-index", dst); code != 1 {
		t.Errorf("verify-index with a wrong index: exit %d %s", code, errb)
	}
}
