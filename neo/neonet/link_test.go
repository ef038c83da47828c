package neonet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// testCtx returns a context that ends with the test (or after a minute).
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pair returns two links connected over loopback: c dialed s.
func pair(t testing.TB) (c, s *Link) {
	t.Helper()
	return pairTLS(t, nil, nil)
}

func pairTLS(t testing.TB, clientTLS, serverTLS *testTLS) (c, s *Link) {
	t.Helper()
	ctx := testCtx(t)
	lc := ListenConfig{TLS: serverTLS.config()}
	ln, err := lc.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, dialErr = Dial(ctx, ln.Addr().String(), clientTLS.config())
	}()
	s, err = ln.Accept(ctx)
	<-done
	if err != nil || dialErr != nil {
		t.Fatalf("accept: %v; dial: %v", err, dialErr)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// serve runs handle on every request received on l, in turn, until the
// link goes down; the test waits for it.
func serve(t testing.TB, l *Link, handle func(r *Request)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			r, err := l.Recv(context.Background())
			if err != nil {
				return
			}
			handle(r)
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

func objectAnswer(oid zodb.Oid, size int) *proto.AnswerObject {
	data := bytes.Repeat([]byte{byte(oid)}, size)
	return &proto.AnswerObject{Oid: oid, Serial: 0x0102030405060708, NextSerial: zodb.InvalidTid,
		Compression: proto.Some(uint8(0)), Data: data, DataSerial: zodb.InvalidTid}
}

func TestAskAnswer(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) {
		req := r.Msg.(*proto.AskObject)
		r.Reply(ctx, objectAnswer(req.Oid, 4096))
	})
	for oid := zodb.Oid(1); oid < 5; oid++ {
		a, err := c.Ask(ctx, &proto.AskObject{Oid: oid, At: zodb.InvalidTid, Before: zodb.InvalidTid})
		if err != nil {
			t.Fatal(err)
		}
		ans := a.(*proto.AnswerObject)
		if ans.Oid != oid || len(ans.Data) != 4096 || ans.Data[0] != byte(oid) {
			t.Fatalf("oid %d: got answer for %d, %d bytes", oid, ans.Oid, len(ans.Data))
		}
	}
}

// Many requests in flight, answered in the reverse order with the saved
// message ids.
func TestManyInFlight(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	const n = 300
	reqs := make(chan *Request, n)
	serve(t, s, func(r *Request) { reqs <- r })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			oid := zodb.Oid(i)
			a, err := c.Ask(ctx, &proto.AskObject{Oid: oid, At: zodb.InvalidTid, Before: zodb.InvalidTid})
			if err == nil && a.(*proto.AnswerObject).Oid != oid {
				err = fmt.Errorf("asked %d, got %d", oid, a.(*proto.AnswerObject).Oid)
			}
			errs <- err
		})
	}
	got := make([]*Request, 0, n)
	for range n {
		got = append(got, <-reqs)
	}
	var rwg sync.WaitGroup
	for i := n - 1; i >= 0; i-- {
		r := got[i]
		if i%2 == 0 {
			r.Reply(ctx, objectAnswer(r.Msg.(*proto.AskObject).Oid, 10))
		} else { // and from other goroutines
			rwg.Go(func() { r.Reply(ctx, objectAnswer(r.Msg.(*proto.AskObject).Oid, 10)) })
		}
	}
	rwg.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := c.pendingCount(); n != 0 {
		t.Fatalf("%d requests still pending", n)
	}
}

func (l *Link) pendingCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// Notifications arrive in order and take message ids from the same
// counter as requests.
func TestNotifyOrderAndIDs(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	states := []proto.ClusterState{proto.ClusterRecovering, proto.ClusterVerifying, proto.ClusterRunning}
	for _, st := range states {
		if err := c.Notify(ctx, &proto.NotifyClusterInformation{State: st}); err != nil {
			t.Fatal(err)
		}
	}
	call, err := c.Start(ctx, &proto.AskLastTransaction{})
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range states {
		r, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, ok := r.Msg.(*proto.NotifyClusterInformation)
		if !ok || n.State != st || r.MsgID != uint32(i) {
			t.Fatalf("got %T %+v msg id %d, want state %v msg id %d", r.Msg, r.Msg, r.MsgID, st, i)
		}
	}
	r, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.MsgID != 3 || call.MsgID() != 3 {
		t.Fatalf("request msg id %d (call says %d), want 3", r.MsgID, call.MsgID())
	}
	r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 42})
	a, err := call.Wait(ctx)
	if err != nil || a.(*proto.AnswerLastTransaction).Tid != 42 {
		t.Fatalf("got %v, %v", a, err)
	}
}

