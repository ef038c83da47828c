package btree

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/wks"
)

// ---- test views of the nodes ----

// inspectable is what the golden tests read of a node.
type inspectable interface {
	zodb.IPersistent
	inspectItems(ctx context.Context) (keys, vals []any, set bool, err error)
}

// treeInspectable adds the structure of trees.
type treeInspectable interface {
	inspectable
	inspectStructure(ctx context.Context) (*structure, error)
}

type structure struct {
	Form        string
	Depth       int
	TopChildren int
	TopOids     []string
	FirstBucket string
	Buckets     []*string
}

func (b *Bucket[K, V, F]) inspectItems(ctx context.Context) (keys, vals []any, set bool, err error) {
	var f F
	set = f.info().set
	err = b.Range(ctx, nil, nil, func(k K, v V) bool {
		keys = append(keys, f.keyToPy(k))
		if !set {
			vals = append(vals, f.valToPy(v))
		}
		return true
	})
	return keys, vals, set, err
}

func (t *BTree[K, V, F]) inspectItems(ctx context.Context) (keys, vals []any, set bool, err error) {
	var f F
	set = f.info().set
	err = t.Range(ctx, nil, nil, func(k K, v V) bool {
		keys = append(keys, f.keyToPy(k))
		if !set {
			vals = append(vals, f.valToPy(v))
		}
		return true
	})
	return keys, vals, set, err
}

func oidOrNil(p zodb.IPersistent) *string {
	if p.PJar() == nil {
		return nil
	}
	s := p.POid().String()
	return &s
}

func (t *BTree[K, V, F]) inspectStructure(ctx context.Context) (*structure, error) {
	if err := t.PActivate(ctx); err != nil {
		return nil, err
	}
	s := &structure{Form: "tree", TopChildren: len(t.data), Buckets: []*string{}}
	switch {
	case len(t.data) == 0:
		s.Form = "empty"
		return s, nil
	case len(t.data) == 1 && t.data[0].bucket != nil && t.data[0].bucket.PJar() == nil:
		s.Form = "inline-bucket"
	}
	for n := t; ; {
		s.Depth++
		e := &n.data[0]
		if err := e.activate(ctx); err != nil {
			return nil, err
		}
		if e.bucket != nil {
			break
		}
		n = e.tree
	}
	if s.Form == "tree" {
		for i := range t.data {
			s.TopOids = append(s.TopOids, t.data[i].child().POid().String())
		}
		s.FirstBucket = t.firstbucket.POid().String()
	}
	for b := t.firstbucket; b != nil; b = b.next {
		if err := b.PActivate(ctx); err != nil {
			return nil, err
		}
		s.Buckets = append(s.Buckets, oidOrNil(b))
	}
	return s, nil
}

// ---- typed JSON ----

type refWant struct{ oid, class string }

func jsonToPy(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string:
		return x, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		n, ok := new(big.Int).SetString(string(x), 10)
		if !ok {
			return nil, fmt.Errorf("bad number %s", x)
		}
		return n, nil
	case []any:
		l := &zodb.PyList{}
		for _, e := range x {
			pe, err := jsonToPy(e)
			if err != nil {
				return nil, err
			}
			l.Items = append(l.Items, pe)
		}
		return l, nil
	case map[string]any:
		if f, ok := x["float"].(string); ok {
			return strconv.ParseFloat(f, 64)
		}
		if h, ok := x["bytes"].(string); ok {
			var b []byte
			if _, err := fmt.Sscanf(h, "%x", &b); err != nil && h != "" {
				return nil, err
			}
			return zodb.PyBytes(b), nil
		}
		if t, ok := x["tuple"].([]any); ok {
			tt := zodb.PyTuple{}
			for _, e := range t {
				pe, err := jsonToPy(e)
				if err != nil {
					return nil, err
				}
				tt = append(tt, pe)
			}
			return tt, nil
		}
		if r, ok := x["ref"].(string); ok {
			c, _ := x["class"].(string)
			return refWant{r, c}, nil
		}
	}
	return nil, fmt.Errorf("typed JSON value %v not handled", v)
}

