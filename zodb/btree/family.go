package btree

import (
	"fmt"
	"math"
	"math/big"

	"github.com/neozodb/neo/zodb"
)

// famInfo describes a family: its two-letter name, whether the type is a
// set (keys only) and the maximum sizes of its nodes.
type famInfo struct {
	name        string // "OO", "IO", ...
	set         bool
	maxLeaf     int
	maxInternal int
}

// family is the constraint of the F type parameter: how keys and values of
// a family are compared and converted to and from Python values, and the
// family's sizes. The families are the unexported types below; users name
// the instantiations through the aliases (OOBTree, IIBucket, ...).
type family[K, V any] interface {
	info() famInfo
	cmpKey(a, b K) (int, error)
	keyToPy(k K) any
	keyFromPy(v any) (K, error)
	valToPy(v V) any
	valFromPy(v any) (V, error)
	cmpVal(a, b V) (int, error)
}

// ---- key codecs ----

type kObj struct{}

func (kObj) cmpKey(a, b any) (int, error) { return Compare(a, b) }
func (kObj) keyToPy(k any) any            { return k }
func (kObj) keyFromPy(v any) (any, error) {
	if err := checkOrderable(v); err != nil {
		return nil, err
	}
	return v, nil
}

type kI struct{}

func (kI) cmpKey(a, b int32) (int, error) { return cmpOrdered(a, b), nil }
func (kI) keyToPy(k int32) any            { return int64(k) }
func (kI) keyFromPy(v any) (int32, error) { return intFromPy[int32](v) }

type kL struct{}

func (kL) cmpKey(a, b int64) (int, error) { return cmpOrdered(a, b), nil }
func (kL) keyToPy(k int64) any            { return k }
func (kL) keyFromPy(v any) (int64, error) { return intFromPy[int64](v) }

type kQ struct{}

func (kQ) cmpKey(a, b uint64) (int, error) { return cmpOrdered(a, b), nil }
func (kQ) keyToPy(k uint64) any            { return uint64ToPy(k) }
func (kQ) keyFromPy(v any) (uint64, error) { return intFromPy[uint64](v) }

type kU struct{}

func (kU) cmpKey(a, b uint32) (int, error) { return cmpOrdered(a, b), nil }
func (kU) keyToPy(k uint32) any            { return int64(k) }
func (kU) keyFromPy(v any) (uint32, error) { return intFromPy[uint32](v) }

// ---- value codecs ----

type vObj struct{}

func (vObj) valToPy(v any) any            { return v }
func (vObj) valFromPy(v any) (any, error) { return v, nil }
func (vObj) cmpVal(a, b any) (int, error) { return Compare(a, b) }

type vI struct{}

func (vI) valToPy(v int32) any            { return int64(v) }
func (vI) valFromPy(v any) (int32, error) { return intFromPy[int32](v) }
func (vI) cmpVal(a, b int32) (int, error) { return cmpOrdered(a, b), nil }

type vL struct{}

func (vL) valToPy(v int64) any            { return v }
func (vL) valFromPy(v any) (int64, error) { return intFromPy[int64](v) }
func (vL) cmpVal(a, b int64) (int, error) { return cmpOrdered(a, b), nil }

type vQ struct{}

func (vQ) valToPy(v uint64) any            { return uint64ToPy(v) }
func (vQ) valFromPy(v any) (uint64, error) { return intFromPy[uint64](v) }
func (vQ) cmpVal(a, b uint64) (int, error) { return cmpOrdered(a, b), nil }

type vU struct{}

func (vU) valToPy(v uint32) any            { return int64(v) }
func (vU) valFromPy(v any) (uint32, error) { return intFromPy[uint32](v) }
func (vU) cmpVal(a, b uint32) (int, error) { return cmpOrdered(a, b), nil }

type vF struct{}