func TestErrorAnswer(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) {
		r.Reply(ctx, &proto.Error{Code: proto.OidDoesNotExist, Message: "no such oid"})
	})
	_, err := c.Ask(ctx, &proto.AskObject{Oid: 7, At: zodb.InvalidTid, Before: zodb.InvalidTid})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.OidDoesNotExist || perr.Message != "no such oid" {
		t.Fatalf("got %v, want OID_DOES_NOT_EXIST error", err)
	}
	if !strings.Contains(err.Error(), "AskObject") {
		t.Errorf("error does not name the request: %v", err)
	}
	if c.Err() != nil {
		t.Fatalf("link down after an Error answer: %v", c.Err())
	}
}

// An Error whose id matches no request goes to Recv (NEO/py gives it to
// the generic error handler).
func TestUnsolicitedError(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	if err := s.Send(ctx, 77, &proto.Error{Code: proto.NotReady, Message: "later"}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := r.Msg.(*proto.Error); !ok || e.Code != proto.NotReady || r.MsgID != 77 {
		t.Fatalf("got %T %v msg id %d", r.Msg, r.Msg, r.MsgID)
	}
}

// rawPeer is the other end of a link, driven byte by byte by the test.
type rawPeer struct {
	net.Conn
}

// rawPair returns a link and a raw TCP peer that has exchanged handshakes
// with it.
func rawPair(t *testing.T) (*Link, *rawPeer) {
	t.Helper()
	ctx := testCtx(t)
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	type result struct {
		l   *Link
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := Dial(ctx, nl.Addr().String(), nil)
		res <- result{l, err}
	}()
	conn, err := nl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{conn}
	t.Cleanup(func() { conn.Close() })
	p.write(t, proto.Handshake)
	p.expect(t, proto.Handshake)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l, p
}

func (p *rawPeer) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (p *rawPeer) send(t *testing.T, id uint32, m Msg) {
	t.Helper()
	p.write(t, proto.AppendPacket(nil, id, m))
}

func (p *rawPeer) expect(t *testing.T, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(p, got); err != nil {
		t.Fatalf("reading % x: %v", want, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
}

// expectEOF reads until the link closes, and fails if anything comes.
func (p *rawPeer) expectEOF(t *testing.T) {
	t.Helper()
	b, err := io.ReadAll(p)
	if len(b) > 0 {
		t.Fatalf("got % x before the end", b)
	}
	if err != nil && !isReset(err) {
		t.Fatal(err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// An answer to no request: Error(PROTOCOL_ERROR) with the answer's id, then
// the link closes.
func TestUnexpectedAnswer(t *testing.T) {
	l, p := rawPair(t)
	p.send(t, 99, &proto.Pong{})
	want := proto.AppendPacket(nil, 99, &proto.Error{Code: proto.ProtocolError,
		Message: "Unexpected answer: packet 0x8002 with msg id 99 answers no request"})
	p.expect(t, want)
	p.expectEOF(t)
	<-l.Done()
	var perr *ProtocolError
	if !errors.As(l.Err(), &perr) || !errors.Is(l.Err(), ErrLinkDown) {
		t.Fatalf("link error %v, want a ProtocolError", l.Err())
	}
}

// An answer of the wrong type fails the Ask and aborts the link.
func TestWrongAnswerType(t *testing.T) {
	ctx := testCtx(t)
	l, p := rawPair(t)
	call, err := l.Start(ctx, &proto.AskLastTransaction{})
	if err != nil {
		t.Fatal(err)
	}
	p.expect(t, proto.AppendPacket(nil, 0, &proto.AskLastTransaction{}))
	p.send(t, 0, &proto.AnswerObject{})
	_, err = call.Wait(ctx)
	var perr *ProtocolError
	if !errors.As(err, &perr) {
		t.Fatalf("got %v, want ProtocolError", err)
	}
	p.expect(t, proto.AppendPacket(nil, 0, &proto.Error{Code: proto.ProtocolError, Message: perr.What}))
	p.expectEOF(t)
}

func TestMalformedCloses(t *testing.T) {
	for _, tt := range []struct {
		name, want string
		data       []byte
	}{
		{"not a packet", "not a 3-element array", []byte{0xc0}},
		{"unknown code", "unknown packet code 0x7777", proto.AppendPacket(nil, 0, &rawMsg{code: 0x7777, args: []byte{0x90}})},
		{"bad args", "NotifyClusterInformation", proto.AppendPacket(nil, 0, &rawMsg{code: proto.CodeNotifyClusterInformation, args: []byte{0x91, 0xc0}})},
		{"bad header", "negative", []byte{0x93, 0xff, 0x02, 0x90}},
		{"too big", "exceeds the 67108864-byte packet limit", []byte{0x93, 0x00, 0x02, 0x91, 0xc6, 0x05, 0, 0, 0}},
		{"cut", "unexpected EOF", []byte{0x93, 0x00, 0x02}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			l, p := rawPair(t)
			// A valid notification before the bad packet is still received.
			p.send(t, 0, &proto.NotifyClusterInformation{State: proto.ClusterRunning})
			call, err := l.Start(ctx, &proto.AskLastTransaction{})
			if err != nil {
				t.Fatal(err)
			}
			p.write(t, tt.data)
			if tt.name == "cut" {
				p.Conn.(*net.TCPConn).CloseWrite()
			}
			_, err = call.Wait(ctx)
			if !errors.Is(err, ErrLinkDown) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("pending ask: %v, want link down with %q", err, tt.want)
			}
			r, err := l.Recv(ctx)
			if err != nil || r.Msg.MsgCode() != proto.CodeNotifyClusterInformation {
				t.Fatalf("recv: %v %v", r, err)
			}
			_, err = l.Recv(ctx)
			if !errors.Is(err, ErrLinkDown) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("recv: %v, want link down with %q", err, tt.want)
			}
			if tt.name != "cut" {
				var merr *MalformedError
				if !errors.As(err, &merr) {
					t.Fatalf("%v is not a MalformedError", err)
				}
				p.expect(t, proto.AppendPacket(nil, 0, &proto.AskLastTransaction{}))
				p.expectEOF(t) // closed without sending an Error
			}
		})
	}
}

// rawMsg is a packet given as its encoded arguments, to send what neo/proto
// would not encode.
type rawMsg struct {
	code uint16
	args []byte
}

func (m *rawMsg) MsgCode() uint16            { return m.code }
func (m *rawMsg) AppendArgs(b []byte) []byte { return append(b, m.args...) }
func (m *rawMsg) DecodeArgs(b []byte) error  { m.args = b; return nil }

func TestCloseFailsPending(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	calls := make([]*Call, 3)
	for i := range calls {
		var err error
		if calls[i], err = c.Start(ctx, &proto.AskLastTransaction{}); err != nil {
			t.Fatal(err)
		}
	}
	// The server got them but will not answer.
	for range calls {
		if _, err := s.Recv(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sCall, err := s.Start(ctx, &proto.AskLastTransaction{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, call := range calls {
		_, err := call.Wait(ctx)
		if !errors.Is(err, ErrLinkDown) || !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrLinkDown, ErrClosed", err)
		}
	}
	_, err = sCall.Wait(ctx)
	if !errors.Is(err, ErrLinkDown) || !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("server side: got %v, want ErrLinkDown, ErrPeerClosed", err)
	}
	if _, err := c.Ask(ctx, &proto.AskLastTransaction{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("ask after close: %v", err)
	}
	if err := c.Notify(ctx, &proto.NotifyReady{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("notify after close: %v", err)
	}
}

// Packets received before the peer closed are still returned by Recv.
func TestRecvDrainsAfterPeerClose(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	for i := range 5 {
		if err := c.Notify(ctx, &proto.NotifyClusterInformation{State: proto.ClusterState(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	<-s.Done()
	for i := range 5 {
		r, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
		if st := r.Msg.(*proto.NotifyClusterInformation).State; st != proto.ClusterState(i) {
			t.Fatalf("got %v, want %v", st, proto.ClusterState(i))
		}
	}
	if _, err := s.Recv(ctx); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("got %v, want ErrPeerClosed", err)
	}
}

// A cancelled Ask leaves the link usable; its late answer is dropped.
func TestAskCancel(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	actx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Ask(actx, &proto.AskLastTransaction{})
		errc <- err
	}()
	r, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 1}) // late
	serve(t, s, func(r *Request) { r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 2}) })
	a, err := c.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil || a.(*proto.AnswerLastTransaction).Tid != 2 {
		t.Fatalf("got %v, %v", a, err)
	}
	if c.Err() != nil || c.pendingCount() != 0 {
		t.Fatalf("link: %v, %d pending", c.Err(), c.pendingCount())
	}
}

// Recv answers Pings itself, after what came before them.
func TestPingAnswered(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	var mu sync.Mutex
	var got []uint16
	serve(t, s, func(r *Request) {
		mu.Lock()
		got = append(got, r.Msg.MsgCode())
		mu.Unlock()
	})
	if _, err := c.Ask(ctx, &proto.Ping{}); err != nil {
		t.Fatal(err)
	}
	c.Notify(ctx, &proto.NotifyReady{})
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Sync's Pong came from Recv after it had returned NotifyReady, and the
	// handler ran before.
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != proto.CodeNotifyReady {
		t.Fatalf("handler got %x; Pings must not reach it", got)
	}
}

// Answers sent before a Pong are delivered when the Ping's Ask returns.
func TestPongAfterEarlierAnswers(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) { r.Reply(ctx, &proto.AnswerLastTransaction{Tid: zodb.Tid(r.MsgID)}) })
	for range 20 {
		calls := make([]*Call, 10)
		for i := range calls {
			var err error
			if calls[i], err = c.Start(ctx, &proto.AskLastTransaction{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Ask(ctx, &proto.Ping{}); err != nil {
			t.Fatal(err)
		}
		for i, call := range calls {
			select {
			case <-call.done:
				call.done <- struct{}{}
			default:
				t.Fatalf("answer %d not delivered before the Pong", i)
			}
			if _, err := call.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Sync returns only after the notifications received before the Pong were
// handled.
func TestSyncWaitsForHandling(t *testing.T) {
	// Sync, and AskSynced (the same barrier on an ordinary answer), each
	// with the notification handled in the end or the link going down
	// before.
	barriers := map[string]func(ctx context.Context, c *Link) (Msg, error){
		"Sync": func(ctx context.Context, c *Link) (Msg, error) { return nil, c.Sync(ctx) },
		"AskSynced": func(ctx context.Context, c *Link) (Msg, error) {
			return c.AskSynced(ctx, &proto.AskLastTransaction{})
		},
	}
	for name, barrier := range barriers {
		for _, down := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/down=%v", name, down), func(t *testing.T) { testBarrier(t, barrier, name == "AskSynced", down) })
		}
	}
}

func testBarrier(t *testing.T, barrier func(ctx context.Context, c *Link) (Msg, error), wantAnswer, down bool) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) {
		if r.Msg.MsgCode() == proto.CodeAskLastTransaction {
			r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 42})
		}
	})
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	var handled atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := c.Recv(ctx)
			if err != nil {
				return
			}
			if r.Msg.MsgCode() == proto.CodeNotifyClusterInformation {
				<-release
				handled.Store(true)
			}
		}
	})
	defer func() { c.Close(); releaseOnce(); wg.Wait() }()
	// s notifies, then c asks: the answer comes after the notification.
	if err := s.Notify(ctx, &proto.NotifyClusterInformation{State: proto.ClusterRunning}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		msg Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := barrier(ctx, c)
		done <- result{m, err}
	}()
	// Wait until the answer has been received: nothing is pending any more.
	for !c.pingAnswered() || !c.hasTaken(1) {
		time.Sleep(time.Millisecond)
	}
	select {
	case r := <-done:
		t.Fatalf("returned (%v) before the notification was handled", r.err)
	case <-time.After(10 * time.Millisecond):
	}
	if down {
		c.Close()
	} else {
		releaseOnce()
	}
	r := <-done
	if down {
		if r.err == nil {
			t.Fatal("the link went down before the notification was handled, and no error")
		}
		if handled.Load() {
			t.Fatal("handled")
		}
	} else {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !handled.Load() {
			t.Fatal("returned before the notification was handled")
		}
	}
	if wantAnswer {
		// AskSynced returns the answer, also with the error of a link
		// that went down after it
		if a, ok := r.msg.(*proto.AnswerLastTransaction); !ok || a.Tid != 42 {
			t.Fatalf("answer %#v", r.msg)
		}
	}
}

