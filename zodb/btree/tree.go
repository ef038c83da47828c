package btree

import (
	"context"
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// BTree is a B+ tree of Buckets (TreeSet of Sets when V is struct{}).
// Interior nodes are BTrees of the same class; every node that has its
// own record is a persistent object loaded on demand.
type BTree[K, V any, F family[K, V]] struct {
	zodb.Persistent
	// data[i].key is the lower bound of the keys under data[i]'s child;
	// data[0].key is not used.
	data        []entry[K, V, F]
	firstbucket *Bucket[K, V, F]
}

// entry is a child of a BTree node: an interior node or a bucket.
type entry[K, V any, F family[K, V]] struct {
	key    K
	tree   *BTree[K, V, F]
	bucket *Bucket[K, V, F]
}

func (e *entry[K, V, F]) activate(ctx context.Context) error {
	if e.tree != nil {
		return e.tree.PActivate(ctx)
	}
	return e.bucket.PActivate(ctx)
}

func (e *entry[K, V, F]) child() zodb.IPersistent {
	if e.tree != nil {
		return e.tree
	}
	return e.bucket
}

// firstBucket returns the first bucket under the (activated) entry.
func (e *entry[K, V, F]) firstBucket() *Bucket[K, V, F] {
	if e.tree != nil {
		return e.tree.firstbucket
	}
	return e.bucket
}

func (t *BTree[K, V, F]) fam() famInfo { var f F; return f.info() }

// search returns the index of the child whose range holds k.
func (t *BTree[K, V, F]) search(k K) (int, error) {
	var f F
	lo, hi := 1, len(t.data) // find the last i >= 1 with data[i].key <= k
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		c, err := f.cmpKey(t.data[m].key, k)
		if err != nil {
			return 0, err
		}
		if c <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - 1, nil
}

// findBucket returns the bucket (activated) whose range holds k.
func (t *BTree[K, V, F]) findBucket(ctx context.Context, k K) (*Bucket[K, V, F], error) {
	if err := t.PActivate(ctx); err != nil {
		return nil, err
	}
	n := t
	for {
		if len(n.data) == 0 {
			return nil, nil
		}
		i, err := n.search(k)
		if err != nil {
			return nil, err
		}
		e := &n.data[i]
		if err := e.activate(ctx); err != nil {
			return nil, err
		}
		if e.bucket != nil {
			return e.bucket, nil
		}
		n = e.tree
	}
}

// Get returns the value of k.
func (t *BTree[K, V, F]) Get(ctx context.Context, k K) (v V, ok bool, err error) {
	b, err := t.findBucket(ctx, k)
	if err != nil || b == nil {
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

// Has tells whether k is in the tree or tree set.
func (t *BTree[K, V, F]) Has(ctx context.Context, k K) (bool, error) {
	_, ok, err := t.Get(ctx, k)
	return ok, err
}

// Len returns the number of items (walking the buckets, as BTrees does).
func (t *BTree[K, V, F]) Len(ctx context.Context) (int, error) {
	if err := t.PActivate(ctx); err != nil {
		return 0, err
	}
	if len(t.data) == 0 {
		return 0, nil
	}
	last, err := t.lastBucket(ctx, len(t.data)-1)
	if err != nil {
		return 0, err
	}
	n := 0
	for b := t.firstbucket; b != nil; b = b.next {
		if err := b.PActivate(ctx); err != nil {
			return 0, err
		}
		n += len(b.keys)
		if b == last {
			break
		}
	}
	return n, nil
}

// Range calls yield for the items with min <= key <= max (nil: no bound),
// ascending, until yield returns false.
func (t *BTree[K, V, F]) Range(ctx context.Context, min, max *K, yield func(K, V) bool) error {
	if err := t.PActivate(ctx); err != nil {
		return err
	}
	if len(t.data) == 0 {
		return nil
	}
	// an interior node's range ends with its last bucket, not the chain's
	last, err := t.lastBucket(ctx, len(t.data)-1)
	if err != nil {
		return err
	}
	b := t.firstbucket
	if min != nil {
		if b, err = t.findBucket(ctx, *min); err != nil {
			return err
		}
	}
	for ; b != nil; b = b.next {
		if err := b.PActivate(ctx); err != nil {
			return err
		}
		more, err := b.rangeFrom(min, max, yield)
		if err != nil || !more || b == last {
			return err
		}
	}
	return nil
}

// Set sets the value of k; added tells that k was not there.
func (t *BTree[K, V, F]) Set(ctx context.Context, k K, v V) (added bool, err error) {
	return t.setRoot(ctx, k, v, false)
}

// Insert adds k with value v if k is not there yet (BTrees' insert).
func (t *BTree[K, V, F]) Insert(ctx context.Context, k K, v V) (added bool, err error) {
	return t.setRoot(ctx, k, v, true)
}

// Add adds k to a tree set.
func (t *BTree[K, V, F]) Add(ctx context.Context, k K) (added bool, err error) {
	var v V
	return t.setRoot(ctx, k, v, true)
}

func (t *BTree[K, V, F]) setRoot(ctx context.Context, k K, v V, unique bool) (bool, error) {
	if err := t.PActivate(ctx); err != nil {
		return false, err
	}
	return t.set(ctx, k, v, unique)
}

// readCurrent makes the transaction depend on the activated node t not
// changing meanwhile, as BTrees does for the nodes it goes through when it
// changes a tree: a concurrent change of the structure is a conflict.
func (t *BTree[K, V, F]) readCurrent() error {
	if jar := t.PJar(); jar != nil {
		return jar.ReadCurrent(t)
	}
	return nil
}

// set inserts into the activated node t; added tells that the tree grew.
func (t *BTree[K, V, F]) set(ctx context.Context, k K, v V, unique bool) (added bool, err error) {
	fi := t.fam()
	if len(t.data) == 0 {
		b := new(Bucket[K, V, F])
		t.data = []entry[K, V, F]{{bucket: b}}
		t.firstbucket = b
		t.PModify()
	}
	i, err := t.search(k)
	if err != nil {
		return false, err
	}
	if err := t.readCurrent(); err != nil {
		return false, err
	}
	e := &t.data[i]
	if err := e.activate(ctx); err != nil {
		return false, err
	}
	var size, max int
	if e.tree != nil {
		if added, err = e.tree.set(ctx, k, v, unique); err != nil || !added {
			return added, err
		}
		size, max = len(e.tree.data), fi.maxInternal
	} else {
		var changed bool
		if added, changed, err = e.bucket.set(k, v, unique); err != nil {
			return false, err
		}
		if changed && e.bucket.PJar() == nil {
			t.PModify() // the bucket is (or will be) stored with t
		}
		if !added {
			return false, nil
		}
		size, max = len(e.bucket.keys), fi.maxLeaf
	}
	if size > max {
		if err := t.grow(ctx, i); err != nil {
			return true, err
		}
	}
	return true, nil
}

// grow splits the child i of the activated node t in two; the root splits
// itself when it reaches twice the maximum size (BTree_grow).
func (t *BTree[K, V, F]) grow(ctx context.Context, i int) error {
	e := &t.data[i]
	var ne entry[K, V, F]
	if e.tree != nil {
		n := new(BTree[K, V, F])
		if err := e.tree.split(ctx, n); err != nil {
			return err
		}
		ne = entry[K, V, F]{key: n.data[0].key, tree: n}
	} else {
		n := new(Bucket[K, V, F])
		e.bucket.split(n)
		ne = entry[K, V, F]{key: n.keys[0], bucket: n}
	}
	t.data = insertAt(t.data, i+1, ne)
	t.PModify()
	if len(t.data) >= 2*t.fam().maxInternal {
		return t.splitRoot(ctx)
	}
	return nil
}

// split moves the upper half of the activated node t's children to n.
func (t *BTree[K, V, F]) split(ctx context.Context, n *BTree[K, V, F]) error {
	idx := len(t.data) / 2
	n.data = append([]entry[K, V, F](nil), t.data[idx:]...)
	clear(t.data[idx:])
	t.data = t.data[:idx:idx]
	e := &n.data[0]
	if err := e.activate(ctx); err != nil {
		return err
	}
	n.firstbucket = e.firstBucket()
	t.PModify()
	return nil
}

// splitRoot pushes the children of t down into a new node, which is then
// split: the tree gets one level deeper.
func (t *BTree[K, V, F]) splitRoot(ctx context.Context) error {
	n := &BTree[K, V, F]{data: t.data, firstbucket: t.firstbucket}
	t.data = []entry[K, V, F]{{tree: n}}
	return t.grow(ctx, 0)
}

// Delete removes k; removed tells that it was there.
func (t *BTree[K, V, F]) Delete(ctx context.Context, k K) (removed bool, err error) {
	if err := t.PActivate(ctx); err != nil {
		return false, err
	}
	r, err := t.del(ctx, k)
	return r.removed, err
}

// Remove removes k from a tree set.
func (t *BTree[K, V, F]) Remove(ctx context.Context, k K) (bool, error) { return t.Delete(ctx, k) }

// delResult tells a parent what a deletion did under one of its children.
type delResult[K, V any, F family[K, V]] struct {
	removed bool
	// firstGone: the first bucket of the subtree was unlinked; the
	// bucket before it (outside the subtree) must now point to next.
	firstGone bool
	next      *Bucket[K, V, F]
}

func (t *BTree[K, V, F]) del(ctx context.Context, k K) (r delResult[K, V, F], err error) {
	if len(t.data) == 0 {
		return r, nil
	}
	i, err := t.search(k)
	if err != nil {
		return r, err
	}
	if err := t.readCurrent(); err != nil {
		return r, err
	}
	e := &t.data[i]
	if err := e.activate(ctx); err != nil {
		return r, err
	}
	empty := false
	if e.bucket != nil {
		b := e.bucket
		if r.removed, err = b.del(k); err != nil || !r.removed {
			return r, err
		}
		if b.PJar() == nil {
			t.PModify()
		}
		empty = len(b.keys) == 0
		switch {
		case !empty:
		case i > 0: // unlink the empty bucket
			prev := t.data[i-1].bucket
			if err := prev.PActivate(ctx); err != nil {
				return r, err
			}
			prev.next = b.next
			prev.PModify()
		default:
			r.firstGone, r.next = true, b.next
		}
	} else {
		cr, err := e.tree.del(ctx, k)
		if err != nil || !cr.removed {
			return cr, err
		}
		r.removed = true
		if cr.firstGone {
			if i > 0 {
				prev, err := t.lastBucket(ctx, i-1)
				if err != nil {
					return r, err
				}
				prev.next = cr.next
				prev.PModify()
			} else {
				r.firstGone, r.next = true, cr.next
				t.firstbucket = e.tree.firstbucket
				t.PModify()
			}
		}
		empty = len(e.tree.data) == 0
	}
	if !empty && i > 0 {
		// the deleted key separated this child from the previous one:
		// the child's new first key takes its place
		var f F
		c, err := f.cmpKey(k, t.data[i].key)
		if err != nil {
			return r, err
		}
		if c == 0 {
			fb := e.firstBucket()
			if err := fb.PActivate(ctx); err != nil {
				return r, err
			}
			t.data[i].key = fb.keys[0]
			t.PModify()
		}
	}
	if empty {
		t.data = removeAt(t.data, i)
		if i == 0 && len(t.data) > 0 {
			var zero K
			t.data[0].key = zero
		}
		t.PModify()
	}
	if i == 0 && r.firstGone {
		t.firstbucket = nil
		if len(t.data) > 0 {
			if err := t.data[0].activate(ctx); err != nil {
				return r, err
			}
			t.firstbucket = t.data[0].firstBucket()
		}
		t.PModify()
	}
	return r, nil
}

// lastBucket returns the last bucket under child i of t, activated.
func (t *BTree[K, V, F]) lastBucket(ctx context.Context, i int) (*Bucket[K, V, F], error) {
	e := &t.data[i]
	for {
		if err := e.activate(ctx); err != nil {
			return nil, err
		}
		if e.bucket != nil {
			return e.bucket, nil
		}
		n := e.tree
		if len(n.data) == 0 {
			return nil, fmt.Errorf("%s %v: empty interior node", n.className(), n.POid())
		}
		e = &n.data[len(n.data)-1]
	}
}

func (t *BTree[K, V, F]) className() string {
	fi := t.fam()
	if fi.set {
		return fi.name + "TreeSet"
	}
	return fi.name + "BTree"
}

// ---- state ----

// PyGetState returns None (empty), ((bucket_state,),) for one bucket
// without an oid of its own, or (children, firstbucket).
func (t *BTree[K, V, F]) PyGetState() any {
	if len(t.data) == 0 {
		return nil
	}
	if len(t.data) == 1 && t.data[0].bucket != nil && t.data[0].bucket.PJar() == nil {
		return zodb.PyTuple{zodb.PyTuple{t.data[0].bucket.PyGetState()}}
	}
	var f F
	children := make(zodb.PyTuple, 0, 2*len(t.data)-1)
	for i := range t.data {
		if i > 0 {
			children = append(children, f.keyToPy(t.data[i].key))
		}
		children = append(children, t.data[i].child())
	}
	return zodb.PyTuple{children, t.firstbucket}
}

// PySetState accepts the three state forms.
func (t *BTree[K, V, F]) PySetState(state any) error {
	if err := t.setState(state); err != nil {
		return fmt.Errorf("%s: %w", t.className(), err)
	}
	return nil
}

func (t *BTree[K, V, F]) setState(state any) error {
	if state == nil {
		return nil
	}
	st, ok := state.(zodb.PyTuple)
	if !ok || len(st) < 1 || len(st) > 2 {
		return fmt.Errorf("state is %s, want None, (children,) or (children, firstbucket)", short(state))
	}
	children, ok := st[0].(zodb.PyTuple)
	if !ok || len(children)%2 != 1 {
		return fmt.Errorf("children are %s, not a tuple of odd length", short(st[0]))
	}
	var f F
	n := (len(children) + 1) / 2
	data := make([]entry[K, V, F], n)
	for i := range data {
		if i > 0 {
			k, err := f.keyFromPy(children[2*i-1])
			if err != nil {
				return fmt.Errorf("key #%d: %w", i, err)
			}
			if i > 1 {
				c, err := f.cmpKey(data[i-1].key, k)
				if err != nil {
					return fmt.Errorf("key #%d: %w", i, err)
				}
				if c >= 0 {
					return fmt.Errorf("key #%d %s is not after the previous one", i, short(children[2*i-1]))
				}
			}
			data[i].key = k
		}
		switch c := children[2*i].(type) {
		case *BTree[K, V, F]:
			data[i].tree = c
		case *Bucket[K, V, F]:
			data[i].bucket = c
		case zodb.PyTuple: // a bucket's state inlined
			if len(st) != 1 || n != 1 {
				return fmt.Errorf("inlined bucket state in a tree of %d children with firstbucket", n)
			}
			b := new(Bucket[K, V, F])
			if err := b.setState(c); err != nil {
				return fmt.Errorf("inlined bucket: %w", err)
			}
			if b.next != nil {
				return fmt.Errorf("inlined bucket has a next bucket")
			}
			data[i].bucket = b
		default:
			return fmt.Errorf("child #%d is %s, not a %s or its bucket", i, short(children[2*i]), t.className())
		}
	}
	if (data[0].tree != nil) != (data[n-1].tree != nil) {
		return fmt.Errorf("children mix interior nodes and buckets")
	}
	t.data = data
	if len(st) == 2 {
		fb, ok := st[1].(*Bucket[K, V, F])
		if !ok {
			t.data = nil
			return fmt.Errorf("firstbucket is %s, not a bucket of the family", short(st[1]))
		}
		t.firstbucket = fb
	} else {
		if data[0].bucket == nil {
			t.data = nil
			return fmt.Errorf("state without firstbucket whose child is not a bucket")
		}
		t.firstbucket = data[0].bucket
	}
	return nil
}
