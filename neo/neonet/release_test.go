package neonet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func init() {
	// Released memory is poisoned in tests: a message used after its
	// release, or released by the link while still in use, shows it.
	poisonReleased.Store(true)
}

// noPoison turns poisoning off for a benchmark, which measures the link as
// it runs outside tests.
func noPoison(b *testing.B) {
	poisonReleased.Store(false)
	b.Cleanup(func() { poisonReleased.Store(true) })
}

// Released memory is poisoned (so the tests below would see a message
// released too early), and goes to later packets.
func TestReleasePoisons(t *testing.T) {
	for _, size := range []int{10, 4 << 10, 100 << 10} {
		stream := append([]byte(nil), proto.Handshake...)
		for i := range 2 {
			stream = proto.AppendPacket(stream, uint32(i), &proto.AddObject{Oid: 1, Data: bytes.Repeat([]byte{7}, size)})
		}
		conn := &memConn{data: stream, chunk: 64 << 10}
		l := newLink(conn, conn)
		if err := l.handshake(); err != nil {
			t.Fatal(err)
		}
		go l.reader()
		ctx := testCtx(t)
		r, err := l.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := r.Msg.(*proto.AddObject)
		data := m.Data
		r.Release()
		if r.Msg != nil || m.Oid != 0 {
			t.Errorf("%d bytes: released request or message not cleared: %+v", size, r)
		}
		if !bytes.Equal(data, bytes.Repeat([]byte{poison}, size)) && !bytes.Equal(data, bytes.Repeat([]byte{7}, size)) {
			t.Errorf("%d bytes: released data neither poisoned nor reused: %x...", size, data[:8])
		} else if data[0] != poison {
			t.Errorf("%d bytes: released data not poisoned", size)
		}
		r2, err := l.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := r2.Msg.(*proto.AddObject).Data; len(d) != size || d[0] != 7 || d[size-1] != 7 {
			t.Errorf("%d bytes: second packet: %d bytes %x...", size, len(d), d[:min(8, len(d))])
		}
		l.Close()
	}
}

// TestReleaseStream receives streams of packets of all sizes, releasing
// some at once and holding the others: released memory, poisoned and
// reused by later packets, never shows in a message held.
func TestReleaseStream(t *testing.T) {
	stream, packets := bigStream()
	var small []byte // packets small enough to be copied out of the read buffer
	for i := range 300 {
		p := proto.AppendPacket(nil, uint32(1000+i), &proto.AddObject{Oid: zodb.Oid(i), Data: bytes.Repeat([]byte{byte(i)}, i*23), DataSerial: zodb.InvalidTid})
		small = append(small, p...)
		packets = append(packets, p)
	}
	data := append(append(append([]byte(nil), proto.Handshake...), stream...), small...)
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			conn := &randConn{memConn: memConn{data: data}, rnd: rand.New(rand.NewPCG(seed, 2))}
			l := newLink(conn, conn)
			if err := l.handshake(); err != nil {
				t.Fatal(err)
			}
			go l.reader()
			defer l.Close()
			rnd := rand.New(rand.NewPCG(seed, 3))
			held := map[int]*Request{}
			ctx := testCtx(t)
			for i := 0; ; i++ {
				r, err := l.Recv(ctx)
				if err != nil {
					if !errors.Is(err, ErrPeerClosed) || i != len(packets) {
						t.Fatalf("after %d packets of %d: %v", i, len(packets), err)
					}
					break
				}
				if p := proto.AppendPacket(nil, r.MsgID, r.Msg); !bytes.Equal(p, packets[i]) {
					t.Fatalf("packet %d (%s) differs as received", i, msgName(r.Msg))
				}
				if rnd.IntN(2) == 0 {
					r.Release()
				} else {
					held[i] = r
				}
			}
			for i, r := range held {
				if p := proto.AppendPacket(nil, r.MsgID, r.Msg); !bytes.Equal(p, packets[i]) {
					t.Errorf("held packet %d (%s) changed", i, msgName(r.Msg))
				}
				r.Release()
			}
		})
	}
}

