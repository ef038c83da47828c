package zodbtools

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Disassembly of pickles in the format of Python's pickletools.dis, which
// zodbtools' "zpickledis" pretty format shows.

type argKind int

const (
	argNone argKind = iota
	argDecimalShort
	argDecimalLong
	argInt4
	argUint1
	argUint2
	argUint4
	argUint8
	argLong1
	argLong4
	argStringNL
	argStringNLNoEscape
	argStringNLPair
	argString1
	argString4
	argBytes1
	argBytes4
	argBytes8
	argBytearray8
	argUnicodeNL
	argUnicode1
	argUnicode4
	argUnicode8
	argFloatNL
	argFloat8
)

// opInfo describes an opcode: its argument, protocol, and stack effect.
// pop is the number of items popped (for opcodes that pop to a mark: the
// items below the mark); popMark tells that it pops everything down to and
// including the topmost mark; pushMark that it pushes a mark.
type opInfo struct {
	name     string
	arg      argKind
	proto    int
	pop      int
	popMark  bool
	push     int
	pushMark bool
}

var opcodes = map[byte]*opInfo{
	'I':    {"INT", argDecimalShort, 0, 0, false, 1, false},
	'J':    {"BININT", argInt4, 1, 0, false, 1, false},
	'K':    {"BININT1", argUint1, 1, 0, false, 1, false},
	'M':    {"BININT2", argUint2, 1, 0, false, 1, false},
	'L':    {"LONG", argDecimalLong, 0, 0, false, 1, false},
	'\x8a': {"LONG1", argLong1, 2, 0, false, 1, false},
	'\x8b': {"LONG4", argLong4, 2, 0, false, 1, false},
	'S':    {"STRING", argStringNL, 0, 0, false, 1, false},
	'T':    {"BINSTRING", argString4, 1, 0, false, 1, false},
	'U':    {"SHORT_BINSTRING", argString1, 1, 0, false, 1, false},
	'B':    {"BINBYTES", argBytes4, 3, 0, false, 1, false},
	'C':    {"SHORT_BINBYTES", argBytes1, 3, 0, false, 1, false},
	'\x8e': {"BINBYTES8", argBytes8, 4, 0, false, 1, false},
	'\x96': {"BYTEARRAY8", argBytearray8, 5, 0, false, 1, false},
	'\x97': {"NEXT_BUFFER", argNone, 5, 0, false, 1, false},
	'\x98': {"READONLY_BUFFER", argNone, 5, 1, false, 1, false},
	'N':    {"NONE", argNone, 0, 0, false, 1, false},
	'\x88': {"NEWTRUE", argNone, 2, 0, false, 1, false},
	'\x89': {"NEWFALSE", argNone, 2, 0, false, 1, false},
	'V':    {"UNICODE", argUnicodeNL, 0, 0, false, 1, false},
	'\x8c': {"SHORT_BINUNICODE", argUnicode1, 4, 0, false, 1, false},
	'X':    {"BINUNICODE", argUnicode4, 1, 0, false, 1, false},
	'\x8d': {"BINUNICODE8", argUnicode8, 4, 0, false, 1, false},
	'F':    {"FLOAT", argFloatNL, 0, 0, false, 1, false},
	'G':    {"BINFLOAT", argFloat8, 1, 0, false, 1, false},
	']':    {"EMPTY_LIST", argNone, 1, 0, false, 1, false},
	'a':    {"APPEND", argNone, 0, 2, false, 1, false},
	'e':    {"APPENDS", argNone, 1, 1, true, 1, false},
	'l':    {"LIST", argNone, 0, 0, true, 1, false},
	')':    {"EMPTY_TUPLE", argNone, 1, 0, false, 1, false},
	't':    {"TUPLE", argNone, 0, 0, true, 1, false},
	'\x85': {"TUPLE1", argNone, 2, 1, false, 1, false},
	'\x86': {"TUPLE2", argNone, 2, 2, false, 1, false},
	'\x87': {"TUPLE3", argNone, 2, 3, false, 1, false},
	'}':    {"EMPTY_DICT", argNone, 1, 0, false, 1, false},
	'd':    {"DICT", argNone, 0, 0, true, 1, false},
	's':    {"SETITEM", argNone, 0, 3, false, 1, false},
	'u':    {"SETITEMS", argNone, 1, 1, true, 1, false},
	'\x8f': {"EMPTY_SET", argNone, 4, 0, false, 1, false},
	'\x90': {"ADDITEMS", argNone, 4, 1, true, 1, false},
	'\x91': {"FROZENSET", argNone, 4, 0, true, 1, false},
	'0':    {"POP", argNone, 0, 1, false, 0, false},
	'2':    {"DUP", argNone, 0, 1, false, 2, false},
	'(':    {"MARK", argNone, 0, 0, false, 0, true},
	'1':    {"POP_MARK", argNone, 1, 0, true, 0, false},
	'g':    {"GET", argDecimalShort, 0, 0, false, 1, false},
	'h':    {"BINGET", argUint1, 1, 0, false, 1, false},
	'j':    {"LONG_BINGET", argUint4, 1, 0, false, 1, false},
	'p':    {"PUT", argDecimalShort, 0, 0, false, 0, false},
	'q':    {"BINPUT", argUint1, 1, 0, false, 0, false},
	'r':    {"LONG_BINPUT", argUint4, 1, 0, false, 0, false},
	'\x94': {"MEMOIZE", argNone, 4, 1, false, 1, false},
	'\x82': {"EXT1", argUint1, 2, 0, false, 1, false},
	'\x83': {"EXT2", argUint2, 2, 0, false, 1, false},
	'\x84': {"EXT4", argInt4, 2, 0, false, 1, false},
	'c':    {"GLOBAL", argStringNLPair, 0, 0, false, 1, false},
	'\x93': {"STACK_GLOBAL", argNone, 4, 2, false, 1, false},
	'R':    {"REDUCE", argNone, 0, 2, false, 1, false},
	'b':    {"BUILD", argNone, 0, 2, false, 1, false},
	'i':    {"INST", argStringNLPair, 0, 0, true, 1, false},
	'o':    {"OBJ", argNone, 1, 0, true, 1, false},
	'\x81': {"NEWOBJ", argNone, 2, 2, false, 1, false},
	'\x92': {"NEWOBJ_EX", argNone, 4, 3, false, 1, false},
	'\x80': {"PROTO", argUint1, 2, 0, false, 0, false},
	'.':    {"STOP", argNone, 0, 1, false, 0, false},
	'\x95': {"FRAME", argUint8, 4, 0, false, 0, false},
	'P':    {"PERSID", argStringNLNoEscape, 0, 0, false, 1, false},
	'Q':    {"BINPERSID", argNone, 1, 1, false, 1, false},
}

