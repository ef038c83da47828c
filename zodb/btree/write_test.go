package btree

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
)

// openRW opens the FileStorage at path with conflict resolution; the
// returned function closes it.
func openRW(t testing.TB, path string) (*zodb.DB, func()) {
	t.Helper()
	ctx := context.Background()
	stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{Resolver: zodb.ResolveConflict})
	if err != nil {
		t.Fatal(err)
	}
	db, err := zodb.NewDB(stor, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db, func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
		if err := stor.Close(); err != nil {
			t.Error(err)
		}
	}
}

// inTxn runs f in a transaction on a connection of db and commits.
func inTxn(t testing.TB, db *zodb.DB, f func(ctx context.Context, root *zodb.PersistentMapping) error) error {
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
	if err := f(ctx, r.(*zodb.PersistentMapping)); err != nil {
		txn.Abort(ctx)
		return err
	}
	return txn.Commit(ctx)
}

func rootGet[T zodb.IPersistent](ctx context.Context, root *zodb.PersistentMapping, name string) (T, error) {
	var zero T
	v, ok := root.Get(name)
	if !ok {
		return zero, fmt.Errorf("root has no %q", name)
	}
	obj, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("root[%q] is %T", name, v)
	}
	return obj, obj.PActivate(ctx)
}

// checkModel compares a tree with the expected items, and checks its
// invariants.
func checkModel[K cmp.Ordered, V comparable, KK any, F family[KK, V]](ctx context.Context, tr *BTree[KK, V, F], model map[K]V, conv func(KK) K) error {
	if err := tr.Verify(ctx); err != nil {
		return err
	}
	want := make([]K, 0, len(model))
	for k := range model {
		want = append(want, k)
	}
	slices.Sort(want)
	i := 0
	var bad error
	err := tr.Range(ctx, nil, nil, func(kk KK, v V) bool {
		k := conv(kk)
		if i >= len(want) || k != want[i] || v != model[k] {
			bad = fmt.Errorf("item #%d is %v→%v", i, k, v)
			return false
		}
		i++
		return true
	})
	if err != nil {
		return err
	}
	if bad != nil {
		return bad
	}
	if i != len(want) {
		return fmt.Errorf("%d items, want %d", i, len(want))
	}
	n, err := tr.Len(ctx)
	if err != nil || n != len(want) {
		return fmt.Errorf("Len = %d, %v; want %d", n, err, len(want))
	}
	for _, k := range want[:min(len(want), 50)] {
		var kk KK
		if anyK, ok := any(k).(KK); ok {
			kk = anyK
		} else {
			kk = any(k).(KK)
		}
		v, ok, err := tr.Get(ctx, kk)
		if err != nil || !ok || v != model[k] {
			return fmt.Errorf("Get(%v) = %v, %v, %v", k, v, ok, err)
		}
	}
	return nil
}

func ident[K any](k K) K  { return k }
func anyStr(k any) string { return k.(string) }

// stateForm returns the form of a stored tree's state: empty, inline or
// tree.
func stateForm(t testing.TB, db *zodb.DB, oid zodb.Oid) string {
	t.Helper()
	ctx := context.Background()
	head, err := db.Storage().LastTid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, _, _, err := db.Storage().Load(ctx, zodb.Xid{Oid: oid, At: head})
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := zodb.DecodeRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	switch s := st.(type) {
	case nil:
		return "empty"
	case zodb.PyTuple:
		if len(s) == 1 {
			return "inline"
		}
		return "tree"
	}
	t.Fatalf("state %s", zodb.PyRepr(st))
	return ""
}

