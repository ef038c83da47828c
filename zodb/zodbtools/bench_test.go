package zodbtools

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/storage/fs1"
)

// countingWriter counts what is written to it.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func benchmarkDump(b *testing.B, name string, opt DumpOptions) {
	ctx := context.Background()
	path := filepath.Join(testdir.Dir("ZODB_TESTDATA", "zodb"), name)
	stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true, NoCreate: true})
	if err != nil {
		b.Fatal(err)
	}
	defer stor.Close()
	var w countingWriter
	if err := Dump(ctx, &w, stor, 0, zodb.TidMax, opt); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(w.n)
	b.ResetTimer()
	for b.Loop() {
		if err := Dump(ctx, io.Discard, stor, 0, zodb.TidMax, opt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDumpSmall(b *testing.B)  { benchmarkDump(b, "small.fs", DumpOptions{}) }
func BenchmarkDumpLarge(b *testing.B)  { benchmarkDump(b, "large.fs", DumpOptions{}) }
func BenchmarkDumpBTrees(b *testing.B) { benchmarkDump(b, "btrees.fs", DumpOptions{}) }
func BenchmarkDumpSmallDis(b *testing.B) {
	benchmarkDump(b, "small.fs", DumpOptions{Pretty: "zpickledis"})
}
func BenchmarkDumpBTreesHash(b *testing.B) {
	benchmarkDump(b, "btrees.fs", DumpOptions{HashOnly: true})
}
