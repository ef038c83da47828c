package neonet

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// keep holds what a benchmark must not let the compiler drop.
var keep []byte

// BenchmarkRoundTrip measures one AskObject / AnswerObject round trip on a
// loopback link (neonet: Start, Wait, Release; the server releases the
// request), next to a plain TCP ping-pong moving the same bytes with no
// framing, matching or decoding (rawTCP, reusing one buffer), for several
// object sizes. The ratio of the two is the link's overhead. The other
// variants show what costs what: neonetAsk is neonet with Ask, whose answer
// is allocated for the caller to keep; rawOwned is rawTCP reading each
// answer into a buffer allocated for it; handoff is rawTCP with a reader
// goroutine on each side handing what it reads to another goroutine (the
// caller; the request handler), as links did before the goroutine waiting
// for an answer read it itself; rawCopy is rawTCP giving the caller a copy
// of each answer.
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 64 << 10} {
		req := &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: 0x03f4a1b2c3d4e5f6}
		ans := objectAnswer(1, size)
		name := fmt.Sprintf("%dB", size)
		if size >= 1<<10 {
			name = fmt.Sprintf("%dKiB", size>>10)
		}
		b.Run("neonet/"+name, func(b *testing.B) { benchFunc(b, linkRoundTrip(b, req, ans)) })
		b.Run("neonetAsk/"+name, func(b *testing.B) { benchFunc(b, askRoundTrip(b, req, ans)) })
		reqSize, ansSize := len(proto.AppendPacket(nil, 0, req)), len(proto.AppendPacket(nil, 0, ans))
		b.Run("rawTCP/"+name, func(b *testing.B) {
			raw := rawRoundTrip(b, reqSize, ansSize)
			benchFunc(b, func() { raw() })
		})
		b.Run("rawOwned/"+name, func(b *testing.B) { benchFunc(b, rawOwnedRoundTrip(b, reqSize, ansSize)) })
		b.Run("handoff/"+name, func(b *testing.B) { benchFunc(b, handoffRoundTrip(b, reqSize, ansSize)) })
		b.Run("rawCopy/"+name, func(b *testing.B) {
			raw := rawRoundTrip(b, reqSize, ansSize)
			benchFunc(b, func() { keep = append([]byte(nil), raw()...) })
		})
	}
}

