package proto

// Golden tests: the vectors in testdata/neo-proto were written by NEO/py.
// Every one must decode to the listed arguments and encode back to the same
// bytes.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
)

func vectorDir() string { return testdir.Dir("NEO_PROTO_VECTORS", "neo-proto") }

func loadJSON(t testing.TB, name string, v any) {
	t.Helper()
	f, err := os.Open(filepath.Join(vectorDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// typed is a value of the vectors' typed JSON.
type typed struct {
	T     string          `json:"t"`
	V     json.RawMessage `json:"v"`
	Enum  string          `json:"enum"`
	Name  string          `json:"name"`
	Value int             `json:"value"`
	Ext   int8            `json:"ext"`
	Bits  string          `json:"bits"`
}

type vector struct {
	Name  string  `json:"name"`
	Code  uint16  `json:"code"`
	Kind  string  `json:"kind"`
	MsgID uint32  `json:"msg_id"`
	Args  []typed `json:"args"`
	Hex   string  `json:"hex"`
}

type vectorFile struct {
	ProtocolVersion int      `json:"protocol_version"`
	Count           int      `json:"count"`
	Vectors         []vector `json:"vectors"`
}

func (tv typed) items() ([]typed, error) {
	var l []typed
	d := json.NewDecoder(bytes.NewReader(tv.V))
	d.UseNumber()
	err := d.Decode(&l)
	return l, err
}

func (tv typed) pairs() ([][2]typed, error) {
	var l [][2]typed
	d := json.NewDecoder(bytes.NewReader(tv.V))
	d.UseNumber()
	err := d.Decode(&l)
	return l, err
}

func (tv typed) bin() ([]byte, error) {
	if tv.T != "bin" {
		return nil, fmt.Errorf("want bin, got %s", tv.T)
	}
	var s string
	if err := json.Unmarshal(tv.V, &s); err != nil {
		return nil, err
	}
	return hex.DecodeString(s)
}

func (tv typed) int() (neg bool, u uint64, err error) {
	if tv.T != "int" {
		return false, 0, fmt.Errorf("want int, got %s", tv.T)
	}
	s := string(tv.V)
	if strings.HasPrefix(s, "-") {
		i, err := strconv.ParseInt(s, 10, 64)
		return true, uint64(i), err
	}
	u, err = strconv.ParseUint(s, 10, 64)
	return false, u, err
}

func (tv typed) float() (float64, error) {
	if tv.T != "float" {
		return 0, fmt.Errorf("want float, got %s", tv.T)
	}
	bits, err := strconv.ParseUint(tv.Bits, 16, 64)
	return math.Float64frombits(bits), err
}

var (
	tidType      = reflect.TypeFor[zodb.Tid]()
	oidType      = reflect.TypeFor[zodb.Oid]()
	nodeIDType   = reflect.TypeFor[NodeID]()
	checksumType = reflect.TypeFor[Checksum]()
	dictType     = reflect.TypeFor[Dict]()
	errCodeType  = reflect.TypeFor[ErrorCode]()
	bytesType    = reflect.TypeFor[[]byte]()
)

var enumTypes = map[reflect.Type]string{
	reflect.TypeFor[CellState]():    "CellStates",
	reflect.TypeFor[ClusterState](): "ClusterStates",
	reflect.TypeFor[NodeState]():    "NodeStates",
	reflect.TypeFor[NodeType]():     "NodeTypes",
}

func isOpt(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && strings.HasPrefix(t.Name(), "Opt[") &&
		t.NumField() == 2 && t.Field(0).Name == "V" && t.Field(1).Name == "Ok"
}

// fill sets dst, of any field type of this package, from the typed value
// tv. It is driven by the Go types only, independently of the generator's
// table.
func fill(dst reflect.Value, tv typed) error {
	t := dst.Type()
	switch {
	case t == tidType || t == oidType:
		if tv.T == "nil" {
			dst.SetUint(math.MaxUint64)
			return nil
		}
		b, err := tv.bin()
		if err != nil {
			return err
		}
		if len(b) != 8 {
			return fmt.Errorf("tid/oid of %d bytes", len(b))
		}
		dst.SetUint(zodbUint64(b))
		return nil
	case t == nodeIDType:
		if tv.T == "nil" {
			dst.SetInt(0)
			return nil
		}
		neg, u, err := tv.int()
		if err != nil {
			return err
		}
		_ = neg
		dst.SetInt(int64(u))
		return nil
	case t == checksumType:
		b, err := tv.bin()
		if err != nil {
			return err
		}
		if len(b) != 20 {
			return fmt.Errorf("checksum of %d bytes", len(b))
		}
		reflect.Copy(dst, reflect.ValueOf(b))
		return nil
	case t == bytesType:
		b, err := tv.bin()
		if err != nil {
			return err
		}
		dst.SetBytes(b)
		return nil
	case t == dictType:
		if tv.T != "map" {
			return fmt.Errorf("want map, got %s", tv.T)
		}
		pairs, err := tv.pairs()
		if err != nil {
			return err
		}
		d := Dict{}
		for _, p := range pairs {
			k, err := p[0].bin()
			if err != nil {
				return fmt.Errorf("dict key: %w", err)
			}
			v, err := toValue(p[1])
			if err != nil {
				return fmt.Errorf("dict value: %w", err)
			}
			d = append(d, DictItem{Key: string(k), Value: v})
		}
		dst.Set(reflect.ValueOf(d))
		return nil
	case t == errCodeType:
		_, u, err := tv.int()
		if err != nil {
			return err
		}
		dst.SetUint(u)
		return nil
	case isOpt(t):
		if tv.T == "nil" {
			dst.SetZero()
			return nil
		}
		dst.Field(1).SetBool(true)
		return fill(dst.Field(0), tv)
	}
	if name, ok := enumTypes[t]; ok {
		if tv.T != "enum" || tv.Enum != name {
			return fmt.Errorf("want enum %s, got %s %s", name, tv.T, tv.Enum)
		}
		dst.SetUint(uint64(tv.Value))
		return nil
	}
	switch t.Kind() {
	case reflect.Bool:
		if tv.T != "bool" {
			return fmt.Errorf("want bool, got %s", tv.T)
		}
		var v bool
		if err := json.Unmarshal(tv.V, &v); err != nil {
			return err
		}
		dst.SetBool(v)
		return nil
	case reflect.Float64:
		f, err := tv.float()
		if err != nil {
			return err
		}
		dst.SetFloat(f)
		return nil
	case reflect.String:
		b, err := tv.bin()
		if err != nil {
			return err
		}
		dst.SetString(string(b))
		return nil
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		neg, u, err := tv.int()
		if err != nil {
			return err
		}
		if neg || dst.OverflowUint(u) {
			return fmt.Errorf("int %s does not fit %s", tv.V, t)
		}
		dst.SetUint(u)
		return nil
	case reflect.Slice:
		if tv.T == "map" {
			pairs, err := tv.pairs()
			if err != nil {
				return err
			}
			s := reflect.MakeSlice(t, len(pairs), len(pairs))
			for i, p := range pairs {
				e := s.Index(i)
				if err := fill(e.Field(0), p[0]); err != nil {
					return fmt.Errorf("key %d: %w", i, err)
				}
				if e.NumField() == 2 {
					if err := fill(e.Field(1), p[1]); err != nil {
						return fmt.Errorf("value %d: %w", i, err)
					}
					continue
				}
				if err := fillFields(e, 1, p[1]); err != nil {
					return fmt.Errorf("value %d: %w", i, err)
				}
			}
			dst.Set(s)
			return nil
		}
		if tv.T != "list" && tv.T != "tuple" {
			return fmt.Errorf("want list, got %s", tv.T)
		}
		items, err := tv.items()
		if err != nil {
			return err
		}
		s := reflect.MakeSlice(t, len(items), len(items))
		for i, it := range items {
			if err := fill(s.Index(i), it); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		dst.Set(s)
		return nil
	case reflect.Struct:
		return fillFields(dst, 0, tv)
	}
	return fmt.Errorf("no conversion to %s", t)
}

// fillFields sets the fields from the from-th on of struct dst from the
// tuple tv.
func fillFields(dst reflect.Value, from int, tv typed) error {
	if tv.T != "tuple" && tv.T != "list" {
		return fmt.Errorf("%s: want tuple, got %s", dst.Type(), tv.T)
	}
	items, err := tv.items()
	if err != nil {
		return err
	}
	if len(items) != dst.NumField()-from {
		return fmt.Errorf("%s: %d fields, tuple of %d", dst.Type(), dst.NumField()-from, len(items))
	}
	for i, it := range items {
		f := dst.Field(from + i)
		if err := fill(f, it); err != nil {
			return fmt.Errorf("%s.%s: %w", dst.Type().Name(), dst.Type().Field(from+i).Name, err)
		}
	}
	return nil
}

func zodbUint64(b []byte) uint64 {
	var x uint64
	for _, c := range b {
		x = x<<8 | uint64(c)
	}
	return x
}

// toValue converts an open-typed value to what the decoder yields.
func toValue(tv typed) (Value, error) {
	switch tv.T {
	case "nil":
		return nil, nil
	case "bool":
		var v bool
		err := json.Unmarshal(tv.V, &v)
		return v, err
	case "int":
		neg, u, err := tv.int()
		if err != nil {
			return nil, err
		}
		if neg || u <= math.MaxInt64 {
			return int64(u), nil
		}
		return u, nil
	case "float":
		return tv.float()
	case "bin":
		return tv.bin()
	case "list", "tuple":
		items, err := tv.items()
		if err != nil {
			return nil, err
		}
		l := []Value{}
		for _, it := range items {
			v, err := toValue(it)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case "map":
		pairs, err := tv.pairs()
		if err != nil {
			return nil, err
		}
		m := Map{}
		for _, p := range pairs {
			k, err := toValue(p[0])
			if err != nil {
				return nil, err
			}
			v, err := toValue(p[1])
			if err != nil {
				return nil, err
			}
			m = append(m, MapItem{k, v})
		}
		return m, nil
	case "enum":
		switch tv.Enum {
		case "CellStates":
			return CellState(tv.Value), nil
		case "ClusterStates":
			return ClusterState(tv.Value), nil
		case "ErrorCodes":
			return ErrorCode(tv.Value), nil
		case "NodeStates":
			return NodeState(tv.Value), nil
		case "NodeTypes":
			return NodeType(tv.Value), nil
		}
	}
	return nil, fmt.Errorf("unsupported typed value %s", tv.T)
}

// msgFromArgs builds the message of code from the vector's arguments.
func msgFromArgs(code uint16, args []typed) (Msg, error) {
	m, err := NewMsg(code)
	if err != nil {
		return nil, err
	}
	v := reflect.ValueOf(m).Elem()
	if v.NumField() != len(args) {
		return nil, fmt.Errorf("%T has %d fields, vector has %d arguments", m, v.NumField(), len(args))
	}
	for i, a := range args {
		if err := fill(v.Field(i), a); err != nil {
			return nil, fmt.Errorf("%T.%s: %w", m, v.Type().Field(i).Name, err)
		}
	}
	return m, nil
}

// equal is reflect.DeepEqual except that nil and empty slices are equal
// and floats compare by bits.
func equal(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		fallthrough
	case reflect.Array:
		for i := 0; i < a.Len(); i++ {
			if !equal(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !equal(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Interface, reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equal(a.Elem(), b.Elem())
	case reflect.Float32, reflect.Float64:
		return math.Float64bits(a.Float()) == math.Float64bits(b.Float())
	}
	return a.Interface() == b.Interface()
}

func loadVectors(t testing.TB) []vector {
	var f vectorFile
	loadJSON(t, "packets.json", &f)
	if f.ProtocolVersion != Version {
		t.Fatalf("vectors are for protocol %d, we speak %d", f.ProtocolVersion, Version)
	}
	if len(f.Vectors) != f.Count || f.Count == 0 {
		t.Fatalf("packets.json: count %d, %d vectors", f.Count, len(f.Vectors))
	}
	return f.Vectors
}

func TestPacketVectors(t *testing.T) {
	vectors := loadVectors(t)
	checked := 0
	covered := map[uint16]bool{}
	for i, v := range vectors {
		label := fmt.Sprintf("#%d %s id=%d", i, v.Name, v.MsgID)
		raw, err := hex.DecodeString(v.Hex)
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		want, err := msgFromArgs(v.Code, v.Args)
		if err != nil {
			t.Errorf("%s: %v", label, err)
			continue
		}
		if name := reflect.TypeOf(want).Elem().Name(); name != v.Name {
			t.Errorf("%s: code 0x%04x is %s here", label, v.Code, name)
			continue
		}
		info, ok := Info(v.Code)
		if !ok || info.Name != v.Name || info.Kind.String() != v.Kind {
			t.Errorf("%s: Info = %+v", label, info)
		}

		// decode, copying and aliasing
		for _, alias := range []bool{false, true} {
			var (
				id  uint32
				got Msg
				n   int
			)
			if alias {
				id, got, n, err = DecodePacketNoCopy(raw)
			} else {
				id, got, n, err = DecodePacket(raw)
			}
			if err != nil {
				t.Errorf("%s: decode: %v", label, err)
				continue
			}
			if n != len(raw) || id != v.MsgID || got.MsgCode() != v.Code {
				t.Errorf("%s: decode: n=%d/%d id=%d code=0x%04x", label, n, len(raw), id, got.MsgCode())
			}
			if !equal(reflect.ValueOf(got), reflect.ValueOf(want)) {
				t.Errorf("%s: decode (alias=%v):\ngot  %+v\nwant %+v", label, alias, got, want)
			}
			// re-encoding what was decoded gives the same bytes
			if enc := AppendPacket(nil, id, got); !bytes.Equal(enc, raw) {
				t.Errorf("%s: re-encode:\ngot  %x\nwant %x", label, enc, raw)
			}
		}

		// encode from the vector's arguments, after some prefix
		prefix := []byte("xyz")
		enc := AppendPacket(prefix, v.MsgID, want)
		if !bytes.Equal(enc[:3], prefix) || !bytes.Equal(enc[3:], raw) {
			t.Errorf("%s: encode:\ngot  %x\nwant %x", label, enc[3:], raw)
		}
		if n, err := PacketLen(raw); n != len(raw) || err != nil {
			t.Errorf("%s: PacketLen = %d, %v; want %d", label, n, err, len(raw))
		}
		covered[v.Code] = true
		checked++
	}
	if checked != len(vectors) {
		t.Errorf("%d of %d vectors checked", checked, len(vectors))
	}
	for _, info := range Packets() {
		if !covered[info.Code] {
			t.Errorf("no vector for %s", info.Name)
		}
	}
	if len(covered) != 111 {
		t.Errorf("vectors cover %d packet types, want 111", len(covered))
	}
	t.Logf("%d vectors, %d packet types", checked, len(covered))
}

// Every strict prefix of a packet is incomplete, never an error or a
// packet.
func TestPacketPrefixes(t *testing.T) {
	vectors := loadVectors(t)
	checked := 0
	for i, v := range vectors {
		raw, _ := hex.DecodeString(v.Hex)
		for k := 0; k < len(raw); k++ {
			if k > 64 && k < len(raw)-64 && k%97 != 0 {
				continue // big packets: sample the middle
			}
			if n, err := PacketLen(raw[:k]); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("#%d %s: PacketLen(prefix %d/%d) = %d, %v", i, v.Name, k, len(raw), n, err)
			}
			if _, _, _, err := DecodePacket(raw[:k]); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("#%d %s: DecodePacket(prefix %d/%d): %v", i, v.Name, k, len(raw), err)
			}
		}
		checked++
	}
	if checked != len(vectors) {
		t.Errorf("%d of %d vectors checked", checked, len(vectors))
	}
}

type packetTypesFile struct {
	ProtocolVersion int `json:"protocol_version"`
	Constants       struct {
		ResponseMask       uint16 `json:"RESPONSE_MASK"`
		UnpackBufferSize   int    `json:"UNPACK_BUFFER_SIZE"`
		ProtocolVersion    int    `json:"PROTOCOL_VERSION"`
		InvalidPartition   uint32 `json:"INVALID_PARTITION"`
		UUIDNamespaces     map[string]int
		UUIDNamespacesJSON map[string]int `json:"UUID_NAMESPACES"`
	} `json:"constants"`
	Types []struct {
		Name             string   `json:"name"`
		Code             uint16   `json:"code"`
		Kind             string   `json:"kind"`
		ArgNames         []string `json:"arg_names"`
		NoDelay          bool     `json:"nodelay"`
		IgnoreWhenClosed bool     `json:"ignore_when_closed"`
		Answer           string   `json:"answer"`
		Request          string   `json:"request"`
	} `json:"types"`
}

func TestPacketTypes(t *testing.T) {
	var f packetTypesFile
	loadJSON(t, "packet_types.json", &f)
	c := f.Constants
	if c.ProtocolVersion != Version || c.ResponseMask != AnswerBit || c.UnpackBufferSize != MaxPacketSize {
		t.Errorf("constants: %+v", c)
	}
	if len(f.Types) != 111 || len(Packets()) != 111 {
		t.Fatalf("%d packet types in packet_types.json, %d here; want 111", len(f.Types), len(Packets()))
	}
	codeOf := map[string]uint16{}
	for _, pt := range f.Types {
		codeOf[pt.Name] = pt.Code
	}
	kinds := map[string]int{}
	for _, pt := range f.Types {
		kinds[pt.Kind]++
		info, ok := Info(pt.Code)
		if !ok {
			t.Errorf("%s: no packet type 0x%04x", pt.Name, pt.Code)
			continue
		}
		if info.Name != pt.Name || info.Kind.String() != pt.Kind || info.NoDelay != pt.NoDelay ||
			info.IgnoreWhenClosed != pt.IgnoreWhenClosed {
			t.Errorf("%s: info %+v, want %+v", pt.Name, info, pt)
		}
		m, err := NewMsg(pt.Code)
		if err != nil || reflect.TypeOf(m).Elem().Name() != pt.Name || m.MsgCode() != pt.Code {
			t.Errorf("%s: NewMsg = %T, %v", pt.Name, m, err)
			continue
		}
		if n := reflect.TypeOf(m).Elem().NumField(); n != len(pt.ArgNames) {
			t.Errorf("%s: %d fields, NEO/py has %d arguments %v", pt.Name, n, len(pt.ArgNames), pt.ArgNames)
		}
		if IsAnswer(pt.Code) != (pt.Kind == "answer" || pt.Kind == "error") {
			t.Errorf("%s: IsAnswer = %v", pt.Name, IsAnswer(pt.Code))
		}
		if pt.Kind == "request" {
			a, ok := AnswerCode(pt.Code)
			if !ok || a != codeOf[pt.Answer] {
				t.Errorf("%s: AnswerCode = 0x%04x, %v; want %s", pt.Name, a, ok, pt.Answer)
			}
			if !IsAnswerTo(pt.Code, a) || !IsAnswerTo(pt.Code, CodeError) {
				t.Errorf("%s: IsAnswerTo", pt.Name)
			}
		} else if _, ok := AnswerCode(pt.Code); ok {
			t.Errorf("%s: AnswerCode ok for a %s", pt.Name, pt.Kind)
		}
		if pt.Kind == "answer" && info.Answer != codeOf[pt.Request] {
			t.Errorf("%s: request 0x%04x, want %s", pt.Name, info.Answer, pt.Request)
		}
	}
	if kinds["request"] != 45 || kinds["answer"] != 37 || kinds["notification"] != 28 || kinds["error"] != 1 {
		t.Errorf("kinds: %v", kinds)
	}
	for _, code := range []uint16{0, 0x4a, 0x7fff, 0x8003, 0xffff} {
		var uerr *UnknownCodeError
		if _, err := NewMsg(code); !errors.As(err, &uerr) || uerr.Code != code {
			t.Errorf("NewMsg(0x%04x): %v", code, err)
		}
	}
}

type streamFile struct {
	Hex     string `json:"hex"`
	Packets []struct {
		Index  int    `json:"index"`
		Offset int    `json:"offset"`
		Size   int    `json:"size"`
		MsgID  uint32 `json:"msg_id"`
		Code   uint16 `json:"code"`
		Name   string `json:"name"`
	} `json:"packets"`
}

type streamPacket struct {
	offset, size int
	msgID        uint32
	code         uint16
}

// readStream parses a stream fed in chunks as a connection reader would:
// handshake first, then packets, waiting for more data when incomplete.
func readStream(t *testing.T, stream []byte, chunk func() int) []streamPacket {
	t.Helper()
	var (
		buf       []byte
		base      int // stream offset of buf[0]
		fed       int
		handshake bool
		out       []streamPacket
	)
	for {
		if !handshake {
			_, n, err := ParseHandshake(buf)
			switch {
			case err == nil:
				handshake = true
				buf, base = buf[n:], base+n
				continue
			case !errors.Is(err, ErrIncomplete):
				t.Fatalf("handshake: %v", err)
			}
		} else {
			n, err := PacketLen(buf)
			switch {
			case err == nil:
				id, m, n2, err := DecodePacket(buf[:n])
				if err != nil || n2 != n {
					t.Fatalf("offset %d: DecodePacket: %d/%d, %v", base, n2, n, err)
				}
				out = append(out, streamPacket{base, n, id, m.MsgCode()})
				buf, base = buf[n:], base+n
				continue
			case !errors.Is(err, ErrIncomplete):
				t.Fatalf("offset %d: PacketLen: %v", base, err)
			}
		}
		if fed == len(stream) {
			if len(buf) != 0 {
				t.Fatalf("%d bytes left at the end", len(buf))
			}
			return out
		}
		k := min(chunk(), len(stream)-fed)
		buf = append(buf, stream[fed:fed+k]...)
		fed += k
	}
}

func TestStream(t *testing.T) {
	var f streamFile
	loadJSON(t, "stream.json", &f)
	stream, err := hex.DecodeString(f.Hex)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Packets) != len(loadVectors(t)) {
		t.Fatalf("stream has %d packets, packets.json %d", len(f.Packets), len(loadVectors(t)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	feeds := map[string]func() int{
		"whole":  func() int { return len(stream) },
		"byte":   func() int { return 1 },
		"random": func() int { return 1 + rng.IntN(64) },
		"big":    func() int { return 1 + rng.IntN(70000) },
	}
	for name, chunk := range feeds {
		t.Run(name, func(t *testing.T) {
			got := readStream(t, stream, chunk)
			if len(got) != len(f.Packets) {
				t.Fatalf("%d packets, want %d", len(got), len(f.Packets))
			}
			for i, p := range f.Packets {
				g := got[i]
				if g.offset != p.Offset || g.size != p.Size || g.msgID != p.MsgID || g.code != p.Code {
					t.Errorf("packet %d (%s): got %+v, want %+v", i, p.Name, g, p)
				}
			}
		})
	}
}

type handshakeFile struct {
	HandshakeHex string `json:"handshake_hex"`
	MagicSize    int    `json:"magic_size"`
	Mismatch     struct {
		Version int    `json:"version"`
		Hex     string `json:"hex"`
	} `json:"mismatch"`
	Cases []struct {
		Label  string `json:"label"`
		Hex    string `json:"hex"`
		Result string `json:"neo_result"`
	} `json:"cases"`
}

func TestHandshake(t *testing.T) {
	var f handshakeFile
	loadJSON(t, "handshake.json", &f)
	if hex.EncodeToString(Handshake) != f.HandshakeHex || len(handshakeMagic) != f.MagicSize {
		t.Errorf("Handshake = %x, want %s", Handshake, f.HandshakeHex)
	}
	seen := map[string]int{}
	checked := 0
	for _, c := range f.Cases {
		b, _ := hex.DecodeString(c.Hex)
		version, n, err := ParseHandshake(b)
		var verr *VersionError
		var got string
		switch {
		case err == nil && version == Version && n == len(Handshake):
			got = "accepted"
			if n < len(b) {
				_, m, k, err := DecodePacket(b[n:])
				if err == nil && n+k == len(b) {
					got = "accepted+packet"
					if _, ok := m.(*Ping); !ok {
						got += fmt.Sprintf("(%T)", m)
					}
				}
			}
		case errors.Is(err, ErrIncomplete):
			got = "incomplete"
		case errors.As(err, &verr):
			got = "version_mismatch"
			if verr.Version == Version || verr.Version != version {
				t.Errorf("%s: version %d, %v", c.Label, version, err)
			}
		case errors.Is(err, ErrNotNEO):
			got = "not_neo"
		default:
			got = fmt.Sprintf("%d %d %v", version, n, err)
		}
		if got != c.Result {
			t.Errorf("%s (%s): %s, NEO/py: %s", c.Label, c.Hex, got, c.Result)
		}
		seen[got]++
		checked++
	}
	if checked != len(f.Cases) || len(seen) != 5 {
		t.Errorf("%d of %d cases checked, verdicts %v", checked, len(f.Cases), seen)
	}
	b, _ := hex.DecodeString(f.Mismatch.Hex)
	if v, _, err := ParseHandshake(b); v != f.Mismatch.Version || err == nil {
		t.Errorf("mismatch: %d, %v", v, err)
	}
}

type enumsFile struct {
	Enums []struct {
		Name    string `json:"name"`
		ExtType int8   `json:"ext_type"`
		Members []struct {
			Name  string `json:"name"`
			Value uint8  `json:"value"`
			Hex   string `json:"hex"`
		} `json:"members"`
	} `json:"enums"`
}

func TestEnums(t *testing.T) {
	var f enumsFile
	loadJSON(t, "enums.json", &f)
	checked := 0
	for _, e := range f.Enums {
		if int(e.ExtType) >= len(enumCount) || enumName(e.ExtType)+"s" != e.Name {
			t.Errorf("%s: ext type %d is %s here", e.Name, e.ExtType, enumName(e.ExtType))
			continue
		}
		if int(enumCount[e.ExtType]) != len(e.Members) {
			t.Errorf("%s: %d members here, %d in NEO/py", e.Name, enumCount[e.ExtType], len(e.Members))
		}
		for _, m := range e.Members {
			tv := typed{T: "enum", Enum: e.Name, Name: m.Name, Value: int(m.Value)}
			v, err := toValue(tv)
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(v); s != m.Name {
				t.Errorf("%s %d: String() = %q, want %q", e.Name, m.Value, s, m.Name)
			}
			if got := hex.EncodeToString(appendValue(nil, v)); got != m.Hex {
				t.Errorf("%s.%s: encoded %s, want %s", e.Name, m.Name, got, m.Hex)
			}
			raw, _ := hex.DecodeString(m.Hex)
			d := decoder{b: raw}
			if got := d.value("enum", 0); got != v || d.err != nil || len(d.b) != 0 {
				t.Errorf("%s.%s: decoded %v (%T), %v", e.Name, m.Name, got, got, d.err)
			}
			checked++
		}
	}
	if checked != 34 {
		t.Errorf("%d enum members checked, want 34", checked)
	}
}
