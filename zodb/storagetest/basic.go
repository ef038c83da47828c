package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

func testBasic(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	if tid := lastTid(t, stor); tid != 0 {
		t.Fatalf("new storage: lastTid %v, want 0", tid)
	}
	m := model{}
	m.checkLoad(t, stor, 0, zodb.TidMax)

	root := Mapping(nil)
	t1 := commit(t, stor, store(0, 0, root))
	if t1 == 0 {
		t.Fatalf("commit returned tid 0")
	}
	m.add(0, t1, root)
	if got := lastTid(t, stor); got != t1 {
		t.Errorf("lastTid %v after commit of %v", got, t1)
	}

	// The storage keeps its own copy of what Store is given.
	oid := newOid(t, stor)
	buf := []byte("first revision")
	want := slices.Clone(buf)
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Store(ctx, oid, 0, buf); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXXXXXXXXXXX")
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	t2, err := txn.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if t2 <= t1 {
		t.Errorf("second commit got tid %v, not after %v", t2, t1)
	}
	m.add(oid, t2, want)

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	t3 := commit(t, stor, store(oid, t2, big), store(0, t1, Mapping(map[string]any{"x": Ref(oid, "pkg.Obj")})))
	m.add(oid, t3, big)
	m.add(0, t3, Mapping(map[string]any{"x": Ref(oid, "pkg.Obj")}))
	if got := lastTid(t, stor); got != t3 {
		t.Errorf("lastTid %v, want %v", got, t3)
	}
	m.checkAll(t, stor)
	m.checkLoad(t, stor, oid+1000, zodb.TidMax) // never stored
}

