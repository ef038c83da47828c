package fs1_test

import (
	"path/filepath"
	"testing"

	_ "github.com/neozodb/neo/zodb/storage/fs1"
	"github.com/neozodb/neo/zodb/storagetest"
)

func newURL(t testing.TB) string {
	return "file://" + filepath.Join(t.TempDir(), "Data.fs")
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, newURL, storagetest.Persistent())
}

func BenchmarkConformance(b *testing.B) {
	storagetest.Bench(b, newURL)
}