func (vF) valToPy(v float32) any { return float64(v) }
func (vF) valFromPy(v any) (float32, error) {
	switch x := v.(type) {
	case float64:
		return float32(x), nil
	case int64:
		return float32(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("expected a float, got %s", zodb.PyRepr(v))
}
func (vF) cmpVal(a, b float32) (int, error) { return cmpOrdered(a, b), nil }

// vNone is the value "codec" of sets: there are no values.
type vNone struct{}

func (vNone) valToPy(struct{}) any              { return nil }
func (vNone) valFromPy(any) (struct{}, error)   { return struct{}{}, nil }
func (vNone) cmpVal(a, b struct{}) (int, error) { return 0, nil }

func cmpOrdered[T int32 | int64 | uint32 | uint64 | float32](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func uint64ToPy(x uint64) any {
	if x <= math.MaxInt64 {
		return int64(x)
	}
	return new(big.Int).SetUint64(x)
}

// intFromPy converts a Python int to T, refusing values out of T's range
// (BTrees raises TypeError/OverflowError there).
func intFromPy[T int32 | int64 | uint32 | uint64](v any) (T, error) {
	var zero T
	var lo int64
	var hi uint64
	switch any(zero).(type) {
	case int32:
		lo, hi = math.MinInt32, math.MaxInt32
	case int64:
		lo, hi = math.MinInt64, math.MaxInt64
	case uint32:
		lo, hi = 0, math.MaxUint32
	case uint64:
		lo, hi = 0, math.MaxUint64
	}
	switch x := v.(type) {
	case int64:
		if x < lo || x > 0 && uint64(x) > hi {
			return 0, fmt.Errorf("integer %d out of range for %T keys/values", x, zero)
		}
		return T(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case *big.Int:
		if x.Sign() < 0 {
			if !x.IsInt64() || x.Int64() < lo {
				return 0, fmt.Errorf("integer %s out of range for %T keys/values", x, zero)
			}
			return T(x.Int64()), nil
		}
		if !x.IsUint64() || x.Uint64() > hi {
			return 0, fmt.Errorf("integer %s out of range for %T keys/values", x, zero)
		}
		return T(x.Uint64()), nil
	}
	return 0, fmt.Errorf("expected an integer, got %s", zodb.PyRepr(v))
}

// ---- families ----
//
// Sizes are BTrees' max_leaf_size / max_internal_size.

func sizes(name string, set bool) famInfo {
	leaf := 120
	switch {
	case name == "OO":
		leaf = 30
	case name[0] == 'O' || name[1] == 'O':
		leaf = 60
	}
	internal := 500
	if name[0] == 'O' {
		internal = 250
	}
	return famInfo{name: name, set: set, maxLeaf: leaf, maxInternal: internal}
}

type (
	famOO struct {
		kObj
		vObj
	}
	famOI struct {
		kObj
		vI
	}
	famOL struct {
		kObj
		vL
	}
	famOQ struct {
		kObj
		vQ
	}
	famOU struct {
		kObj
		vU
	}
	famIO struct {
		kI
		vObj
	}
	famII struct {
		kI
		vI
	}
	famIF struct {
		kI
		vF
	}
	famIU struct {
		kI
		vU
	}
	famLO struct {
		kL
		vObj
	}
	famLL struct {
		kL
		vL
	}
	famLF struct {
		kL
		vF
	}
	famLQ struct {
		kL
		vQ
	}
	famQO struct {
		kQ
		vObj
	}
	famQQ struct {
		kQ
		vQ
	}
	famQL struct {
		kQ
		vL
	}
	famQF struct {
		kQ
		vF
	}
	famUO struct {
		kU
		vObj
	}
	famUU struct {
		kU
		vU
	}
	famUI struct {
		kU
		vI
	}
	famUF struct {
		kU
		vF
	}

	// set families: the key type of the family, no values
	setOO struct {
		kObj
		vNone
	}
	setOI struct {
		kObj
		vNone
	}
	setOL struct {
		kObj
		vNone
	}
	setOQ struct {
		kObj
		vNone
	}
	setOU struct {
		kObj
		vNone
	}
	setIO struct {
		kI
		vNone
	}
	setII struct {
		kI
		vNone
	}
	setIF struct {
		kI
		vNone
	}
	setIU struct {
		kI
		vNone
	}
	setLO struct {
		kL
		vNone
	}
	setLL struct {
		kL
		vNone
	}
	setLF struct {
		kL
		vNone
	}
	setLQ struct {
		kL
		vNone
	}
	setQO struct {
		kQ
		vNone
	}
	setQQ struct {
		kQ
		vNone
	}
	setQL struct {
		kQ
		vNone
	}
	setQF struct {
		kQ
		vNone
	}
	setUO struct {
		kU
		vNone
	}
	setUU struct {
		kU
		vNone
	}
	setUI struct {
		kU
		vNone
	}
	setUF struct {
		kU
		vNone
	}
)

var (
	infoOO, infoOI, infoOL, infoOQ, infoOU = sizes("OO", false), sizes("OI", false), sizes("OL", false), sizes("OQ", false), sizes("OU", false)
	infoIO, infoII, infoIF, infoIU         = sizes("IO", false), sizes("II", false), sizes("IF", false), sizes("IU", false)
	infoLO, infoLL, infoLF, infoLQ         = sizes("LO", false), sizes("LL", false), sizes("LF", false), sizes("LQ", false)
	infoQO, infoQQ, infoQL, infoQF         = sizes("QO", false), sizes("QQ", false), sizes("QL", false), sizes("QF", false)
	infoUO, infoUU, infoUI, infoUF         = sizes("UO", false), sizes("UU", false), sizes("UI", false), sizes("UF", false)

	sinfoOO, sinfoOI, sinfoOL, sinfoOQ, sinfoOU = sizes("OO", true), sizes("OI", true), sizes("OL", true), sizes("OQ", true), sizes("OU", true)
	sinfoIO, sinfoII, sinfoIF, sinfoIU          = sizes("IO", true), sizes("II", true), sizes("IF", true), sizes("IU", true)
	sinfoLO, sinfoLL, sinfoLF, sinfoLQ          = sizes("LO", true), sizes("LL", true), sizes("LF", true), sizes("LQ", true)
	sinfoQO, sinfoQQ, sinfoQL, sinfoQF          = sizes("QO", true), sizes("QQ", true), sizes("QL", true), sizes("QF", true)
	sinfoUO, sinfoUU, sinfoUI, sinfoUF          = sizes("UO", true), sizes("UU", true), sizes("UI", true), sizes("UF", true)
)

func (famOO) info() famInfo { return infoOO }
func (famOI) info() famInfo { return infoOI }
func (famOL) info() famInfo { return infoOL }
func (famOQ) info() famInfo { return infoOQ }
func (famOU) info() famInfo { return infoOU }
func (famIO) info() famInfo { return infoIO }
func (famII) info() famInfo { return infoII }
func (famIF) info() famInfo { return infoIF }
func (famIU) info() famInfo { return infoIU }
func (famLO) info() famInfo { return infoLO }
func (famLL) info() famInfo { return infoLL }
func (famLF) info() famInfo { return infoLF }
func (famLQ) info() famInfo { return infoLQ }
func (famQO) info() famInfo { return infoQO }
func (famQQ) info() famInfo { return infoQQ }
func (famQL) info() famInfo { return infoQL }
func (famQF) info() famInfo { return infoQF }
func (famUO) info() famInfo { return infoUO }
func (famUU) info() famInfo { return infoUU }
func (famUI) info() famInfo { return infoUI }
func (famUF) info() famInfo { return infoUF }

func (setOO) info() famInfo { return sinfoOO }
func (setOI) info() famInfo { return sinfoOI }
func (setOL) info() famInfo { return sinfoOL }
func (setOQ) info() famInfo { return sinfoOQ }
func (setOU) info() famInfo { return sinfoOU }
func (setIO) info() famInfo { return sinfoIO }
func (setII) info() famInfo { return sinfoII }
func (setIF) info() famInfo { return sinfoIF }
func (setIU) info() famInfo { return sinfoIU }
func (setLO) info() famInfo { return sinfoLO }
func (setLL) info() famInfo { return sinfoLL }
func (setLF) info() famInfo { return sinfoLF }
func (setLQ) info() famInfo { return sinfoLQ }
func (setQO) info() famInfo { return sinfoQO }
func (setQQ) info() famInfo { return sinfoQQ }
func (setQL) info() famInfo { return sinfoQL }
func (setQF) info() famInfo { return sinfoQF }
func (setUO) info() famInfo { return sinfoUO }
func (setUU) info() famInfo { return sinfoUU }
func (setUI) info() famInfo { return sinfoUI }
func (setUF) info() famInfo { return sinfoUF }

// Types of every family, by their Python names. A Set is a Bucket without
// values and a TreeSet a BTree of Sets.
type (
	OOBTree   = BTree[any, any, famOO]
	OOBucket  = Bucket[any, any, famOO]
	OOSet     = Bucket[any, struct{}, setOO]
	OOTreeSet = BTree[any, struct{}, setOO]
	OIBTree   = BTree[any, int32, famOI]
	OIBucket  = Bucket[any, int32, famOI]
	OISet     = Bucket[any, struct{}, setOI]
	OITreeSet = BTree[any, struct{}, setOI]
	OLBTree   = BTree[any, int64, famOL]
	OLBucket  = Bucket[any, int64, famOL]
	OLSet     = Bucket[any, struct{}, setOL]
	OLTreeSet = BTree[any, struct{}, setOL]
	OQBTree   = BTree[any, uint64, famOQ]
	OQBucket  = Bucket[any, uint64, famOQ]
	OQSet     = Bucket[any, struct{}, setOQ]
	OQTreeSet = BTree[any, struct{}, setOQ]
	OUBTree   = BTree[any, uint32, famOU]
	OUBucket  = Bucket[any, uint32, famOU]
	OUSet     = Bucket[any, struct{}, setOU]
	OUTreeSet = BTree[any, struct{}, setOU]
	IOBTree   = BTree[int32, any, famIO]
	IOBucket  = Bucket[int32, any, famIO]
	IOSet     = Bucket[int32, struct{}, setIO]
	IOTreeSet = BTree[int32, struct{}, setIO]
	IIBTree   = BTree[int32, int32, famII]
	IIBucket  = Bucket[int32, int32, famII]
	IISet     = Bucket[int32, struct{}, setII]
	IITreeSet = BTree[int32, struct{}, setII]
	IFBTree   = BTree[int32, float32, famIF]
	IFBucket  = Bucket[int32, float32, famIF]
	IFSet     = Bucket[int32, struct{}, setIF]
	IFTreeSet = BTree[int32, struct{}, setIF]
	IUBTree   = BTree[int32, uint32, famIU]
	IUBucket  = Bucket[int32, uint32, famIU]
	IUSet     = Bucket[int32, struct{}, setIU]
	IUTreeSet = BTree[int32, struct{}, setIU]
	LOBTree   = BTree[int64, any, famLO]
	LOBucket  = Bucket[int64, any, famLO]
	LOSet     = Bucket[int64, struct{}, setLO]
	LOTreeSet = BTree[int64, struct{}, setLO]
	LLBTree   = BTree[int64, int64, famLL]
	LLBucket  = Bucket[int64, int64, famLL]
	LLSet     = Bucket[int64, struct{}, setLL]
	LLTreeSet = BTree[int64, struct{}, setLL]
	LFBTree   = BTree[int64, float32, famLF]
	LFBucket  = Bucket[int64, float32, famLF]
	LFSet     = Bucket[int64, struct{}, setLF]
	LFTreeSet = BTree[int64, struct{}, setLF]
	LQBTree   = BTree[int64, uint64, famLQ]
	LQBucket  = Bucket[int64, uint64, famLQ]
	LQSet     = Bucket[int64, struct{}, setLQ]
	LQTreeSet = BTree[int64, struct{}, setLQ]
	QOBTree   = BTree[uint64, any, famQO]
	QOBucket  = Bucket[uint64, any, famQO]
	QOSet     = Bucket[uint64, struct{}, setQO]
	QOTreeSet = BTree[uint64, struct{}, setQO]
	QQBTree   = BTree[uint64, uint64, famQQ]
	QQBucket  = Bucket[uint64, uint64, famQQ]
	QQSet     = Bucket[uint64, struct{}, setQQ]
	QQTreeSet = BTree[uint64, struct{}, setQQ]
	QLBTree   = BTree[uint64, int64, famQL]
	QLBucket  = Bucket[uint64, int64, famQL]
	QLSet     = Bucket[uint64, struct{}, setQL]
	QLTreeSet = BTree[uint64, struct{}, setQL]
	QFBTree   = BTree[uint64, float32, famQF]
	QFBucket  = Bucket[uint64, float32, famQF]
	QFSet     = Bucket[uint64, struct{}, setQF]
	QFTreeSet = BTree[uint64, struct{}, setQF]
	UOBTree   = BTree[uint32, any, famUO]
	UOBucket  = Bucket[uint32, any, famUO]
	UOSet     = Bucket[uint32, struct{}, setUO]
	UOTreeSet = BTree[uint32, struct{}, setUO]
	UUBTree   = BTree[uint32, uint32, famUU]
	UUBucket  = Bucket[uint32, uint32, famUU]
	UUSet     = Bucket[uint32, struct{}, setUU]
	UUTreeSet = BTree[uint32, struct{}, setUU]
	UIBTree   = BTree[uint32, int32, famUI]
	UIBucket  = Bucket[uint32, int32, famUI]
	UISet     = Bucket[uint32, struct{}, setUI]
	UITreeSet = BTree[uint32, struct{}, setUI]
	UFBTree   = BTree[uint32, float32, famUF]
	UFBucket  = Bucket[uint32, float32, famUF]
	UFSet     = Bucket[uint32, struct{}, setUF]
	UFTreeSet = BTree[uint32, struct{}, setUF]
)

// register registers the four classes of a family.
func register[K, V, SV any, F family[K, V], S family[K, SV]]() {
	var f F
	name := f.info().name
	mod := "BTrees." + name + "BTree."
	zodb.RegisterClass(mod+name+"BTree", func() zodb.IPersistent { return new(BTree[K, V, F]) }, nil)
	zodb.RegisterClass(mod+name+"Bucket", func() zodb.IPersistent { return new(Bucket[K, V, F]) }, nil)
	zodb.RegisterClass(mod+name+"TreeSet", func() zodb.IPersistent { return new(BTree[K, SV, S]) }, nil)
	zodb.RegisterClass(mod+name+"Set", func() zodb.IPersistent { return new(Bucket[K, SV, S]) }, nil)
	zodb.RegisterConflictResolver(mod+name+"Bucket", resolveBucket[K, V, F])
	zodb.RegisterConflictResolver(mod+name+"Set", resolveBucket[K, SV, S])
	zodb.RegisterConflictResolver(mod+name+"BTree", resolveTree[K, V, F])
	zodb.RegisterConflictResolver(mod+name+"TreeSet", resolveTree[K, SV, S])
}

func init() {
	register[any, any, struct{}, famOO, setOO]()
	register[any, int32, struct{}, famOI, setOI]()
	register[any, int64, struct{}, famOL, setOL]()
	register[any, uint64, struct{}, famOQ, setOQ]()
	register[any, uint32, struct{}, famOU, setOU]()
	register[int32, any, struct{}, famIO, setIO]()
	register[int32, int32, struct{}, famII, setII]()
	register[int32, float32, struct{}, famIF, setIF]()
	register[int32, uint32, struct{}, famIU, setIU]()
	register[int64, any, struct{}, famLO, setLO]()
	register[int64, int64, struct{}, famLL, setLL]()
	register[int64, float32, struct{}, famLF, setLF]()
	register[int64, uint64, struct{}, famLQ, setLQ]()
	register[uint64, any, struct{}, famQO, setQO]()
	register[uint64, uint64, struct{}, famQQ, setQQ]()
	register[uint64, int64, struct{}, famQL, setQL]()
	register[uint64, float32, struct{}, famQF, setQF]()
	register[uint32, any, struct{}, famUO, setUO]()
	register[uint32, uint32, struct{}, famUU, setUU]()
	register[uint32, int32, struct{}, famUI, setUI]()
	register[uint32, float32, struct{}, famUF, setUF]()
}