// errPickle marks a malformed pickle.
var errPickle = errors.New("invalid pickle")

// disassembler holds what is shared between the pickles of one record.
type disassembler struct {
	memo map[int64]bool
}

// dis disassembles the pickle at data[pos:] into out, with line positions
// counted from the start of data; it returns the position after STOP.
func (d *disassembler) dis(out *bytes.Buffer, data []byte, pos int) (int, error) {
	var stack []bool // true = mark
	var markstack []int
	maxproto := -1
	bad := func(at int, format string, args ...any) error {
		return fmt.Errorf("%w at %d: %s", errPickle, at, fmt.Sprintf(format, args...))
	}
	for {
		if pos >= len(data) {
			return pos, bad(pos, "pickle exhausted before seeing STOP")
		}
		opPos := pos
		code := data[pos]
		op := opcodes[code]
		if op == nil {
			return pos, bad(pos, "unknown opcode %s", PyRepr([]byte{code}))
		}
		pos++
		arg, hasArg, n, err := readArg(data[pos:], op.arg)
		if err != nil {
			return pos, bad(opPos, "%s: %v", op.name, err)
		}
		pos += n

		fmt.Fprintf(out, "%5d: ", opPos)
		codeRepr := PyRepr([]byte{code})
		codeRepr = codeRepr[1 : len(codeRepr)-1]
		line := fmt.Sprintf("%-4s %s%s", codeRepr, strings.Repeat("    ", len(markstack)), op.name)
		maxproto = max(maxproto, op.proto)

		numtopop := op.pop
		popMark := op.popMark || (op.name == "POP" && len(stack) > 0 && stack[len(stack)-1])
		markmsg := ""
		if popMark {
			if len(markstack) == 0 {
				return pos, bad(opPos, "no MARK exists on stack")
			}
			markmsg = fmt.Sprintf("(MARK at %d)", markstack[len(markstack)-1])
			markstack = markstack[:len(markstack)-1]
			for len(stack) > 0 && !stack[len(stack)-1] {
				stack = stack[:len(stack)-1]
			}
			if len(stack) == 0 {
				return pos, bad(opPos, "no MARK exists on stack")
			}
			stack = stack[:len(stack)-1]
			if op.name == "POP" {
				numtopop = 0
			}
		}
		switch op.name {
		case "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE":
			var idx int64
			if op.name == "MEMOIZE" {
				idx = int64(len(d.memo))
			} else {
				idx = memoIndex(arg)
			}
			switch {
			case d.memo[idx]:
				return pos, bad(opPos, "memo key %d already defined", idx)
			case len(stack) == 0:
				return pos, bad(opPos, "stack is empty -- can't store into memo")
			case stack[len(stack)-1]:
				return pos, bad(opPos, "can't store markobject in the memo")
			}
			d.memo[idx] = true
		case "GET", "BINGET", "LONG_BINGET":
			if idx := memoIndex(arg); !d.memo[idx] {
				return pos, bad(opPos, "memo key %v has never been stored into", arg)
			}
		}
		if hasArg || markmsg != "" {
			line += strings.Repeat(" ", max(0, 10-len(op.name)))
			if hasArg {
				line += " " + argRepr(arg)
			}
			if markmsg != "" {
				line += " " + markmsg
			}
		}
		out.WriteString(line)
		out.WriteByte('\n')

		if len(stack) < numtopop {
			return pos, bad(opPos, "tries to pop %d items from stack with only %d items", numtopop, len(stack))
		}
		stack = stack[:len(stack)-numtopop]
		if op.pushMark {
			markstack = append(markstack, opPos)
			stack = append(stack, true)
		}
		for range op.push {
			stack = append(stack, false)
		}
		if code == '.' {
			break
		}
	}
	fmt.Fprintf(out, "highest protocol among opcodes = %d\n", maxproto)
	if len(stack) != 0 {
		return pos, bad(pos, "stack not empty after STOP")
	}
	return pos, nil
}

