package zodb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// The object codec. ZODB records are pickled by zodbpickle (protocol 3).
// github.com/kisielk/og-rek is not used for states: its dicts do not keep
// insertion order, its memo does not follow lists filled after being
// memoized, it has no BUILD, and its encoder does not memoize, so records
// could not be written back byte for byte. This codec decodes into the
// values of app_pyvalue.go and encodes them the way Python's pickler does.
//
// Decoding then encoding a record gives back the same bytes for every
// object of the reference databases. Where ZODB's output depends on more
// than the state, this is what the codec does:
//
//   - The memo follows object identity in Python: equal strings are written
//     twice unless they are one object. Decoded values keep the sharing the
//     pickle had (strings too: a memo reference gives the same Go string);
//     values built in Go are shared when they are the same Go string, slice
//     or pointer (string literals are, like interned names in Python). The
//     empty and the one-character latin-1 str/bytes are single objects, as
//     in CPython.
//   - set and frozenset items come in hash order (PYTHONHASHSEED): the
//     decoded order is kept. dict order is insertion order: PyDict keeps it.
//   - Lists and dicts of more than one item are written in batches of 1000
//     between MARK and APPENDS/SETITEMS, also for a last batch of one item,
//     as the C pickler (which zodbpickle uses) does; pickle.py would write
//     APPEND/SETITEM for that one.
//   - Python 2 str (SHORT_BINSTRING, BINSTRING, STRING in protocols 1 and 2)
//     is decoded as ZODB on Python 3 does, to str when ASCII and bytes
//     otherwise, and written back with protocol 3: records of Python 2
//     databases keep their values, not their bytes.

// pickle opcodes
const (
	opMark            = '('
	opStop            = '.'
	opPop             = '0'
	opPopMark         = '1'
	opDup             = '2'
	opFloat           = 'F'
	opInt             = 'I'
	opBinint          = 'J'
	opBinint1         = 'K'
	opLong            = 'L'
	opBinint2         = 'M'
	opNone            = 'N'
	opPersid          = 'P'
	opBinpersid       = 'Q'
	opReduce          = 'R'
	opString          = 'S'
	opBinstring       = 'T'
	opShortBinstring  = 'U'
	opUnicode         = 'V'
	opBinunicode      = 'X'
	opAppend          = 'a'
	opBuild           = 'b'
	opGlobal          = 'c'
	opDict            = 'd'
	opEmptyDict       = '}'
	opAppends         = 'e'
	opGet             = 'g'
	opBinget          = 'h'
	opInst            = 'i'
	opLongBinget      = 'j'
	opList            = 'l'
	opEmptyList       = ']'
	opObj             = 'o'
	opPut             = 'p'
	opBinput          = 'q'
	opLongBinput      = 'r'
	opSetitem         = 's'
	opTuple           = 't'
	opEmptyTuple      = ')'
	opSetitems        = 'u'
	opBinfloat        = 'G'
	opProto           = 0x80
	opNewobj          = 0x81
	opTuple1          = 0x85
	opTuple2          = 0x86
	opTuple3          = 0x87
	opNewtrue         = 0x88
	opNewfalse        = 0x89
	opLong1           = 0x8a
	opLong4           = 0x8b
	opBinbytes        = 'B'
	opShortBinbytes   = 'C'
	opShortBinunicode = 0x8c
	opBinunicode8     = 0x8d
	opBinbytes8       = 0x8e
	opMemoize         = 0x94
	opFrame           = 0x95
)

// pickleDecoder decodes consecutive pickles of one buffer with one memo.
type pickleDecoder struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	// memo: indices are dense from 0 in the pickles ZODB writes; others
	// go to memoMap.
	memo    []any
	memoSet []bool
	memoMap map[int]any
	// persistentLoad turns a persistent id into the value to put in its
	// place. nil keeps it as *PyRef.
	persistentLoad func(pid any) (any, error)
}

