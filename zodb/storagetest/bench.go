package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// Bench runs the storage benchmarks against the driver. newURL returns the
// URL of a new, empty storage every time it is called:
//
//	Load/hot         load one object at the head
//	Load/random      load a random one of 10000 objects of 100 bytes
//	Load/old         load a random object at a random past tid
//	Commit/1x100B    commit a transaction writing 1 object of 100 bytes
//	Commit/10x100B   commit a transaction writing 10 objects of 100 bytes
//	NewOid           allocate one oid
func Bench(b *testing.B, newURL func(t testing.TB) string) {
	const nobj = 10000
	data := bytes.Repeat([]byte("x"), 100)
	b.Run("Load", func(b *testing.B) {
		stor := openURL(b, newURL(b), nil)
		ctx := context.Background()
		oids, err := stor.NewOids(ctx, nobj)
		if err != nil {
			b.Fatal(err)
		}
		var tids []zodb.Tid
		for i := 0; i < nobj; i += 1000 {
			var ops []op
			for _, oid := range oids[i : i+1000] {
				ops = append(ops, store(oid, 0, data))
			}
			tids = append(tids, commit(b, stor, ops...))
		}
		head := tids[len(tids)-1]
		for _, bc := range []struct {
			name string
			xid  func(r *rand.Rand) zodb.Xid
		}{
			{"hot", func(*rand.Rand) zodb.Xid { return zodb.Xid{Oid: oids[0], At: head} }},
			{"random", func(r *rand.Rand) zodb.Xid { return zodb.Xid{Oid: oids[r.IntN(nobj)], At: head} }},
			{"old", func(r *rand.Rand) zodb.Xid {
				i := r.IntN(nobj)
				return zodb.Xid{Oid: oids[i], At: tids[i/1000+r.IntN(len(tids)-i/1000)]}
			}},
		} {
			b.Run(bc.name, func(b *testing.B) {
				r := rand.New(rand.NewPCG(1, 2))
				b.ReportAllocs()
				for b.Loop() {
					xid := bc.xid(r)
					if _, _, _, err := stor.Load(ctx, xid); err != nil {
						b.Fatalf("load %v: %v", xid, err)
					}
				}
			})
		}
	})
	b.Run("Commit", func(b *testing.B) {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%dx100B", n), func(b *testing.B) {
				stor := openURL(b, newURL(b), nil)
				ctx := context.Background()
				oids, err := stor.NewOids(ctx, n)
				if err != nil {
					b.Fatal(err)
				}
				serials := make([]zodb.Tid, n)
				ops := make([]op, n)
				b.ReportAllocs()
				for b.Loop() {
					for i, oid := range oids {
						ops[i] = store(oid, serials[i], data)
					}
					tid, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, ops...)
					if err != nil {
						b.Fatal(err)
					}
					for i := range serials {
						serials[i] = tid
					}
				}
			})
		}
	})
	b.Run("NewOid", func(b *testing.B) {
		stor := openURL(b, newURL(b), nil)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := stor.NewOid(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
