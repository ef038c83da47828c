package zodb_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/mem"
)

// failvote:// is mem:// whose transactions fail at vote while failVote is
// set.
var failVote atomic.Bool

func init() {
	zodb.RegisterDriver("failvote", func(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
		mu := *u
		mu.Scheme = "mem"
		drv, at, err := mem.OpenDriver(ctx, &mu, opt)
		if err != nil {
			return nil, 0, err
		}
		return failVoteDriver{drv}, at, nil
	})
}

type failVoteDriver struct{ zodb.IStorageDriver }

func (d failVoteDriver) URL() string { return "failvote:" + d.IStorageDriver.URL() }

func (d failVoteDriver) Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error) {
	t, err := d.IStorageDriver.Begin(ctx, meta)
	if err != nil {
		return nil, err
	}
	return failVoteTxn{t}, nil
}

type failVoteTxn struct{ zodb.ITxn }

func (t failVoteTxn) Vote(ctx context.Context) ([]zodb.Oid, error) {
	if failVote.Load() {
		return nil, errors.New("vote refused (test)")
	}
	return t.ITxn.Vote(ctx)
}

func openDB(t testing.TB, zurl string, opt *zodb.DBOptions) *zodb.DB {
	t.Helper()
	ctx := context.Background()
	stor, err := zodb.Open(ctx, zurl, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := zodb.NewDB(stor, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
		if err := stor.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

// inTxn runs f in a new transaction on a connection of db and commits.
func inTxn(t testing.TB, db *zodb.DB, f func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping)) error {
	t.Helper()
	txn, ctx := transaction.New(context.Background())
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := conn.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f(ctx, conn, r.(*zodb.PersistentMapping))
	return txn.Commit(ctx)
}

func mustGet[T zodb.IPersistent](t testing.TB, ctx context.Context, m *zodb.PersistentMapping, key string) T {
	t.Helper()
	v, ok := m.Get(key)
	if !ok {
		t.Fatalf("root has no %q", key)
	}
	obj, ok := v.(T)
	if !ok {
		t.Fatalf("root[%q] is %T", key, v)
	}
	if err := obj.PActivate(ctx); err != nil {
		t.Fatal(err)
	}
	return obj
}

func testCommitAndReload(t *testing.T, zurl string) {
	db := openDB(t, zurl, nil)
	err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := zodb.NewPersistentMapping()
		m.Set("n", int64(1))
		l := zodb.NewPersistentList()
		l.Append("a")
		l.Append(m) // a reference to a new object: added implicitly
		root.Set("m", m)
		root.Set("l", l)
	})
	if err != nil {
		t.Fatal(err)
	}
	var serial zodb.Tid
	err = inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
		l := mustGet[*zodb.PersistentList](t, ctx, root, "l")
		if n, _ := m.Get("n"); n != int64(1) {
			t.Errorf("m[n] = %v", n)
		}
		if len(l.Data.Items) != 2 || l.Data.Items[0] != "a" || l.Data.Items[1] != zodb.IPersistent(m) {
			t.Errorf("l = %s (m is %p)", zodb.PyRepr(l.Data), m)
		}
		serial = m.PSerial()
		m.Set("n", int64(2))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
		if n, _ := m.Get("n"); n != int64(2) {
			t.Errorf("m[n] = %v after second commit", n)
		}
		if m.PSerial() <= serial {
			t.Errorf("serial %v not after %v", m.PSerial(), serial)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAppCommitMem(t *testing.T) { testCommitAndReload(t, "mem://") }

func TestAppCommitFS1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Data.fs")
	t.Run("commit", func(t *testing.T) { testCommitAndReload(t, path) })
	// and after reopening the file
	db := openDB(t, path, nil)
	err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
		if n, _ := m.Get("n"); n != int64(2) {
			t.Errorf("m[n] = %v after reopening", n)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAppMVCC: a connection keeps seeing its snapshot while others commit;
// the next transaction sees the new state.
func TestAppMVCC(t *testing.T) {
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		root.Set("a", zodb.NewPersistentMapping())
		root.Set("b", zodb.NewPersistentMapping())
	}); err != nil {
		t.Fatal(err)
	}
	setBoth := func(v int64) {
		t.Helper()
		if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
			mustGet[*zodb.PersistentMapping](t, ctx, root, "a").Set("v", v)
			mustGet[*zodb.PersistentMapping](t, ctx, root, "b").Set("v", v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	setBoth(1)

	// reader: loads a, then a commit happens, then loads b.
	txn, ctx := transaction.New(context.Background())
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := conn.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root := r.(*zodb.PersistentMapping)
	a := mustGet[*zodb.PersistentMapping](t, ctx, root, "a")
	setBoth(2) // committed by another connection
	b := mustGet[*zodb.PersistentMapping](t, ctx, root, "b")
	va, _ := a.Get("v")
	vb, _ := b.Get("v")
	if va != int64(1) || vb != int64(1) {
		t.Errorf("snapshot broken: a.v=%v b.v=%v, want 1 1", va, vb)
	}
	// an object first loaded after the commit is loaded at the snapshot too
	b.PInvalidate()
	if err := b.PActivate(ctx); err != nil {
		t.Fatal(err)
	}
	if vb, _ := b.Get("v"); vb != int64(1) {
		t.Errorf("reload in snapshot: b.v=%v, want 1", vb)
	}
	if err := txn.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	// the connection, reused from the pool, sees the commit
	if err := inTxn(t, db, func(ctx context.Context, conn2 *zodb.Connection, root *zodb.PersistentMapping) {
		if conn2 != conn {
			t.Logf("pool gave another connection")
		}
		a := mustGet[*zodb.PersistentMapping](t, ctx, root, "a")
		b := mustGet[*zodb.PersistentMapping](t, ctx, root, "b")
		va, _ := a.Get("v")
		vb, _ := b.Get("v")
		if va != int64(2) || vb != int64(2) {
			t.Errorf("after invalidation: a.v=%v b.v=%v, want 2 2", va, vb)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAppMVCCConcurrent: writers change a and b together while readers
// check that they never see them differ, through pooled connections whose
// caches must be invalidated right.
func TestAppMVCCConcurrent(t *testing.T) {
	db := openDB(t, "mem://", &zodb.DBOptions{PoolSize: 2})
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		for _, k := range []string{"a", "b"} {
			m := zodb.NewPersistentMapping()
			m.Set("v", int64(0))
			root.Set(k, m)
		}
	}); err != nil {
		t.Fatal(err)
	}
	const writes = 100
	var wg sync.WaitGroup
	var lastCommitted atomic.Int64
	errc := make(chan error, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(1); i <= writes; i++ {
			err := transaction.Retry(context.Background(), 10, func(ctx context.Context, txn *transaction.Transaction) error {
				conn, err := db.Open(ctx)
				if err != nil {
					return err
				}
				r, err := conn.Root(ctx)
				if err != nil {
					return err
				}
				for _, k := range []string{"a", "b"} {
					v, _ := r.(*zodb.PersistentMapping).Get(k)
					m := v.(*zodb.PersistentMapping)
					if err := m.PActivate(ctx); err != nil {
						return err
					}
					m.Set("v", i)
				}
				return nil
			})
			if err != nil {
				errc <- err
				return
			}
			lastCommitted.Store(i)
		}
	}()
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				floor := lastCommitted.Load()
				txn, ctx := transaction.New(context.Background())
				conn, err := db.Open(ctx)
				if err != nil {
					errc <- err
					return
				}
				r, err := conn.Root(ctx)
				if err != nil {
					errc <- err
					return
				}
				var vals [2]int64
				for i, k := range []string{"a", "b"} {
					v, _ := r.(*zodb.PersistentMapping).Get(k)
					m := v.(*zodb.PersistentMapping)
					if err := m.PActivate(ctx); err != nil {
						errc <- err
						return
					}
					x, _ := m.Get("v")
					vals[i] = x.(int64)
					runtime.Gosched()
				}
				if err := txn.Abort(ctx); err != nil {
					errc <- err
					return
				}
				if vals[0] != vals[1] {
					errc <- fmt.Errorf("mixed snapshot: a=%d b=%d", vals[0], vals[1])
					return
				}
				if vals[0] < floor {
					errc <- fmt.Errorf("stale: saw %d after %d was committed", vals[0], floor)
					return
				}
				if vals[0] == writes {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestAppConflict: two transactions change the same object; the second
// commit fails with a ConflictError, which Retry retries.
func TestAppConflict(t *testing.T) {
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		root.Set("m", zodb.NewPersistentMapping())
	}); err != nil {
		t.Fatal(err)
	}
	txn1, ctx1 := transaction.New(context.Background())
	conn1, err := db.Open(ctx1)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := conn1.Root(ctx1)
	m1 := mustGet[*zodb.PersistentMapping](t, ctx1, r1.(*zodb.PersistentMapping), "m")

	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		mustGet[*zodb.PersistentMapping](t, ctx, root, "m").Set("x", "second")
	}); err != nil {
		t.Fatal(err)
	}
	m1.Set("x", "first")
	err = txn1.Commit(ctx1)
	var conflict *zodb.ConflictError
	if !errors.As(err, &conflict) {
		t.Fatalf("commit: %v, want a ConflictError", err)
	}
	if conflict.Oid != m1.POid() {
		t.Errorf("conflict on %v, want %v", conflict.Oid, m1.POid())
	}
	if !transaction.IsTransient(err) {
		t.Errorf("conflict is not transient")
	}
	if txn1.Status() != transaction.Aborted {
		t.Errorf("status %v after failed commit", txn1.Status())
	}

	attempts := 0
	err = transaction.Retry(context.Background(), 3, func(ctx context.Context, txn *transaction.Transaction) error {
		attempts++
		conn, err := db.Open(ctx)
		if err != nil {
			return err
		}
		r, _ := conn.Root(ctx)
		m := mustGet[*zodb.PersistentMapping](t, ctx, r.(*zodb.PersistentMapping), "m")
		m.Set("x", "retried")
		if attempts == 1 { // someone commits in between
			if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
				mustGet[*zodb.PersistentMapping](t, ctx, root, "m").Set("x", "meanwhile")
			}); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if err != nil || attempts != 2 {
		t.Fatalf("Retry: %v after %d attempts, want success after 2", err, attempts)
	}
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		if x, _ := mustGet[*zodb.PersistentMapping](t, ctx, root, "m").Get("x"); x != "retried" {
			t.Errorf("x = %v", x)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAppReadConflict: an object that does not exist in the snapshot
// cannot be loaded.
func TestAppReadConflict(t *testing.T) {
	db := openDB(t, "mem://", nil)
	txn, ctx := transaction.New(context.Background())
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var oid zodb.Oid
	if err := inTxn(t, db, func(ctx context.Context, c *zodb.Connection, root *zodb.PersistentMapping) {
		m := zodb.NewPersistentMapping()
		root.Set("new", m)
		if err := c.Add(ctx, m); err != nil {
			t.Fatal(err)
		}
		oid = m.POid()
	}); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Get(ctx, oid)
	var rc *zodb.ReadConflictError
	if !errors.As(err, &rc) {
		t.Errorf("get of an object created after the snapshot: %v, want ReadConflictError", err)
	}
	_ = txn.Abort(ctx)
}

// TestAppMultiDB: a transaction changing two databases commits in both,
// or, when one refuses at vote, in neither.
func TestAppMultiDB(t *testing.T) {
	dbs := map[string]*zodb.DB{}
	main := openDB(t, "mem://", &zodb.DBOptions{Name: "main", Databases: dbs})
	other := openDB(t, "failvote://", &zodb.DBOptions{Name: "other", Databases: dbs})
	ctx0 := context.Background()

	change := func(v string) error {
		txn, ctx := transaction.New(ctx0)
		conn, err := main.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		oconn, err := conn.GetConnection(ctx, "other")
		if err != nil {
			t.Fatal(err)
		}
		r, _ := conn.Root(ctx)
		or, _ := oconn.Root(ctx)
		root, oroot := r.(*zodb.PersistentMapping), or.(*zodb.PersistentMapping)
		var om *zodb.PersistentMapping
		if x, ok := oroot.Get("m"); ok {
			om = x.(*zodb.PersistentMapping)
			if err := om.PActivate(ctx); err != nil {
				t.Fatal(err)
			}
		} else {
			om = zodb.NewPersistentMapping()
			oroot.Set("m", om)
		}
		om.Set("v", v)
		root.Set("v", v)
		root.Set("xref", om) // cross-database reference
		return txn.Commit(ctx)
	}
	check := func(want string) {
		t.Helper()
		txn, ctx := transaction.New(ctx0)
		defer txn.Abort(ctx)
		conn, err := main.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := conn.Root(ctx)
		root := r.(*zodb.PersistentMapping)
		if v, _ := root.Get("v"); v != want {
			t.Errorf("main: v = %v, want %v", v, want)
		}
		om := mustGet[*zodb.PersistentMapping](t, ctx, root, "xref")
		if om.PJar().DB() != other {
			t.Errorf("xref is in database %s", om.PJar().DB().Name())
		}
		if v, _ := om.Get("v"); v != want {
			t.Errorf("other (through xref): v = %v, want %v", v, want)
		}
	}

	if err := change("one"); err != nil {
		t.Fatal(err)
	}
	check("one")

	mainHead, _ := main.Storage().LastTid(ctx0)
	otherHead, _ := other.Storage().LastTid(ctx0)
	failVote.Store(true)
	err := change("two")
	failVote.Store(false)
	if err == nil {
		t.Fatal("commit succeeded though other refused to vote")
	}
	h1, _ := main.Storage().LastTid(ctx0)
	h2, _ := other.Storage().LastTid(ctx0)
	if h1 != mainHead || h2 != otherHead {
		t.Errorf("a database committed: heads %v %v, were %v %v", h1, h2, mainHead, otherHead)
	}
	check("one")

	if err := change("three"); err != nil {
		t.Fatal(err)
	}
	check("three")
}

// TestAppUnknownClass: an object of a class nobody registered loads as
// Broken and is stored back with its class and its other attributes.
func TestAppUnknownClass(t *testing.T) {
	db := openDB(t, "mem://", nil)
	ctx0 := context.Background()
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {}); err != nil {
		t.Fatal(err)
	}
	// write an object of class app.Thing by hand, referred to from root
	stor := db.Storage()
	oid, err := stor.NewOid(ctx0)
	if err != nil {
		t.Fatal(err)
	}
	state := zodb.NewPyDict()
	state.Set("name", "thing")
	state.Set("when", &zodb.PyReduce{Callable: zodb.PyGlobal{Module: "datetime", Name: "date"}, Args: zodb.PyTuple{zodb.PyBytes("\x07\xcf\x0c\x1f")}})
	rec, err := zodb.EncodeRecord(zodb.PyTuple{zodb.PyGlobal{Module: "app", Name: "Thing"}, zodb.PyTuple{"k"}}, state)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := stor.LastTid(ctx0)
	rootData, rootSerial, _, err := stor.Load(ctx0, zodb.Xid{Oid: 0, At: head})
	if err != nil {
		t.Fatal(err)
	}
	_, rootState, err := zodb.DecodeRecord(rootData)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := rootState.(*zodb.PyDict).Get("data")
	data.(*zodb.PyDict).Set("thing", &zodb.PyRef{Pid: zodb.PyBytes(oid.Bytes())})
	rootRec, err := zodb.EncodeRecord(zodb.PyGlobal{Module: "persistent.mapping", Name: "PersistentMapping"}, rootState)
	if err != nil {
		t.Fatal(err)
	}
	stxn, err := stor.Begin(ctx0, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := stxn.Store(ctx0, oid, 0, rec); err != nil {
		t.Fatal(err)
	}
	if err := stxn.Store(ctx0, 0, rootSerial, rootRec); err != nil {
		t.Fatal(err)
	}
	if _, err := stxn.Vote(ctx0); err != nil {
		t.Fatal(err)
	}
	if _, err := stxn.Finish(ctx0); err != nil {
		t.Fatal(err)
	}

	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		b := mustGet[*zodb.Broken](t, ctx, root, "thing")
		if b.Class.String() != "app.Thing" {
			t.Errorf("class %s", b.Class)
		}
		b.State.(*zodb.PyDict).Set("name", "renamed")
		b.PModify()
		root.Set("again", b) // referred to again: bare oid, as its class has newargs
	}); err != nil {
		t.Fatal(err)
	}
	head, _ = stor.LastTid(ctx0)
	got, _, _, err := stor.Load(ctx0, zodb.Xid{Oid: oid, At: head})
	if err != nil {
		t.Fatal(err)
	}
	state.Set("name", "renamed")
	want, _ := zodb.EncodeRecord(zodb.PyTuple{zodb.PyGlobal{Module: "app", Name: "Thing"}, zodb.PyTuple{"k"}}, state)
	if string(got) != string(want) {
		t.Errorf("stored again:\ngot  %q\nwant %q", got, want)
	}
	rootData, _, _, _ = stor.Load(ctx0, zodb.Xid{Oid: 0, At: head})
	_, rootState, _ = zodb.DecodeRecord(rootData)
	data, _ = rootState.(*zodb.PyDict).Get("data")
	ref, _ := data.(*zodb.PyDict).Get("again")
	if r, ok := ref.(*zodb.PyRef); !ok || !zodb.PyEqual(r.Pid, zodb.PyBytes(oid.Bytes())) {
		t.Errorf("reference written as %s, want a bare oid", zodb.PyRepr(ref))
	}
}

// TestAppCacheIsWeak: objects nobody uses leave the live cache.
func TestAppCacheIsWeak(t *testing.T) {
	db := openDB(t, "mem://", &zodb.DBOptions{PoolSize: 1})
	const n = 200
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		l := zodb.NewPersistentList()
		for i := range n {
			m := zodb.NewPersistentMapping()
			m.Set("i", int64(i))
			l.Append(m)
		}
		root.Set("l", l)
	}); err != nil {
		t.Fatal(err)
	}
	var conn *zodb.Connection
	if err := inTxn(t, db, func(ctx context.Context, c *zodb.Connection, root *zodb.PersistentMapping) {
		conn = c
		l := mustGet[*zodb.PersistentList](t, ctx, root, "l")
		for _, x := range l.Data.Items {
			if err := x.(zodb.IPersistent).PActivate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if conn.CacheLen() < n {
			t.Errorf("cache holds %d objects, want ≥ %d", conn.CacheLen(), n)
		}
		l.PDeactivate() // drops the references to the items
		root.PDeactivate()
	}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if live := zodb.CacheLive(conn); live > n/2 {
		t.Errorf("%d objects still live in the cache after GC, want most of %d gone", live, n)
	}
}

// TestAppRootCreation: a new database gets the root ZODB creates, byte
// for byte, in a transaction described as ZODB describes it.
func TestAppRootCreation(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {}); err != nil {
		t.Fatal(err)
	}
	ours, _, _, err := db.Storage().Load(ctx, zodb.Xid{Oid: 0, At: zodb.TidMax})
	if err != nil {
		t.Fatal(err)
	}
	it := db.Storage().Iterate(ctx, 0, zodb.TidMax)
	info, _, err := it.NextTxn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(info.Description) != "initial database creation" {
		t.Errorf("first transaction %q", info.Description)
	}
	compared := 0
	for _, path := range goldenFiles(t) {
		var fsj fsJSON
		readJSON(t, path+".json", &fsj)
		if len(fsj.Transactions) == 0 || fsj.Transactions[0].Description != "initial database creation" {
			continue
		}
		stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		at, _ := zodb.ParseTid(fsj.Transactions[0].Tid)
		theirs, _, _, err := stor.Load(ctx, zodb.Xid{Oid: 0, At: at})
		stor.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(theirs) != string(ours) {
			t.Errorf("%s: root record\ngot  %q\nwant %q", path, ours, theirs)
		}
		compared++
	}
	if compared == 0 {
		t.Error("no reference database starts with the root creation")
	}
}

// TestAppIdleConnectionEvents: a connection idle in the pool while many
// transactions commit keeps a bounded queue, and still sees them all.
func TestAppIdleConnectionEvents(t *testing.T) {
	db := openDB(t, "mem://", &zodb.DBOptions{PoolSize: 1})
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		root.Set("m", zodb.NewPersistentMapping())
	}); err != nil {
		t.Fatal(err)
	}
	// keep a reference to the idle connection's object, loaded
	var m *zodb.PersistentMapping
	var conn1 *zodb.Connection
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		conn1 = conn
		m = mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
	}); err != nil {
		t.Fatal(err)
	}
	// commits by another connection while conn1 is idle: a second
	// connection must be opened while conn1 is busy, so commit through
	// the storage directly
	stor := db.Storage()
	ctx := context.Background()
	for i := range 3000 {
		head, _ := stor.LastTid(ctx)
		data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: m.POid(), At: head})
		if err != nil {
			t.Fatal(err)
		}
		desc, st, _ := zodb.DecodeRecord(data)
		d, _ := st.(*zodb.PyDict).Get("data")
		d.(*zodb.PyDict).Set("i", int64(i))
		rec, _ := zodb.EncodeRecord(desc, st)
		stxn, err := stor.Begin(ctx, zodb.TxnMeta{})
		if err != nil {
			t.Fatal(err)
		}
		if err := stxn.Store(ctx, m.POid(), serial, rec); err != nil {
			t.Fatal(err)
		}
		if _, err := stxn.Vote(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := stxn.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := zodb.PendingLen(conn1); n > 1100 {
		t.Errorf("idle connection queues %d events", n)
	}
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		if conn != conn1 {
			t.Fatal("pool gave another connection")
		}
		m2 := mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
		if i, _ := m2.Get("i"); i != int64(2999) {
			t.Errorf("i = %v, want 2999", i)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAppReadCurrent: a transaction that depends on an object it did not
// change fails if another transaction changed it.
func TestAppReadCurrent(t *testing.T) {
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		root.Set("a", zodb.NewPersistentMapping())
		root.Set("b", zodb.NewPersistentMapping())
	}); err != nil {
		t.Fatal(err)
	}
	txn, ctx := transaction.New(context.Background())
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := conn.Root(ctx)
	a := mustGet[*zodb.PersistentMapping](t, ctx, r.(*zodb.PersistentMapping), "a")
	b := mustGet[*zodb.PersistentMapping](t, ctx, r.(*zodb.PersistentMapping), "b")
	if err := conn.ReadCurrent(a); err != nil {
		t.Fatal(err)
	}
	b.Set("x", "from a")
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		mustGet[*zodb.PersistentMapping](t, ctx, root, "a").Set("y", 1)
	}); err != nil {
		t.Fatal(err)
	}
	err = txn.Commit(ctx)
	var rc *zodb.ReadConflictError
	if !errors.As(err, &rc) || rc.Oid != a.POid() {
		t.Errorf("commit: %v, want a ReadConflictError on %v", err, a.POid())
	}
}

