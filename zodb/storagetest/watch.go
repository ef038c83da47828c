package storagetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

func testWatch(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	w := watch(t, stor, 64)
	if head := lastTid(t, stor); w.at0 != head {
		t.Errorf("AddWatch returned %v, lastTid is %v", w.at0, head)
	}
	oids, err := stor.NewOids(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c, d := oids[0], oids[1], oids[2], oids[3]

	type commitSpec struct {
		name    string
		ops     func() []op
		changed []zodb.Oid
		undo    bool // needs undo
		withTid bool // commits under a tid it gives, as restore tools do
	}
	serial := map[zodb.Oid]zodb.Tid{}
	var tids []zodb.Tid
	specs := []commitSpec{
		{"create three", func() []op {
			return []op{store(a, 0, []byte("a1")), store(b, 0, []byte("b1")), store(c, 0, []byte("c1"))}
		}, []zodb.Oid{a, b, c}, false, false},
		{"modify one", func() []op { return []op{store(a, serial[a], []byte("a2"))} }, []zodb.Oid{a}, false, false},
		{"delete", func() []op { return []op{deleteOp(b, serial[b])} }, []zodb.Oid{b}, false, false},
		{"restore", func() []op { return []op{restoreOp(d, []byte("d1"), 0)} }, []zodb.Oid{d}, false, true},
		{"checked but not changed", func() []op {
			return []op{checkCurrent(c, serial[c]), store(a, serial[a], []byte("a3"))}
		}, []zodb.Oid{a}, false, false},
		{"stored twice", func() []op {
			return []op{store(c, serial[c], []byte("c2")), store(c, serial[c], []byte("c3"))}
		}, []zodb.Oid{c}, false, false},
		{"undo", func() []op { return []op{undoOp(tids[4], nil)} }, []zodb.Oid{a}, true, false},
		{"many", func() []op {
			return []op{store(a, serial[a], []byte("a5")), store(c, serial[c], []byte("c4")), store(d, serial[d], []byte("d2"))}
		}, []zodb.Oid{a, c, d}, false, false},
	}
	var want [][]zodb.Oid
	for _, sp := range specs {
		var meta zodb.TxnMeta
		if sp.withTid {
			meta.Tid = zodb.NewTid(time.Now(), lastTid(t, stor))
		}
		tid, _, err := tryCommit(ctx, stor, meta, sp.ops()...)
		if sp.undo && isUnsupported(err) {
			t.Logf("%s: skipped: the driver has no undo", sp.name)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", sp.name, err)
		}
		tids = append(tids, tid)
		want = append(want, sp.changed)
		for _, oid := range sp.changed {
			serial[oid] = tid
		}
		if sp.name == "modify one" {
			// An aborted transaction and a pack send no event.
			txn, err := stor.Begin(ctx, zodb.TxnMeta{})
			if err != nil {
				t.Fatal(err)
			}
			if err := txn.Store(ctx, a, tid, []byte("aborted")); err != nil {
				t.Fatal(err)
			}
			if err := txn.Abort(ctx); err != nil {
				t.Fatal(err)
			}
			if err := stor.Pack(ctx, tids[0], false); err != nil && !isUnsupported(err) {
				t.Fatalf("pack: %v", err)
			}
		}
	}
	events := w.until(t, tids[len(tids)-1])
	for i, tid := range tids {
		if i >= len(events) {
			t.Errorf("watch: no event for %v %v", tid, want[i])
			continue
		}
		checkEvent(t, events[i], tid, want[i])
	}
	for _, ev := range events[min(len(tids), len(events)):] {
		t.Errorf("watch: unexpected event %v %v", ev.Tid, ev.Changed)
	}
	w.none(t)
}

// testWatchLastTid checks that LastTid never reports a transaction whose
// event the watchers were not given yet: with a watcher that does not read,
// the storage holds back the next commit's event, and its tid.
func testWatchLastTid(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	w := watch(t, stor, 0)
	oid := newOid(t, stor)
	// zodb.Storage takes the event of t1 from the driver and waits for
	// the watcher to receive it; the driver can queue no more events.
	t1 := commit(t, stor, store(oid, 0, []byte("v1")))

	var wg sync.WaitGroup
	defer wg.Wait()
	var t2 zodb.Tid
	var err2 error
	wg.Go(func() {
		t2, _, err2 = tryCommit(testContext(t), stor, zodb.TxnMeta{}, store(oid, t1, []byte("v2")))
	})
	// Nothing signals that the commit is waiting for the watcher: watch
	// LastTid for a while.
	deadline := time.Now().Add(200 * time.Millisecond)
	for n := 0; time.Now().Before(deadline) || n < 1000; n++ {
		ctx, cancel := context.WithTimeout(testContext(t), waitTimeout)
		last, err := stor.LastTid(ctx)
		cancel()
		if err != nil {
			t.Fatalf("lastTid while a watcher does not read: %v (LastTid must not wait for watchers)", err)
		}
		if last != t1 {
			t.Errorf("lastTid %v while the watcher did not take the event of the commit after %v", last, t1)
			break
		}
		runtime.Gosched()
	}
	checkEvent(t, w.next(t), t1, []zodb.Oid{oid})
	ev := w.next(t)
	wg.Wait()
	if err2 != nil {
		t.Fatalf("second commit: %v", err2)
	}
	checkEvent(t, ev, t2, []zodb.Oid{oid})
	if last := lastTid(t, stor); last != t2 {
		t.Errorf("lastTid %v, want %v", last, t2)
	}
}

// testWatchLoadRace commits from one goroutine while the test follows the
// events: a load at the tid of an event sees that transaction, and LastTid
// never runs ahead of the events.
func testWatchLoadRace(t *testing.T, s *suite) {
	const n = 100
	stor, _ := s.open(t, nil)
	ctx, cancel := context.WithTimeout(testContext(t), 4*waitTimeout)
	defer cancel()
	w := watch(t, stor, 0)
	x, y := newOid(t, stor), newOid(t, stor)

	var wg sync.WaitGroup
	var commitErr error
	wg.Go(func() {
		var sx, sy zodb.Tid
		for i := range n {
			ops := []op{store(x, sx, Counter(int64(i)))}
			if i%2 == 0 {
				ops = append(ops, store(y, sy, Counter(int64(i))))
			}
			tid, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, ops...)
			if err != nil {
				commitErr = fmt.Errorf("commit %d: %w", i, err)
				cancel()
				return
			}
			sx = tid
			if i%2 == 0 {
				sy = tid
			}
		}
	})
	defer wg.Wait()

	lastSeen := lastTid(t, stor) // LastTid before the next event
	for i := range n {
		var ev *zodb.CommitEvent
		select {
		case e := <-w.ch:
			c, ok := e.(*zodb.CommitEvent)
			if !ok {
				t.Fatalf("watch: %v", e)
			}
			ev = c
		case <-ctx.Done():
			wg.Wait()
			t.Fatalf("watch: event %d not received: %v %v", i, ctx.Err(), commitErr)
		}
		want := []zodb.Oid{x}
		if i%2 == 0 {
			want = append(want, y)
		}
		checkEvent(t, ev, ev.Tid, want)
		// zodb.Storage holds at most one more event than the watcher
		// took, so LastTid read before this one was at most its tid.
		if lastSeen > ev.Tid {
			t.Errorf("lastTid was %v before the event of %v was taken", lastSeen, ev.Tid)
		}
		data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: x, At: ev.Tid})
		if err != nil {
			t.Errorf("load %v at event %v: %v", x, ev.Tid, err)
		} else if v, err := CounterValue(data); serial != ev.Tid || err != nil || v != int64(i) {
			t.Errorf("load %v at event %v: value %d (%v) serial %v, want %d at %v", x, ev.Tid, v, err, serial, i, ev.Tid)
		}
		lastSeen = lastTid(t, stor)
	}
	wg.Wait()
	if commitErr != nil {
		t.Fatal(commitErr)
	}
}

