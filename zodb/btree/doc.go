// Package btree implements the BTrees of ZODB/py (package BTrees): BTree,
// Bucket, Set and TreeSet of every family (OO, IO, OI, II, IF, LO, OL, LL,
// LF, QQ, UU, ...), read and written in the records ZODB/py reads and
// writes, with the conflict resolution of buckets and sets.
//
// The types are generic; each family has aliases named as in Python:
//
//	t := new(btree.OOBTree)                  // BTrees.OOBTree.OOBTree
//	root.Set("tree", t)
//	t.Set(ctx, "key", "value")
//	v, ok, err := t.Get(ctx, "key")
//	err = t.Range(ctx, &lo, nil, func(k, v any) bool { ...; return true })
//
// Keys and values of "O" families are Python values as package zodb
// decodes them (string, int64, zodb.PyBytes, zodb.PyTuple, ...); keys must
// be orderable (see Compare). Integer families use Go integers, float
// values are float32 as in BTrees. Sets (OOSet, IITreeSet, ...) are
// Buckets and BTrees whose value type is struct{}: use Add, Has, Remove.
//
// Nodes are persistent objects: every operation takes a context with
// which ghosts are loaded on the way. Like every persistent object, a
// tree is used from one goroutine at a time.
//
// Trees split their buckets and interior nodes as BTrees does (at the
// family's max_leaf_size / max_internal_size, the root at twice the
// internal size), keep a tree of one bucket inlined in the tree's record,
// and, when they change, make the transaction depend on the interior
// nodes they went through (Connection.ReadCurrent), so that Python and Go
// can share a database.
//
// Conflict resolution: the package registers, for every bucket and set
// class (and every tree class, for trees that are one inlined bucket),
// BTrees' 3-way merge with zodb.RegisterConflictResolver; storages opened
// with zodb.OpenOptions{Resolver: zodb.ResolveConflict} use it. A merge
// that BTrees refuses fails with a *ConflictError carrying BTrees' reason
// code.
package btree
