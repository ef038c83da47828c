package proto

// msgpack primitives shared by the generated encoder and decoder
// (zproto.go). They follow NEO/py's packer exactly: bin for all strings,
// the smallest int form (unsigned forms for non-negative values), float64
// always, enums as fixext1.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/tinylib/msgp/msgp"
)

// ---- encoding ----

func appendTid(b []byte, v uint64) []byte {
	b = append(b, 0xc4, 8)
	return binary.BigEndian.AppendUint64(b, v)
}

// appendOptTid encodes an optional tid/oid: all ones (zodb.InvalidTid,
// zodb.InvalidOid) is nil.
func appendOptTid(b []byte, v uint64) []byte {
	if v == math.MaxUint64 {
		return append(b, 0xc0)
	}
	return appendTid(b, v)
}

func appendNid(b []byte, id NodeID) []byte {
	if id >= 0 {
		return msgp.AppendUint64(b, uint64(id))
	}
	return msgp.AppendInt64(b, int64(id))
}

func appendOptNid(b []byte, id NodeID) []byte {
	if id == NoNode {
		return append(b, 0xc0)
	}
	return appendNid(b, id)
}

// appendInt encodes an integer the way NEO/py does: unsigned forms for
// non-negative values, signed forms only for negative ones.
func appendInt(b []byte, i int64) []byte {
	if i >= 0 {
		return msgp.AppendUint64(b, uint64(i))
	}
	return msgp.AppendInt64(b, i)
}

func appendStr(b []byte, s string) []byte {
	b = msgp.AppendBytesHeader(b, uint32(len(s)))
	return append(b, s...)
}

func appendChecksum(b []byte, c *Checksum) []byte {
	b = append(b, 0xc4, 20)
	return append(b, c[:]...)
}

func appendEnum(b []byte, ext int8, v uint8) []byte {
	if v < 0x80 {
		return append(b, 0xd4, byte(ext), v)
	}
	return append(b, 0xd5, byte(ext), 0xcc, v)
}

// appendValue encodes a Dict/Map value. Types other than those listed in
// Value's documentation are a programming error: the encoder panics rather
// than sending something NEO/py would misread.
func appendValue(b []byte, v Value) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, 0xc0)
	case bool:
		return msgp.AppendBool(b, v)
	case int:
		return appendInt(b, int64(v))
	case int8:
		return appendInt(b, int64(v))
	case int16:
		return appendInt(b, int64(v))
	case int32:
		return appendInt(b, int64(v))
	case int64:
		return appendInt(b, v)
	case uint:
		return msgp.AppendUint64(b, uint64(v))
	case uint8:
		return msgp.AppendUint64(b, uint64(v))
	case uint16:
		return msgp.AppendUint64(b, uint64(v))
	case uint32:
		return msgp.AppendUint64(b, uint64(v))
	case uint64:
		return msgp.AppendUint64(b, v)
	case NodeID:
		return appendNid(b, v)
	case float64:
		return msgp.AppendFloat64(b, v)
	case float32:
		return msgp.AppendFloat64(b, float64(v))
	case string:
		return appendStr(b, v)
	case []byte:
		return msgp.AppendBytes(b, v)
	case CellState:
		return appendEnum(b, extCellState, uint8(v))
	case ClusterState:
		return appendEnum(b, extClusterState, uint8(v))
	case ErrorCode:
		return appendEnum(b, extErrorCode, uint8(v))
	case NodeState:
		return appendEnum(b, extNodeState, uint8(v))
	case NodeType:
		return appendEnum(b, extNodeType, uint8(v))
	case []Value:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			b = appendValue(b, x)
		}
		return b
	case []string:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			b = appendStr(b, x)
		}
		return b
	case [][]byte:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			b = msgp.AppendBytes(b, x)
		}
		return b
	case []int:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			b = appendInt(b, int64(x))
		}
		return b
	case []int64:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			b = appendInt(b, x)
		}
		return b
	case []uint32:
		b = msgp.AppendArrayHeader(b, uint32(len(v)))
		for _, x := range v {
			b = msgp.AppendUint64(b, uint64(x))
		}
		return b
	case Map:
		b = msgp.AppendMapHeader(b, uint32(len(v)))
		for _, it := range v {
			b = appendValue(b, it.Key)
			b = appendValue(b, it.Value)
		}
		return b
	case Dict:
		return appendDict(b, v)
	}
	panic(fmt.Sprintf("proto: cannot encode a value of type %T", v))
}

