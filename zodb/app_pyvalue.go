package zodb

import (
	"fmt"
	"iter"
	"math"
	"math/big"
	"strings"
)

// Python values as the application layer sees them in object states.
//
// A decoded state is a tree of these Go values:
//
//	None                nil
//	bool                bool
//	int                 int64, or *big.Int when it does not fit
//	float               float64
//	str                 string
//	bytes               PyBytes
//	tuple               PyTuple
//	list                *PyList
//	dict                *PyDict (keeps insertion order, like Python)
//	class / function    PyGlobal
//	other objects       *PyReduce (what __reduce__ gave: callable, args, state)
//	persistent objects  IPersistent (through a Connection), *PyRef (raw)
//
// Objects that are shared in the pickle (memo) are shared in the tree, and
// the encoder writes shared objects once and refers to them afterwards, as
// Python's pickler does: that is what makes decode→encode give back the
// same bytes.

// PyBytes is a Python bytes object.
type PyBytes string

// PyTuple is a Python tuple.
type PyTuple []any

// PyList is a Python list; it is a pointer type because lists are mutable
// and may be shared.
type PyList struct {
	Items []any
}

// PyGlobal names a Python class or function by module and name.
type PyGlobal struct {
	Module, Name string
}

// String returns "module.name".
func (g PyGlobal) String() string { return g.Module + "." + g.Name }

// PyReduce is an object pickled by its __reduce__: built by calling
// Callable(*Args) (or Callable.__new__(Callable, *Args) when NewObj), then,
// if HasState, given State (BUILD). Sets, frozensets, complex numbers,
// bytearrays, datetimes and Decimals come as PyReduce.
type PyReduce struct {
	Callable any // usually a PyGlobal
	Args     any // usually a PyTuple
	NewObj   bool
	HasState bool
	State    any
}

// PyRef is a persistent reference as found in a pickle, kept as is. It is
// what states hold when decoded without a Connection (see DecodeRecord).
type PyRef struct {
	Pid any // the persistent id: (oid, class), oid, ['w', (oid,)], ...
}

// RefKind tells the forms of persistent references (see PyRef.Parse).
type RefKind byte

const (
	RefOidClass RefKind = 'c' // (oid, class): the normal form
	RefOid      RefKind = 'o' // bare oid (class with __getnewargs__)
	RefWeak     RefKind = 'w' // ['w', (oid,)] or ['w', (oid, db)]
	RefMulti    RefKind = 'm' // ['m', (db, oid, class)]
	RefMultiOid RefKind = 'n' // ['n', (db, oid)]
	RefWeakOld  RefKind = 'l' // [oid]: legacy weak reference
)

// RefInfo is a persistent reference taken apart.
type RefInfo struct {
	Kind     RefKind
	Oid      Oid
	Class    string // "module.name", "" when the reference does not tell
	Database string // other database's name, "" for this one
}

// Parse takes a persistent id apart.
func (r *PyRef) Parse() (RefInfo, error) { return parseRef(r.Pid) }

func parseRef(pid any) (RefInfo, error) {
	bad := func() (RefInfo, error) {
		return RefInfo{}, fmt.Errorf("invalid persistent reference %s", PyRepr(pid))
	}
	switch p := pid.(type) {
	case PyBytes, string:
		oid, ok := oidOf(p)
		if !ok {
			return bad()
		}
		return RefInfo{Kind: RefOid, Oid: oid}, nil
	case PyTuple:
		if len(p) != 2 {
			return bad()
		}
		oid, ok := oidOf(p[0])
		if !ok {
			return bad()
		}
		return RefInfo{Kind: RefOidClass, Oid: oid, Class: className(p[1])}, nil
	case *PyList:
		if len(p.Items) == 1 {
			oid, ok := oidOf(p.Items[0])
			if !ok {
				return bad()
			}
			return RefInfo{Kind: RefWeakOld, Oid: oid}, nil
		}
		if len(p.Items) != 2 {
			return bad()
		}
		kind, _ := p.Items[0].(string)
		args, _ := p.Items[1].(PyTuple)
		switch {
		case kind == "w" && (len(args) == 1 || len(args) == 2):
			oid, ok := oidOf(args[0])
			if !ok {
				return bad()
			}
			ri := RefInfo{Kind: RefWeak, Oid: oid}
			if len(args) == 2 {
				if ri.Database, ok = args[1].(string); !ok {
					return bad()
				}
			}
			return ri, nil
		case kind == "m" && len(args) == 3, kind == "n" && len(args) == 2:
			db, ok1 := args[0].(string)
			oid, ok2 := oidOf(args[1])
			if !ok1 || !ok2 {
				return bad()
			}
			ri := RefInfo{Kind: RefKind(kind[0]), Oid: oid, Database: db}
			if len(args) == 3 {
				ri.Class = className(args[2])
			}
			return ri, nil
		}
	}
	return bad()
}