// pyMatch tells whether got (a Python value from a node) is exactly want
// (from typed JSON): same type and value.
func pyMatch(got, want any) bool {
	switch w := want.(type) {
	case refWant:
		p, ok := got.(zodb.IPersistent)
		return ok && p.POid().String() == w.oid && zodb.ClassOf(p) == w.class
	case zodb.PyTuple:
		g, ok := got.(zodb.PyTuple)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !pyMatch(g[i], w[i]) {
				return false
			}
		}
		return true
	case int64:
		g, ok := got.(int64)
		return ok && g == w
	case *big.Int:
		g, ok := got.(*big.Int)
		return ok && g.Cmp(w) == 0
	case float64:
		g, ok := got.(float64)
		return ok && g == w
	case string:
		g, ok := got.(string)
		return ok && g == w
	case zodb.PyBytes:
		g, ok := got.(zodb.PyBytes)
		return ok && g == w
	case nil:
		return got == nil
	case bool:
		g, ok := got.(bool)
		return ok && g == w
	}
	return false
}

type goldenEntry struct {
	Oid          string          `json:"oid"`
	Class        string          `json:"class"`
	Serial       string          `json:"serial"`
	Items        [][2]any        `json:"items"`
	Keys         []any           `json:"keys"`
	Value        json.Number     `json:"value"`
	Len          *int            `json:"len"`
	InternalNode bool            `json:"internal_node"`
	First        json.RawMessage `json:"first"`
	Last         json.RawMessage `json:"last"`
	Structure    *struct {
		Form        string    `json:"form"`
		Depth       int       `json:"depth"`
		TopChildren int       `json:"top_children"`
		TopOids     []string  `json:"top_child_oids"`
		FirstBucket string    `json:"firstbucket"`
		Buckets     []*string `json:"buckets"`
	} `json:"structure"`
}

func loadGolden(t *testing.T, path string) []goldenEntry {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var entries []goldenEntry
	if err := d.Decode(&entries); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return entries
}

func decodeJSONValue(raw json.RawMessage) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return jsonToPy(v)
}

// goldenFiles returns the databases of the test data that have BTrees.
func goldenFiles(t *testing.T) []string {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	paths, err := filepath.Glob(filepath.Join(dir, "*.fs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		data, err := os.ReadFile(p + ".btrees.json")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(data)) != "[]" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no database with BTrees in %s", dir)
	}
	return out
}

func openReadOnly(t testing.TB, path string) (*zodb.Storage, *zodb.DB) {
	ctx := context.Background()
	stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db, err := zodb.NewDB(stor, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
		if err := stor.Close(); err != nil {
			t.Error(err)
		}
	})
	return stor, db
}

// TestGolden reads every BTrees object of the reference databases and
// compares it with what BTrees/py read: items, lengths, structure; and
// re-encodes every node to the bytes of its record.
func TestGolden(t *testing.T) {
	for _, path := range goldenFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) { testGoldenFile(t, path) })
	}
}

