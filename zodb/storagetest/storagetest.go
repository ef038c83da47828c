// Package storagetest is the conformance suite of ZODB storage drivers:
// Run checks, through zodb.Open, that a driver behaves as the interfaces in
// package zodb document, and Bench measures it. Every driver runs it from
// its own package's tests, with a function that names a new, empty storage:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t testing.TB) string { return "mem://" })
//	}
//
// The suite covers what ZODB's generic storage tests cover: basic store and
// load, MVCC loads at every point of a history, history, iteration, undo,
// write and read conflicts and their resolution, misuse of two-phase
// commit, pack with garbage collection, concurrent committers, commit
// events and their ordering against LastTid and loads, read-only opening,
// and closing. Optional operations (undo, pack) a driver reports as
// zodb.ErrUnsupported are skipped with a message.
//
// The package also has helpers to build object records and transaction
// extensions pickled byte for byte as ZODB writes them (Record, Mapping,
// Ref, Counter, Pickle) and a conflict resolver for counters
// (CounterResolver).
//
// The watch tests rely on zodb.Storage taking one event at a time from the
// driver and holding it until every watcher took it: with a watcher that
// does not read, the driver cannot queue a second event, so LastTid must not
// report its transaction.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

// Option tells Run what the driver can do beyond the common contract.
type Option func(*options)

type options struct {
	shared     bool
	persistent bool
	noStatus   bool
}

// SharedHandles tells that opening the URL a second time, while the first
// handle is open, gives a second handle of the same storage, and that
// commits made through either are reported to the watchers of both
// (mem://name, NEO, ZEO). Without it the tests that need two handles are
// skipped.
func SharedHandles() Option { return func(o *options) { o.shared = true } }

// NoTxnStatus tells that the storage records every transaction as complete
// whatever status a restore gives it (NEO: its protocol has no field for the
// status). The Restore test then expects TxnComplete where it would expect
// the restored status.
func NoTxnStatus() Option { return func(o *options) { o.noStatus = true } }

// Persistent tells that what is committed is still there after Close when
// the URL is opened again (FileStorage, mem://name).
func Persistent() Option { return func(o *options) { o.persistent = true } }

// waitTimeout bounds every wait of the suite for something that must happen
// (an event, a blocked call returning): reaching it is a failure.
const waitTimeout = 20 * time.Second

var testContexts sync.Map // testing.TB → context.Context

// testContext returns the context of the calls of a test: it ends with the
// test, or after a time no call should need, so that a driver that blocks
// makes the test fail instead of hang.
func testContext(t testing.TB) context.Context {
	if ctx, ok := testContexts.Load(t); ok {
		return ctx.(context.Context)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*waitTimeout)
	testContexts.Store(t, ctx)
	t.Cleanup(func() {
		cancel()
		testContexts.Delete(t)
	})
	return ctx
}

type suite struct {
	newURL func(testing.TB) string
	options
}

type subtest struct {
	name string
	run  func(t *testing.T, s *suite)
}

var subtests = []subtest{
	{"Basic", testBasic},
	{"NewOids", testNewOids},
	{"Metadata", testMetadata},
	{"MVCC", testMVCC},
	{"Delete", testDelete},
	{"History", testHistory},
	{"Iterate", testIterate},
	{"Restore", testRestore},
	{"Conflict", testConflict},
	{"ConflictResolution", testConflictResolution},
	{"ReadConflict", testReadConflict},
	{"TPCMisuse", testTPCMisuse},
	{"Abort", testAbort},
	{"Undo", testUndo},
	{"UndoConflict", testUndoConflict},
	{"UndoLog", testUndoLog},
	{"Pack", testPack},
	{"PackGC", testPackGC},
	{"Concurrent", testConcurrent},
	{"Watch", testWatch},
	{"WatchLastTid", testWatchLastTid},
	{"WatchLoadRace", testWatchLoadRace},
	{"CloseUnblocksCommit", testCloseUnblocksCommit},
	{"ReadOnly", testReadOnly},
	{"Closed", testClosed},
	{"SharedHandles", testSharedHandles},
}