// pingAnswered tells that a request was sent and nothing is pending.
func (l *Link) pingAnswered() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextID > 0 && len(l.pending) == 0
}

func (l *Link) hasTaken(n uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.taken >= n
}

// Request.Abort sends its packet, then the link closes.
func TestAbort(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) {
		r.Abort(ctx, &proto.Error{Code: proto.NotReady, Message: "go away"})
	})
	_, err := c.Ask(ctx, &proto.AskLastTransaction{})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.NotReady {
		t.Fatalf("got %v, want NOT_READY", err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrPeerClosed) {
		t.Fatalf("client link: %v, want ErrPeerClosed", c.Err())
	}
	<-s.Done()
	var aerr *AbortedError
	if !errors.As(s.Err(), &aerr) {
		t.Fatalf("server link: %v, want AbortedError", s.Err())
	}
}

// A peer that sends faster than Recv takes is held back: the queue stays
// bounded, and nothing is lost.
func TestQueueBounded(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	const n, size = 48, 1 << 20 // 48 MiB, 3 times the queue limit
	data := bytes.Repeat([]byte{'x'}, size)
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := c.Notify(ctx, &proto.AddObject{Oid: zodb.Oid(i), Data: data}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// Wait for the queue to fill up.
	for s.queueCost() < queueLimit {
		time.Sleep(time.Millisecond)
	}
	for i := range n {
		if cost := s.queueCost(); cost > queueLimit+queueItemCost+size+100 {
			t.Fatalf("queue holds %d bytes", cost)
		}
		r, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a := r.Msg.(*proto.AddObject); a.Oid != zodb.Oid(i) || len(a.Data) != size {
			t.Fatalf("got oid %d (%d bytes), want %d", a.Oid, len(a.Data), i)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

func (l *Link) queueCost() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.qbytes
}

func TestBigPacket(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) {
		r.Reply(ctx, objectAnswer(r.Msg.(*proto.AskObject).Oid, 20<<20))
	})
	a, err := c.Ask(ctx, &proto.AskObject{Oid: 3, At: zodb.InvalidTid, Before: zodb.InvalidTid})
	if err != nil {
		t.Fatal(err)
	}
	if d := a.(*proto.AnswerObject).Data; len(d) != 20<<20 || d[len(d)-1] != 3 {
		t.Fatalf("got %d bytes", len(d))
	}
}

// Packets may reuse the id of a request of the peer, as replication data
// does: they reach Recv with that id, before the answer.
func TestSendWithRequestID(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	serve(t, s, func(r *Request) {
		if r.Msg.MsgCode() != proto.CodeAskLastTransaction {
			return
		}
		for i := range 3 {
			s.Send(ctx, r.MsgID, &proto.AddObject{Oid: zodb.Oid(i)})
		}
		r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 9})
	})
	c.Notify(ctx, &proto.NotifyReady{}) // takes msg id 0
	call, err := c.Start(ctx, &proto.AskLastTransaction{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r, err := c.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := r.Msg.(*proto.AddObject); !ok || a.Oid != zodb.Oid(i) || r.MsgID != call.MsgID() || r.MsgID != 1 {
			t.Fatalf("got %T %+v msg id %d, want AddObject %d msg id %d", r.Msg, r.Msg, r.MsgID, i, call.MsgID())
		}
	}
}

