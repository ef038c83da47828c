package proto

import (
	"crypto/sha1"
	"testing"

	"github.com/neozodb/neo/zodb"
)

func answerObject4K() *AnswerObject {
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return &AnswerObject{
		Oid:         0x1234,
		Serial:      0x03f4a1b2c3d4e5f6,
		NextSerial:  zodb.InvalidTid,
		Compression: Some[uint8](0),
		Checksum:    sha1.Sum(data),
		Data:        data,
		DataSerial:  zodb.InvalidTid,
	}
}

func benchEncode(b *testing.B, m Msg) {
	buf := AppendPacket(nil, 1000, m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPacket(buf[:0], 1000, m)
	}
}

func benchDecode(b *testing.B, m Msg, decode func([]byte) (uint32, Msg, int, error)) {
	buf := AppendPacket(nil, 1000, m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDecodeInto decodes into one message, as a caller reusing it would.
func benchDecodeInto(b *testing.B, m Msg) {
	buf := m.AppendArgs(nil)
	into, _ := NewMsg(m.MsgCode())
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := into.DecodeArgs(buf); err != nil {
			b.Fatal(err)
		}
	}
}

var smallPackets = []struct {
	name string
	m    Msg
}{
	{"Ping", &Ping{}},
	{"AskObject", &AskObject{Oid: 0x1234, At: zodb.InvalidTid, Before: 0x03f4a1b2c3d4e5f6}},
	{"AnswerStoreObject", &AnswerStoreObject{Conflict: zodb.InvalidTid}},
	{"InvalidateObjects", &InvalidateObjects{Tid: 0x03f4a1b2c3d4e5f6, Oids: []zodb.Oid{1, 2, 3, 4, 5, 6, 7, 8}}},
	{"NotifyNodeInformation", &NotifyNodeInformation{Timestamp: 1700000000.5, Nodes: []NodeInfo{
		{Type: Storage, Addr: Some(Address{"127.0.0.1", 20000}), NID: 1, State: NodeRunning, IDTime: Some(1700000000.25)},
		{Type: Client, NID: NewNodeID(Client, 3), State: NodeRunning, IDTime: Some(1700000001.5)},
	}}},
}

func BenchmarkEncodeAnswerObject4K(b *testing.B) { benchEncode(b, answerObject4K()) }

func BenchmarkDecodeAnswerObject4K(b *testing.B) { benchDecode(b, answerObject4K(), DecodePacket) }

func BenchmarkDecodeNoCopyAnswerObject4K(b *testing.B) {
	benchDecode(b, answerObject4K(), DecodePacketNoCopy)
}

func BenchmarkDecodeIntoAnswerObject4K(b *testing.B) { benchDecodeInto(b, answerObject4K()) }

func BenchmarkPacketLenAnswerObject4K(b *testing.B) {
	buf := AppendPacket(nil, 1000, answerObject4K())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PacketLen(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, p := range smallPackets {
		b.Run(p.name, func(b *testing.B) { benchEncode(b, p.m) })
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, p := range smallPackets {
		b.Run(p.name, func(b *testing.B) { benchDecode(b, p.m, DecodePacket) })
	}
}

func BenchmarkDecodeInto(b *testing.B) {
	for _, p := range smallPackets {
		b.Run(p.name, func(b *testing.B) { benchDecodeInto(b, p.m) })
	}
}
