package btree

import (
	"context"
	"fmt"
)

// Verify checks the invariants of the tree, loading all of it: keys in
// order and within the bounds of their interior nodes, node sizes within
// the family's limits, leaves at one depth, no empty node, firstbucket and
// the chain of next buckets linking the leaves in order.
func (t *BTree[K, V, F]) Verify(ctx context.Context) error {
	if err := t.PActivate(ctx); err != nil {
		return err
	}
	if len(t.data) == 0 {
		if t.firstbucket != nil {
			return fmt.Errorf("%s: empty tree with a firstbucket", t.className())
		}
		return nil
	}
	v := verifier[K, V, F]{ctx: ctx, leafDepth: -1}
	if err := v.node(t, nil, nil, 0, true); err != nil {
		return fmt.Errorf("%s %v: %w", t.className(), t.POid(), err)
	}
	for i, b := range v.buckets {
		var want *Bucket[K, V, F]
		if i+1 < len(v.buckets) {
			want = v.buckets[i+1]
		}
		if b.next != want {
			return fmt.Errorf("%s %v: bucket #%d does not link to the next one", t.className(), t.POid(), i)
		}
	}
	return nil
}

type verifier[K, V any, F family[K, V]] struct {
	ctx       context.Context
	leafDepth int
	buckets   []*Bucket[K, V, F]
}

// node checks the subtree t whose keys must be in [lo, hi).
func (v *verifier[K, V, F]) node(t *BTree[K, V, F], lo, hi *K, depth int, root bool) error {
	var f F
	fi := f.info()
	if len(t.data) == 0 {
		return fmt.Errorf("empty interior node %v", t.POid())
	}
	if root && len(t.data) >= 2*fi.maxInternal || !root && len(t.data) > fi.maxInternal {
		return fmt.Errorf("node %v has %d children", t.POid(), len(t.data))
	}
	first := len(v.buckets)
	for i := range t.data {
		e := &t.data[i]
		clo, chi := lo, hi
		if i > 0 {
			clo = &t.data[i].key
		}
		if i+1 < len(t.data) {
			chi = &t.data[i+1].key
		}
		if err := e.activate(v.ctx); err != nil {
			return err
		}
		if e.tree != nil {
			if err := v.node(e.tree, clo, chi, depth+1, false); err != nil {
				return err
			}
			continue
		}
		if v.leafDepth < 0 {
			v.leafDepth = depth
		} else if v.leafDepth != depth {
			return fmt.Errorf("buckets at depths %d and %d", v.leafDepth, depth)
		}
		b := e.bucket
		if len(b.keys) == 0 {
			return fmt.Errorf("empty bucket %v", b.POid())
		}
		if len(b.keys) > fi.maxLeaf {
			return fmt.Errorf("bucket %v has %d items", b.POid(), len(b.keys))
		}
		for j, k := range b.keys {
			if j > 0 {
				if c, err := f.cmpKey(b.keys[j-1], k); err != nil || c >= 0 {
					return fmt.Errorf("bucket %v: keys #%d and #%d out of order (%v)", b.POid(), j-1, j, err)
				}
			}
			if clo != nil {
				if c, err := f.cmpKey(*clo, k); err != nil || c > 0 {
					return fmt.Errorf("bucket %v: key #%d below its node's bound (%v)", b.POid(), j, err)
				}
			}
			if chi != nil {
				if c, err := f.cmpKey(k, *chi); err != nil || c >= 0 {
					return fmt.Errorf("bucket %v: key #%d above its node's bound (%v)", b.POid(), j, err)
				}
			}
		}
		v.buckets = append(v.buckets, b)
	}
	if t.firstbucket != v.buckets[first] {
		return fmt.Errorf("node %v: firstbucket is not its first bucket", t.POid())
	}
	return nil
}
