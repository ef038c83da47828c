package fs1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// BenchmarkLoadRandom loads a random object of btrees.fs at the head, the
// index being in memory.
func BenchmarkLoadRandom(b *testing.B) {
	ctx := context.Background()
	s := openRO(b, filepath.Join(dataDir(), "btrees.fs"))
	oids := s.index.Oids()
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		oid := oids[r.IntN(len(oids))]
		if _, _, _, err := s.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax}); err != nil {
			var e *zodb.NoDataError
			if !errors.As(err, &e) {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkIterate iterates over all transactions and records of
// btrees.fs, data included.
func BenchmarkIterate(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(dataDir(), "btrees.fs")
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	s := openRO(b, path)
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	for b.Loop() {
		it := s.Iterate(ctx, 0, zodb.TidMax)
		for {
			_, dit, err := it.NextTxn(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := dit.NextData(ctx); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// BenchmarkCommit commits transactions of n objects of 100 bytes, with
// fsync.
func BenchmarkCommit(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("%dx100B", n), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, filepath.Join(b.TempDir(), "Data.fs"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			oids, _ := s.NewOids(ctx, n)
			serials := make([]zodb.Tid, n)
			data := bytes.Repeat([]byte("x"), 100)
			b.ReportAllocs()
			for b.Loop() {
				txn, err := s.Begin(ctx, zodb.TxnMeta{})
				if err != nil {
					b.Fatal(err)
				}
				for i, oid := range oids {
					if err := txn.Store(ctx, oid, serials[i], data); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := txn.Vote(ctx); err != nil {
					b.Fatal(err)
				}
				tid, err := txn.Finish(ctx)
				if err != nil {
					b.Fatal(err)
				}
				for i := range serials {
					serials[i] = tid
				}
			}
		})
	}
}

// BenchmarkIndexDecode decodes an index of 1M objects.
func BenchmarkIndexDecode(b *testing.B) {
	x := NewIndex()
	for i := 0; i < 1_000_000; i++ {
		x.Set(zodb.Oid(i), int64(100+i*64))
	}
	x.TopPos = 100 + 1_000_000*64
	var buf bytes.Buffer
	x.WriteTo(&buf)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeIndex(buf.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
}