// Run runs the conformance suite. newURL returns the URL of a new, empty
// storage every time it is called (e.g. a file in t.TempDir()).
func Run(t *testing.T, newURL func(t testing.TB) string, opts ...Option) {
	s := &suite{newURL: newURL}
	for _, o := range opts {
		o(&s.options)
	}
	for _, st := range subtests {
		t.Run(st.name, func(t *testing.T) { st.run(t, s) })
	}
}

// open opens a new storage and closes it at the end of the test.
func (s *suite) open(t testing.TB, opt *zodb.OpenOptions) (*zodb.Storage, string) {
	t.Helper()
	url := s.newURL(t)
	return openURL(t, url, opt), url
}

func openURL(t testing.TB, url string, opt *zodb.OpenOptions) *zodb.Storage {
	t.Helper()
	stor, err := zodb.Open(testContext(t), url, opt)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() {
		if err := stor.Close(); err != nil {
			t.Errorf("close %s: %v", url, err)
		}
	})
	return stor
}

// op is one operation of a transaction.
type op func(ctx context.Context, txn zodb.ITxn) error

func store(oid zodb.Oid, serial zodb.Tid, data []byte) op {
	return func(ctx context.Context, txn zodb.ITxn) error { return txn.Store(ctx, oid, serial, data) }
}

func deleteOp(oid zodb.Oid, serial zodb.Tid) op {
	return func(ctx context.Context, txn zodb.ITxn) error { return txn.Delete(ctx, oid, serial) }
}

func checkCurrent(oid zodb.Oid, serial zodb.Tid) op {
	return func(ctx context.Context, txn zodb.ITxn) error { return txn.CheckCurrentSerial(ctx, oid, serial) }
}

func restoreOp(oid zodb.Oid, data []byte, dataTid zodb.Tid) op {
	return func(ctx context.Context, txn zodb.ITxn) error { return txn.Restore(ctx, oid, data, dataTid) }
}

func undoOp(undoTid zodb.Tid, oids *[]zodb.Oid) op {
	return func(ctx context.Context, txn zodb.ITxn) error {
		v, err := txn.Undo(ctx, undoTid)
		if oids != nil {
			*oids = v
		}
		return err
	}
}

