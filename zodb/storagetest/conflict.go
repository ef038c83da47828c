package storagetest

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/neozodb/neo/zodb"
)

func testConflict(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	w := watch(t, stor, 16)
	a, b := newOid(t, stor), newOid(t, stor)
	t1 := commit(t, stor, store(a, 0, []byte("a1")), store(b, 0, []byte("b1")))
	t2 := commit(t, stor, store(a, t1, []byte("a2")))
	w.expect(t, t1, a, b)
	w.expect(t, t2, a)
	m := model{}
	m.add(a, t1, []byte("a1"))
	m.add(a, t2, []byte("a2"))
	m.add(b, t1, []byte("b1"))

	for _, tc := range []struct {
		name      string
		ops       []op
		read      zodb.Tid
		committed zodb.Tid
	}{
		{"stale serial", []op{store(b, t1, []byte("b2")), store(a, t1, []byte("a-stale"))}, t1, t2},
		{"new object exists", []op{store(a, 0, []byte("a-new"))}, 0, t2},
		{"future serial", []op{store(a, t2+1, []byte("a-future"))}, t2 + 1, t2},
		{"delete stale", []op{deleteOp(a, t1)}, t1, t2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, tc.ops...)
			e := wantErr[*zodb.ConflictError](t, "commit", err)
			if e != nil && (e.Oid != a || e.ReadSerial != tc.read || e.CommittedSerial != tc.committed) {
				t.Errorf("conflict: %v, want oid %v read serial %v committed serial %v", e, a, tc.read, tc.committed)
			}
			if last := lastTid(t, stor); last != t2 {
				t.Errorf("lastTid %v after a failed commit, want %v", last, t2)
			}
			m.checkAll(t, stor)
		})
	}
	// The storage is still usable, and the failed commits sent no event.
	t3 := commit(t, stor, store(a, t2, []byte("a3")))
	w.expect(t, t3, a)
	m.add(a, t3, []byte("a3"))
	m.checkAll(t, stor)
}

func testConflictResolution(t *testing.T, s *suite) {
	stor, _ := s.open(t, &zodb.OpenOptions{Resolver: CounterResolver})
	ctx := testContext(t)
	c, plain := newOid(t, stor), newOid(t, stor)
	t1 := commit(t, stor, store(c, 0, Counter(0)), store(plain, 0, []byte("p1")))
	// Two transactions read c at t1; one commits +3.
	t2 := commit(t, stor, store(c, t1, Counter(3)), store(plain, t1, []byte("p2")))
	// The other adds 5 from the old state: resolved to 8.
	other := newOid(t, stor)
	t3, resolved, err := tryCommit(ctx, stor, zodb.TxnMeta{}, store(other, 0, []byte("o")), store(c, t1, Counter(5)))
	if err != nil {
		t.Fatalf("commit with a resolvable conflict: %v", err)
	}
	if !slices.Equal(resolved, []zodb.Oid{c}) {
		t.Errorf("vote reported resolved %v, want [%v]", resolved, c)
	}
	data, serial := load(t, stor, c, zodb.TidMax)
	if v, err := CounterValue(data); err != nil || v != 8 || serial != t3 {
		t.Errorf("resolved counter: value %v (%v) serial %v, want 8 at %v", v, err, serial, t3)
	}

	// Data the resolver cannot merge stays a conflict.
	_, _, err = tryCommit(ctx, stor, zodb.TxnMeta{}, store(plain, t1, []byte("p-stale")))
	e := wantErr[*zodb.ConflictError](t, "unresolvable conflict", err)
	if e != nil && (e.Oid != plain || e.ReadSerial != t1 || e.CommittedSerial != t2) {
		t.Errorf("conflict: %v, want oid %v read serial %v committed serial %v", e, plain, t1, t2)
	}
	if last := lastTid(t, stor); last != t3 {
		t.Errorf("lastTid %v after a failed commit, want %v", last, t3)
	}
}