// TestWriteReadBack builds trees of several families, commits them to a
// FileStorage, reopens it and reads them back; then deletes everything.
func TestWriteReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Data.fs")
	rnd := rand.New(rand.NewPCG(1, 2))

	ooModel := map[string]any{}
	iiModel := map[int32]int32{}
	llModel := map[int64]int64{}
	qqModel := map[uint64]uint64{}
	ifModel := map[int32]float32{}
	smallModel := map[string]any{}
	setModel := map[int32]struct{}{}

	// several transactions of inserts: ascending string keys, random ints
	const rounds = 4
	var treeOids = map[string]zodb.Oid{}
	for r := 0; r < rounds; r++ {
		db, closeDB := openRW(t, path)
		err := inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
			if r == 0 {
				root.Set("oo", new(OOBTree))
				root.Set("ii", new(IIBTree))
				root.Set("ll", new(LLBTree))
				root.Set("qq", new(QQBTree))
				root.Set("if", new(IFBTree))
				root.Set("small", new(OOBTree))
				root.Set("set", new(IITreeSet))
			}
			oo, err := rootGet[*OOBTree](ctx, root, "oo")
			if err != nil {
				return err
			}
			for i := r * 3000; i < (r+1)*3000; i++ {
				k := fmt.Sprintf("k%06d", i)
				var v any = int64(i)
				if i%3 == 0 {
					v = zodb.PyTuple{k, int64(i)}
					v = fmt.Sprint(v) // values: str and int
				}
				if _, err := oo.Set(ctx, k, v); err != nil {
					return err
				}
				ooModel[k] = v
			}
			ii, err := rootGet[*IIBTree](ctx, root, "ii")
			if err != nil {
				return err
			}
			for range 5000 {
				k, v := int32(rnd.Uint32()), int32(rnd.Uint32())
				if _, err := ii.Set(ctx, k, v); err != nil {
					return err
				}
				iiModel[k] = v
			}
			ll, err := rootGet[*LLBTree](ctx, root, "ll")
			if err != nil {
				return err
			}
			for range 1000 {
				k, v := int64(rnd.Uint64()), int64(rnd.Uint64())
				if _, err := ll.Set(ctx, k, v); err != nil {
					return err
				}
				llModel[k] = v
			}
			qq, err := rootGet[*QQBTree](ctx, root, "qq")
			if err != nil {
				return err
			}
			for _, k := range []uint64{rnd.Uint64(), math.MaxUint64 - uint64(r), uint64(r)} {
				v := rnd.Uint64() | 1<<63
				if _, err := qq.Set(ctx, k, v); err != nil {
					return err
				}
				qqModel[k] = v
			}
			iff, err := rootGet[*IFBTree](ctx, root, "if")
			if err != nil {
				return err
			}
			for i := range 200 {
				k := int32(r*200 + i)
				v := float32(rnd.Float64() * 1000)
				if _, err := iff.Set(ctx, k, v); err != nil {
					return err
				}
				ifModel[k] = v
			}
			small, err := rootGet[*OOBTree](ctx, root, "small")
			if err != nil {
				return err
			}
			k := fmt.Sprint("s", r)
			if _, err := small.Set(ctx, k, int64(r)); err != nil {
				return err
			}
			smallModel[k] = int64(r)
			set, err := rootGet[*IITreeSet](ctx, root, "set")
			if err != nil {
				return err
			}
			for range 700 {
				k := int32(rnd.IntN(100000))
				if _, err := set.Add(ctx, k); err != nil {
					return err
				}
				setModel[k] = struct{}{}
			}
			for _, name := range []string{"oo", "ii", "small"} {
				v, _ := root.Get(name)
				treeOids[name] = v.(zodb.IPersistent).POid()
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		closeDB()
	}

	check := func(what string) {
		t.Helper()
		db, closeDB := openRW(t, path)
		defer closeDB()
		err := inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
			oo, err := rootGet[*OOBTree](ctx, root, "oo")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, oo, ooModel, anyStr); err != nil {
				return fmt.Errorf("oo: %w", err)
			}
			ii, err := rootGet[*IIBTree](ctx, root, "ii")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, ii, iiModel, ident[int32]); err != nil {
				return fmt.Errorf("ii: %w", err)
			}
			ll, err := rootGet[*LLBTree](ctx, root, "ll")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, ll, llModel, ident[int64]); err != nil {
				return fmt.Errorf("ll: %w", err)
			}
			qq, err := rootGet[*QQBTree](ctx, root, "qq")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, qq, qqModel, ident[uint64]); err != nil {
				return fmt.Errorf("qq: %w", err)
			}
			iff, err := rootGet[*IFBTree](ctx, root, "if")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, iff, ifModel, ident[int32]); err != nil {
				return fmt.Errorf("if: %w", err)
			}
			small, err := rootGet[*OOBTree](ctx, root, "small")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, small, smallModel, anyStr); err != nil {
				return fmt.Errorf("small: %w", err)
			}
			set, err := rootGet[*IITreeSet](ctx, root, "set")
			if err != nil {
				return err
			}
			if err := checkModel(ctx, set, setModel, ident[int32]); err != nil {
				return fmt.Errorf("set: %w", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	check("after inserts")

	// structure: ascending OO keys leave half-full buckets and a two-level
	// tree; the small tree is one inlined bucket.
	db, closeDB := openRW(t, path)
	if f := stateForm(t, db, treeOids["small"]); f != "inline" {
		t.Errorf("small tree stored as %s, want inline", f)
	}
	if f := stateForm(t, db, treeOids["oo"]); f != "tree" {
		t.Errorf("big tree stored as %s", f)
	}
	err := inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
		oo, err := rootGet[*OOBTree](ctx, root, "oo")
		if err != nil {
			return err
		}
		s, err := oo.inspectStructure(ctx)
		if err != nil {
			return err
		}
		if s.Depth != 2 {
			return fmt.Errorf("12000 ascending OO keys: depth %d, want 2", s.Depth)
		}
		for b := oo.firstbucket; b.next != nil; b = b.next { // all but the last are half full
			if len(b.keys) != infoOO.maxLeaf/2 && len(b.keys) != infoOO.maxLeaf/2+1 {
				return fmt.Errorf("bucket %v of ascending keys has %d items", b.POid(), len(b.keys))
			}
		}
		return nil
	})
	closeDB()
	if err != nil {
		t.Fatal(err)
	}

	// deletes, in random order, down to empty, over several transactions
	ooKeys := make([]string, 0, len(ooModel))
	for k := range ooModel {
		ooKeys = append(ooKeys, k)
	}
	slices.Sort(ooKeys)
	rnd.Shuffle(len(ooKeys), func(i, j int) { ooKeys[i], ooKeys[j] = ooKeys[j], ooKeys[i] })
	iiKeys := make([]int32, 0, len(iiModel))
	for k := range iiModel {
		iiKeys = append(iiKeys, k)
	}
	slices.Sort(iiKeys)
	rnd.Shuffle(len(iiKeys), func(i, j int) { iiKeys[i], iiKeys[j] = iiKeys[j], iiKeys[i] })
	const delRounds = 5
	for r := 0; r < delRounds; r++ {
		db, closeDB := openRW(t, path)
		err := inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
			oo, err := rootGet[*OOBTree](ctx, root, "oo")
			if err != nil {
				return err
			}
			n := len(ooKeys) / (delRounds - r)
			for _, k := range ooKeys[:n] {
				if ok, err := oo.Delete(ctx, k); err != nil || !ok {
					return fmt.Errorf("delete %s: %v %v", k, ok, err)
				}
				delete(ooModel, k)
			}
			ooKeys = ooKeys[n:]
			if ok, err := oo.Delete(ctx, "no such key"); err != nil || ok {
				return fmt.Errorf("delete of a missing key: %v %v", ok, err)
			}
			ii, err := rootGet[*IIBTree](ctx, root, "ii")
			if err != nil {
				return err
			}
			n = len(iiKeys) / (delRounds - r)
			for _, k := range iiKeys[:n] {
				if ok, err := ii.Delete(ctx, k); err != nil || !ok {
					return fmt.Errorf("delete %d: %v %v", k, ok, err)
				}
				delete(iiModel, k)
			}
			iiKeys = iiKeys[n:]
			return nil
		})
		closeDB()
		if err != nil {
			t.Fatalf("delete round %d: %v", r, err)
		}
		check(fmt.Sprintf("after delete round %d", r))
	}
	db, closeDB = openRW(t, path)
	defer closeDB()
	for _, name := range []string{"oo", "ii"} {
		if f := stateForm(t, db, treeOids[name]); f != "empty" {
			t.Errorf("%s emptied: stored as %s, want None", name, f)
		}
	}
}

