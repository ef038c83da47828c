package sqlite

import (
	"crypto/sha1"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

const benchObjects = 100000

// fill writes n objects of 100 bytes, one revision each at tid 1, directly
// in one SQL transaction (the load benchmark measures reads only).
func fill(b *testing.B, db *DB, n int) {
	db.mu.Lock()
	defer db.mu.Unlock()
	must(b, db.begin(ctx))
	value := make([]byte, 100)
	for oid := 0; oid < n; oid++ {
		copy(value, fmt.Sprintf("object %d", oid))
		h := sha1.Sum(value)
		p := uint32(oid % np)
		id, err := db.nextDataID(ctx, p)
		must(b, err)
		db.dataNext[p] = id + 1
		must(b, db.exec(ctx, "INSERT INTO data VALUES (?,?,?,?)", id, h[:], int64(0), value))
		must(b, db.exec(ctx, "INSERT INTO obj VALUES (?,?,?,?,?)", p, int64(oid), int64(1), id, null{}))
	}
	must(b, db.commit(ctx))
}

func BenchmarkLoad(b *testing.B) {
	db, _ := newTest(b)
	fill(b, db, benchObjects)
	o := &backend.Object{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		oid := zodb.Oid(uint64(i) * 7919 % benchObjects)
		if err := db.Load(ctx, oid, zodb.InvalidTid, zodb.TidMax, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommit runs the storage side of a commit: StoreData per object,
// Vote and Lock (each a durable commit, synchronous=FULL as SQLite and
// NEO/py default to), Unlock (commit deferred, as NEO/py does).
func BenchmarkCommit(b *testing.B) {
	for _, journal := range []string{"", "delete", "wal"} {
		for _, n := range []int{1, 10} {
			name := fmt.Sprintf("objects=%d", n)
			if journal != "" {
				name = "journal=" + journal + "/" + name
			}
			b.Run(name, func(b *testing.B) { benchCommit(b, journal, n) })
		}
	}
}

func benchCommit(b *testing.B, journal string, n int) {
	{
		{
			path := filepath.Join(b.TempDir(), "bench.sqlite")
			if journal != "" {
				path = "file:" + path + "?journal_mode=" + journal
			}
			db := openTest(b, path)
			defer db.Close()
			must(b, db.SetConfig(ctx, backend.KeyNID, "1", true))
			var cells []proto.CellChange
			for p := uint32(0); p < np; p++ {
				cells = append(cells, proto.CellChange{Partition: p, NID: 1, State: proto.CellUpToDate})
			}
			must(b, db.ChangePartitionTable(ctx, 1, 0, cells, true, 0))
			value := make([]byte, 100)
			objs := make([]backend.TObject, n)
			oids := make([]zodb.Oid, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				ttid := zodb.Tid(4 * (2*i + 1))
				for j := range objs {
					oid := zodb.Oid(i*n + j)
					copy(value, fmt.Sprintf("%d %d", i, j))
					id, err := db.StoreData(ctx, ttid, oid, sha1.Sum(value), value, 0, zodb.InvalidTid)
					if err != nil {
						b.Fatal(err)
					}
					objs[j] = backend.TObject{Oid: oid, DataID: id, DataSerial: zodb.InvalidTid}
					oids[j] = oid
				}
				must(b, db.Vote(ctx, ttid, objs, &backend.TxnMeta{TTid: ttid, Oids: oids}))
				must(b, db.Lock(ctx, ttid, ttid+4, false))
				must(b, db.Unlock(ctx, ttid, ttid+4))
			}
		}
	}
}