func testGoldenFile(t *testing.T, path string) {
	entries := loadGolden(t, path+".btrees.json")
	stor, db := openReadOnly(t, path)
	txn, ctx := transaction.New(context.Background())
	defer txn.Abort(ctx)
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checked, roundTrips := 0, 0
	for _, e := range entries {
		oid, err := zodb.ParseOid(e.Oid)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := conn.Get(ctx, oid)
		if err != nil {
			t.Errorf("%s: %v", e.Oid, err)
			continue
		}
		if got := zodb.ClassOf(obj); got != e.Class {
			t.Errorf("%s: class %s, want %s", e.Oid, got, e.Class)
			continue
		}
		if e.Class == "BTrees.Length.Length" {
			l, ok := obj.(*Length)
			if !ok {
				t.Errorf("%s: Length loads as %T", e.Oid, obj)
				continue
			}
			want, _ := e.Value.Int64()
			if v, err := l.Value(ctx); err != nil || v != want {
				t.Errorf("%s: Length %v %v, want %s", e.Oid, v, err, e.Value)
			}
			checked++
		} else {
			node, ok := obj.(inspectable)
			if !ok {
				t.Errorf("%s: %s loads as %T", e.Oid, e.Class, obj)
				continue
			}
			if err := checkGoldenEntry(ctx, node, &e); err != nil {
				t.Errorf("%s %s: %v", e.Oid, e.Class, err)
			}
			checked++
		}
		// round trip
		data, _, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: conn.At()})
		if err != nil {
			t.Fatal(err)
		}
		enc, err := encodeWithRefs(obj)
		if err != nil {
			t.Errorf("%s: encode: %v", e.Oid, err)
			continue
		}
		if !bytes.Equal(enc, data) {
			t.Errorf("%s %s: record differs after decode+encode\n got  %q\n want %q", e.Oid, e.Class, clip(enc), clip(data))
			continue
		}
		roundTrips++
	}
	t.Logf("%d objects checked, %d records re-encoded byte for byte", checked, roundTrips)
}

func clip(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}

func checkGoldenEntry(ctx context.Context, node inspectable, e *goldenEntry) error {
	keys, vals, set, err := node.inspectItems(ctx)
	if err != nil {
		return err
	}
	if e.Len == nil || len(keys) != *e.Len {
		return fmt.Errorf("len %d, want %v", len(keys), fmtLen(e.Len))
	}
	if e.InternalNode {
		if len(keys) == 0 {
			return fmt.Errorf("internal node without items")
		}
		for _, fl := range []struct {
			raw json.RawMessage
			i   int
		}{{e.First, 0}, {e.Last, len(keys) - 1}} {
			want, err := decodeJSONValue(fl.raw)
			if err != nil {
				return err
			}
			var got any
			if set {
				got = keys[fl.i]
			} else {
				got = zodb.PyTuple{keys[fl.i], vals[fl.i]}
			}
			if wl, ok := want.(*zodb.PyList); ok {
				want = zodb.PyTuple(wl.Items)
			}
			if !pyMatch(got, want) {
				return fmt.Errorf("item #%d is %s, want %s", fl.i, zodb.PyRepr(got), zodb.PyRepr(want))
			}
		}
	} else if set {
		if len(e.Keys) != len(keys) {
			return fmt.Errorf("%d keys, want %d", len(keys), len(e.Keys))
		}
		for i, jk := range e.Keys {
			want, err := jsonToPy(jk)
			if err != nil {
				return err
			}
			if !pyMatch(keys[i], want) {
				return fmt.Errorf("key #%d is %s, want %s", i, zodb.PyRepr(keys[i]), zodb.PyRepr(want))
			}
		}
	} else {
		if len(e.Items) != len(keys) {
			return fmt.Errorf("%d items, want %d", len(keys), len(e.Items))
		}
		for i, it := range e.Items {
			wk, err := jsonToPy(it[0])
			if err != nil {
				return err
			}
			wv, err := jsonToPy(it[1])
			if err != nil {
				return err
			}
			if !pyMatch(keys[i], wk) || !pyMatch(vals[i], wv) {
				return fmt.Errorf("item #%d is (%s, %s), want (%s, %s)", i,
					zodb.PyRepr(keys[i]), zodb.PyRepr(vals[i]), zodb.PyRepr(wk), zodb.PyRepr(wv))
			}
		}
	}
	tn, isTree := node.(treeInspectable)
	if isTree != (e.Structure != nil) {
		return fmt.Errorf("structure given for a node that is a tree: %v", isTree)
	}
	if !isTree {
		return nil
	}
	s, err := tn.inspectStructure(ctx)
	if err != nil {
		return err
	}
	w := e.Structure
	if s.Form != w.Form || s.Depth != w.Depth {
		return fmt.Errorf("form %s depth %d, want %s depth %d", s.Form, s.Depth, w.Form, w.Depth)
	}
	if w.Form == "tree" {
		if s.TopChildren != w.TopChildren || strings.Join(s.TopOids, ",") != strings.Join(w.TopOids, ",") {
			return fmt.Errorf("top children %v, want %v", s.TopOids, w.TopOids)
		}
		if s.FirstBucket != w.FirstBucket {
			return fmt.Errorf("firstbucket %s, want %s", s.FirstBucket, w.FirstBucket)
		}
	}
	if len(s.Buckets) != len(w.Buckets) {
		return fmt.Errorf("%d buckets in the chain, want %d", len(s.Buckets), len(w.Buckets))
	}
	for i := range w.Buckets {
		g, ww := s.Buckets[i], w.Buckets[i]
		if (g == nil) != (ww == nil) || g != nil && *g != *ww {
			return fmt.Errorf("bucket #%d of the chain differs", i)
		}
	}
	if bt, ok := node.(interface{ Verify(context.Context) error }); ok && !e.InternalNode {
		if err := bt.Verify(ctx); err != nil {
			return err
		}
	}
	return nil
}

