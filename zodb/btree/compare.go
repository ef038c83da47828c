package btree

import (
	"fmt"
	"math"
	"math/big"

	"github.com/neozodb/neo/zodb"
)

// Ordering of the keys of "O" families, as Python 3 orders them: numbers
// (bool, int, float) among themselves, str with str (by code point, which
// is the byte order of UTF-8), bytes with bytes, tuples element by element.
// Other combinations raise TypeError in Python and are errors here.

// IncomparableError tells that two Python values have no order.
type IncomparableError struct {
	A, B any
}

func (e *IncomparableError) Error() string {
	return fmt.Sprintf("'<' not supported between %s and %s", zodb.PyRepr(e.A), zodb.PyRepr(e.B))
}

// Compare orders two Python values as Python's < and == do: -1, 0 or +1.
func Compare(a, b any) (int, error) {
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return cmpStr(x, y), nil
		}
	case zodb.PyBytes:
		if y, ok := b.(zodb.PyBytes); ok {
			return cmpStr(string(x), string(y)), nil
		}
	case zodb.PyTuple:
		if y, ok := b.(zodb.PyTuple); ok {
			return cmpTuple(x, y)
		}
	case int64, bool, float64, *big.Int:
		if c, ok := cmpNum(a, b); ok {
			return c, nil
		}
	}
	return 0, &IncomparableError{a, b}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpTuple(a, b zodb.PyTuple) (int, error) {
	for i := 0; i < len(a) && i < len(b); i++ {
		if zodb.PyEqual(a[i], b[i]) {
			continue
		}
		return Compare(a[i], b[i])
	}
	switch {
	case len(a) < len(b):
		return -1, nil
	case len(a) > len(b):
		return 1, nil
	}
	return 0, nil
}

// cmpNum compares numbers; ok is false if one is not a number.
func cmpNum(a, b any) (int, bool) {
	fa, fok := a.(float64)
	fb, gok := b.(float64)
	if fok || gok {
		if !fok {
			ia, ok := toBig(a)
			if !ok {
				return 0, false
			}
			return -cmpFloatBig(fb, ia), true
		}
		if !gok {
			ib, ok := toBig(b)
			if !ok {
				return 0, false
			}
			return cmpFloatBig(fa, ib), true
		}
		switch {
		case fa < fb:
			return -1, true
		case fa > fb:
			return 1, true
		}
		return 0, true // NaN compares "equal" here; BTrees cannot order NaN either
	}
	ia, ok1 := toBig(a)
	ib, ok2 := toBig(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	return ia.Cmp(ib), true
}

func toBig(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int64:
		return big.NewInt(x), true
	case bool:
		if x {
			return big.NewInt(1), true
		}
		return big.NewInt(0), true
	case *big.Int:
		return x, true
	}
	return nil, false
}

func cmpFloatBig(f float64, i *big.Int) int {
	if math.IsInf(f, 1) {
		return 1
	}
	if math.IsInf(f, -1) || math.IsNaN(f) {
		return -1
	}
	bf := new(big.Float).SetFloat64(f)
	return bf.Cmp(new(big.Float).SetInt(i))
}

// checkOrderable refuses keys that BTrees could not order among keys of
// their own kind.
func checkOrderable(v any) error {
	switch x := v.(type) {
	case string, zodb.PyBytes, int64, bool, float64, *big.Int:
		return nil
	case zodb.PyTuple:
		for _, e := range x {
			if err := checkOrderable(e); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("key %s (%T) is not orderable: supported keys are str, bytes, int, float and tuples of them", zodb.PyRepr(v), v)
}