func appendDict(b []byte, d Dict) []byte {
	b = msgp.AppendMapHeader(b, uint32(len(d)))
	for i := range d {
		b = appendStr(b, d[i].Key)
		b = appendValue(b, d[i].Value)
	}
	return b
}

// ---- decoding ----

// maxValueDepth bounds the nesting of open-typed values (Dict values), so
// that hostile input cannot exhaust the stack.
const maxValueDepth = 32

var (
	errTooDeep  = errors.New("values nested too deeply")
	errTrailing = errors.New("trailing bytes after the arguments")
)

// decoder reads msgpack values from b. The first error sticks: later reads
// return zero values, so generated code checks d.err only at the end.
type decoder struct {
	b     []byte
	err   error
	alias bool // byte slices may point into the input instead of copies
}

func (d *decoder) fail(ctx string, err error) {
	if d.err == nil {
		d.err = fmt.Errorf("%s: %w", ctx, err)
	}
	d.b = nil
}

// what describes the value at the head of b, for error messages.
func what(b []byte) string {
	if len(b) == 0 {
		return "end of data"
	}
	t := msgp.NextType(b)
	switch t {
	case msgp.InvalidType:
		return fmt.Sprintf("invalid byte 0x%02x", b[0])
	case msgp.StrType:
		return "str"
	}
	return t.String()
}

func (d *decoder) failWant(ctx, want string) {
	if len(d.b) == 0 {
		d.fail(ctx, fmt.Errorf("want %s: %w", want, ErrIncomplete))
		return
	}
	d.fail(ctx, fmt.Errorf("want %s, got %s", want, what(d.b)))
}

// nilNext consumes a nil if one comes next.
func (d *decoder) nilNext() bool {
	if len(d.b) > 0 && d.b[0] == 0xc0 {
		d.b = d.b[1:]
		return true
	}
	return false
}

// tuple reads the header of a fixed-size record of n elements.
func (d *decoder) tuple(n int, ctx string) {
	b := d.b
	if len(b) > 0 && b[0] == 0x90|byte(n) && n < 16 {
		d.b = b[1:]
		return
	}
	sz, rest, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		d.failWant(ctx, fmt.Sprintf("array of %d", n))
		return
	}
	if int(sz) != n {
		d.fail(ctx, fmt.Errorf("want array of %d, got %d elements", n, sz))
		return
	}
	d.b = rest
}

// arrayLen reads an array header of a list whose elements take at least
// minSize bytes each; a count the remaining bytes cannot hold is an error,
// so that callers may allocate for it.
func (d *decoder) arrayLen(minSize int, ctx string) int {
	sz, rest, err := msgp.ReadArrayHeaderBytes(d.b)
	if err != nil {
		d.failWant(ctx, "array")
		return 0
	}
	if uint64(sz)*uint64(minSize) > uint64(len(rest)) {
		d.fail(ctx, fmt.Errorf("array of %d elements does not fit in %d bytes", sz, len(rest)))
		return 0
	}
	d.b = rest
	return int(sz)
}

// mapLen is arrayLen for maps; minSize is for one key/value pair.
func (d *decoder) mapLen(minSize int, ctx string) int {
	sz, rest, err := msgp.ReadMapHeaderBytes(d.b)
	if err != nil {
		d.failWant(ctx, "map")
		return 0
	}
	if uint64(sz)*uint64(minSize) > uint64(len(rest)) {
		d.fail(ctx, fmt.Errorf("map of %d pairs does not fit in %d bytes", sz, len(rest)))
		return 0
	}
	d.b = rest
	return int(sz)
}

