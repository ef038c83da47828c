package storagetest

import (
	"testing"

	"github.com/neozodb/neo/zodb"
)

// pack packs stor and skips the test when the driver cannot pack.
func pack(t *testing.T, stor *zodb.Storage, packTid zodb.Tid, gc bool) {
	t.Helper()
	err := stor.Pack(testContext(t), packTid, gc)
	if isUnsupported(err) {
		t.Skipf("the driver cannot pack: %v", err)
	}
	if err != nil {
		t.Fatalf("pack at %v (gc %v): %v", packTid, gc, err)
	}
}

// node returns the record of an object with a value and references.
func node(v int, refs ...zodb.Oid) []byte {
	kids := make([]any, len(refs))
	for i, oid := range refs {
		kids[i] = Ref(oid, "storagetest.Node")
	}
	return Record("storagetest.Node", Dict{{"value", v}, {"kids", kids}})
}

func testPack(t *testing.T, s *suite) {
	for _, gc := range []bool{false, true} {
		name := "nogc"
		if gc {
			name = "gc"
		}
		t.Run(name, func(t *testing.T) { packRevisions(t, s, gc) })
	}
}

// packRevisions checks that pack removes the revisions that were no longer
// current at the pack time, and only them.
func packRevisions(t *testing.T, s *suite, gc bool) {
	stor, _ := s.open(t, nil)
	w := watch(t, stor, 16)
	oids, err := stor.NewOids(testContext(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := oids[0], oids[1], oids[2]
	root := Mapping(map[string]any{"a": Ref(a, "storagetest.Node"), "b": Ref(b, "storagetest.Node")})
	t1 := commit(t, stor, store(0, 0, root), store(a, 0, node(1)), store(b, 0, node(1)))
	t2 := commit(t, stor, store(a, t1, node(2)), store(c, 0, node(1)))
	t3 := commit(t, stor, store(a, t2, node(3)), store(b, t1, node(2)), deleteOp(c, t2))
	t4 := commit(t, stor, store(a, t3, node(4)))
	for _, tid := range []zodb.Tid{t1, t2, t3, t4} {
		w.next(t)
		_ = tid
	}

	pack(t, stor, t3, gc)

	// After pack, the history starts at the revision current at t3.
	m := model{}
	m.add(0, t1, root)
	m.add(a, t3, node(3))
	m.add(a, t4, node(4))
	m.add(b, t3, node(2))
	m.checkAll(t, stor)
	m.checkLoad(t, stor, c, zodb.TidMax) // deleted before the pack time: gone
	for _, at := range []zodb.Tid{t1, t2} {
		m.checkLoad(t, stor, a, at)
		m.checkLoad(t, stor, b, at)
	}
	h, err := stor.History(testContext(t), a, 10)
	if err != nil || len(h) != 2 || h[0].Tid != t4 || h[1].Tid != t3 {
		t.Errorf("history of %v after pack: %v %v, want revisions %v %v", a, h, err, t4, t3)
	}

	// Iteration: the transactions up to the pack time hold only the
	// revisions kept, and are marked packed.
	kept := map[zodb.Xid]bool{}
	for _, txn := range iterate(t, stor, 0, zodb.TidMax) {
		tid := txn.info.Tid
		if tid <= t3 && txn.info.Status != zodb.TxnPacked {
			t.Errorf("transaction %v before the pack time: status %q, want %q", tid, txn.info.Status, zodb.TxnPacked)
		}
		if tid > t3 && txn.info.Status != zodb.TxnComplete {
			t.Errorf("transaction %v after the pack time: status %q, want %q", tid, txn.info.Status, zodb.TxnComplete)
		}
		for _, r := range txn.recs {
			kept[zodb.Xid{Oid: r.Oid, At: tid}] = true
		}
	}
	want := map[zodb.Xid]bool{{Oid: 0, At: t1}: true, {Oid: a, At: t3}: true, {Oid: b, At: t3}: true, {Oid: a, At: t4}: true}
	if !mapsEqual(kept, want) {
		t.Errorf("records after pack: %v, want %v", kept, want)
	}

	// Packed transactions cannot be undone.
	if log, err := stor.UndoLog(testContext(t), 0, 10, nil); err == nil {
		if len(log) != 1 || log[0].Tid != t4 {
			t.Errorf("undo log after pack: %v, want only %v", log, t4)
		}
	} else if !isUnsupported(err) {
		t.Errorf("undo log: %v", err)
	}

	// The storage goes on, and the pack sent no event.
	t5 := commit(t, stor, store(b, t3, node(5)))
	w.expect(t, t5, b)
	m.add(b, t5, node(5))
	m.checkAll(t, stor)
	pack(t, stor, t3, gc) // again: nothing to do
	m.checkAll(t, stor)
}

func mapsEqual[K comparable](a, b map[K]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func testPackGC(t *testing.T, s *suite) {
	for _, gc := range []bool{false, true} {
		name := "nogc"
		if gc {
			name = "gc"
		}
		t.Run(name, func(t *testing.T) {
			stor, _ := s.open(t, nil)
			oids, err := stor.NewOids(testContext(t), 5)
			if err != nil {
				t.Fatal(err)
			}
			a, b, c, d, e := oids[0], oids[1], oids[2], oids[3], oids[4]
			// root → a → b (inside a list), root → d; c unreachable.
			root1 := Mapping(map[string]any{"a": Ref(a, "storagetest.Node"), "d": Ref(d, "storagetest.Node")})
			t1 := commit(t, stor, store(0, 0, root1), store(a, 0, node(1, b)), store(b, 0, node(1)),
				store(c, 0, node(1)), store(d, 0, node(1)))
			// d is no longer reachable at t2.
			root2 := Mapping(map[string]any{"a": Ref(a, "storagetest.Node")})
			t2 := commit(t, stor, store(0, t1, root2))
			// e is created after the pack time, unreachable.
			t3 := commit(t, stor, store(e, 0, node(1)))

			pack(t, stor, t2, gc)

			m := model{}
			m.add(0, t2, root2)
			m.add(a, t1, node(1, b))
			m.add(b, t1, node(1))
			m.add(e, t3, node(1))
			if !gc {
				m.add(c, t1, node(1))
				m.add(d, t1, node(1))
			}
			m.checkAll(t, stor)
			m.checkLoad(t, stor, c, zodb.TidMax)
			m.checkLoad(t, stor, d, zodb.TidMax)
		})
	}
}
