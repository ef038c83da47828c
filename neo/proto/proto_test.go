package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/neozodb/neo/zodb"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The worked encodings of the protocol description.
func TestWorkedEncodings(t *testing.T) {
	for _, tt := range []struct {
		msgID uint32
		m     Msg
		hex   string
	}{
		{0, &RequestIdentification{NodeType: Client, ClusterName: "test"},
			"93 00 01 96 d4 04 02 c0 c0 c4 04 74 65 73 74 c0 80"},
		{0, &AcceptIdentification{NodeType: Master, NID: NewNodeID(Master, 1), YourNID: NewNodeID(Client, 1)},
			"93 00 cd 80 01 93 d4 04 00 d2 f0 00 00 01 d2 e0 00 00 01"},
		{5, &NotifyClusterInformation{State: ClusterRunning}, "93 05 2d 91 d4 01 02"},
		{7, &Error{Code: ProtocolError, Message: "x"}, "93 07 cd 80 00 92 06 c4 01 78"},
		{300, &AskObject{Oid: 1, At: zodb.InvalidTid, Before: 0x10},
			"93 cd 01 2c 20 93 c4 08 00 00 00 00 00 00 00 01 c0 c4 08 00 00 00 00 00 00 00 10"},
		{0, &Ping{}, "93 00 02 90"},
		{0, &Pong{}, "93 00 cd 80 02 90"},
		{5, &NotifyNodeInformation{Timestamp: 1700000000.5, Nodes: []NodeInfo{{
			Type: Storage, Addr: Some(Address{"127.0.0.1", 20000}), NID: 1, State: NodeRunning}}},
			"93050692cb41d954fc402000009195d4040192c4093132372e302e302e31cd4e2001d40302c0"},
	} {
		want := unhex(t, tt.hex)
		if got := AppendPacket(nil, tt.msgID, tt.m); !bytes.Equal(got, want) {
			t.Errorf("%T: got %x, want %x", tt.m, got, want)
		}
	}
}

func TestNodeID(t *testing.T) {
	for _, tt := range []struct {
		id  NodeID
		s   string
		hex string
		typ NodeType
	}{
		{1, "S1", "01", Storage},
		{200, "S200", "ccc8", Storage},
		{-0x0fffffff, "M1", "d2f0000001", Master},
		{-0x1fffffff, "C1", "d2e0000001", Client},
		{-0x2fffffff, "A1", "d2d0000001", Admin},
		{NewNodeID(Client, 12345), "C12345", "d2e0003039", Client},
	} {
		if s := tt.id.String(); s != tt.s {
			t.Errorf("%d: String = %q, want %q", int32(tt.id), s, tt.s)
		}
		if typ, ok := tt.id.Type(); !ok || typ != tt.typ {
			t.Errorf("%s: Type = %v, %v", tt.s, typ, ok)
		}
		id, err := ParseNodeID(tt.s)
		if err != nil || id != tt.id {
			t.Errorf("ParseNodeID(%q) = %d, %v", tt.s, int32(id), err)
		}
		if got := hex.EncodeToString(appendNid(nil, tt.id)); got != tt.hex {
			t.Errorf("%s: encoded %s, want %s", tt.s, got, tt.hex)
		}
		d := decoder{b: unhex(t, tt.hex)}
		if got := d.nid("nid"); got != tt.id || d.err != nil {
			t.Errorf("%s: decoded %d, %v", tt.s, int32(got), d.err)
		}
	}
	if s := NoNode.String(); s != "None" {
		t.Errorf("NoNode.String() = %q", s)
	}
	for _, s := range []string{"", "S", "X1", "S-1", "Sx", "S16777216"} {
		if _, err := ParseNodeID(s); err == nil {
			t.Errorf("ParseNodeID(%q): no error", s)
		}
	}
}

func TestIntEncoding(t *testing.T) {
	for _, tt := range []struct {
		v   int64
		hex string
	}{
		{0, "00"}, {127, "7f"}, {128, "cc80"}, {255, "ccff"}, {256, "cd0100"},
		{65535, "cdffff"}, {65536, "ce00010000"}, {1 << 32, "cf0000000100000000"},
		{-1, "ff"}, {-32, "e0"}, {-33, "d0df"}, {-129, "d1ff7f"}, {-32769, "d2ffff7fff"},
	} {
		if got := hex.EncodeToString(appendInt(nil, tt.v)); got != tt.hex {
			t.Errorf("%d: %s, want %s", tt.v, got, tt.hex)
		}
	}
}

func TestAddress(t *testing.T) {
	if s := (Address{"::1", 80}).String(); s != "[::1]:80" {
		t.Errorf("%s", s)
	}
	if s := (Address{"127.0.0.1", 10000}).String(); s != "127.0.0.1:10000" {
		t.Errorf("%s", s)
	}
}