func benchFunc(b *testing.B, roundTrip func()) {
	noPoison(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}

// linkRoundTrip sets up a link pair whose server answers req with ans, and
// returns a function doing one round trip: Start, Wait, a look at the
// answer's data, Release (the server releases the request once answered).
func linkRoundTrip(b *testing.B, req Msg, ans *proto.AnswerObject) func() {
	ctx := context.Background()
	c, s := pair(b)
	serve(b, s, func(r *Request) { r.Reply(ctx, ans); r.Release() })
	return func() {
		call, err := c.Start(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		a, err := call.Wait(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if d := a.(*proto.AnswerObject).Data; len(d) != len(ans.Data) || d[len(d)-1] != ans.Data[len(d)-1] {
			b.Fatalf("answer of %d bytes, want %d", len(d), len(ans.Data))
		}
		call.Release()
	}
}

// askRoundTrip is linkRoundTrip with Ask: the answer is not released, its
// memory is left to the garbage collector.
func askRoundTrip(b *testing.B, req, ans Msg) func() {
	ctx := context.Background()
	c, s := pair(b)
	serve(b, s, func(r *Request) { r.Reply(ctx, ans) })
	return func() {
		if _, err := c.Ask(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// rawRoundTrip sets up a TCP connection to an echo-like server that
// answers reqSize bytes with ansSize bytes, and returns a function doing
// one round trip, returning the answer's bytes (valid until the next one).
func rawRoundTrip(b *testing.B, reqSize, ansSize int) func() []byte {
	conn := rawConn(b, reqSize, ansSize)
	out, in := make([]byte, reqSize), make([]byte, ansSize)
	return func() []byte {
		if _, err := conn.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, in); err != nil {
			b.Fatal(err)
		}
		return in
	}
}

// rawOwnedRoundTrip is rawRoundTrip reading each answer into a buffer
// allocated for it, which the caller may keep (kept in keep here).
func rawOwnedRoundTrip(b *testing.B, reqSize, ansSize int) func() {
	conn := rawConn(b, reqSize, ansSize)
	out := make([]byte, reqSize)
	return func() {
		if _, err := conn.Write(out); err != nil {
			b.Fatal(err)
		}
		in := make([]byte, ansSize)
		if _, err := io.ReadFull(conn, in); err != nil {
			b.Fatal(err)
		}
		keep = in
	}
}

// rawConn returns a TCP connection to a server that answers every reqSize
// bytes it reads with ansSize bytes.
func rawConn(b *testing.B, reqSize, ansSize int) net.Conn {
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := nl.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		in, out := make([]byte, reqSize), make([]byte, ansSize)
		for {
			if _, err := io.ReadFull(conn, in); err != nil {
				return
			}
			if _, err := conn.Write(out); err != nil {
				return
			}
		}
	}()
	conn, err := net.Dial("tcp", nl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(); nl.Close(); wg.Wait() })
	return conn
}

// handoffRoundTrip is rawRoundTrip with the goroutine structure of a link:
// on each side a reader goroutine hands what it read over a channel to
// another goroutine (the caller; the request handler). It shows the part of
// the link's overhead that comes from that structure alone.
func handoffRoundTrip(b *testing.B, reqSize, ansSize int) func() {
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	reader := func(conn net.Conn, size int, ch chan<- []byte) {
		defer wg.Done()
		defer close(ch)
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(conn, buf); err != nil {
				return
			}
			ch <- buf
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := nl.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		reqs := make(chan []byte, 1)
		wg.Add(1)
		go reader(conn, reqSize, reqs)
		out := make([]byte, ansSize)
		for range reqs {
			if _, err := conn.Write(out); err != nil {
				return
			}
		}
	}()
	conn, err := net.Dial("tcp", nl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	answers := make(chan []byte, 1)
	wg.Add(1)
	go reader(conn, ansSize, answers)
	b.Cleanup(func() { conn.Close(); nl.Close(); wg.Wait() })
	out := make([]byte, reqSize)
	return func() {
		if _, err := conn.Write(out); err != nil {
			b.Fatal(err)
		}
		<-answers
	}
}

// BenchmarkRoundTripRatio runs the neonet, rawTCP, rawOwned and handoff
// round trips of BenchmarkRoundTrip in alternating blocks within one
// benchmark, so that a changing machine load weighs on all alike, for
// 64 B, 4 KiB and 64 KiB of object data. It reports the time of each, and
// ratio: neonet's time over rawTCP's (the link's goal is at most 2), and
// ratio-owned: over rawOwned's.
func BenchmarkRoundTripRatio(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 64 << 10} {
		req := &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: 0x03f4a1b2c3d4e5f6}
		ans := objectAnswer(1, size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			noPoison(b)
			link := linkRoundTrip(b, req, ans)
			reqSize, ansSize := len(proto.AppendPacket(nil, 0, req)), len(proto.AppendPacket(nil, 0, ans))
			raw := rawRoundTrip(b, reqSize, ansSize)
			owned := rawOwnedRoundTrip(b, reqSize, ansSize)
			handoff := handoffRoundTrip(b, reqSize, ansSize)
			var tLink, tRaw, tOwned, tHandoff time.Duration
			const block = 100
			b.ResetTimer()
			for done := 0; done < b.N; done += block {
				n := min(block, b.N-done)
				t0 := time.Now()
				for range n {
					link()
				}
				t1 := time.Now()
				for range n {
					raw()
				}
				t2 := time.Now()
				for range n {
					owned()
				}
				t3 := time.Now()
				for range n {
					handoff()
				}
				tLink += t1.Sub(t0)
				tRaw += t2.Sub(t1)
				tOwned += t3.Sub(t2)
				tHandoff += time.Since(t3)
			}
			b.ReportMetric(float64(tLink.Nanoseconds())/float64(b.N), "neonet-ns/op")
			b.ReportMetric(float64(tRaw.Nanoseconds())/float64(b.N), "raw-ns/op")
			b.ReportMetric(float64(tOwned.Nanoseconds())/float64(b.N), "owned-ns/op")
			b.ReportMetric(float64(tHandoff.Nanoseconds())/float64(b.N), "handoff-ns/op")
			b.ReportMetric(float64(tLink)/float64(tRaw), "ratio")
			b.ReportMetric(float64(tLink)/float64(tOwned), "ratio-owned")
		})
	}
}

// BenchmarkAskParallel measures many goroutines sharing one link.
func BenchmarkAskParallel(b *testing.B) {
	ctx := context.Background()
	c, s := pair(b)
	ans := objectAnswer(1, 4<<10)
	serve(b, s, func(r *Request) { r.Reply(ctx, ans) })
	req := &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: 0x03f4a1b2c3d4e5f6}
	noPoison(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Ask(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// loopConn serves the same packet over and over, as a peer sending it
// again and again would, in reads of at most chunk bytes.
type loopConn struct {
	memConn
	pkt    []byte
	off    int
	closed atomic.Bool
}

func (c *loopConn) Close() error { c.closed.Store(true); return nil }

func (c *loopConn) Read(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(b) && n < c.chunk {
		m := copy(b[n:min(len(b), c.chunk)], c.pkt[c.off:])
		n += m
		c.off = (c.off + m) % len(c.pkt)
	}
	return n, nil
}

// BenchmarkReceive measures the reading and decoding of a stream of
// AddObject packets by a link (no network: reads copy from memory, 64 KiB
// at most, as from a socket), for several object sizes.
func BenchmarkReceive(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			m := &proto.AddObject{Oid: 1, Serial: 7, Data: make([]byte, size), DataSerial: zodb.InvalidTid}
			conn := &loopConn{memConn: memConn{chunk: 64 << 10}, pkt: proto.AppendPacket(nil, 1, m)}
			l := newLink(conn, conn)
			go l.reader()
			defer l.Close()
			ctx := context.Background()
			noPoison(b)
			b.SetBytes(int64(len(conn.pkt)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r, err := l.Recv(ctx)
				if err != nil {
					b.Fatal(err)
				}
				keep = r.Msg.(*proto.AddObject).Data
			}
		})
	}
}
