package storagetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"

	pickle "github.com/kisielk/og-rek"

	"github.com/neozodb/neo/zodb"
)

// Object records as ZODB writes them: two protocol-3 pickles, the class
// then the state, with persistent references (oid, class). Tests need real
// pickles where the storage looks inside records: pack's garbage collection
// follows the references, conflict resolution decodes states, and ZEO
// sends transaction extensions as dicts that the server pickles again. The
// pickler here writes what ZODB on Python 3 writes (zodbpickle, protocol 3,
// one memo for both pickles of a record), byte for byte for the types it
// knows, and deterministically: the same arguments give the same bytes.

// Dict is a Python dict with its items in a fixed order.
type Dict []KV

// KV is one item of a Dict.
type KV struct {
	Key   any
	Value any
}

// Tuple is a Python tuple.
type Tuple []any

// PRef is a persistent reference, made by Ref.
type PRef struct {
	Oid   zodb.Oid
	Class string // "module.Name"
}

// Ref returns a persistent reference to oid of class "module.Name", to put
// inside a state given to Record.
func Ref(oid zodb.Oid, class string) PRef { return PRef{oid, class} }

func splitClass(class string) (mod, name string) {
	i := strings.LastIndexByte(class, '.')
	if i < 0 {
		return "", class
	}
	return class[:i], class[i+1:]
}

// Record returns an object record of class "module.Name" with the given
// state, made of: nil, bool, int, int64, string (Python str), []byte
// (bytes), []any (list), Tuple, Dict, map[string]any (a dict, keys sorted)
// and PRef. Other types panic: records are built by tests.
func Record(class string, state any) []byte {
	p := newPickler()
	p.dump(func() { p.global(class) })
	p.dump(func() { p.value(state) })
	return p.buf
}

// Pickle returns the pickle of one value (types as for Record), as ZODB
// writes a transaction's extension dict.
func Pickle(v any) []byte {
	p := newPickler()
	p.dump(func() { p.value(v) })
	return p.buf
}

// pickler writes protocol-3 pickles, memoizing as Python's pickler does:
// every str, bytes, dict, list and non-empty tuple gets a BINPUT; a class
// or an oid seen before in the same record is a BINGET (they are the same
// Python objects there; equal strings are not).
type pickler struct {
	buf     []byte
	nmemo   int
	globals map[string]int
	oids    map[zodb.Oid]int
}

func newPickler() *pickler {
	return &pickler{globals: map[string]int{}, oids: map[zodb.Oid]int{}}
}

func (p *pickler) dump(body func()) {
	p.buf = append(p.buf, 0x80, 3) // PROTO 3
	body()
	p.buf = append(p.buf, '.') // STOP
}

func (p *pickler) put() int {
	i := p.nmemo
	p.nmemo++
	if i < 256 {
		p.buf = append(p.buf, 'q', byte(i)) // BINPUT
	} else {
		p.buf = append(p.buf, 'r') // LONG_BINPUT
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(i))
	}
	return i
}

func (p *pickler) get(i int) {
	if i < 256 {
		p.buf = append(p.buf, 'h', byte(i)) // BINGET
	} else {
		p.buf = append(p.buf, 'j') // LONG_BINGET
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(i))
	}
}

func (p *pickler) global(class string) {
	if i, ok := p.globals[class]; ok {
		p.get(i)
		return
	}
	mod, name := splitClass(class)
	p.buf = append(p.buf, 'c')
	p.buf = append(p.buf, mod+"\n"+name+"\n"...)
	p.globals[class] = p.put()
}

func (p *pickler) bytes(v []byte) {
	if len(v) < 256 {
		p.buf = append(p.buf, 'C', byte(len(v))) // SHORT_BINBYTES
	} else {
		p.buf = append(p.buf, 'B') // BINBYTES
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(v)))
	}
	p.buf = append(p.buf, v...)
}