// mark is what MARK pushes on the stack in Python; here marks are kept
// aside.

func newPickleDecoder(data []byte, persLoad func(pid any) (any, error)) *pickleDecoder {
	return &pickleDecoder{data: data, persistentLoad: persLoad}
}

type pickleError struct {
	pos int
	msg string
}

func (e *pickleError) Error() string { return fmt.Sprintf("pickle: at byte %d: %s", e.pos, e.msg) }

func (d *pickleDecoder) errf(format string, a ...any) error {
	return &pickleError{pos: d.pos, msg: fmt.Sprintf(format, a...)}
}

func (d *pickleDecoder) read(n int) ([]byte, error) {
	if n < 0 || n > len(d.data)-d.pos {
		return nil, d.errf("truncated: need %d bytes, %d left", n, len(d.data)-d.pos)
	}
	b := d.data[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}

func (d *pickleDecoder) readLine() ([]byte, error) {
	i := bytes.IndexByte(d.data[d.pos:], '\n')
	if i < 0 {
		return nil, d.errf("truncated: no end of line")
	}
	b := d.data[d.pos : d.pos+i]
	d.pos += i + 1
	return b, nil
}

func (d *pickleDecoder) readUint(n int) (uint64, error) {
	b, err := d.read(n)
	if err != nil {
		return 0, err
	}
	var x uint64
	for i := n - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	return x, nil
}

func (d *pickleDecoder) push(v any) { d.stack = append(d.stack, v) }

func (d *pickleDecoder) pop() (any, error) {
	base := 0
	if len(d.marks) > 0 {
		base = d.marks[len(d.marks)-1]
	}
	if len(d.stack) <= base {
		return nil, d.errf("stack underflow")
	}
	v := d.stack[len(d.stack)-1]
	d.stack = d.stack[:len(d.stack)-1]
	return v, nil
}

func (d *pickleDecoder) top() (any, error) {
	base := 0
	if len(d.marks) > 0 {
		base = d.marks[len(d.marks)-1]
	}
	if len(d.stack) <= base {
		return nil, d.errf("stack underflow")
	}
	return d.stack[len(d.stack)-1], nil
}

// popMark returns the items pushed since the last MARK.
func (d *pickleDecoder) popMark() ([]any, error) {
	if len(d.marks) == 0 {
		return nil, d.errf("no MARK")
	}
	k := d.marks[len(d.marks)-1]
	d.marks = d.marks[:len(d.marks)-1]
	items := append([]any(nil), d.stack[k:]...)
	d.stack = d.stack[:k]
	return items, nil
}

// the 1-character strings and bytes Python keeps as single objects: the
// pickler refers to them by memo, so they must share identity here too.
var (
	singleChars [256]string
	singleBytes [256]PyBytes
)

func init() {
	for i := range singleChars {
		singleChars[i] = string(rune(i))
		singleBytes[i] = PyBytes(string([]byte{byte(i)}))
	}
}

func newStr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) <= 2 {
		if r, n := utf8.DecodeRune(b); n == len(b) && r < 256 && r != utf8.RuneError {
			return singleChars[r]
		}
	}
	return string(b)
}

func newBytes(b []byte) PyBytes {
	switch len(b) {
	case 0:
		return ""
	case 1:
		return singleBytes[b[0]]
	}
	return PyBytes(b)
}

// py2str decodes a Python 2 str as ZODB on Python 3 does (encoding ASCII,
// errors "bytes"): text if ASCII, bytes otherwise.
func py2str(b []byte) any {
	for _, c := range b {
		if c >= 0x80 {
			return newBytes(b)
		}
	}
	return newStr(b)
}

func decodeLong(b []byte) any {
	// little-endian two's complement
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var x uint64
		for i := len(b) - 1; i >= 0; i-- {
			x = x<<8 | uint64(b[i])
		}
		shift := 64 - 8*uint(len(b))
		return int64(x<<shift) >> shift
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	n := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return normInt(n)
}