// testCloseUnblocksCommit closes a storage while a commit waits for a
// watcher that does not read: Close and the commit both return.
func testCloseUnblocksCommit(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	_ = watch(t, stor, 0)
	oid := newOid(t, stor)
	t1 := commit(t, stor, store(oid, 0, []byte("v1")))
	commitDone := make(chan error, 1)
	go func() {
		_, _, err := tryCommit(testContext(t), stor, zodb.TxnMeta{}, store(oid, t1, []byte("v2")))
		commitDone <- err
	}()
	closeDone := make(chan error, 1)
	go func() { closeDone <- stor.Close() }()
	for _, x := range []struct {
		what string
		ch   chan error
	}{{"close", closeDone}, {"commit", commitDone}} {
		select {
		case err := <-x.ch:
			t.Logf("%s: %v", x.what, err)
		case <-time.After(waitTimeout):
			t.Fatalf("%s blocked for %v after close while a watcher did not read", x.what, waitTimeout)
		}
	}
}

func testReadOnly(t *testing.T, s *suite) {
	ctx := testContext(t)
	url := s.newURL(t)
	var oid zodb.Oid
	var tid zodb.Tid
	var ro *zodb.Storage
	switch {
	case s.shared || s.persistent:
		rw := openURL(t, url, nil)
		oid = newOid(t, rw)
		tid = commit(t, rw, store(oid, 0, []byte("data")))
		if !s.shared {
			if err := rw.Close(); err != nil {
				t.Fatal(err)
			}
		}
		ro = openURL(t, url, &zodb.OpenOptions{ReadOnly: true, NoCreate: true})
		if data, serial := load(t, ro, oid, zodb.TidMax); string(data) != "data" || serial != tid {
			t.Errorf("read-only load: %q at %v, want %q at %v", data, serial, "data", tid)
		}
	default:
		t.Logf("the data written is not visible through another handle: checking only that writes are refused")
		ro = openURL(t, url, &zodb.OpenOptions{ReadOnly: true})
	}
	txn, err := ro.Begin(ctx, zodb.TxnMeta{})
	if !errors.Is(err, zodb.ErrReadOnly) {
		t.Errorf("begin on a read-only storage: %v, want ErrReadOnly", err)
	}
	if txn != nil {
		txn.Abort(ctx)
	}
	_, err = ro.NewOids(ctx, 1)
	if !errors.Is(err, zodb.ErrReadOnly) {
		t.Errorf("newOids on a read-only storage: %v, want ErrReadOnly", err)
	}
	err = ro.Pack(ctx, zodb.TidMax, true)
	if !errors.Is(err, zodb.ErrReadOnly) && !isUnsupported(err) {
		t.Errorf("pack on a read-only storage: %v, want ErrReadOnly", err)
	}
	if last := lastTid(t, ro); last != tid {
		t.Errorf("lastTid %v, want %v", last, tid)
	}
}