func testNewOids(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	var all []zodb.Oid
	for _, n := range []int{1, 5, 1, 3} {
		v, err := stor.NewOids(ctx, n)
		if err != nil {
			t.Fatalf("newOids(%d): %v", n, err)
		}
		if len(v) != n {
			t.Fatalf("newOids(%d) returned %d oids", n, len(v))
		}
		all = append(all, v...)
	}
	for i, oid := range all {
		if oid == 0 {
			t.Errorf("new oid 0: that is the root")
		}
		if i > 0 && oid <= all[i-1] {
			t.Errorf("new oids not increasing: %v", all)
			break
		}
	}

	// From several goroutines: all different.
	const workers, each = 4, 50
	var mu sync.Mutex
	seen := map[zodb.Oid]bool{}
	for _, oid := range all {
		seen[oid] = true
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				oid, err := stor.NewOid(ctx)
				if err != nil {
					t.Errorf("newOid: %v", err)
					return
				}
				mu.Lock()
				if seen[oid] {
					t.Errorf("oid %v allocated twice", oid)
				}
				seen[oid] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// extension returns a pickled extension dict, as ZODB writes it.
func extension(kv ...string) []byte {
	d := Dict{}
	for i := 0; i+1 < len(kv); i += 2 {
		d = append(d, KV{kv[i], kv[i+1]})
	}
	return Pickle(d)
}

func testMetadata(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	metas := []zodb.TxnMeta{
		{User: []byte("/ user\u00fc"), Description: []byte("line 1\nline 2 \x00\xff"), Extension: extension("k", "v", "x-id", "42")},
		{}, // all empty
		{User: []byte("u"), Extension: extension("x-more", "\x00\u00e9\u2603")},
	}
	tids := make([]zodb.Tid, len(metas))
	oid := newOid(t, stor)
	var serial zodb.Tid
	for i, meta := range metas {
		tids[i] = commitMeta(t, stor, meta, store(oid, serial, fmt.Appendf(nil, "rev %d", i)))
		serial = tids[i]
	}
	txns := iterate(t, stor, 0, zodb.TidMax)
	if len(txns) != len(metas) {
		t.Fatalf("iterate: %d transactions, want %d", len(txns), len(metas))
	}
	hist, err := stor.History(testContext(t), oid, len(metas))
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != len(metas) {
		t.Fatalf("history: %d entries, want %d", len(hist), len(metas))
	}
	for i, meta := range metas {
		for _, x := range []struct {
			where string
			info  zodb.TxnInfo
		}{{"iterate", txns[i].info}, {"history", hist[len(metas)-1-i].TxnInfo}} {
			info := x.info
			if info.Tid != tids[i] || info.Status != zodb.TxnComplete ||
				!bytes.Equal(info.User, meta.User) || !bytes.Equal(info.Description, meta.Description) ||
				!bytes.Equal(info.Extension, meta.Extension) {
				t.Errorf("%s: transaction %d: got %v %q user %q desc %q ext %q, want %v %q user %q desc %q ext %q",
					x.where, i, info.Tid, info.Status, info.User, info.Description, info.Extension,
					tids[i], zodb.TxnComplete, meta.User, meta.Description, meta.Extension)
			}
		}
	}
}

func testMVCC(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	oids, err := stor.NewOids(testContext(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := oids[0], oids[1], oids[2]
	m := model{}
	for i := range 12 {
		var ops []op
		type w struct {
			oid  zodb.Oid
			data []byte
		}
		var ws []w
		ws = append(ws, w{a, fmt.Appendf(nil, "a%d", i)})
		if i%2 == 0 {
			ws = append(ws, w{b, fmt.Appendf(nil, "b%d", i)})
		}
		if i%3 == 1 {
			ws = append(ws, w{c, fmt.Appendf(nil, "c%d-%s", i, bytes.Repeat([]byte{byte(i)}, i*10))})
		}
		for _, x := range ws {
			ops = append(ops, store(x.oid, m.serial(x.oid), x.data))
		}
		tid := commit(t, stor, ops...)
		for _, x := range ws {
			m.add(x.oid, tid, x.data)
		}
	}
	m.checkAll(t, stor)
}

func testDelete(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	a, b := newOid(t, stor), newOid(t, stor)
	m := model{}
	t1 := commit(t, stor, store(a, 0, []byte("a1")), store(b, 0, []byte("b1")))
	m.add(a, t1, []byte("a1"))
	m.add(b, t1, []byte("b1"))
	t2 := commit(t, stor, store(a, t1, []byte("a2")))
	m.add(a, t2, []byte("a2"))
	t3 := commit(t, stor, deleteOp(a, t2))
	m.add(a, t3, nil)
	t4 := commit(t, stor, store(b, t1, []byte("b2")))
	m.add(b, t4, []byte("b2"))
	m.checkAll(t, stor)

	// A deletion based on a stale serial is a conflict.
	_, _, err := tryCommit(testContext(t), stor, zodb.TxnMeta{}, deleteOp(b, t1))
	e := wantErr[*zodb.ConflictError](t, "delete with stale serial", err)
	if e != nil && (e.Oid != b || e.CommittedSerial != t4 || e.ReadSerial != t1) {
		t.Errorf("delete with stale serial: %v, want oid %v committed %v read %v", e, b, t4, t1)
	}
	m.checkAll(t, stor)
}

func testHistory(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	oid, other := newOid(t, stor), newOid(t, stor)
	var tids []zodb.Tid
	var serial, otherSerial zodb.Tid
	for i := range 5 {
		data := bytes.Repeat([]byte{'a' + byte(i)}, 10*i+1)
		tid := commitMeta(t, stor, zodb.TxnMeta{Description: fmt.Appendf(nil, "revision %d", i)}, store(oid, serial, data))
		// Revisions of another object in between.
		otherSerial = commit(t, stor, store(other, otherSerial, []byte("other")))
		tids = append(tids, tid)
		serial = tid
	}
	for _, size := range []int{1, 2, 5, 100, 0, -1} {
		h, err := stor.History(ctx, oid, size)
		if err != nil {
			t.Fatalf("history(%v, %d): %v", oid, size, err)
		}
		want := min(size, 5)
		if size <= 0 {
			want = 5 // all
		}
		if len(h) != want {
			t.Errorf("history(%v, %d): %d entries, want %d", oid, size, len(h), want)
			continue
		}
		for j, e := range h {
			i := 4 - j // newest first
			if e.Tid != tids[i] || e.Size != 10*i+1 || string(e.Description) != fmt.Sprintf("revision %d", i) {
				t.Errorf("history(%v, %d)[%d]: tid %v size %d desc %q, want tid %v size %d desc %q",
					oid, size, j, e.Tid, e.Size, e.Description, tids[i], 10*i+1, fmt.Sprintf("revision %d", i))
			}
		}
	}
	_, err := stor.History(ctx, other+100, 10)
	wantErr[*zodb.NoObjectError](t, "history of an unknown object", err)
}

func testIterate(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	oids, err := stor.NewOids(testContext(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	// Five transactions, records stored in a known order.
	m := model{}
	var want []iterTxn
	specs := [][]zodb.Oid{{oids[2], oids[0], oids[1]}, {oids[1]}, {oids[0], oids[2]}, {oids[2]}, {oids[1], oids[0]}}
	for i, order := range specs {
		var ops []op
		var recs []zodb.DataInfo
		for _, oid := range order {
			data := fmt.Appendf(nil, "%v in txn %d", oid, i)
			if i == 4 && oid == oids[0] {
				data = nil // delete
				ops = append(ops, deleteOp(oid, m.serial(oid)))
			} else {
				ops = append(ops, store(oid, m.serial(oid), data))
			}
			recs = append(recs, zodb.DataInfo{Oid: oid, Data: data})
		}
		meta := zodb.TxnMeta{User: fmt.Appendf(nil, "user%d", i), Description: fmt.Appendf(nil, "txn %d", i), Extension: extension("n", fmt.Sprint(i))}
		tid := commitMeta(t, stor, meta, ops...)
		for j := range recs {
			recs[j].Tid = tid
			m.add(recs[j].Oid, tid, recs[j].Data)
		}
		want = append(want, iterTxn{
			info: zodb.TxnInfo{Tid: tid, Status: zodb.TxnComplete, User: meta.User, Description: meta.Description, Extension: meta.Extension},
			recs: recs,
		})
	}
	tid := func(i int) zodb.Tid { return want[i].info.Tid }
	for _, tc := range []struct {
		name           string
		tidMin, tidMax zodb.Tid
		want           []iterTxn
	}{
		{"all", 0, zodb.TidMax, want},
		{"exact bounds", tid(0), tid(4), want},
		{"inner", tid(1), tid(3), want[1:4]},
		{"one", tid(2), tid(2), want[2:3]},
		{"between bounds", tid(1) + 1, tid(3) - 1, want[2:3]},
		{"gap", tid(3) + 1, tid(4) - 1, nil},
		{"before first", 0, tid(0) - 1, nil},
		{"after last", tid(4) + 1, zodb.TidMax, nil},
		{"reversed", tid(3), tid(1), nil},
		{"from middle", tid(3), zodb.TidMax, want[3:]},
		{"up to middle", 0, tid(1), want[:2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := iterate(t, stor, tc.tidMin, tc.tidMax)
			if len(got) != len(tc.want) {
				t.Fatalf("iterate %v..%v: %d transactions, want %d", tc.tidMin, tc.tidMax, len(got), len(tc.want))
			}
			for i := range got {
				checkIterTxn(t, got[i], tc.want[i])
			}
		})
	}
	m.checkAll(t, stor)
}

func checkIterTxn(t testing.TB, got, want iterTxn) {
	t.Helper()
	g, w := got.info, want.info
	if g.Tid != w.Tid || g.Status != w.Status || !bytes.Equal(g.User, w.User) ||
		!bytes.Equal(g.Description, w.Description) || !bytes.Equal(g.Extension, w.Extension) {
		t.Errorf("transaction: got %v %q %q %q %q, want %v %q %q %q %q",
			g.Tid, g.Status, g.User, g.Description, g.Extension, w.Tid, w.Status, w.User, w.Description, w.Extension)
	}
	if len(got.recs) != len(want.recs) {
		t.Errorf("transaction %v: %d records, want %d", g.Tid, len(got.recs), len(want.recs))
		return
	}
	for i, r := range got.recs {
		wr := want.recs[i]
		if r.Oid != wr.Oid || r.Tid != wr.Tid || (r.Data == nil) != (wr.Data == nil) || !bytes.Equal(r.Data, wr.Data) || r.DataTid != wr.DataTid {
			t.Errorf("transaction %v record %d: got %v@%v data %q dataTid %v, want %v@%v data %q dataTid %v",
				g.Tid, i, r.Oid, r.Tid, r.Data, r.DataTid, wr.Oid, wr.Tid, wr.Data, wr.DataTid)
		}
	}
}

func testRestore(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	w := watch(t, stor, 16)
	a, b := newOid(t, stor), newOid(t, stor)
	t1 := zodb.TidFromTime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))
	t2 := t1 + 100
	m := model{}

	got := commitMeta(t, stor, zodb.TxnMeta{Tid: t1, Description: []byte("restored")},
		restoreOp(a, []byte("a1"), 0), restoreOp(b, []byte("b1"), 0))
	if got != t1 {
		t.Fatalf("commit with tid %v: committed as %v", t1, got)
	}
	m.add(a, t1, []byte("a1"))
	m.add(b, t1, []byte("b1"))
	got = commitMeta(t, stor, zodb.TxnMeta{Tid: t2, Status: zodb.TxnPacked},
		restoreOp(a, []byte("a1"), t1), restoreOp(b, nil, 0))
	if got != t2 {
		t.Fatalf("commit with tid %v: committed as %v", t2, got)
	}
	m.add(a, t2, []byte("a1"))
	m.add(b, t2, nil)
	w.expect(t, t1, a, b)
	w.expect(t, t2, a, b)

	txns := iterate(t, stor, 0, zodb.TidMax)
	if len(txns) != 2 {
		t.Fatalf("iterate: %d transactions, want 2", len(txns))
	}
	wantStatus := zodb.TxnPacked
	if s.noStatus {
		wantStatus = zodb.TxnComplete
	}
	if st := txns[1].info.Status; st != wantStatus {
		t.Errorf("restored transaction %v: status %q, want %q", t2, st, wantStatus)
	}
	if len(txns[1].recs) == 2 {
		ra, rb := txns[1].recs[0], txns[1].recs[1]
		if ra.Oid != a || string(ra.Data) != "a1" || (ra.DataTid != 0 && ra.DataTid != t1) {
			t.Errorf("restored record: %v data %q dataTid %v, want %v data %q dataTid %v (or 0)", ra.Oid, ra.Data, ra.DataTid, a, "a1", t1)
		}
		if rb.Oid != b || rb.Data != nil || rb.DataTid != 0 {
			t.Errorf("restored deletion: %v data %q dataTid %v, want %v data nil", rb.Oid, rb.Data, rb.DataTid, b)
		}
	} else {
		t.Errorf("restored transaction: %d records, want 2", len(txns[1].recs))
	}

	// A tid that is not after the last one is refused, and nothing of it
	// is committed.
	for _, tid := range []zodb.Tid{t2, t1 + 1} {
		_, _, err := tryCommit(ctx, stor, zodb.TxnMeta{Tid: tid}, restoreOp(a, []byte("bad"), 0))
		if err == nil {
			t.Errorf("commit with tid %v, not after last tid %v: no error", tid, t2)
		}
	}
	if last := lastTid(t, stor); last != t2 {
		t.Errorf("lastTid %v, want %v", last, t2)
	}
	// Tids allocated later follow the restored ones.
	t3 := commit(t, stor, store(a, t2, []byte("a3")))
	if t3 <= t2 {
		t.Errorf("commit after a restored tid %v got %v", t2, t3)
	}
	m.add(a, t3, []byte("a3"))
	w.expect(t, t3, a)
	m.checkAll(t, stor)
}

// isConflict tells whether err is a write conflict.
func isConflict(err error) bool {
	var e *zodb.ConflictError
	return errors.As(err, &e)
}