// memoIndex is the memo key an opcode argument names ("00"/"01" of the
// text opcodes read as False/True, as pickletools does: keys 0 and 1).
func memoIndex(arg any) int64 {
	switch v := arg.(type) {
	case int64:
		return v
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

// pyStr, pyBytes and pyBytearray are argument values shown with Python's
// repr of str, bytes and bytearray.
type (
	pyStr       []rune
	pyBytes     []byte
	pyBytearray []byte
)

func argRepr(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "True"
		}
		return "False"
	case int64:
		return strconv.FormatInt(v, 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case *big.Int:
		return v.String()
	case float64:
		return pyFloatRepr(v)
	case pyStr:
		return pyStrRepr(v)
	case pyBytes:
		return "b" + PyRepr(v)
	case pyBytearray:
		return "bytearray(b" + PyRepr(v) + ")"
	}
	return fmt.Sprint(v)
}

func readLine(b []byte) (line []byte, n int, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, 0, errors.New("no newline found when trying to read stringnl")
	}
	return b[:i], i + 1, nil
}

func need(b []byte, n int64) error {
	if n < 0 || int64(len(b)) < n {
		return fmt.Errorf("expected %d bytes, but only %d remain", n, len(b))
	}
	return nil
}

func latin1(b []byte) pyStr {
	r := make(pyStr, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return r
}

// readArg reads the argument of an opcode.
func readArg(b []byte, kind argKind) (v any, has bool, n int, err error) {
	fixed := func(size int) error { return need(b, int64(size)) }
	switch kind {
	case argNone:
		return nil, false, 0, nil
	case argDecimalShort:
		l, n, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		switch string(l) {
		case "00":
			return false, true, n, nil
		case "01":
			return true, true, n, nil
		}
		x, err := strconv.ParseInt(strings.TrimSpace(string(l)), 10, 64)
		if err != nil {
			return nil, false, 0, fmt.Errorf("invalid integer %q", l)
		}
		return x, true, n, nil
	case argDecimalLong:
		l, n, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		s := strings.TrimSuffix(string(l), "L")
		x, ok := new(big.Int).SetString(strings.TrimSpace(s), 10)
		if !ok {
			return nil, false, 0, fmt.Errorf("invalid long %q", l)
		}
		return x, true, n, nil
	case argInt4:
		if err := fixed(4); err != nil {
			return nil, false, 0, err
		}
		return int64(int32(binary.LittleEndian.Uint32(b))), true, 4, nil
	case argUint1:
		if err := fixed(1); err != nil {
			return nil, false, 0, err
		}
		return int64(b[0]), true, 1, nil
	case argUint2:
		if err := fixed(2); err != nil {
			return nil, false, 0, err
		}
		return int64(binary.LittleEndian.Uint16(b)), true, 2, nil
	case argUint4:
		if err := fixed(4); err != nil {
			return nil, false, 0, err
		}
		return int64(binary.LittleEndian.Uint32(b)), true, 4, nil
	case argUint8:
		if err := fixed(8); err != nil {
			return nil, false, 0, err
		}
		return binary.LittleEndian.Uint64(b), true, 8, nil
	case argLong1, argLong4:
		var size int64
		hdr := 1
		if kind == argLong1 {
			if err := fixed(1); err != nil {
				return nil, false, 0, err
			}
			size = int64(b[0])
		} else {
			if err := fixed(4); err != nil {
				return nil, false, 0, err
			}
			size = int64(int32(binary.LittleEndian.Uint32(b)))
			hdr = 4
			if size < 0 {
				return nil, false, 0, fmt.Errorf("LONG pickle has negative byte count")
			}
		}
		if err := need(b[hdr:], size); err != nil {
			return nil, false, 0, err
		}
		return decodeLong(b[hdr : hdr+int(size)]), true, hdr + int(size), nil
	case argStringNL:
		l, n, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		if len(l) < 2 || (l[0] != '\'' && l[0] != '"') || l[len(l)-1] != l[0] {
			return nil, false, 0, fmt.Errorf("no string quotes around %q", l)
		}
		s, err := escapeDecode(l[1 : len(l)-1])
		if err != nil {
			return nil, false, 0, err
		}
		return latin1(s), true, n, nil
	case argStringNLNoEscape:
		l, n, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		return latin1(l), true, n, nil
	case argStringNLPair:
		l1, n1, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		l2, n2, err := readLine(b[n1:])
		if err != nil {
			return nil, false, 0, err
		}
		return latin1([]byte(string(l1) + " " + string(l2))), true, n1 + n2, nil
	case argString1, argBytes1, argUnicode1:
		if err := fixed(1); err != nil {
			return nil, false, 0, err
		}
		size := int64(b[0])
		if err := need(b[1:], size); err != nil {
			return nil, false, 0, err
		}
		v, err := sized(b[1:1+size], kind)
		return v, err == nil, 1 + int(size), err
	case argString4, argBytes4, argUnicode4:
		if err := fixed(4); err != nil {
			return nil, false, 0, err
		}
		size := int64(binary.LittleEndian.Uint32(b))
		if kind == argString4 {
			size = int64(int32(size))
			if size < 0 {
				return nil, false, 0, fmt.Errorf("BINSTRING pickle has negative byte count")
			}
		}
		if err := need(b[4:], size); err != nil {
			return nil, false, 0, err
		}
		v, err := sized(b[4:4+size], kind)
		return v, err == nil, 4 + int(size), err
	case argBytes8, argBytearray8, argUnicode8:
		if err := fixed(8); err != nil {
			return nil, false, 0, err
		}
		size := binary.LittleEndian.Uint64(b)
		if size > uint64(len(b)-8) {
			return nil, false, 0, fmt.Errorf("expected %d bytes, but only %d remain", size, len(b)-8)
		}
		v, err := sized(b[8:8+size], kind)
		return v, err == nil, 8 + int(size), err
	case argUnicodeNL:
		l, n, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		s, err := rawUnicodeEscape(l)
		return s, err == nil, n, err
	case argFloatNL:
		l, n, err := readLine(b)
		if err != nil {
			return nil, false, 0, err
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(string(l)), 64)
		if err != nil {
			return nil, false, 0, fmt.Errorf("invalid float %q", l)
		}
		return f, true, n, nil
	case argFloat8:
		if err := fixed(8); err != nil {
			return nil, false, 0, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), true, 8, nil
	}
	return nil, false, 0, fmt.Errorf("unknown argument kind %d", kind)
}

func sized(b []byte, kind argKind) (any, error) {
	switch kind {
	case argString1, argString4:
		return latin1(b), nil
	case argBytes1, argBytes4, argBytes8:
		return pyBytes(b), nil
	case argBytearray8:
		return pyBytearray(b), nil
	}
	return decodeUTF8SurrogatePass(b)
}

// decodeLong decodes a little-endian two's complement integer.
func decodeLong(b []byte) *big.Int {
	x := new(big.Int)
	if len(b) == 0 {
		return x
	}
	be := make([]byte, len(b))
	for i, c := range b {
		be[len(b)-1-i] = c
	}
	x.SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return x
}

// decodeUTF8SurrogatePass decodes UTF-8, accepting encoded surrogates as
// Python's "surrogatepass" does.
func decodeUTF8SurrogatePass(b []byte) (pyStr, error) {
	var s pyStr
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			if i+2 < len(b) && b[i] == 0xed && b[i+1] >= 0xa0 && b[i+1] <= 0xbf && b[i+2]&0xc0 == 0x80 {
				r = rune(b[i]&0x0f)<<12 | rune(b[i+1]&0x3f)<<6 | rune(b[i+2]&0x3f)
				size = 3
			} else {
				return nil, fmt.Errorf("'utf-8' codec can't decode byte 0x%02x in position %d", b[i], i)
			}
		}
		s = append(s, r)
		i += size
	}
	return s, nil
}