// tryCommit runs a whole two-phase commit, aborting on error.
func tryCommit(ctx context.Context, stor *zodb.Storage, meta zodb.TxnMeta, ops ...op) (zodb.Tid, []zodb.Oid, error) {
	txn, err := stor.Begin(ctx, meta)
	if err != nil {
		return 0, nil, fmt.Errorf("begin: %w", err)
	}
	fail := func(what string, err error) (zodb.Tid, []zodb.Oid, error) {
		if aerr := txn.Abort(ctx); aerr != nil {
			return 0, nil, fmt.Errorf("%s: %w (and abort: %v)", what, err, aerr)
		}
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	for i, o := range ops {
		if err := o(ctx, txn); err != nil {
			return fail(fmt.Sprintf("operation #%d", i), err)
		}
	}
	resolved, err := txn.Vote(ctx)
	if err != nil {
		return fail("vote", err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("finish: %w", err)
	}
	return tid, resolved, nil
}

// commit commits ops and fails the test on error.
func commit(t testing.TB, stor *zodb.Storage, ops ...op) zodb.Tid {
	t.Helper()
	return commitMeta(t, stor, zodb.TxnMeta{}, ops...)
}

func commitMeta(t testing.TB, stor *zodb.Storage, meta zodb.TxnMeta, ops ...op) zodb.Tid {
	t.Helper()
	tid, _, err := tryCommit(testContext(t), stor, meta, ops...)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return tid
}

func newOid(t testing.TB, stor *zodb.Storage) zodb.Oid {
	t.Helper()
	oid, err := stor.NewOid(testContext(t))
	if err != nil {
		t.Fatalf("new oid: %v", err)
	}
	return oid
}

func lastTid(t testing.TB, stor *zodb.Storage) zodb.Tid {
	t.Helper()
	tid, err := stor.LastTid(testContext(t))
	if err != nil {
		t.Fatalf("lastTid: %v", err)
	}
	return tid
}

// load loads oid at at and fails the test on error.
func load(t testing.TB, stor *zodb.Storage, oid zodb.Oid, at zodb.Tid) ([]byte, zodb.Tid) {
	t.Helper()
	data, serial, _, err := stor.Load(testContext(t), zodb.Xid{Oid: oid, At: at})
	if err != nil {
		t.Fatalf("load %v: %v", zodb.Xid{Oid: oid, At: at}, err)
	}
	return data, serial
}

// rev is one revision of an object in a model of what the storage holds.
type rev struct {
	serial zodb.Tid
	data   []byte // nil: deleted
}

// model is what a test expects of its objects: their revisions, oldest
// first.
type model map[zodb.Oid][]rev

func (m model) add(oid zodb.Oid, serial zodb.Tid, data []byte) {
	m[oid] = append(m[oid], rev{serial, data})
}

// serial returns the current serial of oid in the model (0 if none).
func (m model) serial(oid zodb.Oid) zodb.Tid {
	revs := m[oid]
	if len(revs) == 0 {
		return 0
	}
	return revs[len(revs)-1].serial
}

// tids returns every serial of the model, sorted.
func (m model) tids() []zodb.Tid {
	var v []zodb.Tid
	for _, revs := range m {
		for _, r := range revs {
			v = append(v, r.serial)
		}
	}
	slices.Sort(v)
	return slices.Compact(v)
}

// checkLoad checks one load against the model: the revision current at at,
// its serial, the next serial (if the driver tells it), or the right error.
func (m model) checkLoad(t testing.TB, stor *zodb.Storage, oid zodb.Oid, at zodb.Tid) {
	t.Helper()
	xid := zodb.Xid{Oid: oid, At: at}
	data, serial, next, err := stor.Load(testContext(t), xid)
	revs := m[oid]
	if len(revs) == 0 {
		var e *zodb.NoObjectError
		if !errors.As(err, &e) || e.Oid != oid {
			t.Errorf("load %v: want *NoObjectError for %v, got data %q serial %v err %v", xid, oid, data, serial, err)
		}
		return
	}
	i := -1
	for j, r := range revs {
		if r.serial <= at {
			i = j
		}
	}
	if i < 0 || revs[i].data == nil {
		var deletedAt zodb.Tid
		if i >= 0 {
			deletedAt = revs[i].serial
		}
		var e *zodb.NoDataError
		if !errors.As(err, &e) || e.Oid != oid || e.DeletedAt != deletedAt {
			t.Errorf("load %v: want *NoDataError{%v, DeletedAt %v}, got data %q serial %v err %v (%T)", xid, oid, deletedAt, data, serial, err, errors.Unwrap(err))
		}
		return
	}
	if err != nil {
		t.Errorf("load %v: %v (want revision %v)", xid, err, revs[i].serial)
		return
	}
	var wantNext zodb.Tid
	if i+1 < len(revs) {
		wantNext = revs[i+1].serial
	}
	if serial != revs[i].serial || string(data) != string(revs[i].data) {
		t.Errorf("load %v: got serial %v data %q, want serial %v data %q", xid, serial, data, revs[i].serial, revs[i].data)
	}
	if next != 0 && next != wantNext || wantNext == 0 && next != 0 {
		t.Errorf("load %v: next serial %v, want %v", xid, next, wantNext)
	}
}

// checkAll loads every object of the model at every tid of the model, just
// before it and at TidMax.
func (m model) checkAll(t testing.TB, stor *zodb.Storage) {
	t.Helper()
	tids := m.tids()
	ats := []zodb.Tid{zodb.TidMax}
	for _, tid := range tids {
		ats = append(ats, tid-1, tid, tid+1)
	}
	for oid := range m {
		for _, at := range ats {
			m.checkLoad(t, stor, oid, at)
		}
	}
}

// iterTxn is one transaction as iteration yields it.
type iterTxn struct {
	info zodb.TxnInfo
	recs []zodb.DataInfo
}

func iterate(t testing.TB, stor *zodb.Storage, tidMin, tidMax zodb.Tid) []iterTxn {
	t.Helper()
	ctx := testContext(t)
	it := stor.Iterate(ctx, tidMin, tidMax)
	var v []iterTxn
	for {
		info, dit, err := it.NextTxn(ctx)
		if err == io.EOF {
			return v
		}
		if err != nil {
			t.Fatalf("iterate %v..%v: %v", tidMin, tidMax, err)
		}
		x := iterTxn{info: *info}
		for {
			d, err := dit.NextData(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("iterate %v..%v: txn %v: %v", tidMin, tidMax, info.Tid, err)
			}
			x.recs = append(x.recs, *d)
		}
		v = append(v, x)
	}
}

// isUnsupported reports a driver without an optional operation.
func isUnsupported(err error) bool { return errors.Is(err, zodb.ErrUnsupported) }

// watcher collects the commit events of a storage.
type watcher struct {
	ch  chan zodb.Event
	at0 zodb.Tid
}

// watch subscribes to stor's events with a channel of the given capacity;
// the test reads them with next.
func watch(t testing.TB, stor *zodb.Storage, capacity int) *watcher {
	w := &watcher{ch: make(chan zodb.Event, capacity)}
	w.at0 = stor.AddWatch(w.ch)
	t.Cleanup(func() { stor.DelWatch(w.ch) })
	return w
}

// next returns the next commit event, failing the test if none comes.
func (w *watcher) next(t testing.TB) *zodb.CommitEvent {
	t.Helper()
	select {
	case ev := <-w.ch:
		c, ok := ev.(*zodb.CommitEvent)
		if !ok {
			t.Fatalf("watch: got %v, want a commit event", ev)
		}
		return c
	case <-time.After(waitTimeout):
		t.Fatalf("watch: no event after %v", waitTimeout)
		return nil
	}
}

// until reads events up to the first one for a tid ≥ tid: a lost event
// shows as a missing one, not as a wait.
func (w *watcher) until(t testing.TB, tid zodb.Tid) []*zodb.CommitEvent {
	t.Helper()
	var v []*zodb.CommitEvent
	for {
		ev := w.next(t)
		v = append(v, ev)
		if ev.Tid >= tid {
			return v
		}
	}
}

// expect reads the next event and checks that it is for tid and exactly
// the oids changed.
func (w *watcher) expect(t testing.TB, tid zodb.Tid, changed ...zodb.Oid) {
	t.Helper()
	ev := w.next(t)
	checkEvent(t, ev, tid, changed)
}

func checkEvent(t testing.TB, ev *zodb.CommitEvent, tid zodb.Tid, changed []zodb.Oid) {
	t.Helper()
	got := slices.Clone(ev.Changed)
	slices.Sort(got)
	want := slices.Clone(changed)
	slices.Sort(want)
	if ev.Tid != tid || !slices.Equal(got, want) {
		t.Errorf("watch: got event %v %v, want %v %v", ev.Tid, ev.Changed, tid, changed)
	}
}

// none checks that no event is pending.
func (w *watcher) none(t testing.TB) {
	t.Helper()
	select {
	case ev := <-w.ch:
		t.Errorf("watch: unexpected event %#v", ev)
	default:
	}
}

// wantErr checks that err is, or wraps, a *E, and returns it.
func wantErr[E error](t testing.TB, what string, err error) E {
	t.Helper()
	var e E
	if !errors.As(err, &e) {
		t.Errorf("%s: got error %v, want %T", what, err, e)
	}
	return e
}
