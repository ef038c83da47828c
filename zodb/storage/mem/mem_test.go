package mem_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	_ "github.com/neozodb/neo/zodb/storage/mem"
	"github.com/neozodb/neo/zodb/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(testing.TB) string { return "mem://" })
}

var nameSeq atomic.Int64

// newName returns the URL of a new storage shared by name.
func newName(testing.TB) string { return fmt.Sprintf("mem://test-%d", nameSeq.Add(1)) }

func TestConformanceNamed(t *testing.T) {
	storagetest.Run(t, newName, storagetest.SharedHandles(), storagetest.Persistent())
}

func BenchmarkMem(b *testing.B) {
	storagetest.Bench(b, func(testing.TB) string { return "mem://" })
}