// TestAppCacheMinimize: loaded objects become ghosts and load again.
func TestAppCacheMinimize(t *testing.T) {
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := zodb.NewPersistentMapping()
		m.Set("k", "v")
		root.Set("m", m)
	}); err != nil {
		t.Fatal(err)
	}
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m := mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
		conn.CacheMinimize()
		if m.PState() != zodb.Ghost || m.Data != nil {
			t.Errorf("after CacheMinimize: %v, data %v", m.PState(), m.Data)
		}
		if err := m.PActivate(ctx); err != nil {
			t.Fatal(err)
		}
		if v, _ := m.Get("k"); v != "v" {
			t.Errorf("k = %v", v)
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAppSavepoint: rolling back to a savepoint restores the changed
// objects as they were and drops the objects added since.
func TestAppSavepoint(t *testing.T) {
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		root.Set("m", zodb.NewPersistentMapping())
	}); err != nil {
		t.Fatal(err)
	}
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		txn := transaction.Current(ctx)
		m := mustGet[*zodb.PersistentMapping](t, ctx, root, "m")
		m.Set("k", "before")
		kept := zodb.NewPersistentMapping()
		root.Set("kept", kept)
		sp, err := txn.Savepoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Set("k", "after")
		kept.Set("x", 1)
		dropped := zodb.NewPersistentMapping()
		root.Set("dropped", dropped)
		if err := conn.Add(ctx, dropped); err != nil {
			t.Fatal(err)
		}
		for range 2 { // a savepoint can be rolled back to again
			if err := sp.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if v, _ := m.Get("k"); v != "before" {
				t.Errorf("m[k] = %v after rollback", v)
			}
			if _, ok := root.Get("dropped"); ok {
				t.Error("root still refers to the object added after the savepoint")
			}
			if dropped.PJar() != nil {
				t.Error("object added after the savepoint is still in the connection")
			}
			m.Set("k", "again")
		}
		m.Set("k", "final")
	}); err != nil {
		t.Fatal(err)
	}
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		if v, _ := mustGet[*zodb.PersistentMapping](t, ctx, root, "m").Get("k"); v != "final" {
			t.Errorf("m[k] = %v", v)
		}
		kept := mustGet[*zodb.PersistentMapping](t, ctx, root, "kept")
		if _, ok := kept.Get("x"); ok {
			t.Error("change after the savepoint was committed")
		}
		if _, ok := root.Get("dropped"); ok {
			t.Error("object added after the savepoint was committed")
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAppUseAfterTransaction: objects of a connection whose transaction
// ended cannot be loaded or changed.
func TestAppUseAfterTransaction(t *testing.T) {
	db := openDB(t, "mem://", nil)
	var m *zodb.PersistentMapping
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		m = root
	}); err != nil {
		t.Fatal(err)
	}
	m.PDeactivate()
	if err := m.PActivate(context.Background()); err == nil {
		t.Error("activation after the transaction ended succeeded")
	}
	defer func() {
		if recover() == nil {
			t.Error("PModify after the transaction ended did not panic")
		}
	}()
	// an up-to-date object of an ended transaction
	var n *zodb.PersistentMapping
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
		n = root
	}); err != nil {
		t.Fatal(err)
	}
	n.PModify()
}

