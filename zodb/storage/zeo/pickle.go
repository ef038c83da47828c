package zeo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// pickleCodec is the "Z" encoding: pickle protocol 3 written without memo
// opcodes, exactly as ZEO's pickler in fast mode writes it (so frames are
// byte for byte those of ZEO's client).
//
// The decoder reads the protocol 0–4 binary opcodes that carry plain data,
// memo opcodes included (so it also reads the extension pickles ZODB
// stores). GLOBAL and REDUCE/BUILD only build descriptive values (global,
// *reduce): nothing is ever imported or called.
type pickleCodec struct{}

func (pickleCodec) letter() byte { return 'Z' }

const (
	opMark           = '('
	opStop           = '.'
	opNone           = 'N'
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opLong1          = 0x8a
	opLong4          = 0x8b
	opBinFloat       = 'G'
	opBinUnicode     = 'X'
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opShortBinBytes  = 'C'
	opBinBytes       = 'B'
	opBinBytes8      = 0x8e
	opShortBinString = 'U'
	opBinString      = 'T'
	opEmptyTuple     = ')'
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opTuple          = 't'
	opEmptyList      = ']'
	opAppend         = 'a'
	opAppends        = 'e'
	opList           = 'l'
	opEmptyDict      = '}'
	opSetItem        = 's'
	opSetItems       = 'u'
	opDict           = 'd'
	opGlobal         = 'c'
	opStackGlobal    = 0x93
	opReduce         = 'R'
	opBuild          = 'b'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opMemoize        = 0x94
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opProto          = 0x80
	opFrame          = 0x95
	opPop            = '0'
)

// batchSize is how many items the Python pickler puts between one MARK and
// its APPENDS/SETITEMS.
const batchSize = 1000

func (pickleCodec) encode(v any) ([]byte, error) {
	b := []byte{opProto, 3}
	b, err := pickleAppend(b, v, 0)
	if err != nil {
		return nil, err
	}
	return append(b, opStop), nil
}

func pickleAppend(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errors.New("pickle: value nested too deeply")
	}
	if len(b) > maxFrame {
		return nil, errors.New("pickle: value too large")
	}
	var err error
	switch v := v.(type) {
	case nil:
		b = append(b, opNone)
	case bool:
		if v {
			b = append(b, opNewTrue)
		} else {
			b = append(b, opNewFalse)
		}
	case int:
		b = pickleInt(b, int64(v))
	case int64:
		b = pickleInt(b, v)
	case uint64:
		if v <= math.MaxInt64 {
			b = pickleInt(b, int64(v))
		} else {
			// LONG1 with 9 bytes: the value, then a 0 sign byte.
			b = append(b, opLong1, 9)
			b = binary.LittleEndian.AppendUint64(b, v)
			b = append(b, 0)
		}
	case float64:
		b = append(b, opBinFloat)
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
	case string:
		b = append(b, opBinUnicode)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	case []byte:
		if len(v) < 256 {
			b = append(b, opShortBinBytes, byte(len(v)))
		} else {
			b = append(b, opBinBytes)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		}
		b = append(b, v...)
	case tuple:
		n := len(v)
		if n == 0 {
			return append(b, opEmptyTuple), nil
		}
		if n > 3 {
			b = append(b, opMark)
		}
		for _, x := range v {
			if b, err = pickleAppend(b, x, depth+1); err != nil {
				return nil, err
			}
		}
		switch n {
		case 1:
			b = append(b, opTuple1)
		case 2:
			b = append(b, opTuple2)
		case 3:
			b = append(b, opTuple3)
		default:
			b = append(b, opTuple)
		}
	case *list:
		b = append(b, opEmptyList)
		for i := 0; i < len(v.items); i += batchSize {
			chunk := v.items[i:min(i+batchSize, len(v.items))]
			if len(chunk) > 1 {
				b = append(b, opMark)
			}
			for _, x := range chunk {
				if b, err = pickleAppend(b, x, depth+1); err != nil {
					return nil, err
				}
			}
			if len(chunk) > 1 {
				b = append(b, opAppends)
			} else {
				b = append(b, opAppend)
			}
		}
	case *dict:
		b = append(b, opEmptyDict)
		for i := 0; i < len(v.items); i += batchSize {
			chunk := v.items[i:min(i+batchSize, len(v.items))]
			if len(chunk) > 1 {
				b = append(b, opMark)
			}
			for _, e := range chunk {
				if b, err = pickleAppend(b, e.k, depth+1); err != nil {
					return nil, err
				}
				if b, err = pickleAppend(b, e.v, depth+1); err != nil {
					return nil, err
				}
			}
			if len(chunk) > 1 {
				b = append(b, opSetItems)
			} else {
				b = append(b, opSetItem)
			}
		}
	case global:
		b = append(b, opGlobal)
		b = append(b, v.module...)
		b = append(b, '\n')
		b = append(b, v.name...)
		b = append(b, '\n')
	case *reduce:
		if b, err = pickleAppend(b, v.fn, depth+1); err != nil {
			return nil, err
		}
		if b, err = pickleAppend(b, v.args, depth+1); err != nil {
			return nil, err
		}
		b = append(b, opReduce)
		if v.hasState {
			if b, err = pickleAppend(b, v.state, depth+1); err != nil {
				return nil, err
			}
			b = append(b, opBuild)
		}
	default:
		return nil, fmt.Errorf("pickle: cannot encode %T", v)
	}
	return b, nil
}

