package storagetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	pickle "github.com/kisielk/og-rek"

	"github.com/neozodb/neo/zodb"
)

// Object records as ZODB writes them: two protocol-3 pickles, the class
// then the state, with persistent references (oid, class). Tests need real
// pickles where the storage looks inside records: pack's garbage collection
// follows the references, conflict resolution decodes states. The pickler
// here writes the opcodes ZODB on Python 3 writes, deterministically (the
// same arguments always give the same bytes), for the few types tests use.

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
	var p pickler
	p.begin()
	p.global(class)
	p.end()
	p.begin()
	p.value(state)
	p.end()
	return p.buf
}

type pickler struct{ buf []byte }

func (p *pickler) begin() { p.buf = append(p.buf, 0x80, 3) } // PROTO 3
func (p *pickler) end()   { p.buf = append(p.buf, '.') }     // STOP

func (p *pickler) global(class string) {
	mod, name := splitClass(class)
	p.buf = append(p.buf, 'c')
	p.buf = append(p.buf, mod+"\n"+name+"\n"...)
}

func (p *pickler) value(v any) {
	switch v := v.(type) {
	case nil:
		p.buf = append(p.buf, 'N')
	case bool:
		if v {
			p.buf = append(p.buf, 0x88)
		} else {
			p.buf = append(p.buf, 0x89)
		}
	case int:
		p.int(int64(v))
	case int64:
		p.int(v)
	case string:
		p.buf = append(p.buf, 'X')
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(v)))
		p.buf = append(p.buf, v...)
	case []byte:
		if len(v) < 256 {
			p.buf = append(p.buf, 'C', byte(len(v)))
		} else {
			p.buf = append(p.buf, 'B')
			p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(v)))
		}
		p.buf = append(p.buf, v...)
	case []any:
		p.buf = append(p.buf, ']')
		if len(v) > 0 {
			p.buf = append(p.buf, '(')
			for _, x := range v {
				p.value(x)
			}
			p.buf = append(p.buf, 'e') // APPENDS
		}
	case Tuple:
		switch len(v) {
		case 0:
			p.buf = append(p.buf, ')')
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
			p.buf = append(p.buf, 't')
		}
	case Dict:
		p.buf = append(p.buf, '}')
		if len(v) > 0 {
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
		p.value(v.Oid.Bytes())
		p.global(v.Class)
		p.buf = append(p.buf, 0x86, 'Q') // TUPLE2 BINPERSID
	default:
		panic(fmt.Sprintf("storagetest: cannot pickle %T", v))
	}
}

func (p *pickler) int(n int64) {
	switch {
	case n >= 0 && n < 1<<8:
		p.buf = append(p.buf, 'K', byte(n))
	case n >= 0 && n < 1<<16:
		p.buf = append(p.buf, 'M', byte(n), byte(n>>8))
	case n >= math.MinInt32 && n <= math.MaxInt32:
		p.buf = append(p.buf, 'J')
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(int32(n)))
	default:
		p.buf = append(p.buf, 0x8a, 8) // LONG1, 8 bytes two's complement
		p.buf = binary.LittleEndian.AppendUint64(p.buf, uint64(n))
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