func testReadConflict(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	a, b := newOid(t, stor), newOid(t, stor)
	t1 := commit(t, stor, store(a, 0, []byte("a1")), store(b, 0, []byte("b1")))
	t2 := commit(t, stor, store(a, t1, []byte("a2")))

	// The transaction read a at t1 and writes b: a changed since.
	_, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, checkCurrent(a, t1), store(b, t1, []byte("b-stale")))
	e := wantErr[*zodb.ReadConflictError](t, "read conflict", err)
	if e != nil && (e.Oid != a || e.ReadSerial != t1 || e.CommittedSerial != t2) {
		t.Errorf("read conflict: %v, want oid %v read %v committed %v", e, a, t1, t2)
	}
	if data, serial := load(t, stor, b, zodb.TidMax); serial != t1 || string(data) != "b1" {
		t.Errorf("b after a failed commit: %q at %v, want %q at %v", data, serial, "b1", t1)
	}
	// Read at the current serial: commits.
	t3, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, checkCurrent(a, t2), store(b, t1, []byte("b2")))
	if err != nil {
		t.Fatalf("commit with a current read: %v", err)
	}
	if data, serial := load(t, stor, b, zodb.TidMax); serial != t3 || string(data) != "b2" {
		t.Errorf("b: %q at %v, want %q at %v", data, serial, "b2", t3)
	}
	if data, serial := load(t, stor, a, zodb.TidMax); serial != t2 || string(data) != "a2" {
		t.Errorf("a, only checked: %q at %v, want %q at %v", data, serial, "a2", t2)
	}
}

func testTPCMisuse(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	oid := newOid(t, stor)
	serial := commit(t, stor, store(oid, 0, []byte("v0")))
	n := 0
	data := func() []byte { n++; return []byte{'v', byte('0' + n)} }
	type step func(ctx context.Context, txn zodb.ITxn) error
	storeStep := func(ctx context.Context, txn zodb.ITxn) error { return txn.Store(ctx, oid, serial, data()) }
	vote := func(ctx context.Context, txn zodb.ITxn) error { _, err := txn.Vote(ctx); return err }
	finish := func(ctx context.Context, txn zodb.ITxn) error {
		tid, err := txn.Finish(ctx)
		if err == nil {
			serial = tid
		}
		return err
	}
	abort := func(ctx context.Context, txn zodb.ITxn) error { return txn.Abort(ctx) }
	for _, tc := range []struct {
		name string
		ok   []step // steps that succeed
		bad  step   // then this one returns *TransactionError (nil: none)
		then []step // then these succeed
	}{
		{"store after vote", []step{storeStep, vote}, storeStep, []step{abort}},
		{"vote twice", []step{storeStep, vote}, vote, []step{abort}},
		{"finish without vote", []step{storeStep}, finish, []step{abort}},
		{"store after abort", []step{storeStep, abort}, storeStep, []step{abort}},
		{"vote after abort", []step{storeStep, abort}, vote, nil},
		{"finish after abort", []step{storeStep, vote, abort}, finish, nil},
		{"store after finish", []step{storeStep, vote, finish}, storeStep, []step{abort}},
		{"vote after finish", []step{storeStep, vote, finish}, vote, nil},
		{"abort after finish", []step{storeStep, vote, finish, abort, abort}, nil, nil},
		{"abort twice", []step{storeStep, abort, abort}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(testContext(t), waitTimeout)
			defer cancel()
			txn, err := stor.Begin(ctx, zodb.TxnMeta{})
			if err != nil {
				t.Fatalf("begin: %v", err)
			}
			defer txn.Abort(ctx)
			for i, st := range tc.ok {
				if err := st(ctx, txn); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if tc.bad != nil {
				err := tc.bad(ctx, txn)
				wantErr[*zodb.TransactionError](t, "out-of-order call", err)
			}
			for i, st := range tc.then {
				if err := st(ctx, txn); err != nil {
					t.Errorf("step after the misuse %d: %v", i, err)
				}
			}
			// Whatever happened, the storage takes the next
			// transaction (the commit lock was released), and shows
			// exactly what was finished.
			data, got := load(t, stor, oid, zodb.TidMax)
			if got != serial {
				t.Errorf("load: serial %v (%q), want %v", got, data, serial)
			}
			tid, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, store(oid, serial, data))
			if err != nil {
				t.Fatalf("next commit: %v", err)
			}
			serial = tid
		})
	}
}

