package storagetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// undoCommit commits the undo of undoTid and returns the tid and the oids
// Undo reported. It skips the test when the driver has no undo.
func undoCommit(t *testing.T, stor *zodb.Storage, undoTid zodb.Tid) (zodb.Tid, []zodb.Oid, error) {
	t.Helper()
	var oids []zodb.Oid
	tid, _, err := tryCommit(testContext(t), stor, zodb.TxnMeta{Description: fmt.Appendf(nil, "undo %v", undoTid)}, undoOp(undoTid, &oids))
	if isUnsupported(err) {
		t.Skipf("the driver has no undo: %v", err)
	}
	return tid, oids, err
}

func sortedOids(v []zodb.Oid) []zodb.Oid {
	v = slices.Clone(v)
	slices.Sort(v)
	return v
}

func testUndo(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	w := watch(t, stor, 16)
	a, b := newOid(t, stor), newOid(t, stor)
	m := model{}
	t1 := commit(t, stor, store(a, 0, []byte("a1")))
	m.add(a, t1, []byte("a1"))
	t2 := commit(t, stor, store(a, t1, []byte("a2")), store(b, 0, []byte("b1")))
	m.add(a, t2, []byte("a2"))
	m.add(b, t2, []byte("b1"))
	w.expect(t, t1, a)
	w.expect(t, t2, a, b)

	// Undo t2: a goes back to its t1 revision, b's creation is undone.
	u1, oids, err := undoCommit(t, stor, t2)
	if err != nil {
		t.Fatalf("undo %v: %v", t2, err)
	}
	if got := sortedOids(oids); !slices.Equal(got, []zodb.Oid{a, b}) {
		t.Errorf("undo %v: reported %v, want %v", t2, got, []zodb.Oid{a, b})
	}
	m.add(a, u1, []byte("a1"))
	m.add(b, u1, nil)
	w.expect(t, u1, a, b)
	m.checkAll(t, stor)
	checkUndoRecords(t, stor, u1, map[zodb.Oid]zodb.DataInfo{
		a: {Oid: a, Tid: u1, Data: []byte("a1"), DataTid: t1},
		b: {Oid: b, Tid: u1},
	})

	// Undo of the undo: back to the t2 revisions.
	u2, oids, err := undoCommit(t, stor, u1)
	if err != nil {
		t.Fatalf("undo of undo %v: %v", u1, err)
	}
	if got := sortedOids(oids); !slices.Equal(got, []zodb.Oid{a, b}) {
		t.Errorf("undo %v: reported %v, want %v", u1, got, []zodb.Oid{a, b})
	}
	m.add(a, u2, []byte("a2"))
	m.add(b, u2, []byte("b1"))
	w.expect(t, u2, a, b)
	m.checkAll(t, stor)
	checkUndoRecords(t, stor, u2, map[zodb.Oid]zodb.DataInfo{
		a: {Oid: a, Tid: u2, Data: []byte("a2"), DataTid: t2},
		b: {Oid: b, Tid: u2, Data: []byte("b1"), DataTid: t2},
	})

	// The object can be changed after all that.
	t3 := commit(t, stor, store(a, u2, []byte("a3")))
	m.add(a, t3, []byte("a3"))
	w.expect(t, t3, a)

	// Undo of a transaction that does not exist.
	before := lastTid(t, stor)
	_, _, err = undoCommit(t, stor, t3+1)
	wantErr[*zodb.UndoError](t, "undo of a missing transaction", err)
	if last := lastTid(t, stor); last != before {
		t.Errorf("lastTid %v after a failed undo, want %v", last, before)
	}
	m.checkAll(t, stor)
}

// checkUndoRecords checks the records of transaction tid.
func checkUndoRecords(t *testing.T, stor *zodb.Storage, tid zodb.Tid, want map[zodb.Oid]zodb.DataInfo) {
	t.Helper()
	txns := iterate(t, stor, tid, tid)
	if len(txns) != 1 {
		t.Fatalf("iterate %v: %d transactions", tid, len(txns))
	}
	recs := txns[0].recs
	if len(recs) != len(want) {
		t.Errorf("transaction %v: %d records, want %d", tid, len(recs), len(want))
	}
	for _, r := range recs {
		w, ok := want[r.Oid]
		if !ok {
			t.Errorf("transaction %v: unexpected record of %v", tid, r.Oid)
			continue
		}
		if r.Tid != w.Tid || (r.Data == nil) != (w.Data == nil) || string(r.Data) != string(w.Data) || r.DataTid != w.DataTid {
			t.Errorf("transaction %v: record %v@%v data %q dataTid %v, want %v@%v data %q dataTid %v",
				tid, r.Oid, r.Tid, r.Data, r.DataTid, w.Oid, w.Tid, w.Data, w.DataTid)
		}
	}
}

