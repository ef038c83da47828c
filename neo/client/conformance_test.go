package client_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/zodb/storagetest"
)

// newURL starts a new cluster of one master and two storages holding every
// partition twice, and returns the URL of a client on it. Data go
// uncompressed so that History reports the sizes the suite wrote.
func newURL(t testing.TB) string {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	return c.TestURL(fmt.Sprintf("C%d", clientSeq.Add(1)), "compress=false")
}

var clientSeq atomic.Int64

func TestConformance(t *testing.T) {
	storagetest.Run(t, newURL, storagetest.SharedHandles(), storagetest.NoTxnStatus())
}

// BenchmarkConformance runs the storage benchmarks of the suite on a
// cluster of one master and two storages holding every partition twice.
func BenchmarkConformance(b *testing.B) {
	storagetest.Bench(b, newURL)
}
