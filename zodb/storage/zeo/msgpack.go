package zeo

import (
	"errors"
	"fmt"
	"math"

	"github.com/tinylib/msgp/msgp"
)

// msgpackCodec is the "M" encoding: what Python's msgpack writes with
// use_bin_type=True (bytes → bin, str → str, tuple and list → array, ints in
// their smallest form, float → float64) and reads with raw=False,
// use_list=False (arrays → tuples).
type msgpackCodec struct{}

func (msgpackCodec) letter() byte { return 'M' }

func (msgpackCodec) encode(v any) ([]byte, error) {
	return msgpackAppend(nil, v, 0)
}

func msgpackAppend(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errors.New("msgpack: value nested too deeply")
	}
	if len(b) > maxFrame {
		return nil, errors.New("msgpack: value too large")
	}
	var err error
	switch v := v.(type) {
	case nil:
		b = msgp.AppendNil(b)
	case bool:
		b = msgp.AppendBool(b, v)
	case int:
		b = msgpackInt(b, int64(v))
	case int64:
		b = msgpackInt(b, v)
	case uint64:
		b = msgp.AppendUint64(b, v)
	case float64:
		b = msgp.AppendFloat64(b, v)
	case string:
		b = msgp.AppendString(b, v)
	case []byte:
		b = msgp.AppendBytes(b, v)
	case tuple:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			if b, err = msgpackAppend(b, x, depth+1); err != nil {
				return nil, err
			}
		}
	case *list:
		b = msgp.AppendArrayHeader(b, uint32(len(v.items)))
		for _, x := range v.items {
			if b, err = msgpackAppend(b, x, depth+1); err != nil {
				return nil, err
			}
		}
	case *dict:
		b = msgp.AppendMapHeader(b, uint32(len(v.items)))
		for _, e := range v.items {
			if b, err = msgpackAppend(b, e.k, depth+1); err != nil {
				return nil, err
			}
			if b, err = msgpackAppend(b, e.v, depth+1); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("msgpack: cannot encode %T", v)
	}
	return b, nil
}

// msgpackInt writes non-negative ints in the unsigned forms and negative
// ones in the signed forms, as Python's msgpack does.
func msgpackInt(b []byte, i int64) []byte {
	if i >= 0 {
		return msgp.AppendUint64(b, uint64(i))
	}
	return msgp.AppendInt64(b, i)
}

func (msgpackCodec) decode(b []byte) (any, error) {
	v, rest, err := msgpackRead(b, 0)
	if err != nil {
		return nil, fmt.Errorf("msgpack: offset %d: %w", len(b)-len(rest), err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("msgpack: %d bytes after the value", len(rest))
	}
	return v, nil
}

func msgpackRead(b []byte, depth int) (any, []byte, error) {
	if depth > maxDepth {
		return nil, b, errors.New("value nested too deeply")
	}
	if len(b) == 0 {
		return nil, b, errors.New("truncated msgpack")
	}
	switch msgp.NextType(b) {
	case msgp.NilType:
		o, err := msgp.ReadNilBytes(b)
		return nil, orig(o, b, err), err
	case msgp.BoolType:
		v, o, err := msgp.ReadBoolBytes(b)
		return v, orig(o, b, err), err
	case msgp.IntType:
		v, o, err := msgp.ReadInt64Bytes(b)
		return v, orig(o, b, err), err
	case msgp.UintType:
		v, o, err := msgp.ReadUint64Bytes(b)
		if err != nil {
			return nil, b, err
		}
		if v <= math.MaxInt64 {
			return int64(v), o, nil
		}
		return v, o, nil
	case msgp.Float64Type:
		v, o, err := msgp.ReadFloat64Bytes(b)
		return v, orig(o, b, err), err
	case msgp.Float32Type:
		v, o, err := msgp.ReadFloat32Bytes(b)
		return float64(v), orig(o, b, err), err
	case msgp.StrType:
		v, o, err := msgp.ReadStringZC(b)
		if err != nil {
			return nil, b, err
		}
		return string(v), o, nil
	case msgp.BinType:
		v, o, err := msgp.ReadBytesZC(b)
		if err != nil {
			return nil, b, err
		}
		return append([]byte{}, v...), o, nil
	case msgp.ArrayType:
		n, o, err := msgp.ReadArrayHeaderBytes(b)
		if err != nil {
			return nil, b, err
		}
		if uint64(n) > uint64(len(o)) { // every element takes at least one byte
			return nil, b, fmt.Errorf("array of %d elements runs past the end", n)
		}
		t := make(tuple, 0, n)
		for i := uint32(0); i < n; i++ {
			var x any
			x, o, err = msgpackRead(o, depth+1)
			if err != nil {
				return nil, o, err
			}
			t = append(t, x)
		}
		return t, o, nil
	case msgp.MapType:
		n, o, err := msgp.ReadMapHeaderBytes(b)
		if err != nil {
			return nil, b, err
		}
		if uint64(n)*2 > uint64(len(o)) {
			return nil, b, fmt.Errorf("map of %d pairs runs past the end", n)
		}
		d := &dict{items: make([]kv, 0, n)}
		for i := uint32(0); i < n; i++ {
			var k, v any
			if k, o, err = msgpackRead(o, depth+1); err != nil {
				return nil, o, err
			}
			if !isHashable(k) {
				return nil, o, fmt.Errorf("unhashable map key %T", k)
			}
			if v, o, err = msgpackRead(o, depth+1); err != nil {
				return nil, o, err
			}
			d.add(k, v)
		}
		return d, o, nil
	}
	return nil, b, fmt.Errorf("unsupported msgpack type byte 0x%02x", b[0])
}

func orig(o, b []byte, err error) []byte {
	if err != nil {
		return b
	}
	return o
}
