package btree

import (
	"context"
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Bucket is a leaf of a BTree, or a standalone mapping (Set when V is
// struct{}): sorted keys and their values, and the next bucket of the
// tree's chain.
type Bucket[K, V any, F family[K, V]] struct {
	zodb.Persistent
	keys []K
	vals []V // nil for sets
	next *Bucket[K, V, F]
}

func (b *Bucket[K, V, F]) fam() famInfo { var f F; return f.info() }

// search returns the index of k in b.keys, or where to insert it.
func (b *Bucket[K, V, F]) search(k K) (int, bool, error) {
	var f F
	lo, hi := 0, len(b.keys)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		c, err := f.cmpKey(b.keys[m], k)
		if err != nil {
			return 0, false, err
		}
		switch {
		case c < 0:
			lo = m + 1
		case c > 0:
			hi = m
		default:
			return m, true, nil
		}
	}
	return lo, false, nil
}

// Len returns the number of items.
func (b *Bucket[K, V, F]) Len(ctx context.Context) (int, error) {
	if err := b.PActivate(ctx); err != nil {
		return 0, err
	}
	return len(b.keys), nil
}

// Get returns the value of k.
func (b *Bucket[K, V, F]) Get(ctx context.Context, k K) (v V, ok bool, err error) {
	if err := b.PActivate(ctx); err != nil {
		return v, false, err
	}
	i, found, err := b.search(k)
	if err != nil || !found {
		return v, false, err
	}
	if b.vals != nil {
		v = b.vals[i]
	}
	return v, true, nil
}

// Has tells whether k is in the bucket or set.
func (b *Bucket[K, V, F]) Has(ctx context.Context, k K) (bool, error) {
	_, ok, err := b.Get(ctx, k)
	return ok, err
}

// Set sets the value of k; added tells that k was not there.
func (b *Bucket[K, V, F]) Set(ctx context.Context, k K, v V) (added bool, err error) {
	if err := b.PActivate(ctx); err != nil {
		return false, err
	}
	added, _, err = b.set(k, v, false)
	return added, err
}

// Insert adds k with value v if k is not there yet (BTrees' insert).
func (b *Bucket[K, V, F]) Insert(ctx context.Context, k K, v V) (added bool, err error) {
	if err := b.PActivate(ctx); err != nil {
		return false, err
	}
	added, _, err = b.set(k, v, true)
	return added, err
}

// Add adds k to a set.
func (b *Bucket[K, V, F]) Add(ctx context.Context, k K) (added bool, err error) {
	var v V
	return b.Insert(ctx, k, v)
}

// Delete removes k; removed tells that it was there.
func (b *Bucket[K, V, F]) Delete(ctx context.Context, k K) (removed bool, err error) {
	if err := b.PActivate(ctx); err != nil {
		return false, err
	}
	return b.del(k)
}

// Remove removes k from a set.
func (b *Bucket[K, V, F]) Remove(ctx context.Context, k K) (bool, error) { return b.Delete(ctx, k) }

// Range calls yield for the items with min <= key <= max (nil: no bound),
// ascending, until yield returns false.
func (b *Bucket[K, V, F]) Range(ctx context.Context, min, max *K, yield func(K, V) bool) error {
	if err := b.PActivate(ctx); err != nil {
		return err
	}
	_, err := b.rangeFrom(min, max, yield)
	return err
}

// set stores k→v in the activated bucket: added if k is new, changed if
// the bucket changed.
func (b *Bucket[K, V, F]) set(k K, v V, unique bool) (added, changed bool, err error) {
	if len(b.keys) == 0 { // refuse unorderable keys even in an empty bucket
		var f F
		if _, err := f.cmpKey(k, k); err != nil {
			return false, false, err
		}
	}
	i, found, err := b.search(k)
	if err != nil {
		return false, false, err
	}
	if found {
		if unique || b.vals == nil {
			return false, false, nil
		}
		var f F
		if c, err := f.cmpVal(b.vals[i], v); err == nil && c == 0 {
			return false, false, nil // BTrees does not mark the bucket changed
		}
		b.vals[i] = v
		b.PModify()
		return false, true, nil
	}
	b.keys = insertAt(b.keys, i, k)
	if !b.fam().set {
		b.vals = insertAt(b.vals, i, v)
	}
	b.PModify()
	return true, true, nil
}

func (b *Bucket[K, V, F]) del(k K) (bool, error) {
	i, found, err := b.search(k)
	if err != nil || !found {
		return false, err
	}
	b.keys = removeAt(b.keys, i)
	if b.vals != nil {
		b.vals = removeAt(b.vals, i)
	}
	b.PModify()
	return true, nil
}

// rangeFrom yields the items of the activated bucket within [min, max];
// more is false when max was passed or yield stopped.
func (b *Bucket[K, V, F]) rangeFrom(min, max *K, yield func(K, V) bool) (more bool, err error) {
	var f F
	i := 0
	if min != nil {
		if i, _, err = b.search(*min); err != nil {
			return false, err
		}
	}
	var zero V
	for ; i < len(b.keys); i++ {
		if max != nil {
			c, err := f.cmpKey(b.keys[i], *max)
			if err != nil {
				return false, err
			}
			if c > 0 {
				return false, nil
			}
		}
		v := zero
		if b.vals != nil {
			v = b.vals[i]
		}
		if !yield(b.keys[i], v) {
			return false, nil
		}
	}
	return true, nil
}

// split moves the upper half of b's items to the new bucket n, linked
// after b (BTrees' bucket_split at the middle).
func (b *Bucket[K, V, F]) split(n *Bucket[K, V, F]) {
	idx := len(b.keys) / 2
	n.keys = append([]K(nil), b.keys[idx:]...)
	b.keys = b.keys[:idx:idx]
	if b.vals != nil {
		n.vals = append([]V(nil), b.vals[idx:]...)
		b.vals = b.vals[:idx:idx]
	}
	n.next = b.next
	b.next = n
	b.PModify()
}

// ---- state ----

// items returns the flat items tuple of the state.
func (b *Bucket[K, V, F]) items() zodb.PyTuple {
	var f F
	if b.fam().set {
		t := make(zodb.PyTuple, len(b.keys))
		for i, k := range b.keys {
			t[i] = f.keyToPy(k)
		}
		return t
	}
	t := make(zodb.PyTuple, 2*len(b.keys))
	for i, k := range b.keys {
		t[2*i] = f.keyToPy(k)
		t[2*i+1] = f.valToPy(b.vals[i])
	}
	return t
}

// PyGetState returns (items,) or (items, next).
func (b *Bucket[K, V, F]) PyGetState() any {
	if b.next != nil {
		return zodb.PyTuple{b.items(), b.next}
	}
	return zodb.PyTuple{b.items()}
}

// PySetState accepts (items,) and (items, next).
func (b *Bucket[K, V, F]) PySetState(state any) error {
	if err := b.setState(state); err != nil {
		return fmt.Errorf("%s: %w", b.className(), err)
	}
	return nil
}

func (b *Bucket[K, V, F]) className() string {
	fi := b.fam()
	kind := "Bucket"
	if fi.set {
		kind = "Set"
	}
	return fi.name + kind
}

func (b *Bucket[K, V, F]) setState(state any) error {
	st, ok := state.(zodb.PyTuple)
	if !ok || len(st) < 1 || len(st) > 2 {
		return fmt.Errorf("state is %s, want (items,) or (items, next)", short(state))
	}
	items, ok := st[0].(zodb.PyTuple)
	if !ok {
		return fmt.Errorf("items are %s, not a tuple", short(st[0]))
	}
	keys, vals, err := decodeItems[K, V, F](items)
	if err != nil {
		return err
	}
	b.keys, b.vals, b.next = keys, vals, nil
	if len(st) == 2 {
		next, ok := st[1].(*Bucket[K, V, F])
		if !ok {
			return fmt.Errorf("next bucket is %s, not a %s", short(st[1]), b.className())
		}
		b.next = next
	}
	return nil
}

// decodeItems decodes a flat items tuple (keys only for sets), checking
// that the keys ascend.
func decodeItems[K, V any, F family[K, V]](items zodb.PyTuple) ([]K, []V, error) {
	var f F
	set := f.info().set
	step := 2
	if set {
		step = 1
	}
	if len(items)%step != 0 {
		return nil, nil, fmt.Errorf("items tuple has odd length %d", len(items))
	}
	n := len(items) / step
	keys := make([]K, n)
	var vals []V
	if !set {
		vals = make([]V, n)
	}
	for i := 0; i < n; i++ {
		k, err := f.keyFromPy(items[i*step])
		if err != nil {
			return nil, nil, fmt.Errorf("key #%d: %w", i, err)
		}
		if i > 0 {
			c, err := f.cmpKey(keys[i-1], k)
			if err != nil {
				return nil, nil, fmt.Errorf("key #%d: %w", i, err)
			}
			if c >= 0 {
				return nil, nil, fmt.Errorf("key #%d %s is not after %s", i, short(items[i*step]), short(f.keyToPy(keys[i-1])))
			}
		}
		keys[i] = k
		if !set {
			v, err := f.valFromPy(items[i*step+1])
			if err != nil {
				return nil, nil, fmt.Errorf("value #%d: %w", i, err)
			}
			vals[i] = v
		}
	}
	return keys, vals, nil
}

func short(v any) string {
	s := zodb.PyRepr(v)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

func insertAt[T any](s []T, i int, x T) []T {
	var zero T
	s = append(s, zero)
	copy(s[i+1:], s[i:])
	s[i] = x
	return s
}

func removeAt[T any](s []T, i int) []T {
	copy(s[i:], s[i+1:])
	var zero T
	s[len(s)-1] = zero
	return s[:len(s)-1]
}