func (d *decoder) tid(ctx string) uint64 {
	b := d.b
	if len(b) >= 10 && b[0] == 0xc4 && b[1] == 8 {
		d.b = b[10:]
		return binary.BigEndian.Uint64(b[2:10])
	}
	if v, _, err := msgp.ReadBytesZC(b); err == nil {
		d.fail(ctx, fmt.Errorf("want 8-byte bin, got %d bytes", len(v)))
		return 0
	}
	d.failWant(ctx, "8-byte bin")
	return 0
}

func (d *decoder) optTid(ctx string) uint64 {
	if d.nilNext() {
		return math.MaxUint64
	}
	return d.tid(ctx)
}

func (d *decoder) uint(max uint64, ctx string) uint64 {
	b := d.b
	if len(b) > 0 && b[0] < 0x80 && uint64(b[0]) <= max {
		d.b = b[1:]
		return uint64(b[0])
	}
	v, rest, err := msgp.ReadUint64Bytes(b)
	if err != nil {
		var neg msgp.UintBelowZero
		if errors.As(err, &neg) {
			d.fail(ctx, fmt.Errorf("negative value %d", neg.Value))
		} else {
			d.failWant(ctx, "non-negative int")
		}
		return 0
	}
	if v > max {
		d.fail(ctx, fmt.Errorf("value %d out of range (max %d)", v, max))
		return 0
	}
	d.b = rest
	return v
}

func (d *decoder) nid(ctx string) NodeID {
	b := d.b
	if len(b) >= 5 && b[0] == 0xd2 { // int32: the form of all negative ids
		d.b = b[5:]
		return NodeID(int32(binary.BigEndian.Uint32(b[1:5])))
	}
	v, rest, err := msgp.ReadInt64Bytes(b)
	if err != nil {
		d.failWant(ctx, "int (node id)")
		return 0
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail(ctx, fmt.Errorf("node id %d out of range", v))
		return 0
	}
	d.b = rest
	return NodeID(v)
}

func (d *decoder) optNid(ctx string) NodeID {
	if d.nilNext() {
		return NoNode
	}
	return d.nid(ctx)
}

func (d *decoder) bool(ctx string) bool {
	v, rest, err := msgp.ReadBoolBytes(d.b)
	if err != nil {
		d.failWant(ctx, "bool")
		return false
	}
	d.b = rest
	return v
}

func (d *decoder) float(ctx string) float64 {
	v, rest, err := msgp.ReadFloat64Bytes(d.b)
	if err != nil {
		d.failWant(ctx, "float")
		return 0
	}
	d.b = rest
	return v
}

// binZC returns a bin's bytes pointing into the input.
func (d *decoder) binZC(ctx string) []byte {
	v, rest, err := msgp.ReadBytesZC(d.b)
	if err != nil {
		d.failWant(ctx, "bin")
		return nil
	}
	d.b = rest
	return v
}

// bin returns a bin's bytes, copied unless the decoder may alias its input;
// then their capacity is their length, so that an append cannot overwrite
// the input.
func (d *decoder) bin(ctx string) []byte {
	v := d.binZC(ctx)
	if v == nil {
		return nil
	}
	if d.alias {
		return v[:len(v):len(v)]
	}
	return append([]byte(nil), v...)
}

func (d *decoder) str(ctx string) string {
	return string(d.binZC(ctx))
}

func (d *decoder) checksum(ctx string) (c Checksum) {
	b := d.b
	if len(b) >= 22 && b[0] == 0xc4 && b[1] == 20 {
		copy(c[:], b[2:22])
		d.b = b[22:]
		return c
	}
	if v, _, err := msgp.ReadBytesZC(b); err == nil {
		d.fail(ctx, fmt.Errorf("want 20-byte bin, got %d bytes", len(v)))
		return c
	}
	d.failWant(ctx, "20-byte bin")
	return c
}

