package fs1

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"

	"github.com/neozodb/neo/zodb"
)

// Index maps every object of a file to the position of its latest data
// record (deletion records included), and remembers up to which file
// position it is valid. It is what ZODB keeps in Data.fs.index.
//
// An Index is not safe for concurrent modification.
type Index struct {
	// TopPos is the file position up to which the index describes the
	// file (the file size when it was saved).
	TopPos int64
	m      map[zodb.Oid]int64
}

// NewIndex returns an empty index valid up to the file header.
func NewIndex() *Index {
	return &Index{TopPos: FileHeaderSize, m: map[zodb.Oid]int64{}}
}

// Get returns the position of the latest record of oid.
func (x *Index) Get(oid zodb.Oid) (pos int64, ok bool) {
	pos, ok = x.m[oid]
	return pos, ok
}

// Set records pos as the latest record of oid.
func (x *Index) Set(oid zodb.Oid, pos int64) { x.m[oid] = pos }

// Delete removes oid.
func (x *Index) Delete(oid zodb.Oid) { delete(x.m, oid) }

// Len returns the number of objects.
func (x *Index) Len() int { return len(x.m) }

// MaxOid returns the largest oid, or ok=false for an empty index.
func (x *Index) MaxOid() (max zodb.Oid, ok bool) {
	for oid := range x.m {
		if !ok || oid > max {
			max, ok = oid, true
		}
	}
	return max, ok
}

// Oids returns all oids in ascending order.
func (x *Index) Oids() []zodb.Oid {
	v := make([]zodb.Oid, 0, len(x.m))
	for oid := range x.m {
		v = append(v, oid)
	}
	slices.Sort(v)
	return v
}

// Clone returns a copy.
func (x *Index) Clone() *Index {
	y := &Index{TopPos: x.TopPos, m: make(map[zodb.Oid]int64, len(x.m))}
	for k, v := range x.m {
		y.m[k] = v
	}
	return y
}

