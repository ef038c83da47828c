package neonet

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// memConn is a connection whose peer's bytes are given in advance, served
// in pieces of chunk bytes; what is written to it is dropped.
type memConn struct {
	data  []byte
	chunk int
}

func (c *memConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), c.chunk)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *memConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// runStream runs a link over the given peer bytes: handshake, then the
// link's reader with a few requests of ours pending (so that answers may
// match them) and a Recv loop, until the link goes down. It returns the
// packets received and why the link went down.
func runStream(t testing.TB, data []byte, chunk int) (received int, err error) {
	conn := &memConn{data: data, chunk: max(chunk, 1)}
	l := newLink(conn, conn)
	if err := l.handshake(); err != nil {
		return 0, err
	}
	ctx := context.Background()
	calls := make([]*Call, 3)
	for i := range calls {
		var err error
		if calls[i], err = l.Start(ctx, &proto.AskLastTransaction{}); err != nil {
			t.Fatal(err)
		}
	}
	go l.reader()
	for {
		r, err := l.Recv(ctx)
		if err != nil {
			break
		}
		received++
		if r.Msg == nil {
			t.Fatal("request without a message")
		}
	}
	<-l.reading
	for _, c := range calls {
		if a, err := c.Wait(ctx); err == nil && a == nil {
			t.Fatal("answer without a message")
		}
	}
	if !errors.Is(l.Err(), ErrLinkDown) {
		t.Fatalf("link down with %v", l.Err())
	}
	return received, l.Err()
}

// FuzzStreamReader feeds arbitrary bytes, in arbitrary pieces, to a link as
// if they came from its peer: nothing may panic or hang, the link must end
// down with an error, and its framing must agree with proto.PacketLen.
func FuzzStreamReader(f *testing.F) {
	// NEO/py's stream, cut at packet boundaries into pieces of a few KiB
	// (small inputs keep fuzzing and minimizing fast), each after a
	// handshake.
	stream, sv := loadStream(f)
	hs := proto.Handshake
	for i := 0; i < len(sv.Packets); {
		if sv.Packets[i].Size > 4096 { // the 70 KiB record: framing tests cover it
			i++
			continue
		}
		start, end := sv.Packets[i].Offset, sv.Packets[i].Offset
		for ; i < len(sv.Packets) && end-start+sv.Packets[i].Size <= 4096; i++ {
			end += sv.Packets[i].Size
		}
		f.Add(append(append([]byte(nil), hs...), stream[start:end]...), uint16(1+(end-start)/5))
	}
	var hv handshakeVectors
	loadVectors(f, "handshake.json", &hv)
	for _, c := range hv.Cases {
		b, _ := hex.DecodeString(c.Hex)
		f.Add(b, uint16(3))
	}
	// Answers matching the pending requests (ids 0, 1, 2), and not.
	ans := append([]byte(nil), hs...)
	ans = proto.AppendPacket(ans, 1, &proto.AnswerLastTransaction{Tid: 5})
	ans = proto.AppendPacket(ans, 0, &proto.Error{Code: proto.Ack, Message: "ok"})
	ans = proto.AppendPacket(ans, 2, &proto.Pong{})
	ans = proto.AppendPacket(ans, 9, &proto.Ping{})
	f.Add(ans, uint16(5))
	f.Add(append(append([]byte(nil), hs...), 0x93, 0x00, 0x02, 0x91, 0xc6, 0x7f, 0, 0, 0), uint16(100))

	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		runStream(t, data, int(chunk))

		// Framing agrees with proto on the first packet after a handshake.
		if n, err := checkHandshake(data); err == nil {
			b := data[n:]
			var s scanner
			got, serr := s.next(b)
			want, perr := proto.PacketLen(b)
			if perr == nil {
				if serr != nil || got != want {
					t.Fatalf("scanner: %d %v; proto.PacketLen: %d", got, serr, want)
				}
			} else if serr == nil {
				if _, herr := parseHeader(b[:got]); herr == nil && !errors.Is(perr, proto.ErrIncomplete) {
					t.Fatalf("scanner accepts %d bytes, proto.PacketLen: %v", got, perr)
				}
			}
		}
	})
}

// TestStreamThroughLink runs NEO/py's whole stream through a link: every
// request and notification in it but Ping reaches Recv; the first answer, matching
// no request, takes the link down with a protocol error.
func TestStreamThroughLink(t *testing.T) {
	stream, sv := loadStream(t)
	var requests []byte
	requests = append(requests, proto.Handshake...)
	n := 0
	for _, p := range sv.Packets {
		if p.Code&proto.AnswerBit == 0 {
			requests = append(requests, stream[p.Offset:p.Offset+p.Size]...)
			if p.Code != proto.CodePing { // answered by Recv itself
				n++
			}
		}
	}
	for _, chunk := range []int{1 << 20, 1, 13} {
		got, err := runStream(t, requests, chunk)
		if got != n || !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("chunk %d: %d packets, %v; want %d, closed by peer", chunk, got, err, n)
		}
	}
	_, err := runStream(t, stream, 4096)
	var perr *ProtocolError
	if !errors.As(err, &perr) {
		t.Fatalf("whole stream: %v, want a protocol error", err)
	}
}
