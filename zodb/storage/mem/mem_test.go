package mem_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/mem"
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

func open(t *testing.T, url string, opt *zodb.OpenOptions) *zodb.Storage {
	t.Helper()
	stor, err := zodb.Open(t.Context(), url, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stor.Close() })
	return stor
}

func commit(t *testing.T, stor *zodb.Storage, oid zodb.Oid, serial zodb.Tid, data string) zodb.Tid {
	t.Helper()
	ctx := t.Context()
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Store(ctx, oid, serial, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

// One transaction at a time: Begin waits for the commit lock, and gives up
// with its context or when the storage closes.
func TestCommitLock(t *testing.T) {
	stor := open(t, "mem://", nil)
	ctx := t.Context()
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}

	cctx, cancel := context.WithCancel(ctx)
	begun := make(chan error, 1)
	go func() {
		_, err := stor.Begin(cctx, zodb.TxnMeta{})
		begun <- err
	}()
	cancel()
	if err := <-begun; !errors.Is(err, context.Canceled) {
		t.Errorf("begin with a cancelled context while another transaction runs: %v", err)
	}

	// A waiting Begin gets the lock when the transaction ends.
	go func() {
		txn2, err := stor.Begin(ctx, zodb.TxnMeta{})
		if err == nil {
			err = txn2.Abort(ctx)
		}
		begun <- err
	}()
	if err := txn.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-begun; err != nil {
		t.Errorf("begin after abort: %v", err)
	}

	// A Begin waiting when the storage closes fails with ErrClosed.
	txn, err = stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := stor.Begin(ctx, zodb.TxnMeta{})
		begun <- err
	}()
	stor.Close()
	if err := <-begun; !errors.Is(err, zodb.ErrClosed) {
		t.Errorf("begin waiting during close: %v, want ErrClosed", err)
	}
	if err := txn.Store(ctx, 1, 0, []byte("x")); !errors.Is(err, zodb.ErrClosed) {
		t.Errorf("store after close: %v, want ErrClosed", err)
	}
}

func TestNamed(t *testing.T) {
	ctx := t.Context()
	url := newName(t)
	if _, err := zodb.Open(ctx, url, &zodb.OpenOptions{NoCreate: true}); err == nil {
		t.Errorf("open of a missing named storage with NoCreate: no error")
	}
	if _, err := zodb.Open(ctx, "mem://", &zodb.OpenOptions{NoCreate: true}); err == nil {
		t.Errorf("open of mem:// with NoCreate: no error")
	}
	a := open(t, url, nil)
	if a.URL() != url {
		t.Errorf("URL %q, want %q", a.URL(), url)
	}
	tid := commit(t, a, 1, 0, "v1")
	a.Close()
	b := open(t, url, &zodb.OpenOptions{NoCreate: true})
	if last, err := b.LastTid(ctx); err != nil || last != tid {
		t.Errorf("reopened: lastTid %v %v, want %v", last, err, tid)
	}
	// mem:// storages are independent.
	c, d := open(t, "mem://", nil), open(t, "mem://", nil)
	commit(t, c, 1, 0, "c")
	if _, _, _, err := d.Load(ctx, zodb.Xid{Oid: 1, At: zodb.TidMax}); err == nil {
		t.Errorf("mem:// storages share data")
	}
}

func TestDriverErrors(t *testing.T) {
	stor := open(t, "mem://", nil)
	ctx := t.Context()
	t1 := commit(t, stor, 1, 0, "not a pickle")

	if err := stor.Pack(ctx, 0, false); err == nil {
		t.Errorf("pack at tid 0: no error")
	}
	// The garbage collector needs pickles to find references.
	root := storagetest.Mapping(map[string]any{"x": storagetest.Ref(1, "pkg.X")})
	commit(t, stor, 0, 0, string(root))
	if err := stor.Pack(ctx, zodb.TidMax, true); err == nil {
		t.Errorf("pack with gc of a record that is not a pickle: no error")
	}

	for _, tc := range []struct {
		name string
		meta zodb.TxnMeta
		do   func(txn zodb.ITxn) error
	}{
		{"store nil data", zodb.TxnMeta{}, func(txn zodb.ITxn) error { return txn.Store(ctx, 2, 0, nil) }},
		{"restore from a missing revision", zodb.TxnMeta{}, func(txn zodb.ITxn) error { return txn.Restore(ctx, 1, nil, t1+1) }},
	} {
		txn, err := stor.Begin(ctx, tc.meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.do(txn); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
		txn.Abort(ctx)
	}
	if _, err := stor.Begin(ctx, zodb.TxnMeta{Status: 'x'}); err == nil {
		t.Errorf("begin with status 'x': no error")
	}
}

func TestSize(t *testing.T) {
	ctx := context.Background()
	stor, err := zodb.Open(ctx, "mem://", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	size := func() int64 {
		n, err := stor.Driver().(*mem.Driver).Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := size(); n != 4 {
		t.Fatalf("empty: size %d, want 4", n)
	}
	txn, err := stor.Begin(ctx, zodb.TxnMeta{User: []byte("u")})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Store(ctx, 1, 0, []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	// As in a FileStorage: 23+1 header, 42+5 record, 8 trailer.
	if n := size(); n != 4+24+47+8 {
		t.Errorf("size %d, want %d", n, 4+24+47+8)
	}
}
