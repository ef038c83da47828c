package zeo_test

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	_ "github.com/neozodb/neo/zodb/storage/zeo"
	"github.com/neozodb/neo/zodb/storagetest"
)

// TestConformance runs the conformance suite against a real ZEO server.
//
// Set ZEO_SERVER=host:port (or ZEO_SERVER=/path/to/socket) to a ZEO 5 or 6
// server. The suite wants a new, empty storage for each of its tests, so
// the server must serve fresh FileStorages named 1, 2, 3, …: each storage
// the suite asks for is the next name. With runzeo, a configuration with
// enough <filestorage N> sections does it, e.g.
//
//	<zeo>
//	  address 127.0.0.1:8100
//	</zeo>
//	<filestorage 1>
//	  path /tmp/zeo/1.fs
//	</filestorage>
//	<filestorage 2>
//	  path /tmp/zeo/2.fs
//	</filestorage>
//	… (about 60)
//
// started with `runzeo -C zeo.conf`; start it anew before each run.
func TestConformance(t *testing.T) {
	server := os.Getenv("ZEO_SERVER")
	if server == "" {
		t.Skip("ZEO_SERVER is not set: no ZEO server to run the conformance suite against " +
			"(set ZEO_SERVER=host:port of a fresh runzeo serving storages 1, 2, 3, …; see the doc of TestConformance)")
	}
	base := "zeo://" + server // host:port, or /path giving zeo:///path
	var n atomic.Int64
	storagetest.Run(t, func(t testing.TB) string {
		return fmt.Sprintf("%s?storage=%d", base, n.Add(1))
	}, storagetest.SharedHandles())
}