// Equal tells whether both indexes have the same entries and TopPos.
func (x *Index) Equal(y *Index) bool {
	if x.TopPos != y.TopPos || len(x.m) != len(y.m) {
		return false
	}
	for k, v := range x.m {
		if w, ok := y.m[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The .index file is a sequence of protocol-3 pickles written without memo:
//
//	int TopPos
//	(prefix, bucket) for every 6-byte oid prefix, in ascending order:
//	    bucket = the sorted 2-byte oid suffixes, then the 6-byte positions
//	None
//
// Encode writes exactly the bytes ZODB writes for the same content.

// WriteTo writes the index in ZODB's .index format.
func (x *Index) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var n int64
	put := func(b []byte) {
		m, _ := bw.Write(b)
		n += int64(m)
	}
	put(appendPickleInt([]byte{0x80, 3}, x.TopPos))
	oids := x.Oids()
	var buf []byte
	for i := 0; i < len(oids); {
		prefix := uint64(oids[i]) >> 16
		j := i
		for j < len(oids) && uint64(oids[j])>>16 == prefix {
			j++
		}
		cnt := j - i
		buf = append(buf[:0], 0x80, 3, 'C', 6)
		var pb [8]byte
		binary.BigEndian.PutUint64(pb[:], prefix<<16)
		buf = append(buf, pb[:6]...)
		buf = appendPickleBytesHeader(buf, 8*cnt)
		for _, oid := range oids[i:j] {
			buf = binary.BigEndian.AppendUint16(buf, uint16(oid))
		}
		for _, oid := range oids[i:j] {
			var p [8]byte
			binary.BigEndian.PutUint64(p[:], uint64(x.m[oid]))
			buf = append(buf, p[2:]...)
		}
		buf = append(buf, 0x86, '.')
		put(buf)
		i = j
	}
	put([]byte{0x80, 3, 'N', '.'})
	return n, bw.Flush()
}

// appendPickleInt appends the pickle of a non-negative int as Python's
// protocol ≥ 2 pickler writes it, followed by STOP.
func appendPickleInt(b []byte, v int64) []byte {
	switch {
	case v >= 0 && v < 1<<8:
		b = append(b, 'K', byte(v))
	case v >= 0 && v < 1<<16:
		b = append(b, 'M', byte(v), byte(v>>8))
	case v >= -1<<31 && v < 1<<31:
		b = binary.LittleEndian.AppendUint32(append(b, 'J'), uint32(v))
	default:
		// LONG1: little-endian two's complement, minimal length.
		var le []byte
		u := uint64(v)
		for i := 0; i < 8; i++ {
			le = append(le, byte(u>>(8*i)))
		}
		for len(le) > 1 && le[len(le)-1] == 0 && le[len(le)-2]&0x80 == 0 {
			le = le[:len(le)-1]
		}
		b = append(b, 0x8a, byte(len(le)))
		b = append(b, le...)
	}
	return append(b, '.')
}

func appendPickleBytesHeader(b []byte, n int) []byte {
	if n < 256 {
		return append(b, 'C', byte(n))
	}
	return binary.LittleEndian.AppendUint32(append(b, 'B'), uint32(n))
}

// SaveFile writes the index to path the way ZODB does: to
// path+".index_tmp" first, then renamed over path.
func (x *Index) SaveFile(path string) error {
	tmp := path + ".index_tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	_, err = x.WriteTo(f)
	if err == nil {
		err = f.Sync()
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save index %s: %w", path, err)
	}
	return nil
}

// IndexError reports a malformed .index file.
type IndexError struct {
	Pos int64 // offset in the .index file
	Msg string
}

func (e *IndexError) Error() string { return fmt.Sprintf("index: at %d: %s", e.Pos, e.Msg) }

// ErrOldIndex is returned for index files in a format that is not the
// pickle sequence (e.g. a single pickled dict of ancient ZODB versions).
var ErrOldIndex = errors.New("index in an old format")

// LoadIndexFile reads a .index file.
func LoadIndexFile(path string) (*Index, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	x, err := DecodeIndex(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return x, nil
}

// ReadIndex reads an index from r.
func ReadIndex(r io.Reader) (*Index, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return DecodeIndex(data)
}

// DecodeIndex decodes the content of a .index file. It accepts what ZODB
// writes (protocol 3) and the protocol 1/2 pickles of Python-2 ZODB.
func DecodeIndex(data []byte) (*Index, error) {
	d := &pickleDec{data: data}
	v, err := d.pickle()
	if err != nil {
		return nil, err
	}
	if v.kind != pkInt {
		if v.kind == pkOther {
			return nil, ErrOldIndex
		}
		return nil, &IndexError{0, "first pickle is not an int position"}
	}
	if v.i < 0 || v.i > maxPos {
		return nil, &IndexError{0, fmt.Sprintf("invalid position %d", v.i)}
	}
	x := &Index{TopPos: v.i, m: make(map[zodb.Oid]int64, len(data)/8)}
	var lastPrefix []byte
	for {
		start := int64(d.pos)
		v, err := d.pickle()
		if err != nil {
			return nil, err
		}
		if v.kind == pkNone {
			break
		}
		if v.kind != pkTuple || len(v.tuple) != 2 || v.tuple[0].kind != pkBytes || v.tuple[1].kind != pkBytes {
			return nil, &IndexError{start, "entry is not a (prefix, bucket) tuple"}
		}
		prefix, bucket := v.tuple[0].b, v.tuple[1].b
		if len(prefix) != 6 {
			return nil, &IndexError{start, fmt.Sprintf("prefix of %d bytes, want 6", len(prefix))}
		}
		if lastPrefix != nil && bytes.Compare(prefix, lastPrefix) <= 0 {
			return nil, &IndexError{start, "prefixes not in ascending order"}
		}
		lastPrefix = prefix
		if len(bucket)%8 != 0 {
			return nil, &IndexError{start, fmt.Sprintf("bucket of %d bytes is not a multiple of 8", len(bucket))}
		}
		n := len(bucket) / 8
		var hi [8]byte
		copy(hi[:6], prefix)
		base := binary.BigEndian.Uint64(hi[:])
		for i := 0; i < n; i++ {
			suffix := binary.BigEndian.Uint16(bucket[2*i:])
			p := bucket[2*n+6*i : 2*n+6*i+6]
			pos := int64(p[0])<<40 | int64(p[1])<<32 | int64(p[2])<<24 | int64(p[3])<<16 | int64(p[4])<<8 | int64(p[5])
			x.m[zodb.Oid(base|uint64(suffix))] = pos
		}
	}
	if d.pos != len(d.data) {
		return nil, &IndexError{int64(d.pos), "data after the end marker"}
	}
	return x, nil
}

// A tiny decoder for the pickle subset .index files use.

type pkKind int

const (
	pkNone pkKind = iota
	pkInt
	pkBytes
	pkTuple
	pkMark
	pkOther
)

type pkVal struct {
	kind  pkKind
	i     int64
	b     []byte
	tuple []pkVal
}

type pickleDec struct {
	data []byte
	pos  int
}

func (d *pickleDec) errf(at int, format string, args ...any) error {
	return &IndexError{int64(at), fmt.Sprintf(format, args...)}
}

func (d *pickleDec) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.data)-d.pos {
		return nil, d.errf(d.pos, "unexpected end of data")
	}
	b := d.data[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}

func (d *pickleDec) line() ([]byte, error) {
	i := bytes.IndexByte(d.data[d.pos:], '\n')
	if i < 0 {
		return nil, d.errf(d.pos, "unterminated line")
	}
	b := d.data[d.pos : d.pos+i]
	d.pos += i + 1
	return b, nil
}

// pickle decodes one pickle up to and including its STOP.
func (d *pickleDec) pickle() (pkVal, error) {
	var stack []pkVal
	memo := map[uint32]pkVal{}
	start := d.pos
	if start >= len(d.data) {
		return pkVal{}, d.errf(start, "unexpected end of data (missing end marker)")
	}
	push := func(v pkVal) { stack = append(stack, v) }
	for {
		at := d.pos
		ob, err := d.take(1)
		if err != nil {
			return pkVal{}, err
		}
		switch op := ob[0]; op {
		case 0x80: // PROTO
			if _, err := d.take(1); err != nil {
				return pkVal{}, err
			}
		case '.': // STOP
			if len(stack) != 1 {
				return pkVal{}, d.errf(at, "pickle ends with %d values on the stack", len(stack))
			}
			return stack[0], nil
		case 'N':
			push(pkVal{kind: pkNone})
		case 'K':
			b, err := d.take(1)
			if err != nil {
				return pkVal{}, err
			}
			push(pkVal{kind: pkInt, i: int64(b[0])})
		case 'M':
			b, err := d.take(2)
			if err != nil {
				return pkVal{}, err
			}
			push(pkVal{kind: pkInt, i: int64(binary.LittleEndian.Uint16(b))})
		case 'J':
			b, err := d.take(4)
			if err != nil {
				return pkVal{}, err
			}
			push(pkVal{kind: pkInt, i: int64(int32(binary.LittleEndian.Uint32(b)))})
		case 0x8a: // LONG1
			nb, err := d.take(1)
			if err != nil {
				return pkVal{}, err
			}
			b, err := d.take(int(nb[0]))
			if err != nil {
				return pkVal{}, err
			}
			if len(b) > 8 {
				return pkVal{}, d.errf(at, "integer too large")
			}
			var u uint64
			for i := len(b) - 1; i >= 0; i-- {
				u = u<<8 | uint64(b[i])
			}
			if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
				u |= math.MaxUint64 << (8 * len(b)) // sign-extend
			}
			push(pkVal{kind: pkInt, i: int64(u)})
		case 'I', 'L': // INT, LONG (text)
			l, err := d.line()
			if err != nil {
				return pkVal{}, err
			}
			l = bytes.TrimSuffix(l, []byte("L"))
			v, err := strconv.ParseInt(string(l), 10, 64)
			if err != nil {
				return pkVal{}, d.errf(at, "invalid integer %q", l)
			}
			push(pkVal{kind: pkInt, i: v})
		case 'U', 'C': // SHORT_BINSTRING, SHORT_BINBYTES
			nb, err := d.take(1)
			if err != nil {
				return pkVal{}, err
			}
			b, err := d.take(int(nb[0]))
			if err != nil {
				return pkVal{}, err
			}
			push(pkVal{kind: pkBytes, b: b})
		case 'T', 'B': // BINSTRING, BINBYTES
			nb, err := d.take(4)
			if err != nil {
				return pkVal{}, err
			}
			n := binary.LittleEndian.Uint32(nb)
			if n > math.MaxInt32 {
				return pkVal{}, d.errf(at, "invalid length %d", n)
			}
			b, err := d.take(int(n))
			if err != nil {
				return pkVal{}, err
			}
			push(pkVal{kind: pkBytes, b: b})
		case '(': // MARK
			push(pkVal{kind: pkMark})
		case 't': // TUPLE
			k := len(stack) - 1
			for k >= 0 && stack[k].kind != pkMark {
				k--
			}
			if k < 0 {
				return pkVal{}, d.errf(at, "TUPLE without MARK")
			}
			t := slices.Clone(stack[k+1:])
			stack = append(stack[:k], pkVal{kind: pkTuple, tuple: t})
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op-0x85) + 1
			if len(stack) < n {
				return pkVal{}, d.errf(at, "stack underflow")
			}
			t := slices.Clone(stack[len(stack)-n:])
			for _, v := range t {
				if v.kind == pkMark {
					return pkVal{}, d.errf(at, "MARK inside tuple")
				}
			}
			stack = append(stack[:len(stack)-n], pkVal{kind: pkTuple, tuple: t})
		case ')': // EMPTY_TUPLE
			push(pkVal{kind: pkTuple})
		case 'q', 'r': // BINPUT, LONG_BINPUT
			n := 1
			if op == 'r' {
				n = 4
			}
			b, err := d.take(n)
			if err != nil {
				return pkVal{}, err
			}
			if len(stack) == 0 {
				return pkVal{}, d.errf(at, "memo put with empty stack")
			}
			memo[leUint(b)] = stack[len(stack)-1]
		case 'h', 'j': // BINGET, LONG_BINGET
			n := 1
			if op == 'j' {
				n = 4
			}
			b, err := d.take(n)
			if err != nil {
				return pkVal{}, err
			}
			v, ok := memo[leUint(b)]
			if !ok {
				return pkVal{}, d.errf(at, "memo get of unknown key")
			}
			push(v)
		case '}', ']', 'c', 'd', 'l', '\x81', 'R':
			// A dict, a class: the pickled-dict format of old ZODB.
			if start == 0 {
				return pkVal{kind: pkOther}, nil
			}
			return pkVal{}, d.errf(at, "unexpected opcode %#02x", op)
		default:
			return pkVal{}, d.errf(at, "unexpected opcode %#02x", op)
		}
		if len(stack) > 64 {
			return pkVal{}, d.errf(at, "pickle too deep")
		}
	}
}

func leUint(b []byte) uint32 {
	var u uint32
	for i := len(b) - 1; i >= 0; i-- {
		u = u<<8 | uint32(b[i])
	}
	return u
}