// escapeDecode decodes Python string escapes (codecs.escape_decode).
func escapeDecode(b []byte) ([]byte, error) {
	var out []byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 >= len(b) {
			out = append(out, c)
			continue
		}
		i++
		switch e := b[i]; e {
		case '\n':
		case '\\', '\'', '"':
			out = append(out, e)
		case 'a':
			out = append(out, '\a')
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case 'x':
			if i+2 >= len(b) {
				return nil, errors.New("invalid \\x escape")
			}
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if !ok1 || !ok2 {
				return nil, errors.New("invalid \\x escape")
			}
			out = append(out, hi<<4|lo)
			i += 2
		default:
			if e >= '0' && e <= '7' {
				v := 0
				j := 0
				for ; j < 3 && i+j < len(b) && b[i+j] >= '0' && b[i+j] <= '7'; j++ {
					v = v*8 + int(b[i+j]-'0')
				}
				out = append(out, byte(v))
				i += j - 1
				continue
			}
			out = append(out, '\\', e)
		}
	}
	return out, nil
}

// rawUnicodeEscape decodes Python's raw-unicode-escape encoding.
func rawUnicodeEscape(b []byte) (pyStr, error) {
	var s pyStr
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) && (b[i+1] == 'u' || b[i+1] == 'U') {
			n := 4
			if b[i+1] == 'U' {
				n = 8
			}
			if i+2+n > len(b) {
				return nil, errors.New("truncated \\uXXXX escape")
			}
			x, err := strconv.ParseUint(string(b[i+2:i+2+n]), 16, 32)
			if err != nil || x > unicode.MaxRune {
				return nil, errors.New("invalid \\uXXXX escape")
			}
			s = append(s, rune(x))
			i += 1 + n
			continue
		}
		s = append(s, rune(b[i]))
	}
	return s, nil
}