// TestReleaseRoundTrips runs requests and answers of all sizes both ways
// between several goroutines, released or held: answers and requests held
// stay intact (with -race: no access to released memory races with its
// reuse).
func TestReleaseRoundTrips(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	sizes := []int{0, 64, 4 << 10, 9 << 10, 64 << 10, 300 << 10}
	var mu sync.Mutex
	var heldReqs []*Request
	serve(t, s, func(r *Request) {
		var err error
		var oid zodb.Oid
		switch req := r.Msg.(type) {
		case *proto.AskObject: // Before is the size of the data to answer
			oid = req.Oid
			err = r.Reply(ctx, objectAnswer(req.Oid, int(req.Before)))
		case *proto.AskStoreObject:
			oid = req.Oid
			err = r.Reply(ctx, &proto.AnswerStoreObject{Conflict: zodb.Tid(len(req.Data))})
		}
		if err != nil {
			return
		}
		if oid%3 == 0 {
			mu.Lock()
			heldReqs = append(heldReqs, r)
			mu.Unlock()
		} else {
			r.Release()
		}
	})
	var wg sync.WaitGroup
	var heldAnswers [4][]Msg
	for g := range 4 {
		wg.Go(func() {
			for i := range 60 {
				oid := zodb.Oid(g*1000 + i)
				size := sizes[(i+g)%len(sizes)]
				var req Msg = &proto.AskObject{Oid: oid, At: zodb.InvalidTid, Before: zodb.Tid(size)}
				if i%3 == 1 {
					req = &proto.AskStoreObject{Oid: oid, Data: bytes.Repeat([]byte{byte(oid)}, size), DataSerial: zodb.InvalidTid, TTid: 1}
				}
				var a Msg
				var err error
				var call *Call
				if i%4 == 0 {
					a, err = c.Ask(ctx, req)
				} else {
					if call, err = c.Start(ctx, req); err == nil {
						a, err = call.Wait(ctx)
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
				if st, ok := a.(*proto.AnswerStoreObject); ok {
					if st.Conflict != zodb.Tid(size) {
						t.Errorf("oid %d: store answered %v", oid, st.Conflict)
					}
				} else if !answers(a, oid, size) {
					t.Errorf("oid %d: wrong answer", oid)
				}
				if i%4 == 0 || i%5 == 0 {
					heldAnswers[g] = append(heldAnswers[g], a)
				}
				if call != nil {
					if i%5 == 0 {
						continue // answer held: not released
					}
					call.Release()
				}
			}
		})
	}
	wg.Wait()
	for g := range heldAnswers {
		for _, a := range heldAnswers[g] {
			ans, ok := a.(*proto.AnswerObject)
			if !ok {
				continue
			}
			if !answers(a, ans.Oid, len(ans.Data)) || ans.Oid/1000 != zodb.Oid(g) {
				t.Errorf("held answer to oid %d changed", ans.Oid)
			}
		}
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heldReqs) == 0 {
		t.Fatal("no request held")
	}
	stores := 0
	for _, r := range heldReqs {
		switch req := r.Msg.(type) {
		case *proto.AskStoreObject:
			stores++
			if req.Oid%3 != 0 || !bytes.Equal(req.Data, bytes.Repeat([]byte{byte(req.Oid)}, len(req.Data))) {
				t.Errorf("held request to store oid %d changed", req.Oid)
			}
		case *proto.AskObject:
			if req.Oid%3 != 0 || req.At != zodb.InvalidTid {
				t.Errorf("held request to load oid %d changed", req.Oid)
			}
		}
	}
	if stores == 0 {
		t.Error("no store request held")
	}
}

// answers tells whether a is objectAnswer(oid, size).
func answers(a Msg, oid zodb.Oid, size int) bool {
	ans, ok := a.(*proto.AnswerObject)
	return ok && ans.Oid == oid && len(ans.Data) == size && bytes.Equal(ans.Data, bytes.Repeat([]byte{byte(oid)}, size)) &&
		ans.Serial == 0x0102030405060708 && ans.DataSerial == zodb.InvalidTid
}

// A call may be released before its answer comes, after Wait gave up, or
// after the link went down.
func TestCallReleaseCases(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	gate, gate2 := make(chan struct{}), make(chan struct{})
	serve(t, s, func(r *Request) {
		switch r.Msg.(*proto.AskObject).Oid {
		case 1:
			<-gate
		case 99:
			<-gate2
		}
		r.Reply(ctx, objectAnswer(r.Msg.(*proto.AskObject).Oid, 100))
		r.Release()
	})
	ask := &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: zodb.InvalidTid}
	early, err := c.Start(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	early.Release() // before Wait: its answer is dropped when it comes
	late, err := c.Start(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	_, err = late.Wait(wctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v", err)
	}
	late.Release()
	close(gate)
	// Both late answers arrive and are dropped; the link goes on.
	for oid := zodb.Oid(2); oid < 10; oid++ {
		call, err := c.Start(ctx, &proto.AskObject{Oid: oid, At: zodb.InvalidTid, Before: zodb.InvalidTid})
		if err != nil {
			t.Fatal(err)
		}
		a, err := call.Wait(ctx)
		if err != nil || !answers(a, oid, 100) {
			t.Fatalf("oid %d: %v", oid, err)
		}
		call.Release()
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	pending := len(c.pending)
	c.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d calls still pending", pending)
	}
	// A call failed by the link going down.
	call, err := c.Start(ctx, &proto.AskObject{Oid: 99, At: zodb.InvalidTid, Before: zodb.InvalidTid})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := call.Wait(ctx); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("wait after closing: %v", err)
	}
	call.Release()
	close(gate2)
}

// A round trip whose answer and request are released allocates nothing,
// on either side, when it waits with a context that cannot be canceled;
// with one that can, reading for it registers with the context
// (context.AfterFunc: two small allocations).
func TestRoundTripAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes pools drop items at random: allocations cannot be counted")
	}
	for _, size := range []int{64, 4 << 10, 64 << 10} {
		c, s := pair(t)
		ans := objectAnswer(1, size)
		serve(t, s, func(r *Request) { r.Reply(context.Background(), ans); r.Release() })
		req := &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: zodb.InvalidTid}
		roundTrip := func(ctx context.Context) {
			call, err := c.Start(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			a, err := call.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := a.(*proto.AnswerObject).Data; len(d) != size || d[0] != 1 || d[size-1] != 1 {
				t.Fatalf("answer of %d bytes", len(d))
			}
			call.Release()
		}
		for _, tc := range []struct {
			name string
			ctx  context.Context
			max  float64
		}{{"background", context.Background(), 0}, {"cancelable", testCtx(t), 2}} {
			roundTrip(tc.ctx)
			// Pools lose their content at garbage collections: allow for a few.
			if n := testing.AllocsPerRun(1000, func() { roundTrip(tc.ctx) }); n > tc.max+0.05 {
				t.Errorf("%d bytes, %s context: %.3f allocations per round trip, want %v", size, tc.name, n, tc.max)
			}
		}
	}
}

// TestCallReuseAfterFailedStart: a request whose link went down while it
// was being sent must not leave that link's error to the next request made
// with recycled memory, on another link.
func TestCallReuseAfterFailedStart(t *testing.T) {
	ctx := testCtx(t)
	good, goodPeer := pair(t)
	serve(t, goodPeer, func(r *Request) { r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 7}) })
	for i := 0; i < 50; i++ {
		bad, badPeer := pair(t)
		var wg sync.WaitGroup
		for j := 0; j < 4; j++ {
			wg.Go(func() {
				for k := 0; k < 8; k++ {
					bad.Ask(ctx, &proto.AskLastTransaction{})
				}
			})
		}
		badPeer.Close()
		wg.Wait()
		for j := 0; j < 8; j++ {
			if _, err := good.Ask(ctx, &proto.AskLastTransaction{}); err != nil {
				t.Fatalf("round %d: ask on a healthy link: %v", i, err)
			}
		}
	}
}