func testAbort(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	w := watch(t, stor, 16)
	a := newOid(t, stor)
	t1 := commit(t, stor, store(a, 0, []byte("a1")))
	w.expect(t, t1, a)
	m := model{}
	m.add(a, t1, []byte("a1"))

	for _, voted := range []bool{false, true} {
		b := newOid(t, stor)
		txn, err := stor.Begin(ctx, zodb.TxnMeta{Description: []byte("aborted")})
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Store(ctx, a, t1, []byte("a-aborted")); err != nil {
			t.Fatal(err)
		}
		if err := txn.Store(ctx, b, 0, []byte("b-aborted")); err != nil {
			t.Fatal(err)
		}
		if voted {
			if _, err := txn.Vote(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.Abort(ctx); err != nil {
			t.Fatalf("abort: %v", err)
		}
		if last := lastTid(t, stor); last != t1 {
			t.Errorf("lastTid %v after abort, want %v", last, t1)
		}
		m.checkLoad(t, stor, b, zodb.TidMax)
		m.checkAll(t, stor)
		if txns := iterate(t, stor, 0, zodb.TidMax); len(txns) != 1 {
			t.Errorf("iterate after abort: %d transactions, want 1", len(txns))
		}
	}
	// The next event is the next commit's: aborts sent none.
	t2 := commit(t, stor, store(a, t1, []byte("a2")))
	w.expect(t, t2, a)
	m.add(a, t2, []byte("a2"))
	m.checkAll(t, stor)
}

func testConcurrent(t *testing.T, s *suite) {
	for _, resolve := range []bool{false, true} {
		name := "retry"
		if resolve {
			name = "resolve"
		}
		t.Run(name, func(t *testing.T) { concurrentCommits(t, s, resolve) })
	}
}

// concurrentCommits runs workers that each increment their own counter and
// a shared one, retrying on conflicts (or relying on conflict resolution),
// and checks the totals and that every commit was reported once.
func concurrentCommits(t *testing.T, s *suite, resolve bool) {
	const workers, each = 4, 25
	opt := &zodb.OpenOptions{}
	if resolve {
		opt.Resolver = CounterResolver
	}
	stor, _ := s.open(t, opt)
	ctx, cancel := context.WithTimeout(testContext(t), 4*waitTimeout)
	defer cancel()
	w := watch(t, stor, workers*each*4+16)
	oids, err := stor.NewOids(ctx, workers+1)
	if err != nil {
		t.Fatal(err)
	}
	shared, own := oids[0], oids[1:]
	var ops []op
	for _, oid := range oids {
		ops = append(ops, store(oid, 0, Counter(0)))
	}
	t0 := commit(t, stor, ops...)
	w.expect(t, t0, oids...)

	type result struct {
		tids      []zodb.Tid
		conflicts int
		err       error
	}
	results := make([]result, workers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ws sync.WaitGroup
		for i := range workers {
			ws.Go(func() {
				r := &results[i]
				for n := 0; n < each; {
					if ctx.Err() != nil {
						r.err = ctx.Err()
						return
					}
					at, err := stor.LastTid(ctx)
					if err != nil {
						r.err = err
						return
					}
					var ops []op
					for _, oid := range []zodb.Oid{shared, own[i]} {
						data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: at})
						if err != nil {
							r.err = err
							return
						}
						v, err := CounterValue(data)
						if err != nil {
							r.err = err
							return
						}
						ops = append(ops, store(oid, serial, Counter(v+1)))
					}
					tid, _, err := tryCommit(ctx, stor, zodb.TxnMeta{}, ops...)
					switch {
					case err == nil:
						r.tids = append(r.tids, tid)
						n++
					case isConflict(err) && !resolve:
						r.conflicts++
					default:
						r.err = err
						return
					}
				}
			})
		}
		ws.Wait()
	}()

	// The watcher's channel holds all the events: read them once the
	// workers are done.
	select {
	case <-done:
	case <-ctx.Done():
		<-done
	}
	committed := map[zodb.Tid]zodb.Oid{} // tid → own counter changed
	conflicts := 0
	for i, r := range results {
		if r.err != nil {
			t.Errorf("worker %d: %v", i, r.err)
		}
		conflicts += r.conflicts
		for _, tid := range r.tids {
			if _, dup := committed[tid]; dup {
				t.Errorf("tid %v committed twice", tid)
			}
			committed[tid] = own[i]
		}
	}
	var events []*zodb.CommitEvent
	if len(committed) > 0 {
		events = w.until(t, slices.Max(slices.Collect(maps.Keys(committed))))
	}
	if len(events) != len(committed) {
		t.Errorf("%d events for %d commits", len(events), len(committed))
	}
	prev := t0
	for _, ev := range events {
		if ev.Tid <= prev {
			t.Errorf("event %v after %v: not in tid order", ev.Tid, prev)
		}
		prev = ev.Tid
		oid, ok := committed[ev.Tid]
		if !ok {
			t.Errorf("event %v: no such commit", ev.Tid)
			continue
		}
		checkEvent(t, ev, ev.Tid, []zodb.Oid{shared, oid})
	}
	w.none(t)
	t.Logf("%d commits, %d conflicts retried", len(committed), conflicts)

	want := map[zodb.Oid]int64{shared: workers * each}
	for _, oid := range own {
		want[oid] = each
	}
	for oid, n := range want {
		data, _ := load(t, stor, oid, zodb.TidMax)
		if v, err := CounterValue(data); err != nil || v != n {
			t.Errorf("counter %v: %v (%v), want %d", oid, v, err, n)
		}
	}
}