func normInt(n *big.Int) any {
	if n.IsInt64() {
		return n.Int64()
	}
	return n
}

// decode decodes the next pickle, up to its STOP.
func (d *pickleDecoder) decode() (any, error) {
	d.stack = d.stack[:0]
	d.marks = d.marks[:0]
	for {
		if d.pos >= len(d.data) {
			return nil, d.errf("truncated: no STOP")
		}
		op := d.data[d.pos]
		d.pos++
		if err := d.step(op); err != nil {
			if errors.Is(err, errStop) {
				if len(d.stack) != 1 || len(d.marks) != 0 {
					return nil, d.errf("STOP with %d values on the stack", len(d.stack))
				}
				return d.stack[0], nil
			}
			return nil, err
		}
	}
}

var errStop = errors.New("stop")

func (d *pickleDecoder) memoPut(idx int) error {
	v, err := d.top()
	if err != nil {
		return err
	}
	switch {
	case idx < len(d.memo):
		d.memo[idx], d.memoSet[idx] = v, true
	case idx == len(d.memo):
		d.memo = append(d.memo, v)
		d.memoSet = append(d.memoSet, true)
	default:
		if d.memoMap == nil {
			d.memoMap = map[int]any{}
		}
		d.memoMap[idx] = v
	}
	return nil
}

func (d *pickleDecoder) memoGet(idx int) error {
	var v any
	ok := false
	if idx >= 0 && idx < len(d.memo) {
		v, ok = d.memo[idx], d.memoSet[idx]
	}
	if !ok {
		v, ok = d.memoMap[idx]
	}
	if !ok {
		return d.errf("memo key %d not found", idx)
	}
	d.push(v)
	return nil
}