func TestDict(t *testing.T) {
	m := &RequestIdentification{
		NodeType: Storage, NID: 1, Address: Some(Address{"::1", 1}), ClusterName: "c",
		Extra: Dict{
			{"devpath", []string{"a", "b"}},
			{"new_nid", []int{1, 2}},
			{"read_only", true},
			{"x", Map{{CellUpToDate, 3}, {int64(-5), nil}}},
			{"f", 1.0},
			{"u", uint64(1) << 63},
		},
	}
	b := AppendPacket(nil, 1, m)
	_, got, _, err := DecodePacket(b)
	if err != nil {
		t.Fatal(err)
	}
	extra := got.(*RequestIdentification).Extra
	want := Dict{
		{"devpath", []Value{[]byte("a"), []byte("b")}},
		{"new_nid", []Value{int64(1), int64(2)}},
		{"read_only", true},
		{"x", Map{{CellUpToDate, int64(3)}, {int64(-5), nil}}},
		{"f", 1.0},
		{"u", uint64(1) << 63},
	}
	if !equal(reflect.ValueOf(extra), reflect.ValueOf(want)) {
		t.Errorf("got %#v\nwant %#v", extra, want)
	}
	if v, ok := extra.Get("read_only"); v != true || !ok {
		t.Errorf("Get(read_only) = %v, %v", v, ok)
	}
	if _, ok := extra.Get("nope"); ok {
		t.Errorf("Get(nope) found")
	}
}

// malformed are packets NEO/py would not send, with the error they give.
var malformed = []struct {
	name, hex, err string
}{
	{"not an array", "01", "want array [msg_id, code, args], got int"},
	{"2 elements", "92 00 02", "want array of 3 elements, got 2"},
	{"negative msg id", "93 ff 02 90", "msg_id: want non-negative int"},
	{"msg id too big", "93 cf 00 00 00 01 00 00 00 00 02 90", "msg_id 4294967296 out of range"},
	{"code too big", "93 00 ce 00 01 00 00 90", "code 65536 out of range"},
	{"args not array", "93 00 02 c0", "args: want array, got nil"},
	{"unknown code", "93 00 4a 90", "unknown packet code 0x004a"},
	{"unknown answer", "93 00 cd 80 03 90", "unknown packet code 0x8003"},
	{"extra argument", "93 00 02 91 00", "Ping: arguments: want array of 0, got 1 elements"},
	{"missing argument", "93 00 20 92 c4 08 0000000000000001 c0", "AskObject: arguments: want array of 3, got 2"},
	{"int for oid", "93 00 20 93 01 c0 c0", "AskObject: Oid: want 8-byte bin, got int"},
	{"short tid", "93 00 20 93 c4 07 00000000000001 c0 c0", "AskObject: Oid: want 8-byte bin, got 7 bytes"},
	{"str for bin", "93 07 cd 80 00 92 06 a1 78", "Error: Message: want bin, got str"},
	{"bad enum value", "93 05 2d 91 d4 01 07", "NotifyClusterInformation: State: invalid ClusterState value 0x07"},
	{"wrong enum", "93 05 2d 91 d4 00 01", "NotifyClusterInformation: State: want ClusterState, got ext type 0"},
	{"int for enum", "93 05 2d 91 02", "NotifyClusterInformation: State: want ClusterState, got int"},
	{"negative count", "93 00 19 91 ff", "AskNewOIDs: NumOids: negative value -1"},
	{"count too big", "93 00 19 91 cf 0000000100000000", "NumOids: value 4294967296 out of range"},
	{"port too big", "93 00 49 91 92 c4 01 31 ce 00 01 00 00", "Address.Port: value 65536 out of range"},
	{"list longer than its bytes", "93 00 cd 80 21 91 95 01 02 03 04 05", "AnswerTIDs: Tids: array of 5 elements does not fit in 5 bytes"},
	{"checksum length", "93 00 cd 80 38 93 00 c4 01 00 c4 08 0000000000000000", "Checksum: want 20-byte bin, got 1 bytes"},
	{"nested too deeply", "93 00 01 96 d4 04 02 c0 c0 c4 01 63 c0 81 c4 01 78" + strings.Repeat("91", 40) + "c0",
		"values nested too deeply"},
	{"invalid byte", "93 00 02 91 c1", "invalid msgpack byte 0xc1"},
	{"huge array", "93 00 cd 80 21 91 dd ffffffff", "exceeds the limit"},
	{"huge bin", "93 00 cd 80 00 92 00 c6 7fffffff", "exceeds the limit"},
	{"huge map", "93 00 01 96 df ffffffff", "exceeds the limit"},
}

// Malformed input gives an error that says what is wrong.
func TestMalformed(t *testing.T) {
	for _, tt := range malformed {
		b := unhex(t, tt.hex)
		_, m, _, err := DecodePacket(b)
		if err == nil || m != nil {
			t.Errorf("%s: no error, %+v", tt.name, m)
			continue
		}
		if errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: error %q, want it to contain %q", tt.name, err, tt.err)
		}
	}
}