func pickleInt(b []byte, i int64) []byte {
	switch {
	case i >= 0 && i <= 0xff:
		return append(b, opBinInt1, byte(i))
	case i >= 0 && i <= 0xffff:
		return append(b, opBinInt2, byte(i), byte(i>>8))
	case i >= math.MinInt32 && i <= math.MaxInt32:
		b = append(b, opBinInt)
		return binary.LittleEndian.AppendUint32(b, uint32(int32(i)))
	}
	// LONG1: little-endian two's complement, as few bytes as keep the sign.
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], uint64(i))
	n := 8
	for n > 1 {
		last, prev := buf[n-1], buf[n-2]
		if (last == 0 && prev&0x80 == 0) || (last == 0xff && prev&0x80 != 0) {
			n--
			continue
		}
		break
	}
	b = append(b, opLong1, byte(n))
	return append(b, buf[:n]...)
}

// pickleDecoder state.
type pickleDecoder struct {
	b     []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint32]any
}

// errMarkObject stands for MARK on the stack is kept in marks instead.

func (pickleCodec) decode(b []byte) (any, error) {
	d := &pickleDecoder{b: b}
	v, err := d.run()
	if err != nil {
		return nil, fmt.Errorf("pickle: offset %d: %w", d.pos, err)
	}
	return v, nil
}

// decodePickle decodes one pickle (for extension dicts and tests).
func decodePickle(b []byte) (any, error) { return pickleCodec{}.decode(b) }

func (d *pickleDecoder) need(n int) ([]byte, error) {
	if n < 0 || len(d.b)-d.pos < n {
		return nil, errors.New("truncated pickle")
	}
	p := d.b[d.pos : d.pos+n]
	d.pos += n
	return p, nil
}

func (d *pickleDecoder) push(v any) error {
	if len(d.stack) > 1<<20 {
		return errors.New("pickle stack too large")
	}
	d.stack = append(d.stack, v)
	return nil
}

func (d *pickleDecoder) pop() (any, error) {
	if len(d.stack) == 0 || (len(d.marks) > 0 && len(d.stack) <= d.marks[len(d.marks)-1]) {
		return nil, errors.New("pickle stack underflow")
	}
	v := d.stack[len(d.stack)-1]
	d.stack = d.stack[:len(d.stack)-1]
	return v, nil
}

func (d *pickleDecoder) top() (any, error) {
	if len(d.stack) == 0 || (len(d.marks) > 0 && len(d.stack) <= d.marks[len(d.marks)-1]) {
		return nil, errors.New("pickle stack underflow")
	}
	return d.stack[len(d.stack)-1], nil
}

