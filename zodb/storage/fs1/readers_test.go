package fs1

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// TestReadersWithWriter runs loaders and iterators on one handle while a
// writer commits through it: every load at a snapshot sees exactly the
// revision committed up to it, and no reader sees a transaction that is
// not finished.
func TestReadersWithWriter(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "Data.fs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	const nobj, ntxn = 4, 150
	// Transaction i writes "i" into every object, so a snapshot at the
	// tid of transaction i must show "i" everywhere.
	var mu sync.Mutex
	written := map[zodb.Tid]int{}
	serial := make([]zodb.Tid, nobj)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 1; i <= ntxn; i++ {
			txn, err := s.Begin(ctx, zodb.TxnMeta{})
			if err != nil {
				t.Error(err)
				return
			}
			for oid := range nobj {
				if err := txn.Store(ctx, zodb.Oid(oid), serial[oid], fmt.Appendf(nil, "%d", i)); err != nil {
					t.Error(err)
					return
				}
			}
			if _, err := txn.Vote(ctx); err != nil {
				t.Error(err)
				return
			}
			tid, err := txn.Finish(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			for oid := range nobj {
				serial[oid] = tid
			}
			mu.Lock()
			written[tid] = i
			mu.Unlock()
		}
	}()
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				at, err := s.LastTid(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if at == 0 {
					continue
				}
				var want string
				for oid := range nobj {
					data, ser, _, err := s.Load(ctx, zodb.Xid{Oid: zodb.Oid(oid), At: at})
					if err != nil {
						t.Errorf("load %d@%v: %v", oid, at, err)
						return
					}
					if ser != at {
						t.Errorf("load %d@%v: serial %v", oid, at, ser)
						return
					}
					if want == "" {
						want = string(data)
					} else if string(data) != want {
						t.Errorf("snapshot %v mixes %q and %q", at, want, data)
						return
					}
				}
				// Iteration up to the snapshot ends with it.
				it := s.Iterate(ctx, at, zodb.TidMax)
				info, _, err := it.NextTxn(ctx)
				if err != nil || info.Tid != at {
					t.Errorf("iterate from %v: %v %v", at, info, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(written) != ntxn {
		t.Fatalf("%d transactions written, want %d", len(written), ntxn)
	}
	for tid, i := range written {
		data, _, _, err := s.Load(ctx, zodb.Xid{Oid: 0, At: tid})
		if err != nil || string(data) != fmt.Sprint(i) {
			t.Errorf("load 0@%v: %q %v, want %d", tid, data, err, i)
		}
	}
}