// TestDeleteOrders deletes keys of in-memory trees in many orders,
// checking the invariants after every step.
func TestDeleteOrders(t *testing.T) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 121, 500, 3000, 70000} {
		for _, order := range []string{"asc", "desc", "random"} {
			tr := new(IIBTree)
			model := map[int32]int32{}
			keys := make([]int32, n)
			for i := range keys {
				keys[i] = int32(i * 7)
				if _, err := tr.Set(ctx, keys[i], int32(i)); err != nil {
					t.Fatal(err)
				}
				model[keys[i]] = int32(i)
			}
			switch order {
			case "desc":
				slices.Reverse(keys)
			case "random":
				rnd.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			}
			step := max(1, n/7)
			for i, k := range keys {
				if ok, err := tr.Delete(ctx, k); err != nil || !ok {
					t.Fatalf("n=%d %s: delete %d: %v %v", n, order, k, ok, err)
				}
				delete(model, k)
				if i%step == 0 || i == len(keys)-1 {
					if err := checkModel(ctx, tr, model, ident[int32]); err != nil {
						t.Fatalf("n=%d %s after %d deletes: %v", n, order, i+1, err)
					}
				}
			}
			if tr.PyGetState() != nil {
				t.Errorf("n=%d %s: empty tree state %s", n, order, zodb.PyRepr(tr.PyGetState()))
			}
		}
	}
}