func (d *pickleDecoder) step(op byte) error {
	switch op {
	case opProto:
		p, err := d.read(1)
		if err != nil {
			return err
		}
		if p[0] > 5 {
			return d.errf("unsupported protocol %d", p[0])
		}
	case opFrame:
		if _, err := d.read(8); err != nil {
			return err
		}
	case opStop:
		return errStop
	case opMark:
		d.marks = append(d.marks, len(d.stack))
	case opPop:
		if len(d.marks) > 0 && d.marks[len(d.marks)-1] == len(d.stack) {
			d.marks = d.marks[:len(d.marks)-1]
			return nil
		}
		_, err := d.pop()
		return err
	case opPopMark:
		_, err := d.popMark()
		return err
	case opDup:
		v, err := d.top()
		if err != nil {
			return err
		}
		d.push(v)
	case opNone:
		d.push(nil)
	case opNewtrue:
		d.push(true)
	case opNewfalse:
		d.push(false)
	case opInt:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		switch string(line) {
		case "00":
			d.push(false)
			return nil
		case "01":
			d.push(true)
			return nil
		}
		n, ok := new(big.Int).SetString(string(line), 10)
		if !ok {
			return d.errf("invalid INT %q", line)
		}
		d.push(normInt(n))
	case opLong:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		s := string(bytes.TrimSuffix(line, []byte("L")))
		n, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return d.errf("invalid LONG %q", line)
		}
		d.push(normInt(n))
	case opBinint:
		x, err := d.readUint(4)
		if err != nil {
			return err
		}
		d.push(int64(int32(uint32(x))))
	case opBinint1:
		x, err := d.readUint(1)
		if err != nil {
			return err
		}
		d.push(int64(x))
	case opBinint2:
		x, err := d.readUint(2)
		if err != nil {
			return err
		}
		d.push(int64(x))
	case opLong1, opLong4:
		sz := 1
		if op == opLong4 {
			sz = 4
		}
		n, err := d.readUint(sz)
		if err != nil {
			return err
		}
		if n > uint64(len(d.data)) {
			return d.errf("long of %d bytes: truncated", n)
		}
		b, err := d.read(int(n))
		if err != nil {
			return err
		}
		d.push(decodeLong(b))
	case opFloat:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(string(line), 64)
		if err != nil {
			return d.errf("invalid FLOAT %q", line)
		}
		d.push(f)
	case opBinfloat:
		x, err := d.read(8)
		if err != nil {
			return err
		}
		d.push(math.Float64frombits(binary.BigEndian.Uint64(x)))
	case opBinunicode, opShortBinunicode, opBinunicode8, opBinbytes, opShortBinbytes, opBinbytes8,
		opBinstring, opShortBinstring:
		sz := 4
		switch op {
		case opShortBinunicode, opShortBinbytes, opShortBinstring:
			sz = 1
		case opBinunicode8, opBinbytes8:
			sz = 8
		}
		n, err := d.readUint(sz)
		if err != nil {
			return err
		}
		if op == opBinstring {
			n = uint64(int64(int32(uint32(n))))
		}
		if n > uint64(len(d.data)) {
			return d.errf("string of %d bytes: truncated", n)
		}
		b, err := d.read(int(n))
		if err != nil {
			return err
		}
		switch op {
		case opBinbytes, opShortBinbytes, opBinbytes8:
			d.push(newBytes(b))
		case opBinstring, opShortBinstring:
			d.push(py2str(b))
		default:
			d.push(newStr(b))
		}
	case opString:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		s, err := unquotePy2(line)
		if err != nil {
			return d.errf("invalid STRING %q: %v", line, err)
		}
		d.push(py2str(s))
	case opUnicode:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		s, err := unescapeRawUnicode(line)
		if err != nil {
			return d.errf("invalid UNICODE %q: %v", line, err)
		}
		d.push(s)
	case opEmptyTuple:
		d.push(PyTuple{})
	case opTuple1, opTuple2, opTuple3:
		n := int(op-opTuple1) + 1
		t := make(PyTuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := d.pop()
			if err != nil {
				return err
			}
			t[i] = v
		}
		d.push(t)
	case opTuple:
		items, err := d.popMark()
		if err != nil {
			return err
		}
		d.push(PyTuple(items))
	case opEmptyList:
		d.push(&PyList{})
	case opList:
		items, err := d.popMark()
		if err != nil {
			return err
		}
		d.push(&PyList{Items: items})
	case opAppend:
		v, err := d.pop()
		if err != nil {
			return err
		}
		l, err := d.top()
		if err != nil {
			return err
		}
		lst, ok := l.(*PyList)
		if !ok {
			return d.errf("APPEND to %T", l)
		}
		lst.Items = append(lst.Items, v)
	case opAppends:
		items, err := d.popMark()
		if err != nil {
			return err
		}
		l, err := d.top()
		if err != nil {
			return err
		}
		lst, ok := l.(*PyList)
		if !ok {
			return d.errf("APPENDS to %T", l)
		}
		lst.Items = append(lst.Items, items...)
	case opEmptyDict:
		d.push(NewPyDict())
	case opDict:
		items, err := d.popMark()
		if err != nil {
			return err
		}
		if len(items)%2 != 0 {
			return d.errf("DICT with odd number of items")
		}
		dict := NewPyDict()
		for i := 0; i < len(items); i += 2 {
			if err := checkKey(items[i]); err != nil {
				return d.errf("%v", err)
			}
			dict.Set(items[i], items[i+1])
		}
		d.push(dict)
	case opSetitem, opSetitems:
		var items []any
		if op == opSetitem {
			v, err := d.pop()
			if err != nil {
				return err
			}
			k, err := d.pop()
			if err != nil {
				return err
			}
			items = []any{k, v}
		} else {
			var err error
			if items, err = d.popMark(); err != nil {
				return err
			}
			if len(items)%2 != 0 {
				return d.errf("SETITEMS with odd number of items")
			}
		}
		x, err := d.top()
		if err != nil {
			return err
		}
		dict, ok := x.(*PyDict)
		if !ok {
			return d.errf("SETITEM on %T", x)
		}
		for i := 0; i < len(items); i += 2 {
			if err := checkKey(items[i]); err != nil {
				return d.errf("%v", err)
			}
			dict.Set(items[i], items[i+1])
		}
	case opGlobal:
		mod, err := d.readLine()
		if err != nil {
			return err
		}
		name, err := d.readLine()
		if err != nil {
			return err
		}
		d.push(PyGlobal{Module: string(mod), Name: string(name)})
	case opReduce, opNewobj:
		args, err := d.pop()
		if err != nil {
			return err
		}
		callable, err := d.pop()
		if err != nil {
			return err
		}
		d.push(&PyReduce{Callable: callable, Args: args, NewObj: op == opNewobj})
	case opBuild:
		state, err := d.pop()
		if err != nil {
			return err
		}
		x, err := d.top()
		if err != nil {
			return err
		}
		r, ok := x.(*PyReduce)
		if !ok || r.HasState {
			return d.errf("BUILD on %T", x)
		}
		r.HasState, r.State = true, state
	case opInst:
		mod, err := d.readLine()
		if err != nil {
			return err
		}
		name, err := d.readLine()
		if err != nil {
			return err
		}
		args, err := d.popMark()
		if err != nil {
			return err
		}
		d.push(&PyReduce{Callable: PyGlobal{string(mod), string(name)}, Args: PyTuple(args)})
	case opObj:
		items, err := d.popMark()
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return d.errf("OBJ without class")
		}
		d.push(&PyReduce{Callable: items[0], Args: PyTuple(items[1:])})
	case opPut:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		i, err := strconv.Atoi(string(line))
		if err != nil {
			return d.errf("invalid PUT %q", line)
		}
		return d.memoPut(i)
	case opBinput:
		i, err := d.readUint(1)
		if err != nil {
			return err
		}
		return d.memoPut(int(i))
	case opLongBinput:
		i, err := d.readUint(4)
		if err != nil {
			return err
		}
		return d.memoPut(int(i))
	case opMemoize:
		return d.memoPut(len(d.memo) + len(d.memoMap))
	case opGet:
		line, err := d.readLine()
		if err != nil {
			return err
		}
		i, err := strconv.Atoi(string(line))
		if err != nil {
			return d.errf("invalid GET %q", line)
		}
		return d.memoGet(i)
	case opBinget:
		i, err := d.readUint(1)
		if err != nil {
			return err
		}
		return d.memoGet(int(i))
	case opLongBinget:
		i, err := d.readUint(4)
		if err != nil {
			return err
		}
		return d.memoGet(int(i))
	case opPersid, opBinpersid:
		var pid any
		if op == opPersid {
			line, err := d.readLine()
			if err != nil {
				return err
			}
			pid = py2str(line)
		} else {
			var err error
			if pid, err = d.pop(); err != nil {
				return err
			}
		}
		if d.persistentLoad == nil {
			d.push(&PyRef{Pid: pid})
			return nil
		}
		v, err := d.persistentLoad(pid)
		if err != nil {
			return d.errf("persistent reference: %v", err)
		}
		d.push(v)
	default:
		return d.errf("unsupported opcode 0x%02x", op)
	}
	return nil
}