// TestAppCorruptRecords: records that make no sense give errors naming
// the object, never a panic.
func TestAppCorruptRecords(t *testing.T) {
	db := openDB(t, "mem://", nil)
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {}); err != nil {
		t.Fatal(err)
	}
	pm := zodb.PyGlobal{Module: "persistent.mapping", Name: "PersistentMapping"}
	enc := func(desc, state any) []byte {
		b, err := zodb.EncodeRecord(desc, state)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	dataDict := func(v any) *zodb.PyDict {
		d := zodb.NewPyDict()
		d.Set("data", v)
		return d
	}
	refIn := func(pid any) *zodb.PyDict {
		d := zodb.NewPyDict()
		d.Set("r", &zodb.PyRef{Pid: pid})
		return dataDict(d)
	}
	records := map[string][]byte{
		"truncated":           enc(pm, dataDict(zodb.NewPyDict()))[:30],
		"class is an int":     enc(int64(1), zodb.NewPyDict()),
		"state is a list":     enc(pm, &zodb.PyList{}),
		"data is a list":      enc(pm, dataDict(&zodb.PyList{})),
		"short oid":           enc(pm, refIn(zodb.PyTuple{zodb.PyBytes("abc"), pm})),
		"unknown database":    enc(pm, refIn(&zodb.PyList{Items: []any{"m", zodb.PyTuple{"nowhere", zodb.PyBytes("\x00\x00\x00\x00\x00\x00\x00\x01"), pm}}})),
		"reference is a str":  enc(pm, refIn("not an oid")),
		"bare oid of nothing": enc(pm, refIn(zodb.PyBytes("\x00\x00\x00\x00\x00\x00\x99\x99"))),
	}
	ctx0 := context.Background()
	stor := db.Storage()
	oids := map[string]zodb.Oid{}
	stxn, err := stor.Begin(ctx0, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	for name, rec := range records {
		oid, err := stor.NewOid(ctx0)
		if err != nil {
			t.Fatal(err)
		}
		oids[name] = oid
		if err := stxn.Store(ctx0, oid, 0, rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stxn.Vote(ctx0); err != nil {
		t.Fatal(err)
	}
	if _, err := stxn.Finish(ctx0); err != nil {
		t.Fatal(err)
	}
	txn, ctx := transaction.New(ctx0)
	defer txn.Abort(ctx)
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, oid := range oids {
		obj, err := conn.Get(ctx, oid)
		if err == nil {
			t.Errorf("%s: loaded as %T", name, obj)
			continue
		}
		if !strings.Contains(err.Error(), oid.String()) {
			t.Errorf("%s: error does not name the object: %v", name, err)
		}
	}
}

// TestAppOpenAt: a historical connection sees an old state and refuses
// to commit.
func TestAppOpenAt(t *testing.T) {
	db := openDB(t, "mem://", nil)
	var tids []zodb.Tid
	for _, v := range []string{"one", "two"} {
		if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {
			root.Set("v", v)
		}); err != nil {
			t.Fatal(err)
		}
		tid, err := db.Storage().LastTid(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		tids = append(tids, tid)
	}
	for i, want := range []string{"one", "two"} {
		txn, ctx := transaction.New(context.Background())
		conn, err := db.OpenAt(ctx, tids[i])
		if err != nil {
			t.Fatal(err)
		}
		r, err := conn.Root(ctx)
		if err != nil {
			t.Fatal(err)
		}
		root := r.(*zodb.PersistentMapping)
		if v, _ := root.Get("v"); v != want {
			t.Errorf("at %v: v = %v, want %v", tids[i], v, want)
		}
		root.Set("v", "changed")
		if err := txn.Commit(ctx); err == nil {
			t.Error("commit through a historical connection succeeded")
		}
	}
}