// className returns "module.name" for a class given as a GLOBAL or as a
// (module, name) tuple, "" otherwise.
func className(v any) string {
	switch c := v.(type) {
	case PyGlobal:
		return c.String()
	case PyTuple:
		if len(c) == 2 {
			m, ok1 := c[0].(string)
			n, ok2 := c[1].(string)
			if ok1 && ok2 {
				return m + "." + n
			}
		}
	}
	return ""
}

func oidOf(v any) (Oid, bool) {
	var s string
	switch x := v.(type) {
	case PyBytes:
		s = string(x)
	case string: // Python 2 str
		s = x
	default:
		return 0, false
	}
	if len(s) != 8 {
		return 0, false
	}
	oid, _ := OidFromBytes([]byte(s))
	return oid, true
}

// splitGlobal splits "module.name" at the last dot.
func splitGlobal(s string) PyGlobal {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return PyGlobal{Name: s}
	}
	return PyGlobal{Module: s[:i], Name: s[i+1:]}
}

// PyDict is a Python dict: keys in insertion order. Keys are compared like
// Python compares them for the types of this model (1, 1.0 and True are the
// same key; str and bytes differ).
type PyDict struct {
	items []PyDictItem
	index map[any]int // hashable key → position in items
}

// PyDictItem is one key/value pair of a PyDict.
type PyDictItem struct {
	Key, Value any
}

// NewPyDict returns an empty dict.
func NewPyDict() *PyDict { return &PyDict{} }

// Len returns the number of items.
func (d *PyDict) Len() int { return len(d.items) }

// Items returns the items in insertion order. The slice must not be changed.
func (d *PyDict) Items() []PyDictItem { return d.items }

// hashKey returns a comparable Go value that is equal for keys Python finds
// equal, or ok=false for keys compared by scanning (tuples, big ints).
func hashKey(k any) (any, bool) {
	budget := 1000
	return hashKeyB(k, &budget)
}

// hashKeyB is hashKey giving up (ok=false) on tuples of more than budget
// elements in all, which shared sub-tuples can make huge.
func hashKeyB(k any, budget *int) (any, bool) {
	switch x := k.(type) {
	case nil, string, PyBytes, PyGlobal:
		return x, true
	case bool:
		if x {
			return int64(1), true
		}
		return int64(0), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			return int64(x), true
		}
		return x, true
	case PyTuple:
		var b strings.Builder
		*budget -= len(x)
		if *budget < 0 {
			return nil, false
		}
		for _, e := range x {
			k, ok := hashKeyB(e, budget)
			if !ok {
				return nil, false
			}
			if tk, ok := k.(tupleKey); ok {
				fmt.Fprintf(&b, "(%d:%s)", len(tk.s), tk.s)
			} else {
				s := fmt.Sprintf("%T:%v", k, k)
				fmt.Fprintf(&b, "%d:%s", len(s), s)
			}
		}
		return tupleKey{b.String()}, true
	}
	return nil, false
}

// tupleKey is the hash key of a tuple of hashable values.
type tupleKey struct{ s string }

