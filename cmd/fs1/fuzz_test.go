package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
)

// FuzzFileTools runs the file walkers on arbitrary bytes: they must report
// errors, never panic or loop.
func FuzzFileTools(f *testing.F) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	for _, name := range []string{"undo.fs", "undo-voted.fs", "empty.fs", "metadata.fs"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		r := bytes.NewReader(data)
		size := int64(len(data))
		fstestFile(ctx, io.Discard, "fuzz.fs", r, size, 2)
		dumpVerbose(ctx, io.Discard, r, size)
		fsdump(ctx, io.Discard, io.Discard, r, size)
	})
}