// checkKey refuses dict keys Python could not hash.
func checkKey(k any) error {
	switch k.(type) {
	case *PyList, *PyDict:
		return fmt.Errorf("unhashable dict key %T", k)
	}
	return nil
}

func unquotePy2(b []byte) ([]byte, error) {
	if len(b) < 2 || (b[0] != '\'' && b[0] != '"') || b[len(b)-1] != b[0] {
		return nil, errors.New("not quoted")
	}
	s, err := strconv.Unquote(`"` + string(bytes.ReplaceAll(b[1:len(b)-1], []byte(`"`), []byte(`\"`))) + `"`)
	if err != nil {
		// Python escapes Go does not know (\') are rare; keep the bytes.
		return b[1 : len(b)-1], nil
	}
	return []byte(s), nil
}

// unescapeRawUnicode decodes Python's raw-unicode-escape: \uXXXX and
// \UXXXXXXXX escapes, other bytes are latin-1.
func unescapeRawUnicode(b []byte) (string, error) {
	var out []rune
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) && (b[i+1] == 'u' || b[i+1] == 'U') {
			n := 4
			if b[i+1] == 'U' {
				n = 8
			}
			if i+2+n > len(b) {
				return "", errors.New("truncated escape")
			}
			x, err := strconv.ParseUint(string(b[i+2:i+2+n]), 16, 32)
			if err != nil {
				return "", err
			}
			out = append(out, rune(x))
			i += 1 + n
			continue
		}
		out = append(out, rune(b[i]))
	}
	return string(out), nil
}