// encodeWithRefs pickles obj's record as the Connection would, with
// persistent references as (oid, class).
func encodeWithRefs(obj zodb.IPersistent) ([]byte, error) {
	oids := map[zodb.Oid]zodb.PyBytes{}
	var conv func(v any) (any, error)
	conv = func(v any) (any, error) {
		switch x := v.(type) {
		case zodb.IPersistent:
			if x.PJar() == nil {
				return nil, fmt.Errorf("reference to an object without oid")
			}
			ob, ok := oids[x.POid()]
			if !ok {
				ob = zodb.PyBytes(x.POid().Bytes())
				oids[x.POid()] = ob
			}
			return &zodb.PyRef{Pid: zodb.PyTuple{ob, pyGlobal(zodb.ClassOf(x))}}, nil
		case zodb.PyTuple:
			var out zodb.PyTuple
			for i, e := range x {
				ce, err := conv(e)
				if err != nil {
					return nil, err
				}
				if out == nil && !sameAny(ce, e) {
					out = append(zodb.PyTuple{}, x[:i]...)
				}
				if out != nil {
					out = append(out, ce)
				}
			}
			if out == nil {
				return x, nil
			}
			return out, nil
		}
		return v, nil
	}
	st, err := conv(obj.(zodb.PyStateful).PyGetState())
	if err != nil {
		return nil, err
	}
	return zodb.EncodeRecord(pyGlobal(zodb.ClassOf(obj)), st)
}

// sameAny tells whether conv left v as it was.
func sameAny(a, b any) bool {
	switch x := b.(type) {
	case zodb.PyTuple:
		y, ok := a.(zodb.PyTuple)
		return ok && len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0])
	case zodb.IPersistent:
		return false
	}
	return true
}

func pyGlobal(class string) zodb.PyGlobal {
	i := strings.LastIndexByte(class, '.')
	return zodb.PyGlobal{Module: class[:i], Name: class[i+1:]}
}

func fmtLen(n *int) string {
	if n == nil {
		return "none"
	}
	return strconv.Itoa(*n)
}

// rebuilt returns a new object of the node's class holding the same
// items, built by insertions.
type rebuildable interface {
	rebuilt(ctx context.Context) (zodb.IPersistent, error)
}

func (b *Bucket[K, V, F]) rebuilt(ctx context.Context) (zodb.IPersistent, error) {
	n := new(Bucket[K, V, F])
	var err error
	b.Range(ctx, nil, nil, func(k K, v V) bool {
		_, err = n.Set(ctx, k, v)
		return err == nil
	})
	return n, err
}

func (t *BTree[K, V, F]) rebuilt(ctx context.Context) (zodb.IPersistent, error) {
	n := new(BTree[K, V, F])
	var err error
	t.Range(ctx, nil, nil, func(k K, v V) bool {
		_, err = n.Set(ctx, k, v)
		return err == nil
	})
	return n, err
}