// SendBuffered keeps small packets until another packet is sent, or more
// than 64 KiB are buffered; order is kept.
func TestSendBuffered(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	held := make(chan []int, 1)
	serve(t, s, func(r *Request) {
		var h []int
		for i := range 4 {
			s.SendBuffered(ctx, r.MsgID, &proto.AddObject{Oid: zodb.Oid(i), Data: make([]byte, 30<<10)})
			h = append(h, s.heldBytes())
		}
		held <- h
		r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 9})
	})
	call, err := c.Start(ctx, &proto.AskLastTransaction{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// 30 KiB, then 60 KiB held; the third packet passes 64 KiB: all
	// written; the fourth is held, and goes with the answer.
	if h := <-held; h[0] == 0 || h[1] <= h[0] || h[2] != 0 || h[3] == 0 {
		t.Fatalf("bytes held after each packet: %v", h)
	}
	for i := range 4 {
		r, err := c.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a := r.Msg.(*proto.AddObject); a.Oid != zodb.Oid(i) {
			t.Fatalf("got oid %d, want %d", a.Oid, i)
		}
	}
}

func (l *Link) heldBytes() int {
	l.wsem <- struct{}{}
	defer func() { <-l.wsem }()
	return l.held
}

// Asks, notifications and replies racing with Close all return.
func TestConcurrentClose(t *testing.T) {
	for range 20 {
		ctx := testCtx(t)
		c, s := pair(t)
		serve(t, s, func(r *Request) {
			if r.Msg.MsgCode() == proto.CodeAskLastTransaction {
				go r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 1})
			}
		})
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for {
					var err error
					if i%2 == 0 {
						_, err = c.Ask(ctx, &proto.AskLastTransaction{})
					} else {
						err = c.Notify(ctx, &proto.NotifyReady{})
					}
					if err != nil {
						if !errors.Is(err, ErrLinkDown) {
							t.Errorf("got %v, want ErrLinkDown", err)
						}
						return
					}
				}
			})
		}
		wg.Go(func() { c.Close() })
		wg.Wait()
		if c.Err() == nil {
			t.Fatal("link up after Close")
		}
	}
}