// pickleEncoder writes pickles the way Python's (zodbpickle's) C pickler
// does with protocol 3; consecutive pickles share the memo, as ZODB's
// record writer does.
type pickleEncoder struct {
	buf  []byte
	memo map[memoKey]int
	// The memoized objects are kept alive so that their addresses are not
	// reused by other objects while the encoder runs (pickle.py's memo
	// holds its objects for the same reason). Separate slices avoid
	// boxing strings and tuples into interfaces.
	keepStrs   []string
	keepTuples []PyTuple
	keepPtrs   []any
	// persistentID returns the persistent id of v, or ok=false if v is
	// pickled as a value. It is asked about every value that is not a
	// plain one of the model.
	persistentID func(v any) (pid any, ok bool, err error)
}

// memoKey identifies a Python object: by address for the values that are
// references in Go (lists, dicts, tuples, strings, bytes), by name for
// classes.
type memoKey struct {
	kind byte
	p    uintptr
	n    int
	s    string
}

func newPickleEncoder(persID func(v any) (any, bool, error)) *pickleEncoder {
	return &pickleEncoder{memo: map[memoKey]int{}, persistentID: persID}
}

const batchSize = 1000 // pickle.py's _BATCHSIZE

func (e *pickleEncoder) encode(v any) error {
	e.buf = append(e.buf, opProto, 3)
	if err := e.save(v); err != nil {
		return err
	}
	e.buf = append(e.buf, opStop)
	return nil
}

func (e *pickleEncoder) memoize(k memoKey) {
	idx := len(e.memo)
	e.memo[k] = idx
	if idx < 256 {
		e.buf = append(e.buf, opBinput, byte(idx))
	} else {
		e.buf = append(e.buf, opLongBinput)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(idx))
	}
}

// memoGet writes a reference to k if it was pickled before.
func (e *pickleEncoder) memoGet(k memoKey) bool {
	idx, ok := e.memo[k]
	if !ok {
		return false
	}
	if idx < 256 {
		e.buf = append(e.buf, opBinget, byte(idx))
	} else {
		e.buf = append(e.buf, opLongBinget)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(idx))
	}
	return true
}

func strKey(kind byte, s string) memoKey {
	if len(s) == 0 {
		return memoKey{kind: kind}
	}
	return memoKey{kind: kind, p: uintptr(unsafe.Pointer(unsafe.StringData(s))), n: len(s)}
}