func TestNodeIDRange(t *testing.T) {
	// AnswerPrimary with a node id beyond int32
	b := unhex(t, "93 00 cd 80 04 91 ce 80 00 00 00")
	if _, _, _, err := DecodePacket(b); err == nil || !strings.Contains(err.Error(), "node id 2147483648 out of range") {
		t.Errorf("error %v", err)
	}
}

// Decoding into a message reuses its slices and resets optional values.
func TestDecodeReuse(t *testing.T) {
	a := &AnswerTIDs{Tids: []zodb.Tid{1, 2, 3}}
	b := a.AppendArgs(nil)
	m := &AnswerTIDs{Tids: make([]zodb.Tid, 0, 10)}
	if err := m.DecodeArgs(b); err != nil {
		t.Fatal(err)
	}
	if len(m.Tids) != 3 || cap(m.Tids) != 10 || m.Tids[2] != 3 {
		t.Errorf("%v cap %d", m.Tids, cap(m.Tids))
	}
	o := &AnswerObject{Compression: Some[uint8](1), Data: []byte("abc"), DataSerial: zodb.InvalidTid,
		NextSerial: zodb.InvalidTid}
	b = o.AppendArgs(nil)
	var got AnswerObject
	if err := got.DecodeArgs(b); err != nil {
		t.Fatal(err)
	}
	b[len(b)-4] = 'X' // Data is a copy
	if string(got.Data) != "abc" || got.Compression != Some[uint8](1) {
		t.Errorf("%+v", got)
	}
	o.Compression = Opt[uint8]{}
	if err := got.DecodeArgs(o.AppendArgs(nil)); err != nil || got.Compression.Ok {
		t.Errorf("%+v, %v", got, err)
	}
	if err := got.DecodeArgs(append(o.AppendArgs(nil), 0)); err == nil {
		t.Errorf("trailing byte: no error")
	}
}

func TestErrorPacket(t *testing.T) {
	e := Err(OidDoesNotExist, "oid %v", zodb.Oid(1))
	var err error = e
	if err.Error() != "OID_DOES_NOT_EXIST: oid 0000000000000001" {
		t.Errorf("%q", err)
	}
	if !IsAnswer(e.MsgCode()) || e.MsgCode() != CodeError {
		t.Errorf("code 0x%04x", e.MsgCode())
	}
	if s := ErrorCode(99).String(); s != "ErrorCode(99)" {
		t.Errorf("%s", s)
	}
	// an unknown code still decodes (a newer peer may send it)
	b := unhex(t, "93 07 cd 80 00 92 63 c4 01 78")
	_, m, _, err := DecodePacket(b)
	if err != nil || m.(*Error).Code != 99 {
		t.Errorf("%v %v", m, err)
	}
}

// zproto.go is what gen.go makes of its table.
func TestGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	out := filepath.Join(t.TempDir(), "zproto.go")
	cmd := exec.Command("go", "run", "gen.go", "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("zproto.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("zproto.go is out of date: run go generate")
	}
}

// Decoding in place: byte strings point into the input, with no room to
// append into it, and a message decoded again reuses its slices.
func TestDecodeArgsNoCopy(t *testing.T) {
	st := &AskStoreTransaction{TTid: 7, User: []byte("user"), Description: []byte("desc"),
		Extension: []byte{}, Oids: []zodb.Oid{1, 2, 3}}
	b := st.AppendArgs(nil)
	m := &AskStoreTransaction{Oids: make([]zodb.Oid, 0, 10)}
	if err := DecodeArgsNoCopy(m, b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, st) || cap(m.Oids) != 10 {
		t.Fatalf("got %+v (oids cap %d), want %+v", m, cap(m.Oids), st)
	}
	for _, s := range [][]byte{m.User, m.Description, m.Extension} {
		if cap(s) != len(s) {
			t.Errorf("byte string %q: capacity %d", s, cap(s))
		}
	}
	m.User = append(m.User, 'X')
	if string(m.Description) != "desc" {
		t.Errorf("append to User overwrote Description: %q", m.Description)
	}
	i := bytes.Index(b, []byte("desc"))
	b[i] = 'D' // Description points into b
	if string(m.Description) != "Desc" {
		t.Errorf("Description %q does not point into the input", m.Description)
	}
	if err := DecodeArgsNoCopy(m, b[:len(b)-1]); err == nil {
		t.Errorf("cut arguments: no error")
	}
	_, pm, _, err := DecodePacketNoCopy(AppendPacket(nil, 1, &AnswerObject{Data: []byte("abc")}))
	if d := pm.(*AnswerObject).Data; err != nil || string(d) != "abc" || cap(d) != 3 {
		t.Errorf("DecodePacketNoCopy: %q cap %d, %v", d, cap(d), err)
	}
}