// PyRepr formats b like Python's repr of bytes, without the b prefix:
// single quotes (double ones when b has a single quote and no double
// quote), \\ \t \n \r escapes, \xNN outside printable ASCII.
func PyRepr(b []byte) string {
	q := byte('\'')
	if bytes.IndexByte(b, '\'') >= 0 && bytes.IndexByte(b, '"') < 0 {
		q = '"'
	}
	out := []byte{q}
	for _, c := range b {
		switch {
		case c == q || c == '\\':
			out = append(out, '\\', c)
		case c == '\t':
			out = append(out, `\t`...)
		case c == '\n':
			out = append(out, `\n`...)
		case c == '\r':
			out = append(out, `\r`...)
		case c < 0x20 || c >= 0x7f:
			out = appendHexEscape(out, c)
		default:
			out = append(out, c)
		}
	}
	return string(append(out, q))
}

// pyStrRepr formats s like Python's repr(str).
func pyStrRepr(s pyStr) string {
	q := '\''
	hasSingle, hasDouble := false, false
	for _, r := range s {
		hasSingle = hasSingle || r == '\''
		hasDouble = hasDouble || r == '"'
	}
	if hasSingle && !hasDouble {
		q = '"'
	}
	var out strings.Builder
	out.WriteRune(q)
	for _, r := range s {
		switch {
		case r == q || r == '\\':
			out.WriteByte('\\')
			out.WriteRune(r)
		case r == '\t':
			out.WriteString(`\t`)
		case r == '\n':
			out.WriteString(`\n`)
		case r == '\r':
			out.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&out, `\x%02x`, r)
		case r < 0x7f:
			out.WriteRune(r)
		case pyPrintable(r):
			out.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&out, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			fmt.Fprintf(&out, `\U%08x`, r)
		}
	}
	out.WriteRune(q)
	return out.String()
}