func (e *pickleEncoder) save(v any) error {
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, opNone)
	case bool:
		if x {
			e.buf = append(e.buf, opNewtrue)
		} else {
			e.buf = append(e.buf, opNewfalse)
		}
	case int:
		e.saveInt(int64(x))
	case int64:
		e.saveInt(x)
	case int32:
		e.saveInt(int64(x))
	case uint64:
		if x <= math.MaxInt64 {
			e.saveInt(int64(x))
		} else {
			e.saveBig(new(big.Int).SetUint64(x))
		}
	case *big.Int:
		if x.IsInt64() {
			e.saveInt(x.Int64())
		} else {
			e.saveBig(x)
		}
	case float64:
		e.buf = append(e.buf, opBinfloat)
		e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(x))
	case float32:
		return e.save(float64(x))
	case string:
		k := strKey('s', x)
		if e.memoGet(k) {
			return nil
		}
		e.buf = append(e.buf, opBinunicode)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(x)))
		e.buf = append(e.buf, x...)
		e.memoize(k)
		e.keepStrs = append(e.keepStrs, x)
	case PyBytes:
		k := strKey('b', string(x))
		if e.memoGet(k) {
			return nil
		}
		if len(x) < 256 {
			e.buf = append(e.buf, opShortBinbytes, byte(len(x)))
		} else {
			e.buf = append(e.buf, opBinbytes)
			e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(x)))
		}
		e.buf = append(e.buf, x...)
		e.memoize(k)
		e.keepStrs = append(e.keepStrs, string(x))
	case PyTuple:
		return e.saveTuple(x)
	case *PyList:
		k := memoKey{kind: 'l', p: uintptr(unsafe.Pointer(x))}
		if e.memoGet(k) {
			return nil
		}
		e.buf = append(e.buf, opEmptyList)
		e.memoize(k)
		e.keepPtrs = append(e.keepPtrs, x)
		return e.saveBatched(x.Items, 1, opAppend, opAppends)
	case *PyDict:
		k := memoKey{kind: 'd', p: uintptr(unsafe.Pointer(x))}
		if e.memoGet(k) {
			return nil
		}
		e.buf = append(e.buf, opEmptyDict)
		e.memoize(k)
		e.keepPtrs = append(e.keepPtrs, x)
		flat := make([]any, 0, 2*len(x.items))
		for _, it := range x.items {
			flat = append(flat, it.Key, it.Value)
		}
		return e.saveBatched(flat, 2, opSetitem, opSetitems)
	case PyGlobal:
		k := memoKey{kind: 'g', s: x.Module + "\n" + x.Name}
		if e.memoGet(k) {
			return nil
		}
		e.buf = append(e.buf, opGlobal)
		e.buf = append(e.buf, x.Module...)
		e.buf = append(e.buf, '\n')
		e.buf = append(e.buf, x.Name...)
		e.buf = append(e.buf, '\n')
		e.memoize(k)
	case *PyReduce:
		k := memoKey{kind: 'r', p: uintptr(unsafe.Pointer(x))}
		if e.memoGet(k) {
			return nil
		}
		if err := e.save(x.Callable); err != nil {
			return err
		}
		if err := e.save(x.Args); err != nil {
			return err
		}
		if x.NewObj {
			e.buf = append(e.buf, opNewobj)
		} else {
			e.buf = append(e.buf, opReduce)
		}
		e.memoize(k)
		e.keepPtrs = append(e.keepPtrs, x)
		if x.HasState {
			if err := e.save(x.State); err != nil {
				return err
			}
			e.buf = append(e.buf, opBuild)
		}
	case *PyRef:
		if err := e.save(x.Pid); err != nil {
			return err
		}
		e.buf = append(e.buf, opBinpersid)
	default:
		if e.persistentID != nil {
			pid, ok, err := e.persistentID(v)
			if err != nil {
				return err
			}
			if ok {
				if err := e.save(pid); err != nil {
					return err
				}
				e.buf = append(e.buf, opBinpersid)
				return nil
			}
		}
		return fmt.Errorf("pickle: cannot pickle %T", v)
	}
	return nil
}

func (e *pickleEncoder) saveInt(x int64) {
	switch {
	case x >= 0 && x <= 0xff:
		e.buf = append(e.buf, opBinint1, byte(x))
	case x >= 0 && x <= 0xffff:
		e.buf = append(e.buf, opBinint2, byte(x), byte(x>>8))
	case x >= math.MinInt32 && x <= math.MaxInt32:
		e.buf = append(e.buf, opBinint)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(int32(x)))
	default:
		e.saveBig(big.NewInt(x))
	}
}

