package zodb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
)

// benchObject commits a mapping of 10 items under root["obj"] and returns
// a connection in a transaction holding it, loaded.
func benchObject(b *testing.B) (context.Context, *zodb.Connection, *zodb.PersistentMapping) {
	db := openDB(b, "mem://", nil)
	if err := inTxn(b, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := zodb.NewPersistentMapping()
		for i := range 10 {
			m.Set(fmt.Sprintf("key%d", i), int64(i))
		}
		root.Set("obj", m)
	}); err != nil {
		b.Fatal(err)
	}
	txn, ctx := transaction.New(context.Background())
	b.Cleanup(func() { txn.Abort(ctx) })
	conn, err := db.Open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	r, err := conn.Root(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return ctx, conn, mustGet[*zodb.PersistentMapping](b, ctx, r.(*zodb.PersistentMapping), "obj")
}

// BenchmarkGetWarm: Get of an object that is live and loaded in the cache.
func BenchmarkGetWarm(b *testing.B) {
	ctx, conn, m := benchObject(b)
	oid := m.POid()
	b.ReportAllocs()
	for b.Loop() {
		obj, err := conn.Get(ctx, oid)
		if err != nil || obj != zodb.IPersistent(m) {
			b.Fatal(obj, err)
		}
	}
}

// BenchmarkActivateFromStorage: activation of a ghost: load from the mem
// storage and decode.
func BenchmarkActivateFromStorage(b *testing.B) {
	ctx, _, m := benchObject(b)
	b.ReportAllocs()
	for b.Loop() {
		m.PInvalidate()
		if err := m.PActivate(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitOne: a transaction changing one object, committed to mem.
func BenchmarkCommitOne(b *testing.B) {
	db := openDB(b, "mem://", nil)
	if err := inTxn(b, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		root.Set("obj", zodb.NewPersistentMapping())
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := int64(0)
	for b.Loop() {
		i++
		if err := inTxn(b, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
			mustGet[*zodb.PersistentMapping](b, ctx, root, "obj").Set("n", i)
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// The codec on the reference object with many kinds of values.
func typesRecord(b *testing.B) []byte {
	ctx := context.Background()
	stor, err := zodb.Open(ctx, filepath.Join(testdir.Dir("ZODB_TESTDATA", "zodb"), "types.fs"), &zodb.OpenOptions{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer stor.Close()
	data, _, _, err := stor.Load(ctx, zodb.Xid{Oid: 1, At: zodb.TidMax})
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkDecodeRecord(b *testing.B) {
	data := typesRecord(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := zodb.DecodeRecord(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	data := typesRecord(b)
	desc, state, err := zodb.DecodeRecord(data)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := zodb.EncodeRecord(desc, state); err != nil {
			b.Fatal(err)
		}
	}
}
