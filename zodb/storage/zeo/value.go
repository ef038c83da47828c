package zeo

import (
	"bytes"
	"fmt"
	"math"
	"strings"
)

// The values that travel in ZEO messages, common to both encodings:
//
//	nil               None / nil
//	bool              True, False
//	int64             int (uint64 only for values above MaxInt64)
//	float64           float
//	string            str (text)
//	[]byte            bytes (bin)
//	tuple             tuple (pickle) / array (msgpack decodes every array so)
//	*list             list (pickle; msgpack encodes it as an array)
//	*dict             dict / map, pairs kept in wire order
//	global            pickle GLOBAL (module, name), e.g. an exception class
//	*reduce           pickle REDUCE (+ BUILD): an object such as an exception
//
// Lists and dicts are pointers so that the pickle decoder can fill them in
// place while they are referenced from its memo.

type tuple []any

type list struct{ items []any }

type dict struct{ items []kv }

type kv struct{ k, v any }

type global struct{ module, name string }

type reduce struct {
	fn       any
	args     any
	state    any
	hasState bool
}

func newList(items ...any) *list { return &list{items: items} }

// get returns the value of the last entry whose key equals k (keys
// compared as str/bytes/int of the same Go type): the one a Python dict
// would keep.
func (d *dict) get(k any) (any, bool) {
	if d == nil {
		return nil, false
	}
	for i := len(d.items) - 1; i >= 0; i-- {
		if equalScalar(d.items[i].k, k) {
			return d.items[i].v, true
		}
	}
	return nil, false
}

// add appends a pair; a repeated key is kept (get sees the last one), which
// keeps decoding linear in the input.
func (d *dict) add(k, v any) { d.items = append(d.items, kv{k, v}) }

// equalScalar compares keys; containers never match.
func equalScalar(a, b any) bool {
	switch a.(type) {
	case tuple, *list, *dict, *reduce:
		return false
	}
	return equalValue(a, b)
}

// equalValue compares two values structurally and by type (tuple ≠ list,
// str ≠ bytes), as the transcripts do.
func equalValue(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	case int64:
		b, ok := b.(int64)
		return ok && a == b
	case uint64:
		b, ok := b.(uint64)
		return ok && a == b
	case float64:
		b, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(b)
	case string:
		b, ok := b.(string)
		return ok && a == b
	case []byte:
		b, ok := b.([]byte)
		return ok && bytes.Equal(a, b)
	case tuple:
		b, ok := b.(tuple)
		return ok && equalSlice(a, b)
	case *list:
		b, ok := b.(*list)
		return ok && equalSlice(a.items, b.items)
	case *dict:
		b, ok := b.(*dict)
		if !ok || len(a.items) != len(b.items) {
			return false
		}
		for i := range a.items {
			if !equalValue(a.items[i].k, b.items[i].k) || !equalValue(a.items[i].v, b.items[i].v) {
				return false
			}
		}
		return true
	case global:
		b, ok := b.(global)
		return ok && a == b
	case *reduce:
		b, ok := b.(*reduce)
		return ok && equalValue(a.fn, b.fn) && equalValue(a.args, b.args) &&
			a.hasState == b.hasState && equalValue(a.state, b.state)
	}
	return false
}

func equalSlice(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !equalValue(a[i], b[i]) {
			return false
		}
	}
	return true
}

// formatValue renders a value in a Python-like way for error messages.
func formatValue(v any) string {
	var b strings.Builder
	writeValue(&b, v, 0)
	return b.String()
}

func writeValue(b *strings.Builder, v any, depth int) {
	if depth > 20 || b.Len() > 4096 {
		b.WriteString("…")
		return
	}
	const maxBytes = 64
	switch v := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if v {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case int64, uint64:
		fmt.Fprintf(b, "%d", v)
	case float64:
		fmt.Fprintf(b, "%v", v)
	case string:
		fmt.Fprintf(b, "%q", v)
	case []byte:
		if len(v) > maxBytes {
			fmt.Fprintf(b, "b%q…<%d>", v[:maxBytes], len(v))
		} else {
			fmt.Fprintf(b, "b%q", v)
		}
	case tuple:
		b.WriteByte('(')
		for i, x := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			writeValue(b, x, depth+1)
		}
		if len(v) == 1 {
			b.WriteByte(',')
		}
		b.WriteByte(')')
	case *list:
		b.WriteByte('[')
		for i, x := range v.items {
			if i > 0 {
				b.WriteString(", ")
			}
			writeValue(b, x, depth+1)
		}
		b.WriteByte(']')
	case *dict:
		b.WriteByte('{')
		for i, e := range v.items {
			if i > 0 {
				b.WriteString(", ")
			}
			writeValue(b, e.k, depth+1)
			b.WriteString(": ")
			writeValue(b, e.v, depth+1)
		}
		b.WriteByte('}')
	case global:
		fmt.Fprintf(b, "%s.%s", v.module, v.name)
	case *reduce:
		writeValue(b, v.fn, depth+1)
		writeValue(b, v.args, depth+1)
		if v.hasState {
			b.WriteString(".__setstate__(")
			writeValue(b, v.state, depth+1)
			b.WriteByte(')')
		}
	default:
		fmt.Fprintf(b, "<%T>", v)
	}
}

// items returns the elements of a tuple or list.
func items(v any) ([]any, bool) {
	switch v := v.(type) {
	case tuple:
		return v, true
	case *list:
		return v.items, true
	}
	return nil, false
}

// msg is one ZEO message: (msgid, flag, method, args).
type msg struct {
	id     any
	flag   any
	method string
	args   any
}

func (m *msg) value() tuple { return tuple{m.id, m.flag, m.method, m.args} }

func msgFromValue(v any) (*msg, error) {
	t, ok := v.(tuple)
	if !ok || len(t) != 4 {
		return nil, fmt.Errorf("message is not a 4-tuple: %.200s", formatValue(v))
	}
	method, ok := t[2].(string)
	if !ok {
		return nil, fmt.Errorf("message method is not a str: %.200s", formatValue(t[2]))
	}
	return &msg{id: t[0], flag: t[1], method: method, args: t[3]}, nil
}

// codec encodes and decodes messages in one of the two ZEO encodings.
type codec interface {
	letter() byte
	encode(v any) ([]byte, error)
	decode(b []byte) (any, error)
}

func codecFor(letter byte) (codec, bool) {
	switch letter {
	case 'Z':
		return pickleCodec{}, true
	case 'M':
		return msgpackCodec{}, true
	}
	return nil, false
}

// maxDepth bounds the nesting of decoded values.
const maxDepth = 200