// saveBig writes LONG1/LONG4 with the byte count pickle.encode_long picks.
func (e *pickleEncoder) saveBig(x *big.Int) {
	var le []byte
	if x.Sign() != 0 {
		nbytes := x.BitLen()>>3 + 1
		// two's complement in nbytes, little-endian
		v := new(big.Int).Set(x)
		if x.Sign() < 0 {
			v.Add(v, new(big.Int).Lsh(big.NewInt(1), uint(8*nbytes)))
		}
		be := v.FillBytes(make([]byte, nbytes))
		le = make([]byte, nbytes)
		for i := range be {
			le[nbytes-1-i] = be[i]
		}
		if x.Sign() < 0 && nbytes > 1 && le[nbytes-1] == 0xff && le[nbytes-2]&0x80 != 0 {
			le = le[:nbytes-1]
		}
	}
	if len(le) < 256 {
		e.buf = append(e.buf, opLong1, byte(len(le)))
	} else {
		e.buf = append(e.buf, opLong4)
		e.buf = binary.LittleEndian.AppendUint32(e.buf, uint32(len(le)))
	}
	e.buf = append(e.buf, le...)
}

func (e *pickleEncoder) saveTuple(t PyTuple) error {
	if len(t) == 0 {
		e.buf = append(e.buf, opEmptyTuple)
		return nil
	}
	k := memoKey{kind: 't', p: uintptr(unsafe.Pointer(&t[0])), n: len(t)}
	if e.memoGet(k) {
		return nil
	}
	if len(t) <= 3 {
		for _, x := range t {
			if err := e.save(x); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, opTuple1+byte(len(t)-1))
	} else {
		e.buf = append(e.buf, opMark)
		for _, x := range t {
			if err := e.save(x); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, opTuple)
	}
	e.memoize(k)
	e.keepTuples = append(e.keepTuples, t)
	return nil
}

// saveBatched writes the items of a list (step 1) or dict (step 2) after
// its EMPTY_LIST/EMPTY_DICT: one item with the single opcode, else batches
// of batchSize items between MARK and the multi opcode.
func (e *pickleEncoder) saveBatched(flat []any, step int, one, many byte) error {
	n := len(flat) / step
	if n == 0 {
		return nil
	}
	if n == 1 {
		for _, x := range flat {
			if err := e.save(x); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, one)
		return nil
	}
	for i := 0; i < len(flat); {
		end := min(i+batchSize*step, len(flat))
		e.buf = append(e.buf, opMark)
		for _, x := range flat[i:end] {
			if err := e.save(x); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, many)
		i = end
	}
	return nil
}

// DecodeRecord decodes an object record without a database: persistent
// references stay *PyRef. It returns the class description (the first
// pickle: a PyGlobal, or a tuple for the other forms) and the state.
func DecodeRecord(data []byte) (classDesc, state any, err error) {
	d := newPickleDecoder(data, nil)
	if classDesc, err = d.decode(); err != nil {
		return nil, nil, fmt.Errorf("class pickle: %w", err)
	}
	if state, err = d.decode(); err != nil {
		return nil, nil, fmt.Errorf("state pickle: %w", err)
	}
	if d.pos != len(d.data) {
		return nil, nil, fmt.Errorf("%d bytes after the state pickle", len(d.data)-d.pos)
	}
	return classDesc, state, nil
}

// EncodeRecord encodes a class description and a state as ZODB writes an
// object record (protocol 3, one memo). States may hold *PyRef only; use
// a Connection to store persistent objects.
func EncodeRecord(classDesc, state any) ([]byte, error) {
	e := newPickleEncoder(nil)
	if err := e.encode(classDesc); err != nil {
		return nil, fmt.Errorf("class pickle: %w", err)
	}
	if err := e.encode(state); err != nil {
		return nil, fmt.Errorf("state pickle: %w", err)
	}
	return e.buf, nil
}
