package neonet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// bigStream returns a stream (after the handshake) mixing small packets
// with packets read into memory of their own: big byte strings of sizes
// around the thresholds, a big byte string followed by a long list of small
// elements, and the packets that follow each of them.
func bigStream() (stream []byte, packets [][]byte) {
	var msgs []Msg
	fill := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	for i, size := range []int{100, bigPacket - 50, bigPacket + 1, 64 << 10, 70 << 10, 300 << 10, 3 << 20} {
		msgs = append(msgs,
			&proto.AddObject{Oid: zodb.Oid(i), Serial: 7, Data: fill(size, byte(i)), DataSerial: zodb.InvalidTid},
			&proto.AskLastTransaction{})
	}
	oids := make([]zodb.Oid, 50000) // 500 KB of small elements
	for i := range oids {
		oids[i] = zodb.Oid(i)
	}
	msgs = append(msgs,
		&proto.AskStoreTransaction{TTid: 3, User: []byte("u"), Description: fill(100<<10, 1), Extension: fill(40<<10, 2), Oids: oids},
		&proto.AskStoreTransaction{TTid: 4, Extension: fill(200, 3), Oids: oids},
		&proto.AskStoreObject{Oid: 9, Data: fill(1<<20, 4), DataSerial: zodb.InvalidTid, TTid: 5},
		// Byte strings next to each other in memory of the packet's own.
		&proto.AskStoreTransaction{TTid: 6, User: fill(10, 9), Description: fill(20<<10, 10), Extension: fill(30, 11), Oids: oids[:10]},
		&proto.NotifyMonitorInformation{Info: proto.Dict{
			{Key: "a", Value: fill(20<<10, 12)},
			{Key: "b", Value: []proto.Value{fill(3, 13), fill(5, 14)}},
			{Key: "c", Value: fill(5, 15)}}},
		&proto.NotifyMonitorInformation{Info: proto.Dict{
			{Key: "a", Value: fill(20<<10, 5)},
			{Key: "b", Value: []proto.Value{fill(3, 6), fill(10<<10, 7), int64(1)}},
			{Key: "c", Value: fill(5, 8)}}},
		&proto.AskLastTransaction{})
	for i, m := range msgs {
		p := proto.AppendPacket(nil, uint32(100+i), m)
		packets = append(packets, p)
		stream = append(stream, p...)
	}
	return stream, packets
}

// TestBigPackets runs big packets through a link's reader, in pieces of
// various sizes: every message is received whole, and stays intact while
// the link reads on (messages of big packets point into their memory).
func TestBigPackets(t *testing.T) {
	stream, packets := bigStream()
	data := append(append([]byte(nil), proto.Handshake...), stream...)
	conns := map[string]func() net.Conn{}
	for _, chunk := range []int{1 << 30, 64 << 10, 4093, 100000, 13} {
		conns[fmt.Sprint(chunk)] = func() net.Conn { return &memConn{data: data, chunk: chunk} }
	}
	for seed := range uint64(5) {
		conns[fmt.Sprintf("random%d", seed)] = func() net.Conn {
			return &randConn{memConn: memConn{data: data}, rnd: rand.New(rand.NewPCG(seed, 1))}
		}
	}
	for name, newConn := range conns {
		t.Run(name, func(t *testing.T) {
			conn := newConn()
			l := newLink(conn, conn)
			if err := l.handshake(); err != nil {
				t.Fatal(err)
			}
			go l.reader()
			defer l.Close()
			var got []*Request
			ctx := context.Background()
			for {
				r, err := l.Recv(ctx)
				if err != nil {
					if !errors.Is(err, ErrPeerClosed) {
						t.Fatalf("after %d packets: %v", len(got), err)
					}
					break
				}
				got = append(got, r)
			}
			if len(got) != len(packets) {
				t.Fatalf("received %d packets, want %d", len(got), len(packets))
			}
			for i, r := range got {
				if p := proto.AppendPacket(nil, r.MsgID, r.Msg); !bytes.Equal(p, packets[i]) {
					t.Errorf("packet %d (%s) differs once all are read", i, msgName(r.Msg))
				}
				// Appending to a byte string leaves the others alone.
				appendToAll(reflect.ValueOf(r.Msg))
				if p := proto.AppendPacket(nil, r.MsgID, r.Msg); !bytes.Equal(p, packets[i]) {
					t.Errorf("packet %d (%s) changed by appends to its byte strings", i, msgName(r.Msg))
				}
			}
			if len(l.buf) > 4*readBufSize {
				t.Errorf("read buffer left at %d bytes", len(l.buf))
			}
		})
	}
}