// popMark returns the items pushed since the last MARK.
func (d *pickleDecoder) popMark() ([]any, error) {
	if len(d.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := d.marks[len(d.marks)-1]
	d.marks = d.marks[:len(d.marks)-1]
	items := append([]any(nil), d.stack[m:]...)
	d.stack = d.stack[:m]
	return items, nil
}

func (d *pickleDecoder) popN(n int) ([]any, error) {
	floor := 0
	if len(d.marks) > 0 {
		floor = d.marks[len(d.marks)-1]
	}
	if len(d.stack)-floor < n {
		return nil, errors.New("pickle stack underflow")
	}
	items := append([]any(nil), d.stack[len(d.stack)-n:]...)
	d.stack = d.stack[:len(d.stack)-n]
	return items, nil
}

func (d *pickleDecoder) readLine() (string, error) {
	for i := d.pos; i < len(d.b); i++ {
		if d.b[i] == '\n' {
			s := string(d.b[d.pos:i])
			d.pos = i + 1
			return s, nil
		}
	}
	return "", errors.New("truncated pickle (line)")
}

func (d *pickleDecoder) memoPut(idx uint32) error {
	v, err := d.top()
	if err != nil {
		return err
	}
	if d.memo == nil {
		d.memo = map[uint32]any{}
	}
	if len(d.memo) > 1<<20 {
		return errors.New("pickle memo too large")
	}
	d.memo[idx] = v
	return nil
}

func (d *pickleDecoder) memoGet(idx uint32) error {
	v, ok := d.memo[idx]
	if !ok {
		return fmt.Errorf("memo key %d not found", idx)
	}
	return d.push(v)
}

func isHashable(k any) bool {
	switch k.(type) {
	case nil, bool, int64, uint64, float64, string, []byte, tuple, global:
		return true
	}
	return false
}

func (d *pickleDecoder) run() (any, error) {
	for {
		if d.pos >= len(d.b) {
			return nil, errors.New("pickle without STOP")
		}
		op := d.b[d.pos]
		d.pos++
		var err error
		switch op {
		case opProto:
			var p []byte
			if p, err = d.need(1); err == nil && p[0] > 5 {
				err = fmt.Errorf("unsupported pickle protocol %d", p[0])
			}
		case opFrame:
			_, err = d.need(8)
		case opStop:
			if len(d.marks) != 0 || len(d.stack) != 1 {
				return nil, errors.New("STOP with a stack that is not one value")
			}
			if d.pos != len(d.b) {
				return nil, fmt.Errorf("%d bytes after STOP", len(d.b)-d.pos)
			}
			return d.stack[0], nil
		case opMark:
			if len(d.marks) > 1<<16 {
				return nil, errors.New("too many MARKs")
			}
			d.marks = append(d.marks, len(d.stack))
		case opPop:
			_, err = d.pop()
		case opNone:
			err = d.push(nil)
		case opNewTrue:
			err = d.push(true)
		case opNewFalse:
			err = d.push(false)
		case opBinInt1:
			var p []byte
			if p, err = d.need(1); err == nil {
				err = d.push(int64(p[0]))
			}
		case opBinInt2:
			var p []byte
			if p, err = d.need(2); err == nil {
				err = d.push(int64(binary.LittleEndian.Uint16(p)))
			}
		case opBinInt:
			var p []byte
			if p, err = d.need(4); err == nil {
				err = d.push(int64(int32(binary.LittleEndian.Uint32(p))))
			}
		case opLong1, opLong4:
			var n int
			if op == opLong1 {
				var p []byte
				if p, err = d.need(1); err == nil {
					n = int(p[0])
				}
			} else {
				var p []byte
				if p, err = d.need(4); err == nil {
					n = int(int32(binary.LittleEndian.Uint32(p)))
				}
			}
			if err == nil {
				var p []byte
				if p, err = d.need(n); err == nil {
					var v any
					if v, err = decodeLong(p); err == nil {
						err = d.push(v)
					}
				}
			}
		case opBinFloat:
			var p []byte
			if p, err = d.need(8); err == nil {
				err = d.push(math.Float64frombits(binary.BigEndian.Uint64(p)))
			}
		case opBinUnicode, opShortBinUni, opBinUnicode8:
			var p []byte
			if p, err = d.lenPrefixed(op, opShortBinUni, opBinUnicode, opBinUnicode8); err == nil {
				if !utf8.Valid(p) {
					err = errors.New("str is not valid UTF-8")
				} else {
					err = d.push(string(p))
				}
			}
		case opShortBinString, opBinString:
			// Python 2 str (old pickles only): text when it is UTF-8,
			// else bytes.
			var p []byte
			if p, err = d.lenPrefixed(op, opShortBinString, opBinString, 0); err == nil {
				if utf8.Valid(p) {
					err = d.push(string(p))
				} else {
					err = d.push(append([]byte{}, p...))
				}
			}
		case opShortBinBytes, opBinBytes, opBinBytes8:
			var p []byte
			if p, err = d.lenPrefixed(op, opShortBinBytes, opBinBytes, opBinBytes8); err == nil {
				err = d.push(append([]byte{}, p...))
			}
		case opEmptyTuple:
			err = d.push(tuple{})
		case opTuple1, opTuple2, opTuple3:
			var v []any
			if v, err = d.popN(int(op-opTuple1) + 1); err == nil {
				err = d.push(tuple(v))
			}
		case opTuple:
			var v []any
			if v, err = d.popMark(); err == nil {
				err = d.push(tuple(v))
			}
		case opEmptyList:
			err = d.push(&list{})
		case opList:
			var v []any
			if v, err = d.popMark(); err == nil {
				err = d.push(&list{items: v})
			}
		case opAppend:
			var x, l any
			if x, err = d.pop(); err == nil {
				if l, err = d.top(); err == nil {
					if lst, ok := l.(*list); ok {
						lst.items = append(lst.items, x)
					} else {
						err = fmt.Errorf("APPEND to %T", l)
					}
				}
			}
		case opAppends:
			var v []any
			if v, err = d.popMark(); err == nil {
				var l any
				if l, err = d.top(); err == nil {
					if lst, ok := l.(*list); ok {
						lst.items = append(lst.items, v...)
					} else {
						err = fmt.Errorf("APPENDS to %T", l)
					}
				}
			}
		case opEmptyDict:
			err = d.push(&dict{})
		case opDict:
			var v []any
			if v, err = d.popMark(); err == nil {
				dd := &dict{}
				if err = dictSetItems(dd, v); err == nil {
					err = d.push(dd)
				}
			}
		case opSetItem:
			var v []any
			if v, err = d.popN(2); err == nil {
				var t any
				if t, err = d.top(); err == nil {
					if dd, ok := t.(*dict); ok {
						err = dictSetItems(dd, v)
					} else {
						err = fmt.Errorf("SETITEM to %T", t)
					}
				}
			}
		case opSetItems:
			var v []any
			if v, err = d.popMark(); err == nil {
				var t any
				if t, err = d.top(); err == nil {
					if dd, ok := t.(*dict); ok {
						err = dictSetItems(dd, v)
					} else {
						err = fmt.Errorf("SETITEMS to %T", t)
					}
				}
			}
		case opGlobal:
			var mod, name string
			if mod, err = d.readLine(); err == nil {
				if name, err = d.readLine(); err == nil {
					err = d.push(global{mod, name})
				}
			}
		case opStackGlobal:
			var v []any
			if v, err = d.popN(2); err == nil {
				mod, ok1 := v[0].(string)
				name, ok2 := v[1].(string)
				if !ok1 || !ok2 {
					err = errors.New("STACK_GLOBAL with non-str operands")
				} else {
					err = d.push(global{mod, name})
				}
			}
		case opReduce:
			var v []any
			if v, err = d.popN(2); err == nil {
				if _, ok := v[1].(tuple); !ok {
					err = fmt.Errorf("REDUCE arguments are %T, not a tuple", v[1])
				} else {
					err = d.push(&reduce{fn: v[0], args: v[1]})
				}
			}
		case opBuild:
			var st, obj any
			if st, err = d.pop(); err == nil {
				if obj, err = d.top(); err == nil {
					if r, ok := obj.(*reduce); ok && !r.hasState {
						r.state, r.hasState = st, true
					} else {
						err = fmt.Errorf("BUILD on %T", obj)
					}
				}
			}
		case opBinPut:
			var p []byte
			if p, err = d.need(1); err == nil {
				err = d.memoPut(uint32(p[0]))
			}
		case opLongBinPut:
			var p []byte
			if p, err = d.need(4); err == nil {
				err = d.memoPut(binary.LittleEndian.Uint32(p))
			}
		case opMemoize:
			err = d.memoPut(uint32(len(d.memo)))
		case opBinGet:
			var p []byte
			if p, err = d.need(1); err == nil {
				err = d.memoGet(uint32(p[0]))
			}
		case opLongBinGet:
			var p []byte
			if p, err = d.need(4); err == nil {
				err = d.memoGet(binary.LittleEndian.Uint32(p))
			}
		default:
			return nil, fmt.Errorf("unsupported pickle opcode 0x%02x", op)
		}
		if err != nil {
			return nil, err
		}
		if len(d.stack) > 0 && depthExceeded(d.stack[len(d.stack)-1]) {
			return nil, errors.New("value nested too deeply")
		}
	}
}

// depthExceeded tells whether v nests containers deeper than maxDepth. Only
// tuples can nest by construction order without a memo cycle; lists and
// dicts may be filled later, so their depth is checked when encoded or
// walked (formatValue and encoders bound it).
func depthExceeded(v any) bool {
	t, ok := v.(tuple)
	if !ok {
		return false
	}
	depth := 0
	for ok && len(t) > 0 {
		depth++
		if depth > maxDepth {
			return true
		}
		t, ok = t[0].(tuple)
	}
	return false
}

func (d *pickleDecoder) lenPrefixed(op, op1, op4, op8 byte) ([]byte, error) {
	var n uint64
	switch op {
	case op1:
		p, err := d.need(1)
		if err != nil {
			return nil, err
		}
		n = uint64(p[0])
	case op4:
		p, err := d.need(4)
		if err != nil {
			return nil, err
		}
		n = uint64(binary.LittleEndian.Uint32(p))
	default:
		p, err := d.need(8)
		if err != nil {
			return nil, err
		}
		n = binary.LittleEndian.Uint64(p)
	}
	if n > uint64(len(d.b)-d.pos) {
		return nil, fmt.Errorf("string of %d bytes runs past the end", n)
	}
	return d.need(int(n))
}

func dictSetItems(d *dict, kvs []any) error {
	if len(kvs)%2 != 0 {
		return errors.New("odd number of items for a dict")
	}
	for i := 0; i < len(kvs); i += 2 {
		if !isHashable(kvs[i]) {
			return fmt.Errorf("unhashable dict key %T", kvs[i])
		}
		d.add(kvs[i], kvs[i+1])
	}
	return nil
}

// decodeLong decodes a LONG1/LONG4 payload: little-endian two's complement.
func decodeLong(p []byte) (any, error) {
	if len(p) == 0 {
		return int64(0), nil
	}
	if len(p) > 9 || (len(p) == 9 && p[8] != 0) {
		return nil, fmt.Errorf("int of %d bytes is too large", len(p))
	}
	if len(p) == 9 { // positive value needing all 64 bits
		u := binary.LittleEndian.Uint64(p[:8])
		if u <= math.MaxInt64 {
			return int64(u), nil
		}
		return u, nil
	}
	var buf [8]byte
	copy(buf[:], p)
	if p[len(p)-1]&0x80 != 0 {
		for i := len(p); i < 8; i++ {
			buf[i] = 0xff
		}
	}
	return int64(binary.LittleEndian.Uint64(buf[:])), nil
}
