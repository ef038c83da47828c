package btree

import (
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Conflict resolution of buckets and sets (and of trees that are one
// inlined bucket), with BTrees' rules: a 3-way merge of the old state and
// the two changed ones where each side may change, add or remove keys the
// other side leaves alone.

// ConflictError is a failed merge; Reason is BTrees' reason code.
type ConflictError struct {
	Class  string
	Reason int
}

var conflictReasons = map[int]string{
	0:  "the buckets' next pointers changed",
	1:  "both changed the value of a key",
	2:  "a key deleted by one was changed by the other",
	3:  "a key deleted by one was changed by the other",
	4:  "both inserted or deleted the same key",
	5:  "both deleted the same key",
	6:  "both inserted the same key",
	7:  "both deleted a key, or one deleted and the other changed it",
	8:  "both deleted a key, or one deleted and the other changed it",
	9:  "both deleted the same keys",
	10: "the merge would empty the bucket",
	11: "the tree is not a single inlined bucket",
	12: "one of the changed buckets is empty",
	13: "the first key of the bucket was deleted",
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("BTrees conflict in %s: %s (reason %d)", e.Class, conflictReasons[e.Reason], e.Reason)
}

// bucketState takes a bucket state apart: items and next reference.
func bucketState[K, V any, F family[K, V]](state any) (keys []K, vals []V, next *zodb.PyRef, err error) {
	if state == nil {
		return nil, nil, nil, nil
	}
	st, ok := state.(zodb.PyTuple)
	if !ok || len(st) < 1 || len(st) > 2 {
		return nil, nil, nil, fmt.Errorf("bucket state is %s", short(state))
	}
	items, ok := st[0].(zodb.PyTuple)
	if !ok {
		return nil, nil, nil, fmt.Errorf("bucket items are %s", short(st[0]))
	}
	if keys, vals, err = decodeItems[K, V, F](items); err != nil {
		return nil, nil, nil, err
	}
	if len(st) == 2 {
		if next, ok = st[1].(*zodb.PyRef); !ok {
			return nil, nil, nil, fmt.Errorf("next bucket is %s, not a reference", short(st[1]))
		}
	}
	return keys, vals, next, nil
}

func refOid(r *zodb.PyRef) (zodb.Oid, bool) {
	if r == nil {
		return 0, false
	}
	ri, err := r.Parse()
	if err != nil {
		return 0, false
	}
	return ri.Oid, true
}

// resolveBucket merges the states of a bucket or set.
func resolveBucket[K, V any, F family[K, V]](old, committed, new any) (any, error) {
	var f F
	fi := f.info()
	class := fi.name + "Bucket"
	if fi.set {
		class = fi.name + "Set"
	}
	var keys [3][]K
	var vals [3][]V
	var next [3]*zodb.PyRef
	for i, st := range [3]any{old, committed, new} {
		var err error
		if keys[i], vals[i], next[i], err = bucketState[K, V, F](st); err != nil {
			return nil, fmt.Errorf("%s: %w", class, err)
		}
	}
	o0, ok0 := refOid(next[0])
	for i := 1; i < 3; i++ {
		o, ok := refOid(next[i])
		if ok != ok0 || o != o0 {
			return nil, &ConflictError{class, 0}
		}
	}
	mk, mv, err := merge[K, V, F](class, keys, vals)
	if err != nil {
		return nil, err
	}
	b := &Bucket[K, V, F]{keys: mk, vals: mv}
	if next[0] != nil {
		return zodb.PyTuple{b.items(), next[0]}, nil
	}
	return zodb.PyTuple{b.items()}, nil
}

// resolveTree merges trees that are a single inlined bucket in all three
// states (or empty).
func resolveTree[K, V any, F family[K, V]](old, committed, new any) (any, error) {
	var f F
	fi := f.info()
	class := fi.name + "BTree"
	if fi.set {
		class = fi.name + "TreeSet"
	}
	var bs [3]any
	for i, st := range [3]any{old, committed, new} {
		if st == nil {
			continue
		}
		t1, ok := st.(zodb.PyTuple)
		if !ok || len(t1) != 1 {
			return nil, &ConflictError{class, 11}
		}
		t2, ok := t1[0].(zodb.PyTuple)
		if !ok || len(t2) != 1 {
			return nil, &ConflictError{class, 11}
		}
		if _, ok := t2[0].(zodb.PyTuple); !ok {
			return nil, &ConflictError{class, 11}
		}
		bs[i] = t2[0]
	}
	r, err := resolveBucket[K, V, F](bs[0], bs[1], bs[2])
	if err != nil {
		return nil, err
	}
	return zodb.PyTuple{zodb.PyTuple{r}}, nil
}

// merge is BTrees' bucket merge of s[0] (old) with the changes of s[1]
// (committed) and s[2] (new).
func merge[K, V any, F family[K, V]](class string, keys [3][]K, vals [3][]V) ([]K, []V, error) {
	var f F
	set := f.info().set
	if len(keys[1]) == 0 || len(keys[2]) == 0 {
		return nil, nil, &ConflictError{class, 12}
	}
	var rk []K
	var rv []V
	var pos [3]int
	at := func(i int) bool { return pos[i] < len(keys[i]) }
	emit := func(i int) {
		rk = append(rk, keys[i][pos[i]])
		if !set {
			rv = append(rv, vals[i][pos[i]])
		}
	}
	out := func(i int) { emit(i); pos[i]++ }
	fail := func(reason int) ([]K, []V, error) { return nil, nil, &ConflictError{class, reason} }
	var cerr error
	cmpK := func(a, b int) int {
		c, err := f.cmpKey(keys[a][pos[a]], keys[b][pos[b]])
		if err != nil && cerr == nil {
			cerr = err
		}
		return c
	}
	// sameVal: the values at the positions of a and b are equal (sets:
	// always); an incomparable pair is a conflict.
	sameVal := func(a, b int) bool {
		if set {
			return true
		}
		c, err := f.cmpVal(vals[a][pos[a]], vals[b][pos[b]])
		if err != nil && cerr == nil {
			cerr = err
		}
		return err == nil && c == 0
	}
	failErr := func() ([]K, []V, error) {
		return nil, nil, fmt.Errorf("%w: %v", &ConflictError{class, 1}, cerr)
	}
	for at(0) && at(1) && at(2) {
		c12, c13 := cmpK(0, 1), cmpK(0, 2)
		if cerr != nil {
			return failErr()
		}
		switch {
		case c12 == 0 && c13 == 0:
			switch {
			case sameVal(0, 1):
				emit(2) // changed in new, or unchanged
			case sameVal(0, 2):
				emit(1)
			default:
				if cerr != nil {
					return failErr()
				}
				return fail(1)
			}
			pos[0]++
			pos[1]++
			pos[2]++
		case c12 == 0 && c13 > 0:
			out(2) // inserted in new
		case c12 == 0:
			if !sameVal(0, 1) { // deleted in new, changed in committed
				if cerr != nil {
					return failErr()
				}
				return fail(2)
			}
			if pos[2] == 0 {
				return fail(13)
			}
			pos[0]++
			pos[1]++
		case c13 == 0 && c12 > 0:
			out(1) // inserted in committed
		case c13 == 0:
			if !sameVal(0, 2) {
				if cerr != nil {
					return failErr()
				}
				return fail(3)
			}
			if pos[1] == 0 {
				return fail(13)
			}
			pos[0]++
			pos[2]++
		default:
			c23 := cmpK(1, 2)
			if cerr != nil {
				return failErr()
			}
			switch {
			case c23 == 0:
				return fail(4)
			case c12 > 0:
				if c23 > 0 {
					out(2)
				} else {
					out(1)
				}
			case c13 > 0:
				out(2)
			default:
				return fail(5)
			}
		}
	}
	for at(1) && at(2) {
		c23 := cmpK(1, 2)
		if cerr != nil {
			return failErr()
		}
		switch {
		case c23 == 0:
			return fail(6)
		case c23 > 0:
			out(2)
		default:
			out(1)
		}
	}
	for at(0) && at(1) {
		c12 := cmpK(0, 1)
		if cerr != nil {
			return failErr()
		}
		switch {
		case c12 > 0:
			out(1)
		case c12 == 0 && sameVal(0, 1):
			pos[0]++
			pos[1]++
		default:
			if cerr != nil {
				return failErr()
			}
			return fail(7)
		}
	}
	for at(0) && at(2) {
		c13 := cmpK(0, 2)
		if cerr != nil {
			return failErr()
		}
		switch {
		case c13 > 0:
			out(2)
		case c13 == 0 && sameVal(0, 2):
			pos[0]++
			pos[2]++
		default:
			if cerr != nil {
				return failErr()
			}
			return fail(8)
		}
	}
	if at(0) {
		return fail(9)
	}
	for at(1) {
		out(1)
	}
	for at(2) {
		out(2)
	}
	if len(rk) == 0 {
		return fail(10)
	}
	return rk, rv, nil
}