// TestBigPacketLimits checks the reading of big packets against a peer
// announcing more than it sends, or more than the limit.
func TestBigPacketLimits(t *testing.T) {
	hs := proto.Handshake
	// A byte string announced at 60 MiB, of which 1 MiB comes.
	cut := proto.AppendPacket(nil, 1, &proto.AddObject{Data: make([]byte, 60<<20)})[:1<<20]
	_, err := runStream(t, append(append([]byte(nil), hs...), cut...), 64<<10)
	if !errors.Is(err, ErrLinkDown) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut packet: %v", err)
	}
	// A byte string larger than the limit.
	over := append(append([]byte(nil), hs...), 0x93, 0x01, 0xcd, 0x00, 0x01, 0x91, 0xc6, 0x04, 0x00, 0x00, 0x01)
	_, err = runStream(t, append(over, make([]byte, 100<<10)...), 64<<10)
	var merr *MalformedError
	if !errors.As(err, &merr) {
		t.Errorf("packet over the limit: %v", err)
	}
	// Bad msgpack after a big byte string.
	bad := append(append([]byte(nil), hs...), 0x93, 0x01, 0xcd, 0x00, 0x01, 0x92, 0xc6, 0x00, 0x01, 0x00, 0x00)
	bad = append(append(bad, make([]byte, 64<<10)...), 0xc1)
	_, err = runStream(t, bad, 1000)
	if !errors.As(err, &merr) || merr.Offset != 0 {
		t.Errorf("bad byte after a big byte string: %v", err)
	}
}

// randConn is a memConn serving reads of random sizes, from one byte to
// 200 KB.
type randConn struct {
	memConn
	rnd *rand.Rand
}

func (c *randConn) Read(b []byte) (int, error) {
	if c.rnd.IntN(4) == 0 {
		c.chunk = 1 + c.rnd.IntN(100)
	} else {
		c.chunk = 1 + c.rnd.IntN(200000)
	}
	return c.memConn.Read(b)
}

// TestBigPacketsCut cuts the stream of TestBigPackets at many places: the
// link ends down with an unexpected EOF (or a clean EOF at a packet
// boundary), after receiving intact the packets before the cut.
func TestBigPacketsCut(t *testing.T) {
	stream, packets := bigStream()
	rnd := rand.New(rand.NewPCG(7, 7))
	for range 40 {
		cut := rnd.IntN(len(stream))
		data := append(append([]byte(nil), proto.Handshake...), stream[:cut]...)
		conn := &randConn{memConn: memConn{data: data}, rnd: rand.New(rand.NewPCG(uint64(cut), 3))}
		l := newLink(conn, conn)
		if err := l.handshake(); err != nil {
			t.Fatal(err)
		}
		go l.reader()
		whole, end := 0, 0 // packets wholly before the cut
		for whole < len(packets) && end+len(packets[whole]) <= cut {
			end += len(packets[whole])
			whole++
		}
		var n int
		var err error
		for {
			var r *Request
			r, err = l.Recv(context.Background())
			if err != nil {
				break
			}
			if p := proto.AppendPacket(nil, r.MsgID, r.Msg); !bytes.Equal(p, packets[n]) {
				t.Errorf("cut at %d: packet %d differs", cut, n)
			}
			n++
		}
		l.Close()
		wantEOF := io.ErrUnexpectedEOF
		if end == cut {
			wantEOF = nil
		}
		if n != whole || !errors.Is(err, ErrLinkDown) || wantEOF != nil && !errors.Is(err, wantEOF) || wantEOF == nil && !errors.Is(err, ErrPeerClosed) {
			t.Errorf("cut at %d: received %d packets, then %v; want %d packets", cut, n, err, whole)
		}
	}
}

// appendToAll appends bytes to every byte string reachable from v, then
// puts the byte string back as it was: what the appends wrote past its end
// stays in memory.
func appendToAll(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			appendToAll(v.Elem())
		}
	case reflect.Interface:
		if v.IsNil() {
			return
		}
		if b, ok := v.Interface().([]byte); ok {
			v.Set(reflect.ValueOf(append(b, "\xee\xee\xee\xee\xee\xee\xee\xee"...)))
			v.Set(reflect.ValueOf(b))
			return
		}
		appendToAll(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			appendToAll(v.Field(i))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := v.Bytes()
			v.SetBytes(append(b, "\xee\xee\xee\xee\xee\xee\xee\xee"...))
			v.SetBytes(b)
			return
		}
		fallthrough
	case reflect.Array:
		for i := range v.Len() {
			appendToAll(v.Index(i))
		}
	}
}