func (p *pickler) value(v any) {
	switch v := v.(type) {
	case nil:
		p.buf = append(p.buf, 'N')
	case bool:
		if v {
			p.buf = append(p.buf, 0x88) // NEWTRUE
		} else {
			p.buf = append(p.buf, 0x89) // NEWFALSE
		}
	case int:
		p.int(int64(v))
	case int64:
		p.int(v)
	case string:
		p.buf = append(p.buf, 'X') // BINUNICODE
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(v)))
		p.buf = append(p.buf, v...)
		p.put()
	case []byte:
		p.bytes(v)
		p.put()
	case []any:
		p.buf = append(p.buf, ']') // EMPTY_LIST
		p.put()
		switch len(v) {
		case 0:
		case 1:
			p.value(v[0])
			p.buf = append(p.buf, 'a') // APPEND
		default:
			p.buf = append(p.buf, '(') // MARK
			for _, x := range v {
				p.value(x)
			}
			p.buf = append(p.buf, 'e') // APPENDS
		}
	case Tuple:
		switch len(v) {
		case 0:
			p.buf = append(p.buf, ')') // EMPTY_TUPLE, not memoized
			return
		case 1, 2, 3:
			for _, x := range v {
				p.value(x)
			}
			p.buf = append(p.buf, 0x85+byte(len(v)-1)) // TUPLE1..3
		default:
			p.buf = append(p.buf, '(')
			for _, x := range v {
				p.value(x)
			}
			p.buf = append(p.buf, 't') // TUPLE
		}
		p.put()
	case Dict:
		p.buf = append(p.buf, '}') // EMPTY_DICT
		p.put()
		switch len(v) {
		case 0:
		case 1:
			p.value(v[0].Key)
			p.value(v[0].Value)
			p.buf = append(p.buf, 's') // SETITEM
		default:
			p.buf = append(p.buf, '(')
			for _, kv := range v {
				p.value(kv.Key)
				p.value(kv.Value)
			}
			p.buf = append(p.buf, 'u') // SETITEMS
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d := make(Dict, len(keys))
		for i, k := range keys {
			d[i] = KV{k, v[k]}
		}
		p.value(d)
	case PRef:
		// The persistent id (oid, class): the oid is the object's
		// _p_oid, the same bytes object at every reference.
		if i, ok := p.oids[v.Oid]; ok {
			p.get(i)
		} else {
			p.bytes(v.Oid.Bytes())
			p.oids[v.Oid] = p.put()
		}
		p.global(v.Class)
		p.buf = append(p.buf, 0x86) // TUPLE2
		p.put()
		p.buf = append(p.buf, 'Q') // BINPERSID
	default:
		panic(fmt.Sprintf("storagetest: cannot pickle %T", v))
	}
}

func (p *pickler) int(n int64) {
	switch {
	case n >= 0 && n < 1<<8:
		p.buf = append(p.buf, 'K', byte(n)) // BININT1
	case n >= 0 && n < 1<<16:
		p.buf = append(p.buf, 'M', byte(n), byte(n>>8)) // BININT2
	case n >= math.MinInt32 && n <= math.MaxInt32:
		p.buf = append(p.buf, 'J') // BININT
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(int32(n)))
	default:
		// LONG1: the shortest little-endian two's complement.
		b := binary.LittleEndian.AppendUint64(nil, uint64(n))
		for len(b) > 1 {
			last, prev := b[len(b)-1], b[len(b)-2]
			if last == 0 && prev < 0x80 || last == 0xff && prev >= 0x80 {
				b = b[:len(b)-1]
				continue
			}
			break
		}
		p.buf = append(p.buf, 0x8a, byte(len(b)))
		p.buf = append(p.buf, b...)
	}
}

// MappingClass is the class of ZODB's root object.
const MappingClass = "persistent.mapping.PersistentMapping"

// Mapping returns the record of a persistent.mapping.PersistentMapping
// holding items (the state {'data': {key: value}}); values may be Refs.
func Mapping(items map[string]any) []byte {
	if items == nil {
		items = map[string]any{}
	}
	return Record(MappingClass, Dict{{"data", items}})
}

// CounterClass is the class of counter records, whose state is one
// integer, like BTrees.Length.
const CounterClass = "storagetest.Counter"

// Counter returns the record of a counter of value n.
func Counter(n int64) []byte { return Record(CounterClass, n) }

// CounterValue decodes a record made by Counter.
func CounterValue(data []byte) (int64, error) {
	d := pickle.NewDecoder(bytes.NewReader(data))
	cls, err := d.Decode()
	if err != nil {
		return 0, fmt.Errorf("counter: class pickle: %w", err)
	}
	if c, ok := cls.(pickle.Class); !ok || c.Module+"."+c.Name != CounterClass {
		return 0, fmt.Errorf("counter: not a %s record: class %v", CounterClass, cls)
	}
	v, err := d.Decode()
	if err != nil {
		return 0, fmt.Errorf("counter: state pickle: %w", err)
	}
	switch n := v.(type) {
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	case *big.Int:
		if n.IsInt64() {
			return n.Int64(), nil
		}
	}
	return 0, fmt.Errorf("counter: state %#v is not an integer", v)
}

// CounterResolver resolves conflicts of counters as BTrees.Length does:
// committed + (new - old). It fails for any other record.
func CounterResolver(ctx context.Context, oid zodb.Oid, old, committed, new []byte) ([]byte, error) {
	o, err := CounterValue(old)
	if err != nil {
		return nil, err
	}
	c, err := CounterValue(committed)
	if err != nil {
		return nil, err
	}
	n, err := CounterValue(new)
	if err != nil {
		return nil, err
	}
	return Counter(c + n - o), nil
}
