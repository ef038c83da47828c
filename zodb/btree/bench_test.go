package btree

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
)

const benchKeys = 100_000

func ooKey(i int) any { return fmt.Sprintf("key%08d", i) }

func buildOO(b *testing.B) *OOBTree {
	ctx := context.Background()
	t := new(OOBTree)
	for _, i := range rand.New(rand.NewPCG(1, 1)).Perm(benchKeys) {
		if _, err := t.Set(ctx, ooKey(i), int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	return t
}

func buildII(b *testing.B) *IIBTree {
	ctx := context.Background()
	t := new(IIBTree)
	for _, i := range rand.New(rand.NewPCG(1, 1)).Perm(benchKeys) {
		if _, err := t.Set(ctx, int32(i), int32(i)); err != nil {
			b.Fatal(err)
		}
	}
	return t
}

func BenchmarkOOGet(b *testing.B) {
	ctx := context.Background()
	t := buildOO(b)
	keys := make([]any, 4096)
	rnd := rand.New(rand.NewPCG(2, 2))
	for i := range keys {
		keys[i] = ooKey(rnd.IntN(benchKeys))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok, err := t.Get(ctx, keys[i%len(keys)]); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkIIGet(b *testing.B) {
	ctx := context.Background()
	t := buildII(b)
	rnd := rand.New(rand.NewPCG(2, 2))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok, err := t.Get(ctx, int32(rnd.IntN(benchKeys))); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// insert into a tree of 100k keys (new keys, odd ones, then reset)
func BenchmarkOOInsert(b *testing.B) {
	ctx := context.Background()
	t := buildOO(b)
	keys := make([]any, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key%08d.5", i)
	}
	rand.New(rand.NewPCG(3, 3)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%benchKeys == 0 && i > 0 {
			b.StopTimer()
			t = buildOO(b)
			b.StartTimer()
		}
		if _, err := t.Set(ctx, keys[i%benchKeys], int64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIIInsert(b *testing.B) {
	ctx := context.Background()
	t := buildII(b)
	perm := rand.New(rand.NewPCG(3, 3)).Perm(benchKeys)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%benchKeys == 0 && i > 0 {
			b.StopTimer()
			t = buildII(b)
			b.StartTimer()
		}
		if _, err := t.Set(ctx, int32(benchKeys+perm[i%benchKeys]), int32(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIIGetCold: lookups in an IIBTree of 100k keys stored in a
// FileStorage, with the connection's cache emptied before each lookup:
// every lookup loads the nodes on its path (root, interior, bucket).
func BenchmarkIIGetCold(b *testing.B) {
	path := filepath.Join(b.TempDir(), "Data.fs")
	db, closeDB := openRW(b, path)
	defer closeDB()
	var oid zodb.Oid
	err := inTxn(b, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
		t := new(IIBTree)
		root.Set("t", t)
		for i := range benchKeys {
			if _, err := t.Set(ctx, int32(i), int32(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	txn, ctx := transaction.New(context.Background())
	defer txn.Abort(ctx)
	conn, err := db.Open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	r, _ := conn.Root(ctx)
	t, err := rootGet[*IIBTree](ctx, r.(*zodb.PersistentMapping), "t")
	if err != nil {
		b.Fatal(err)
	}
	oid = t.POid()
	rnd := rand.New(rand.NewPCG(2, 2))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		conn.CacheMinimize()
		obj, err := conn.Get(ctx, oid)
		if err != nil {
			b.Fatal(err)
		}
		k := int32(rnd.IntN(benchKeys))
		if v, ok, err := obj.(*IIBTree).Get(ctx, k); err != nil || !ok || v != k {
			b.Fatal(v, ok, err)
		}
	}
}