func (d *PyDict) find(k any) int {
	hk, hashable := hashKey(k)
	if hashable && d.index != nil {
		if i, ok := d.index[hk]; ok {
			return i
		}
		return -1
	}
	for i, it := range d.items {
		if hashable {
			if ik, ok := hashKey(it.Key); ok && ik == hk {
				return i
			}
		} else if PyEqual(it.Key, k) {
			return i
		}
	}
	return -1
}

// dictIndexMin is the size from which a dict indexes its keys; smaller
// ones are scanned.
const dictIndexMin = 8

// reindex rebuilds the index of a dict big enough to have one.
func (d *PyDict) reindex() {
	d.index = nil
	if len(d.items) <= dictIndexMin {
		return
	}
	d.index = make(map[any]int, len(d.items))
	for j, it := range d.items {
		if hk, ok := hashKey(it.Key); ok {
			d.index[hk] = j
		}
	}
}

// All iterates over the items in insertion order.
func (d *PyDict) All() iter.Seq2[any, any] {
	return func(yield func(k, v any) bool) {
		for _, it := range d.items {
			if !yield(it.Key, it.Value) {
				return
			}
		}
	}
}

// Get returns the value of key k.
func (d *PyDict) Get(k any) (v any, ok bool) {
	if i := d.find(k); i >= 0 {
		return d.items[i].Value, true
	}
	return nil, false
}

// Set sets key k to v, keeping k's position if it is already there.
func (d *PyDict) Set(k, v any) {
	if i := d.find(k); i >= 0 {
		d.items[i].Value = v
		return
	}
	d.items = append(d.items, PyDictItem{k, v})
	switch {
	case d.index != nil:
		if hk, ok := hashKey(k); ok {
			d.index[hk] = len(d.items) - 1
		}
	case len(d.items) > dictIndexMin:
		d.reindex()
	}
}

// Del removes key k and tells whether it was there.
func (d *PyDict) Del(k any) bool {
	i := d.find(k)
	if i < 0 {
		return false
	}
	d.items = append(d.items[:i], d.items[i+1:]...)
	d.reindex()
	return true
}

// PyEqual compares two values of this model as Python's == does for them
// (persistent objects by identity).
func PyEqual(a, b any) bool { return (&pyEq{}).eq(a, b) }

// pyEq compares values that may hold cycles (a list containing itself):
// containers being compared are assumed equal when met again.
type pyEq struct {
	inProgress map[[2]any]bool
	tuples     map[[2]any]bool
}

func (q *pyEq) enter(a, b any) bool {
	k := [2]any{a, b}
	if q.inProgress[k] {
		return false
	}
	if q.inProgress == nil {
		q.inProgress = map[[2]any]bool{}
	}
	q.inProgress[k] = true
	return true
}

func (q *pyEq) eq(a, b any) bool {
	ha, oka := hashKey(a)
	hb, okb := hashKey(b)
	if oka && okb {
		return ha == hb
	}
	switch x := a.(type) {
	case *big.Int:
		switch y := b.(type) {
		case *big.Int:
			return x.Cmp(y) == 0
		case int64:
			return x.IsInt64() && x.Int64() == y
		}
		return false
	case int64:
		if y, ok := b.(*big.Int); ok {
			return q.eq(y, x)
		}
		return false
	case PyTuple:
		y, ok := b.(PyTuple)
		if !ok || len(x) != len(y) {
			return false
		}
		if len(x) == 0 || &x[0] == &y[0] {
			return true
		}
		// Tuples shared in the pickle make a graph whose paths may be
		// exponentially many: compare each pair once.
		k := [2]any{&x[0], &y[0]}
		if r, done := q.tuples[k]; done {
			return r
		}
		if q.tuples == nil {
			q.tuples = map[[2]any]bool{}
		}
		q.tuples[k] = true // assumed while comparing (cycles)
		r := true
		for i := range x {
			if !q.eq(x[i], y[i]) {
				r = false
				break
			}
		}
		q.tuples[k] = r
		return r
	case *PyList:
		y, ok := b.(*PyList)
		if !ok || len(x.Items) != len(y.Items) {
			return false
		}
		if !q.enter(x, y) {
			return true
		}
		for i := range x.Items {
			if !q.eq(x.Items[i], y.Items[i]) {
				return false
			}
		}
		return true
	case *PyDict:
		y, ok := b.(*PyDict)
		if !ok || x.Len() != y.Len() {
			return false
		}
		if !q.enter(x, y) {
			return true
		}
		for _, it := range x.items {
			v, ok := y.Get(it.Key)
			if !ok || !q.eq(it.Value, v) {
				return false
			}
		}
		return true
	case *PyRef:
		y, ok := b.(*PyRef)
		return ok && q.eq(x.Pid, y.Pid)
	case *PyReduce:
		y, ok := b.(*PyReduce)
		if ok && !q.enter(x, y) {
			return true
		}
		if ok {
			if xs, ok1 := setItems(x); ok1 {
				ys, ok2 := setItems(y)
				return ok2 && q.eq(x.Callable, y.Callable) && q.sameItems(xs, ys)
			}
		}
		return ok && x.NewObj == y.NewObj && x.HasState == y.HasState &&
			q.eq(x.Callable, y.Callable) && q.eq(x.Args, y.Args) && q.eq(x.State, y.State)
	}
	return a == b
}

