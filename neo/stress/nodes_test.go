package stress

import (
	"context"
	"crypto/sha1"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/zodb"
)

// A killed storage's database keeps what was committed and loses the work
// whose commit was deferred: a transaction locked (durable) but only
// unlocked in memory is found unfinished again, as after SIGKILL.
func TestCrashImage(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.sqlite")
	db, err := sqlite.Open(ctx, path, sqlite.Options{Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ChangePartitionTable(ctx, 1, 0, []proto.CellChange{{Partition: 0, NID: proto.NewNodeID(proto.Storage, 1), State: proto.CellUpToDate}}, true, 0); err != nil {
		t.Fatal(err)
	}
	commit := func(ttid, tid zodb.Tid, oid zodb.Oid, data string, unlock bool) {
		t.Helper()
		id, err := db.StoreData(ctx, ttid, oid, proto.Checksum(sha1.Sum([]byte(data))), []byte(data), 0, zodb.InvalidTid)
		if err != nil {
			t.Fatal(err)
		}
		objs := []backend.TObject{{Oid: oid, DataID: id, DataSerial: zodb.InvalidTid}}
		if err := db.Vote(ctx, ttid, objs, &backend.TxnMeta{TTid: ttid, Oids: []zodb.Oid{oid}}); err != nil {
			t.Fatal(err)
		}
		if err := db.Lock(ctx, ttid, tid, false); err != nil {
			t.Fatal(err)
		}
		if unlock {
			if err := db.Unlock(ctx, ttid, tid); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit(10, 11, 1, "durable", true)
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	commit(20, 21, 2, "deferred", true) // unlock's commit deferred
	if err := crashImage(path, db); err != nil {
		t.Fatal(err)
	}
	db, err = sqlite.Open(ctx, path, sqlite.Options{Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	unfinished, err := db.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(unfinished) != 1 || unfinished[20] != 21 {
		t.Errorf("unfinished after the crash: %v, want the locked 20 → 21 only", unfinished)
	}
	if s, ok, err := db.LastSerial(ctx, 1); err != nil || !ok || s != 11 {
		t.Errorf("committed transaction after the crash: serial %v %v %v, want 11", s, ok, err)
	}
	if _, ok, err := db.LastSerial(ctx, 2); err != nil || ok {
		t.Errorf("deferred unlock survived the crash (%v, %v)", ok, err)
	}
}