func testClosed(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	oid := newOid(t, stor)
	t1 := commit(t, stor, store(oid, 0, []byte("v1")))
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := stor.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := txn.Store(ctx, oid, t1, []byte("v2")); err == nil {
		if _, err := txn.Vote(ctx); err == nil {
			t.Errorf("store and vote of a transaction begun before close: no error")
		}
	}
	txn.Abort(ctx)

	_, _, _, err = stor.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
	checks := []struct {
		op  string
		err error
	}{{"load", err}}
	add := func(op string, err error) {
		checks = append(checks, struct {
			op  string
			err error
		}{op, err})
	}
	_, err = stor.LastTid(ctx)
	add("lastTid", err)
	_, err = stor.NewOids(ctx, 1)
	add("newOids", err)
	_, err = stor.History(ctx, oid, 1)
	add("history", err)
	if txn, err := stor.Begin(ctx, zodb.TxnMeta{}); err == nil {
		add("begin", nil)
		txn.Abort(ctx)
	} else {
		add("begin", err)
	}
	_, _, err = stor.Iterate(ctx, 0, zodb.TidMax).NextTxn(ctx)
	add("iterate", err)
	if _, err = stor.UndoLog(ctx, 0, 1, nil); !isUnsupported(err) {
		add("undoLog", err)
	}
	if err = stor.Pack(ctx, t1, false); !isUnsupported(err) {
		add("pack", err)
	}
	for _, c := range checks {
		if !errors.Is(c.err, zodb.ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", c.op, c.err)
		}
	}
	if err := stor.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func testSharedHandles(t *testing.T, s *suite) {
	if !s.shared {
		t.Skip("the driver does not share a storage between handles (see storagetest.SharedHandles)")
	}
	ctx, cancel := context.WithTimeout(testContext(t), 4*waitTimeout)
	defer cancel()
	url := s.newURL(t)
	h := []*zodb.Storage{openURL(t, url, nil), openURL(t, url, nil)}
	const n = 40
	w := []*watcher{watch(t, h[0], 2*n+16), watch(t, h[1], 2*n+16)}

	x := newOid(t, h[0])
	t1 := commit(t, h[0], store(x, 0, []byte("x1")))
	for i := range h {
		w[i].expect(t, t1, x)
		if data, serial := load(t, h[1-i], x, t1); string(data) != "x1" || serial != t1 {
			t.Errorf("handle %d: load at %v: %q at %v", 1-i, t1, data, serial)
		}
	}
	// A stale write through the other handle conflicts.
	_, _, err := tryCommit(ctx, h[1], zodb.TxnMeta{}, store(x, 0, []byte("x-stale")))
	wantErr[*zodb.ConflictError](t, "stale store through the second handle", err)
	t2 := commit(t, h[1], store(x, t1, []byte("x2")))
	for i := range h {
		w[i].expect(t, t2, x)
	}

	// Both handles commit at the same time; each sees every commit,
	// in order, and can load it at its tid.
	oids := []zodb.Oid{newOid(t, h[0]), newOid(t, h[1])}
	changedBy := map[zodb.Tid]zodb.Oid{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range h {
		wg.Go(func() {
			var serial zodb.Tid
			for j := range n {
				tid, _, err := tryCommit(ctx, h[i], zodb.TxnMeta{}, store(oids[i], serial, Counter(int64(j))))
				if err != nil {
					errs[i] = err
					return
				}
				serial = tid
				mu.Lock()
				changedBy[tid] = oids[i]
				mu.Unlock()
			}
		})
	}
	var events [2][]*zodb.CommitEvent
	for i := range h {
		for range 2 * n {
			select {
			case ev := <-w[i].ch:
				c, ok := ev.(*zodb.CommitEvent)
				if !ok {
					t.Fatalf("watch: %v", ev)
				}
				events[i] = append(events[i], c)
				// The other handle's view at that tid.
				oid := c.Changed[0]
				if _, serial, _, err := h[1-i].Load(ctx, zodb.Xid{Oid: oid, At: c.Tid}); err != nil || serial != c.Tid {
					t.Errorf("handle %d: event %v: load %v: serial %v %v", i, c.Tid, oid, serial, err)
				}
			case <-ctx.Done():
				wg.Wait()
				t.Fatalf("handle %d: %d events of %d: %v %v", i, len(events[i]), 2*n, errs[0], errs[1])
			}
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
	}
	for i := range h {
		prev := t2
		for _, ev := range events[i] {
			if ev.Tid <= prev {
				t.Errorf("handle %d: event %v after %v", i, ev.Tid, prev)
			}
			prev = ev.Tid
			oid, ok := changedBy[ev.Tid]
			if !ok {
				t.Errorf("handle %d: event %v: no such commit", i, ev.Tid)
				continue
			}
			checkEvent(t, ev, ev.Tid, []zodb.Oid{oid})
		}
		w[i].none(t)
	}

	// A transaction left open by a handle that closes does not block
	// the other handle.
	last := lastTid(t, h[1])
	txn, err := h[0].Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Store(ctx, x, t2, []byte("x-lost")); err != nil {
		t.Fatal(err)
	}
	if err := h[0].Close(); err != nil {
		t.Fatal(err)
	}
	t3, _, err := tryCommit(ctx, h[1], zodb.TxnMeta{}, store(x, t2, []byte("x3")))
	if err != nil {
		t.Fatalf("commit after the other handle closed with a transaction open: %v", err)
	}
	if t3 <= last {
		t.Errorf("commit tid %v not after %v", t3, last)
	}
	w[1].expect(t, t3, x)
	if data, _ := load(t, h[1], x, zodb.TidMax); string(data) != "x3" {
		t.Errorf("load: %q, want %q", data, "x3")
	}
}