// PyRepr returns a short Python-like representation, for error messages.
func PyRepr(v any) string { return (&pyRepr{}).repr(v) }

type pyRepr struct {
	inProgress map[any]bool
	nodes      int
}

func (r *pyRepr) repr(v any) string {
	// Shared objects may make the value a graph with exponentially many
	// paths: print a bounded part of it.
	r.nodes++
	if r.nodes > 200 {
		return "..."
	}
	switch v.(type) {
	case *PyList, *PyDict, *PyReduce:
		if r.inProgress[v] {
			return "..."
		}
		if r.inProgress == nil {
			r.inProgress = map[any]bool{}
		}
		r.inProgress[v] = true
		defer delete(r.inProgress, v)
	}
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case string:
		return fmt.Sprintf("%q", x)
	case PyBytes:
		return fmt.Sprintf("b%q", string(x))
	case PyTuple:
		var b strings.Builder
		b.WriteByte('(')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(r.repr(e))
		}
		if len(x) == 1 {
			b.WriteByte(',')
		}
		b.WriteByte(')')
		return b.String()
	case *PyList:
		var b strings.Builder
		b.WriteByte('[')
		for i, e := range x.Items {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(r.repr(e))
		}
		b.WriteByte(']')
		return b.String()
	case *PyDict:
		var b strings.Builder
		b.WriteByte('{')
		for i, it := range x.items {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(r.repr(it.Key) + ": " + r.repr(it.Value))
		}
		b.WriteByte('}')
		return b.String()
	case PyGlobal:
		return "<" + x.String() + ">"
	case *PyReduce:
		return fmt.Sprintf("%s%s", r.repr(x.Callable), r.repr(x.Args))
	case *PyRef:
		return "persistent(" + r.repr(x.Pid) + ")"
	case IPersistent:
		p := x.persistentBase()
		return fmt.Sprintf("<%s oid %v>", p.className(), p.oid)
	}
	return fmt.Sprint(v)
}

// setItems returns the items of a set or frozenset as pickled
// (builtins.set called with a list).
func setItems(r *PyReduce) ([]any, bool) {
	g, ok := r.Callable.(PyGlobal)
	if !ok || g.Module != "builtins" || (g.Name != "set" && g.Name != "frozenset") || r.NewObj || r.HasState {
		return nil, false
	}
	args, ok := r.Args.(PyTuple)
	if !ok || len(args) != 1 {
		return nil, false
	}
	l, ok := args[0].(*PyList)
	if !ok {
		return nil, false
	}
	return l.Items, true
}

// sameItems compares two collections regardless of order.
func (q *pyEq) sameItems(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	used := make([]bool, len(b))
next:
	for _, x := range a {
		for j, y := range b {
			if !used[j] && q.eq(x, y) {
				used[j] = true
				continue next
			}
		}
		return false
	}
	return true
}