// enum reads an enum of ext type ext.
func (d *decoder) enum(ext int8, ctx string) uint8 {
	b := d.b
	if len(b) >= 3 && b[0] == 0xd4 && b[1] == byte(ext) && b[2] < enumCount[ext] {
		d.b = b[3:]
		return b[2]
	}
	if len(b) >= 3 && b[0] == 0xd4 && b[1] == byte(ext) {
		d.fail(ctx, fmt.Errorf("invalid %s value 0x%02x", enumName(ext), b[2]))
		return 0
	}
	if len(b) >= 2 && b[0] == 0xd4 {
		d.fail(ctx, fmt.Errorf("want %s, got ext type %d", enumName(ext), int8(b[1])))
		return 0
	}
	d.failWant(ctx, enumName(ext))
	return 0
}

func enumName(ext int8) string {
	switch ext {
	case extCellState:
		return "CellState"
	case extClusterState:
		return "ClusterState"
	case extErrorCode:
		return "ErrorCode"
	case extNodeState:
		return "NodeState"
	case extNodeType:
		return "NodeType"
	}
	return fmt.Sprintf("ext %d", ext)
}

func (d *decoder) dict(ctx string) Dict {
	n := d.mapLen(2, ctx)
	if n == 0 {
		return nil
	}
	dict := make(Dict, n)
	for i := 0; i < n && d.err == nil; i++ {
		dict[i].Key = d.str(ctx + " key")
		dict[i].Value = d.value(ctx+" value", 1)
	}
	return dict
}

// value decodes an open-typed value.
func (d *decoder) value(ctx string, depth int) Value {
	if depth > maxValueDepth {
		d.fail(ctx, errTooDeep)
		return nil
	}
	b := d.b
	if len(b) == 0 {
		d.failWant(ctx, "value")
		return nil
	}
	switch c := b[0]; {
	case c == 0xc0:
		d.b = b[1:]
		return nil
	case c == 0xc2 || c == 0xc3:
		return d.bool(ctx)
	case c < 0x80 || (c >= 0xcc && c <= 0xcf):
		v, rest, err := msgp.ReadUint64Bytes(b)
		if err != nil {
			d.failWant(ctx, "int")
			return nil
		}
		d.b = rest
		if v <= math.MaxInt64 {
			return int64(v)
		}
		return v
	case c >= 0xe0 || (c >= 0xd0 && c <= 0xd3):
		v, rest, err := msgp.ReadInt64Bytes(b)
		if err != nil {
			d.failWant(ctx, "int")
			return nil
		}
		d.b = rest
		return v
	case c == 0xca || c == 0xcb:
		return d.float(ctx)
	case c >= 0xc4 && c <= 0xc6:
		return d.bin(ctx)
	case c == 0xd4:
		if len(b) < 3 {
			d.failWant(ctx, "ext")
			return nil
		}
		ext := int8(b[1])
		if ext < 0 || int(ext) >= len(enumCount) {
			d.fail(ctx, fmt.Errorf("unknown ext type %d", ext))
			return nil
		}
		v := d.enum(ext, ctx)
		switch ext {
		case extCellState:
			return CellState(v)
		case extClusterState:
			return ClusterState(v)
		case extErrorCode:
			return ErrorCode(v)
		case extNodeState:
			return NodeState(v)
		default:
			return NodeType(v)
		}
	case (c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd:
		n := d.arrayLen(1, ctx)
		if n == 0 {
			return []Value{}
		}
		l := make([]Value, n)
		for i := 0; i < n && d.err == nil; i++ {
			l[i] = d.value(ctx, depth+1)
		}
		return l
	case (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf:
		n := d.mapLen(2, ctx)
		m := make(Map, n)
		for i := 0; i < n && d.err == nil; i++ {
			m[i].Key = d.value(ctx, depth+1)
			m[i].Value = d.value(ctx, depth+1)
		}
		return m
	}
	d.fail(ctx, fmt.Errorf("unsupported value %s", what(b)))
	return nil
}