// TestGoldenBuild builds, by insertions, every tree and bucket of the
// reference data that is stored in one record (empty trees, trees of one
// inlined bucket, standalone buckets and sets) and checks that Go writes
// the record BTrees wrote.
func TestGoldenBuild(t *testing.T) {
	for _, path := range goldenFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			entries := loadGolden(t, path+".btrees.json")
			stor, db := openReadOnly(t, path)
			txn, ctx := transaction.New(context.Background())
			defer txn.Abort(ctx)
			conn, err := db.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			built := 0
			for _, e := range entries {
				if e.InternalNode || e.Class == "BTrees.Length.Length" {
					continue
				}
				if e.Structure != nil && e.Structure.Form == "tree" {
					continue
				}
				oid, _ := zodb.ParseOid(e.Oid)
				obj, err := conn.Get(ctx, oid)
				if err != nil {
					t.Fatal(err)
				}
				if st, ok := obj.(zodb.PyStateful).PyGetState().(zodb.PyTuple); ok && len(st) == 2 {
					continue // a bucket of a tree: refers to its next
				}
				n, err := obj.(rebuildable).rebuilt(ctx)
				if err != nil {
					t.Fatalf("%s: %v", e.Oid, err)
				}
				enc, err := encodeWithRefs(n)
				if err != nil {
					t.Fatal(err)
				}
				data, _, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: conn.At()})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(enc, data) {
					t.Errorf("%s %s built by Go:\n %q\nwant\n %q", e.Oid, e.Class, clip(enc), clip(data))
				}
				built++
			}
			t.Logf("%d records built by insertions", built)
			if built == 0 {
				t.Errorf("no single-record BTrees object in %s", path)
			}
		})
	}
}

// TestGoldenShape: the OOBTree of btrees.fs was filled with ascending keys
// key000000..key008760 by BTrees; the same insertions in Go give the same
// interior nodes: same separating keys, same number of children.
func TestGoldenShape(t *testing.T) {
	path := filepath.Join(testdir.Dir("ZODB_TESTDATA", "zodb"), "btrees.fs")
	_, db := openReadOnly(t, path)
	txn, ctx := transaction.New(context.Background())
	defer txn.Abort(ctx)
	conn, err := db.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := conn.Get(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	py, ok := obj.(*OOBTree)
	if !ok {
		t.Fatalf("oid 2 is %T", obj)
	}
	var last any
	present := map[any]bool{}
	if err := py.Range(ctx, nil, nil, func(k, v any) bool { last = k; present[k] = true; return true }); err != nil {
		t.Fatal(err)
	}
	if last != "key008760" {
		t.Fatalf("last key %v: the reference data changed", last)
	}
	// the keys inserted, then those that were deleted since
	goTree := new(OOBTree)
	for i := 0; i <= 8760; i++ {
		if _, err := goTree.Set(ctx, fmt.Sprintf("key%06d", i), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	deleted := 0
	for i := 0; i <= 8760; i++ {
		if k := fmt.Sprintf("key%06d", i); !present[k] {
			if _, err := goTree.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
	}
	t.Logf("%d keys inserted, %d deleted", 8761, deleted)
	var cmpNodes func(path string, a, b *OOBTree) error
	cmpNodes = func(path string, a, b *OOBTree) error {
		if err := a.PActivate(ctx); err != nil {
			return err
		}
		if len(a.data) != len(b.data) {
			return fmt.Errorf("%s: %d children in Go, %d in Python", path, len(b.data), len(a.data))
		}
		for i := range a.data {
			if i > 0 && a.data[i].key != b.data[i].key {
				return fmt.Errorf("%s: key #%d is %v in Go, %v in Python", path, i, b.data[i].key, a.data[i].key)
			}
			if (a.data[i].tree == nil) != (b.data[i].tree == nil) {
				return fmt.Errorf("%s: child #%d of another kind", path, i)
			}
			if a.data[i].tree != nil {
				if err := cmpNodes(fmt.Sprintf("%s/%d", path, i), a.data[i].tree, b.data[i].tree); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := cmpNodes("root", py, goTree); err != nil {
		t.Fatal(err)
	}
}