// pyPrintable is Python's str.isprintable for one non-ASCII character:
// everything but the categories C* and Z*.
func pyPrintable(r rune) bool {
	if r >= 0xd800 && r <= 0xdfff {
		return false
	}
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
}

// pyFloatRepr formats f like Python's repr(float).
func pyFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	if exp >= -4 && exp < 16 {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.ContainsAny(s, ".") {
			s += ".0"
		}
		return s
	}
	sign := "+"
	if exp < 0 {
		sign = "-"
		exp = -exp
	}
	return fmt.Sprintf("%se%s%02d", mant, sign, exp)
}

// DisassembleRecord disassembles an object record (class pickle then state
// pickle, with one memo) as zodbtools' zpickledis format shows it: every
// line prefixed with prefix, and "+ extra data" for bytes after the state.
func DisassembleRecord(data []byte, prefix string) ([]byte, error) {
	return disassemble(data, 2, prefix)
}

// DisassembleExtension disassembles a transaction extension (one pickle).
func DisassembleExtension(ext []byte, prefix string) ([]byte, error) {
	return disassemble(ext, 1, prefix)
}

func disassemble(data []byte, npickles int, prefix string) ([]byte, error) {
	d := &disassembler{memo: map[int64]bool{}}
	var dis bytes.Buffer
	pos := 0
	for range npickles {
		var err error
		pos, err = d.dis(&dis, data, pos)
		if err != nil {
			return nil, err
		}
	}
	var out []byte
	for _, line := range bytes.SplitAfter(dis.Bytes(), []byte("\n")) {
		if len(line) > 0 {
			out = append(out, prefix...)
			out = append(out, line...)
		}
	}
	if pos < len(data) {
		out = append(out, prefix...)
		out = append(out, "+ extra data "...)
		out = AppendQuote(out, data[pos:])
		out = append(out, '\n')
	}
	return out, nil
}