// TestRootSplit: the root splits when it reaches twice the maximum
// internal size, then has two children.
func TestRootSplit(t *testing.T) {
	ctx := context.Background()
	tr := new(IIBTree)
	// ascending inserts leave buckets of 60: 1000 buckets make the root split
	perBucket := infoII.maxLeaf / 2
	n := 0
	for ; ; n++ {
		if _, err := tr.Set(ctx, int32(n), 0); err != nil {
			t.Fatal(err)
		}
		if tr.data[0].tree != nil {
			break
		}
		if len(tr.data) >= 2*infoII.maxInternal {
			t.Fatalf("root has %d children without splitting", len(tr.data))
		}
	}
	if len(tr.data) != 2 {
		t.Fatalf("root split into %d children", len(tr.data))
	}
	if want := (2*infoII.maxInternal - 1) * perBucket; n != want+perBucket && n != want {
		t.Logf("root split after %d ascending keys", n+1)
	}
	if err := tr.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKeys: ordering of Python keys and refusal of unorderable ones.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	groups := [][]any{ // each ascending
		{int64(-5), false, 2.5, int64(3), new(big.Int).Lsh(big.NewInt(1), 70)},
		{"", "a", "b", "z", "é", "\u20ac"},
		{zodb.PyBytes(""), zodb.PyBytes("\x00"), zodb.PyBytes("z"), zodb.PyBytes("\xff")},
		{zodb.PyTuple{}, zodb.PyTuple{"a", int64(1)}, zodb.PyTuple{"a", int64(2)}, zodb.PyTuple{"a", int64(2), "x"}, zodb.PyTuple{"b"}},
	}
	for _, g := range groups {
		tr := new(OOBTree)
		for i := len(g) - 1; i >= 0; i-- {
			if _, err := tr.Set(ctx, g[i], int64(i)); err != nil {
				t.Fatalf("Set(%s): %v", zodb.PyRepr(g[i]), err)
			}
		}
		var got []any
		if err := tr.Range(ctx, nil, nil, func(k, v any) bool { got = append(got, k); return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(g) {
			t.Fatalf("%d keys, want %d", len(got), len(g))
		}
		for i := range g {
			if !zodb.PyEqual(got[i], g[i]) {
				t.Errorf("key #%d is %s, want %s", i, zodb.PyRepr(got[i]), zodb.PyRepr(g[i]))
			}
		}
		// a key of another kind cannot be ordered among them
		other := "x"
		if _, ok := g[0].(string); ok {
			other2 := int64(1)
			_, err := tr.Set(ctx, other2, "v")
			var inc *IncomparableError
			if !errors.As(err, &inc) {
				t.Errorf("int key among str keys: %v", err)
			}
			continue
		}
		_, err := tr.Set(ctx, other, "v")
		var inc *IncomparableError
		if !errors.As(err, &inc) {
			t.Errorf("str key among %T keys: %v", g[0], err)
		}
	}
	if c, err := Compare(zodb.PyTuple{"a", int64(1)}, zodb.PyTuple{"a", "b"}); err == nil {
		t.Errorf("Compare of tuples with int vs str = %d, want an error", c)
	}
	if _, err := new(OOBTree).Set(ctx, zodb.NewPyDict(), "v"); err == nil {
		t.Errorf("dict key accepted")
	}
	if _, err := new(OOBTree).Set(ctx, nil, "v"); err == nil {
		t.Errorf("None key accepted")
	}
	b := new(IIBucket)
	if err := b.PySetState(zodb.PyTuple{zodb.PyTuple{int64(1), int64(1 << 40)}}); err == nil {
		t.Errorf("II value out of range accepted")
	}
	b = new(IIBucket)
	if err := b.PySetState(zodb.PyTuple{zodb.PyTuple{int64(2), int64(1), int64(1), int64(1)}}); err == nil {
		t.Errorf("keys out of order accepted")
	}
}

// TestMixedOps runs random inserts and deletes on in-memory trees and
// buckets against a map.
func TestMixedOps(t *testing.T) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(5, 6))
	tr := new(OOBTree)
	set := new(OOTreeSet)
	b := new(OOBucket)
	model := map[string]any{}
	setModel := map[string]struct{}{}
	for step := range 40000 {
		k := fmt.Sprintf("%05d", rnd.IntN(12000))
		switch rnd.IntN(3) {
		case 0, 1:
			v := int64(rnd.IntN(100))
			added, err := tr.Set(ctx, k, v)
			_, had := model[k]
			if err != nil || added == had {
				t.Fatalf("step %d: Set(%s) = %v, %v (had %v)", step, k, added, err, had)
			}
			model[k] = v
			if _, err := b.Set(ctx, k, v); err != nil {
				t.Fatal(err)
			}
			if _, err := set.Add(ctx, k); err != nil {
				t.Fatal(err)
			}
			setModel[k] = struct{}{}
		case 2:
			removed, err := tr.Delete(ctx, k)
			_, had := model[k]
			if err != nil || removed != had {
				t.Fatalf("step %d: Delete(%s) = %v, %v (had %v)", step, k, removed, err, had)
			}
			delete(model, k)
			if _, err := b.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			if _, err := set.Remove(ctx, k); err != nil {
				t.Fatal(err)
			}
			delete(setModel, k)
		}
		if step%5000 == 4999 {
			if err := checkModel(ctx, tr, model, anyStr); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if err := checkModel(ctx, set, setModel, anyStr); err != nil {
				t.Fatalf("step %d: set: %v", step, err)
			}
			if n, _ := b.Len(ctx); n != len(model) {
				t.Fatalf("step %d: bucket has %d items, want %d", step, n, len(model))
			}
		}
	}
	// a range in the middle
	lo, hi := any("03000"), any("03100")
	var got []string
	if err := tr.Range(ctx, &lo, &hi, func(k, v any) bool { got = append(got, k.(string)); return true }); err != nil {
		t.Fatal(err)
	}
	var want []string
	for k := range model {
		if k >= "03000" && k <= "03100" {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Range(03000, 03100) = %d keys, want %d", len(got), len(want))
	}
}

// TestSavepoint: a rollback to a savepoint undoes the splits made since.
func TestSavepoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Data.fs")
	db, closeDB := openRW(t, path)
	model := map[int32]int32{}
	err := inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
		tr := new(IIBTree)
		root.Set("tree", tr)
		for i := range 1000 {
			if _, err := tr.Set(ctx, int32(i*10), 1); err != nil {
				return err
			}
			model[int32(i*10)] = 1
		}
		return nil
	})
	if err != nil {
		closeDB()
		t.Fatal(err)
	}
	err = inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
		tr, err := rootGet[*IIBTree](ctx, root, "tree")
		if err != nil {
			return err
		}
		for i := range 10 {
			if _, err := tr.Set(ctx, int32(i*10+5), 2); err != nil {
				return err
			}
			model[int32(i*10+5)] = 2
		}
		sp, err := transaction.Current(ctx).Savepoint(ctx)
		if err != nil {
			return err
		}
		for i := range 3000 {
			if _, err := tr.Set(ctx, int32(i*3+1), 3); err != nil {
				return err
			}
		}
		if _, err := tr.Delete(ctx, 0); err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		if err := checkModel(ctx, tr, model, ident[int32]); err != nil {
			return fmt.Errorf("after rollback: %w", err)
		}
		if _, err := tr.Set(ctx, 7, 4); err != nil {
			return err
		}
		model[7] = 4
		return nil
	})
	closeDB()
	if err != nil {
		t.Fatal(err)
	}
	db, closeDB = openRW(t, path)
	err = inTxn(t, db, func(ctx context.Context, root *zodb.PersistentMapping) error {
		tr, err := rootGet[*IIBTree](ctx, root, "tree")
		if err != nil {
			return err
		}
		return checkModel(ctx, tr, model, ident[int32])
	})
	closeDB()
	if err != nil {
		t.Fatal(err)
	}
}