// Message ids wrap at 2³², skipping ids still pending.
func TestMsgIDWrap(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	first, err := c.Start(ctx, &proto.AskLastTransaction{}) // id 0, left pending
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.nextID = 1<<32 - 1
	c.mu.Unlock()
	var ids []uint32
	for range 2 {
		call, err := c.Start(ctx, &proto.AskLastTransaction{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, call.MsgID())
	}
	if first.MsgID() != 0 || ids[0] != 1<<32-1 || ids[1] != 1 {
		t.Fatalf("ids %d, %v; want 0, [4294967295 1]", first.MsgID(), ids)
	}
	for range 3 {
		r, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r.Reply(ctx, &proto.AnswerLastTransaction{Tid: zodb.Tid(r.MsgID)})
	}
	for _, call := range []*Call{first} {
		if a, err := call.Wait(ctx); err != nil || a.(*proto.AnswerLastTransaction).Tid != 0 {
			t.Fatalf("got %v, %v", a, err)
		}
	}
}

// Nothing is left running once links and listeners are closed.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		ctx := testCtx(t)
		ln, err := Listen(ctx, "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		for range 5 {
			var sl *Link
			accepted := make(chan struct{})
			go func() {
				defer close(accepted)
				sl, _ = ln.Accept(ctx)
			}()
			c, err := Dial(ctx, ln.Addr().String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			<-accepted
			c.Notify(ctx, &proto.NotifyReady{})
			sl.Recv(ctx)
			c.Close()
			sl.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReplyAfterClose(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	c.Notify(ctx, &proto.NotifyReady{})
	r, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := r.Reply(ctx, &proto.AnswerLastTransaction{}); !errors.Is(err, ErrLinkDown) || !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
}
