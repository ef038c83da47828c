package neonet

import (
	"reflect"
	"sync"
)

// capBytes sets the capacity of every byte string reachable from v (a
// message decoded in place, whose byte strings point into its packet, one
// after the other) to its length: appending to one of them then allocates,
// as with a message holding copies, instead of overwriting the next.
func capBytes(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			capBytes(v.Elem())
		}
	case reflect.Interface:
		if v.IsNil() {
			return
		}
		e := v.Elem()
		if e.Kind() == reflect.Slice && e.Type().Elem().Kind() == reflect.Uint8 {
			if e.Cap() != e.Len() && v.CanSet() {
				v.Set(e.Slice3(0, e.Len(), e.Len()))
			}
			return
		}
		capBytes(e) // a slice (its elements can be set) or a scalar
	case reflect.Struct:
		if !mayHoldBytes(v.Type()) {
			return
		}
		for i := range v.NumField() {
			capBytes(v.Field(i))
		}
	case reflect.Array:
		if !mayHoldBytes(v.Type().Elem()) {
			return
		}
		for i := range v.Len() {
			capBytes(v.Index(i))
		}
	case reflect.Slice:
		t := v.Type().Elem()
		if t.Kind() == reflect.Uint8 {
			if v.Cap() != v.Len() && v.CanSet() {
				v.SetCap(v.Len())
			}
			return
		}
		if !mayHoldBytes(t) {
			return
		}
		for i := range v.Len() {
			capBytes(v.Index(i))
		}
	}
}

var holdsBytes sync.Map // reflect.Type → bool

// mayHoldBytes tells whether a value of type t may hold a byte slice
// (arrays of bytes are values, not slices).
func mayHoldBytes(t reflect.Type) bool {
	if r, ok := holdsBytes.Load(t); ok {
		return r.(bool)
	}
	r := typeHoldsBytes(t, map[reflect.Type]bool{})
	holdsBytes.Store(t, r)
	return r
}

func typeHoldsBytes(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false // already being looked at, higher up
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.Uint8 || typeHoldsBytes(t.Elem(), seen)
	case reflect.Pointer, reflect.Array:
		return typeHoldsBytes(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if typeHoldsBytes(t.Field(i).Type, seen) {
				return true
			}
		}
	case reflect.Map:
		return typeHoldsBytes(t.Key(), seen) || typeHoldsBytes(t.Elem(), seen)
	}
	return false
}