func testUndoConflict(t *testing.T, s *suite) {
	t.Run("unresolvable", func(t *testing.T) {
		stor, _ := s.open(t, nil)
		a, b := newOid(t, stor), newOid(t, stor)
		m := model{}
		t1 := commit(t, stor, store(a, 0, []byte("a1")), store(b, 0, []byte("b1")))
		t2 := commit(t, stor, store(a, t1, []byte("a2")), store(b, t1, []byte("b2")))
		t3 := commit(t, stor, store(a, t2, []byte("a3")))
		m.add(a, t1, []byte("a1"))
		m.add(a, t2, []byte("a2"))
		m.add(a, t3, []byte("a3"))
		m.add(b, t1, []byte("b1"))
		m.add(b, t2, []byte("b2"))

		// a changed after t2: t2 cannot be undone, b included.
		_, _, err := undoCommit(t, stor, t2)
		e := wantErr[*zodb.UndoError](t, "undo of a changed object", err)
		if e != nil && e.Oid != a {
			t.Errorf("undo error %v, want about %v", e, a)
		}
		if last := lastTid(t, stor); last != t3 {
			t.Errorf("lastTid %v after a failed undo, want %v", last, t3)
		}
		m.checkAll(t, stor)

		// The last transaction can be undone.
		u, _, err := undoCommit(t, stor, t3)
		if err != nil {
			t.Fatalf("undo %v: %v", t3, err)
		}
		m.add(a, u, []byte("a2"))
		m.checkAll(t, stor)
	})
	t.Run("resolved", func(t *testing.T) {
		stor, _ := s.open(t, &zodb.OpenOptions{Resolver: CounterResolver})
		c := newOid(t, stor)
		t1 := commit(t, stor, store(c, 0, Counter(1)))
		t2 := commit(t, stor, store(c, t1, Counter(3))) // +2
		commit(t, stor, store(c, t2, Counter(4)))       // +1
		// Undoing the +2 leaves the +1.
		u, _, err := undoCommit(t, stor, t2)
		if err != nil {
			t.Fatalf("undo with conflict resolution: %v", err)
		}
		data, serial := load(t, stor, c, zodb.TidMax)
		if v, err := CounterValue(data); err != nil || v != 2 || serial != u {
			t.Errorf("counter after undo: %v (%v) at %v, want 2 at %v", v, err, serial, u)
		}
	})
}

func testUndoLog(t *testing.T, s *suite) {
	stor, _ := s.open(t, nil)
	ctx := testContext(t)
	if _, err := stor.UndoLog(ctx, 0, 10, nil); isUnsupported(err) {
		t.Skipf("the driver has no undo log: %v", err)
	}
	oid := newOid(t, stor)
	var tids []zodb.Tid
	var serial zodb.Tid
	for i := range 5 {
		meta := zodb.TxnMeta{User: fmt.Appendf(nil, "user%d", i%2), Description: fmt.Appendf(nil, "d%d", i), Extension: extension("i", fmt.Sprint(i))}
		serial = commitMeta(t, stor, meta, store(oid, serial, fmt.Appendf(nil, "v%d", i)))
		tids = append(tids, serial)
	}
	// want lists transactions by index, newest first.
	byDesc := func(descs ...string) func(*zodb.UndoInfo) bool {
		return func(u *zodb.UndoInfo) bool { return slices.Contains(descs, string(u.Description)) }
	}
	for _, tc := range []struct {
		name        string
		first, last int
		filter      func(*zodb.UndoInfo) bool
		want        []int
	}{
		{"all", 0, 20, nil, []int{4, 3, 2, 1, 0}},
		{"first and last", 1, 3, nil, []int{3, 2}},
		{"negative last", 0, -2, nil, []int{4, 3}},
		{"first with negative last", 2, -2, nil, []int{2, 1}},
		{"past the end", 5, 20, nil, nil},
		{"empty", 2, 2, nil, nil},
		{"filter", 0, 20, byDesc("d1", "d3"), []int{3, 1}},
		{"filter first", 1, 20, byDesc("d1", "d3", "d4"), []int{3, 1}},
		{"filter last", 0, 1, byDesc("d0", "d2"), []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := stor.UndoLog(ctx, tc.first, tc.last, tc.filter)
			if err != nil {
				t.Fatalf("undoLog(%d, %d): %v", tc.first, tc.last, err)
			}
			var gotIdx []int
			for _, u := range got {
				i := slices.Index(tids, u.Tid)
				gotIdx = append(gotIdx, i)
				if i < 0 {
					continue
				}
				if string(u.Description) != fmt.Sprintf("d%d", i) || string(u.User) != fmt.Sprintf("user%d", i%2) ||
					string(u.Extension) != string(extension("i", fmt.Sprint(i))) || u.Status != zodb.TxnComplete || u.Size <= 0 {
					t.Errorf("undoLog entry %v: user %q desc %q ext %q status %q size %d", u.Tid, u.User, u.Description, u.Extension, u.Status, u.Size)
				}
			}
			if !slices.Equal(gotIdx, tc.want) {
				t.Errorf("undoLog(%d, %d): transactions %v, want %v (by commit order)", tc.first, tc.last, gotIdx, tc.want)
			}
		})
	}
}
