package zeo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

// TestReplay plays the server side of every transcript to our client: a
// fake server accepts one connection per recorded client connection, writes
// the recorded server frames and checks every frame our client sends
// against the recording (byte for byte when the frame holds no run-dependent
// variable, value by value otherwise, binding the client-made transaction
// ids and pack times on first sight). The client is driven through the
// operations the recorded Python client made, derived from the frames it
// sent; the results our client returns are checked against the recorded
// replies, and the commit events it delivers against the invalidations and
// commits of the recording.
func TestReplay(t *testing.T) {
	for _, tr := range loadTranscripts(t) {
		t.Run(tr.file, func(t *testing.T) { replay(t, tr) })
	}
}

const replayTimeout = 10 * time.Second

func replay(t *testing.T, tr *transcript) {
	for _, f := range tr.Frames {
		if f.Method == "storeBlobShared" {
			t.Skipf("scenario %q uses storeBlobShared: our client has no blob directory shared with the server, so it never sends it", tr.Scenario)
		}
	}
	// Only connections made by ZEO's ClientStorage have a client to
	// replace; the others are raw sockets probing the server.
	clientConns := map[int]bool{}
	for _, c := range tr.Connections {
		if c.Client == "ZEO.ClientStorage.ClientStorage" {
			clientConns[c.Conn] = true
		} else {
			t.Run(fmt.Sprintf("conn%d", c.Conn), func(t *testing.T) {
				t.Skipf("connection %d (%s: %s) is a raw socket testing the server's behaviour, not a client conversation", c.Conn, c.Peer, c.Note)
			})
		}
	}
	if len(clientConns) == 0 {
		t.Skip("no connection made by a client in this scenario")
	}
	var frames []*tFrame
	for _, f := range tr.Frames {
		if clientConns[f.Conn] {
			frames = append(frames, f)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	r := &replayer{
		t:        t,
		tr:       tr,
		frames:   frames,
		byI:      map[int]*tFrame{},
		addr:     ln.Addr().String(),
		consumed: make(chan int, 1),
		peers:    map[int]*peer{},
	}
	for _, f := range tr.Frames {
		r.byI[f.I] = f
	}
	srv := &fakeServer{r: r, ln: ln, conns: map[int]*srvConn{}, bound: map[string]any{}, walkDone: make(chan struct{}), failed: make(chan struct{})}
	var srvWG sync.WaitGroup
	srvWG.Add(1)
	go func() {
		defer srvWG.Done()
		srv.walk()
	}()
	defer func() {
		srv.fail(nil)
		ln.Close()
		srv.closeAll()
		srvWG.Wait()
	}()

	defer r.shutdown()
	r.interpret(srv)

	// Everything recorded was sent; let the operations finish.
	select {
	case <-srv.walkDone:
	case <-srv.failed:
		t.Fatalf("fake server: %v", srv.err)
	case <-time.After(replayTimeout):
		t.Fatal("fake server did not finish the recording")
	}
	for _, p := range r.peerList {
		p.closeOps()
	}
	for _, p := range r.peerList {
		select {
		case <-p.workerDone:
		case <-time.After(replayTimeout):
			t.Fatalf("peer %s: operations did not finish", p.name)
		}
	}
	// The events of the recording must all arrive.
	for _, p := range r.peerList {
		p.waitEvents(t, len(p.wantEvents))
	}
	// A client the recording shows connected at its end finishes
	// connecting before it closes.
	for _, p := range r.peerList {
		if p.drv != nil && !p.lastConnCut {
			ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
			c, err := p.drv.conn(ctx)
			cancel()
			if err != nil {
				t.Errorf("peer %s: not connected at the end: %v", p.name, err)
			} else {
				// and has read all the server sent.
				want := int64(len(r.connFrames(p.lastConn, "s2c")) - 1)
				srv.mu.Lock()
				if sc := srv.conns[p.lastConn]; sc != nil {
					want += sc.idShift // replies to our extra calls
				}
				srv.mu.Unlock()
				deadline := time.Now().Add(replayTimeout)
				for c.nread.Load() < want && time.Now().Before(deadline) {
					runtime.Gosched()
				}
				if n := c.nread.Load(); n != want {
					t.Errorf("peer %s: read %d messages on its last connection, want %d", p.name, n, want)
				}
			}
		}
		p.closeAll()
	}
	// After the recording the client must send nothing more.
	srv.expectEOF()
	if srv.err != nil {
		t.Fatalf("fake server: %v", srv.err)
	}
	for _, p := range r.peerList {
		p.checkEvents(t)
	}
}

// ---- the fake server ----

type srvConn struct {
	nc net.Conn
	fr *frameReader
	// idShift is how far our client's call ids run ahead of the
	// recording on this connection, after calls the recorded client did
	// not make (see answerExtra).
	idShift int64
}

type fakeServer struct {
	r     *replayer
	ln    net.Listener
	mu    sync.Mutex
	conns map[int]*srvConn
	bound map[string]any // variables bound on first sight

	walkDone chan struct{}
	failOnce sync.Once
	failed   chan struct{}
	err      error
}

func (s *fakeServer) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.failed)
	})
}

func (s *fakeServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.nc != nil {
			c.nc.Close()
		}
	}
}

func (s *fakeServer) conn(f *tFrame) (*srvConn, error) {
	s.mu.Lock()
	c := s.conns[f.Conn]
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if f.N != 0 || f.Dir != "s2c" {
		return nil, fmt.Errorf("frame %d: connection %d not accepted", f.I, f.Conn)
	}
	s.ln.(*net.TCPListener).SetDeadline(time.Now().Add(replayTimeout))
	nc, err := s.ln.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept connection %d: %w", f.Conn, err)
	}
	c = &srvConn{nc: nc, fr: &frameReader{r: nc}}
	s.mu.Lock()
	s.conns[f.Conn] = c
	s.mu.Unlock()
	return c, nil
}

// closeEnded closes the connections the recording shows closed by the
// server side (a cut, or the server's end first) before seq.
func (s *fakeServer) closeEnded(seq int) {
	for _, tc := range s.r.tr.Connections {
		if len(tc.End) == 0 {
			continue
		}
		e := tc.End[0]
		if !(e.Type == "cut" || (e.Type == "eof" && e.Dir == "s2c")) || e.Seq >= seq {
			continue
		}
		s.mu.Lock()
		c := s.conns[tc.Conn]
		if c != nil && c.nc != nil {
			c.nc.Close()
			c.nc = nil
		}
		s.mu.Unlock()
	}
}

func (s *fakeServer) walk() {
	defer close(s.walkDone)
	for _, f := range s.r.frames {
		s.closeEnded(f.Seq)
		c, err := s.conn(f)
		if err != nil {
			s.fail(err)
			return
		}
		if c.nc == nil {
			s.fail(fmt.Errorf("frame %d: connection %d already closed", f.I, f.Conn))
			return
		}
		if f.Dir == "s2c" {
			payload, err := s.shiftID(c, f, f.payload, +1)
			if err != nil {
				s.fail(fmt.Errorf("frame %d: %w", f.I, err))
				return
			}
			if _, err := c.nc.Write(appendFrame(nil, payload)); err != nil {
				s.fail(fmt.Errorf("frame %d: write: %w", f.I, err))
				return
			}
			continue
		}
		var got []byte
		for {
			c.nc.SetReadDeadline(time.Now().Add(replayTimeout))
			got, err = c.fr.readFrame()
			if err != nil {
				s.fail(fmt.Errorf("frame %d (conn %d %s %s): read: %w", f.I, f.Conn, f.Kind, f.Text, err))
				return
			}
			if f.Kind == "handshake" || f.node == nil {
				break
			}
			if got, err = s.shiftID(c, f, got, -1); err != nil {
				s.fail(fmt.Errorf("frame %d: %w", f.I, err))
				return
			}
			if s.check(f, got) == nil {
				break
			}
			if answered, err := s.answerExtra(c, f, got); err != nil {
				s.fail(err)
				return
			} else if !answered {
				break
			}
		}
		if err := s.check(f, got); err != nil {
			s.fail(fmt.Errorf("frame %d (conn %d c2s #%d, step %d %q): %s: %w", f.I, f.Conn, f.N, f.Step, s.r.tr.Steps[f.Step].Label, f.Text, err))
			return
		}
		select {
		case s.r.consumed <- f.I:
		case <-time.After(replayTimeout):
			s.fail(fmt.Errorf("frame %d: nobody waits for it", f.I))
			return
		}
	}
	// Server-side ends after the last frame (e.g. a cut at the end).
	s.closeEnded(math.MaxInt)
}

// shiftID moves the call id of a message frame by dir*idShift.
func (s *fakeServer) shiftID(c *srvConn, f *tFrame, payload []byte, dir int64) ([]byte, error) {
	if c.idShift == 0 || f.node == nil {
		return payload, nil
	}
	cd := codecOf(f)
	v, err := cd.decode(payload)
	if err != nil {
		return nil, err
	}
	m, err := msgFromValue(v)
	if err != nil {
		return nil, err
	}
	id, ok := m.id.(int64)
	if !ok || id <= 0 {
		return payload, nil
	}
	m.id = id + dir*c.idShift
	return cd.encode(m.value())
}

// answerExtra answers a loadSerial call the recorded client did not make,
// from the data the recording shows for that revision. ZEO's client does
// not load the two revisions of a conflict it cannot resolve (it looks at
// the object's class first); ours loads them and lets the resolver refuse.
func (s *fakeServer) answerExtra(c *srvConn, f *tFrame, got []byte) (bool, error) {
	cd := codecOf(f)
	v, err := cd.decode(got)
	if err != nil {
		return false, nil
	}
	m, err := msgFromValue(v)
	if err != nil || m.method != "loadSerial" {
		return false, nil
	}
	a, _ := m.args.(tuple)
	id, ok := m.id.(int64)
	if !ok || len(a) != 2 {
		return false, nil
	}
	oid, serial := mustOid(a[0]), mustTid(a[1])
	data, ok := s.r.revisionData(oid, serial)
	if !ok {
		return false, nil
	}
	s.r.t.Logf("frame %d: our client loads %v@%v, which the recorded client did not; answered from the recording", f.I, oid, serial)
	reply, err := cd.encode(tuple{id + c.idShift, int64(0), ".reply", data}) // got was shifted down
	if err != nil {
		return false, err
	}
	if _, err := c.nc.Write(appendFrame(nil, reply)); err != nil {
		return false, err
	}
	c.idShift++
	return true, nil
}

// revisionData finds the data of oid@serial in the recording: a loadSerial
// or loadBefore reply, or what a committed transaction stored.
func (r *replayer) revisionData(oid zodb.Oid, serial zodb.Tid) ([]byte, bool) {
	stored := map[int64][]byte{} // txn → data stored for oid
	for _, f := range r.tr.Frames {
		if f.node == nil || f.Dir != "c2s" {
			continue
		}
		m := r.msgOf(f)
		a, _ := m.args.(tuple)
		rf := r.replyOf(f)
		var reply any
		if rf != nil && rf.Kind == "reply" {
			reply = r.msgOf(rf).args
		}
		switch m.method {
		case "loadSerial":
			if mustOid(a[0]) == oid && mustTid(a[1]) == serial && reply != nil {
				return reply.([]byte), true
			}
		case "loadBefore":
			if mustOid(a[0]) == oid && reply != nil {
				rv := mustItems(reply)
				if mustTid(rv[1]) == serial {
					return rv[0].([]byte), true
				}
			}
		case "storea":
			if mustOid(a[0]) == oid {
				stored[mustInt(a[3])] = a[2].([]byte)
			}
		case "tpc_finish":
			if reply != nil && mustTid(reply) == serial {
				if d, ok := stored[mustInt(a[0])]; ok {
					return d, true
				}
			}
		}
	}
	return nil, false
}

// expectEOF checks that every connection still open ends without more
// frames from the client.
func (s *fakeServer) expectEOF() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, c := range s.conns {
		if c.nc == nil {
			continue
		}
		c.nc.SetReadDeadline(time.Now().Add(replayTimeout))
		b, err := c.fr.readFrame()
		if err == nil {
			s.fail(fmt.Errorf("connection %d: unexpected frame after the recording: %q", n, b))
			return
		}
		if !errors.Is(err, io.EOF) {
			s.fail(fmt.Errorf("connection %d: after the recording: %v, want the client to close", n, err))
			return
		}
	}
}

func (s *fakeServer) check(f *tFrame, got []byte) error {
	if f.Kind == "handshake" || f.node == nil {
		if !bytes.Equal(got, f.payload) {
			return fmt.Errorf("got %q, want %q", got, f.payload)
		}
		return nil
	}
	if !f.node.hasVars() {
		if !bytes.Equal(got, f.payload) {
			v, err := codecOf(f).decode(got)
			return fmt.Errorf("bytes differ:\ngot  %x\nwant %x\ngot value %s (%v)", got, f.payload, formatValue(v), err)
		}
		return nil
	}
	v, err := codecOf(f).decode(got)
	if err != nil {
		return err
	}
	return s.match(f.node, v, f.payload, "msg")
}

// match compares a value with a typed node, binding client-made variables.
func (s *fakeServer) match(n *tnode, v any, payload []byte, path string) error {
	if n.Var != "" && (n.Kind == "txn_id" || n.Kind == "time") {
		if b, ok := s.bound[n.Var]; ok {
			if !equalValue(b, v) {
				return fmt.Errorf("%s: %s is %s here, bound to %s before", path, n.Var, formatValue(v), formatValue(b))
			}
			return nil
		}
		switch v.(type) {
		case int64, uint64:
			if n.Kind != "txn_id" {
				return fmt.Errorf("%s: %s: got int %s for a float", path, n.Var, formatValue(v))
			}
		case float64:
			if n.Kind != "time" {
				return fmt.Errorf("%s: %s: got float for a transaction id", path, n.Var)
			}
		default:
			return fmt.Errorf("%s: %s: got %s", path, n.Var, formatValue(v))
		}
		s.bound[n.Var] = v
		return nil
	}
	switch n.T {
	case "tuple", "array", "list":
		var xs []any
		switch vv := v.(type) {
		case tuple:
			if n.T == "list" {
				return fmt.Errorf("%s: got a tuple, want a list", path)
			}
			xs = vv
		case *list:
			if n.T == "tuple" {
				return fmt.Errorf("%s: got a list, want a tuple", path)
			}
			xs = vv.items
		default:
			return fmt.Errorf("%s: got %s, want a %s", path, formatValue(v), n.T)
		}
		ns := n.items()
		if len(ns) != len(xs) {
			return fmt.Errorf("%s: got %d items, want %d: %s", path, len(xs), len(ns), formatValue(v))
		}
		for i := range ns {
			if err := s.match(ns[i], xs[i], payload, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case "map":
		d, ok := v.(*dict)
		if !ok {
			return fmt.Errorf("%s: got %s, want a map", path, formatValue(v))
		}
		ps := n.pairs()
		if len(ps) != len(d.items) {
			return fmt.Errorf("%s: got %d pairs, want %d: %s", path, len(d.items), len(ps), formatValue(v))
		}
		for i, p := range ps {
			if err := s.match(p[0], d.items[i].k, payload, fmt.Sprintf("%s.key%d", path, i)); err != nil {
				return err
			}
			if err := s.match(p[1], d.items[i].v, payload, fmt.Sprintf("%s[%s]", path, formatValue(d.items[i].k))); err != nil {
				return err
			}
		}
		return nil
	}
	want, err := n.value(payload)
	if err != nil {
		return err
	}
	if !equalValue(v, want) {
		return fmt.Errorf("%s: got %s, want %s", path, formatValue(v), formatValue(want))
	}
	return nil
}

// ---- the client side ----

type replayer struct {
	t        *testing.T
	tr       *transcript
	frames   []*tFrame
	byI      map[int]*tFrame
	addr     string
	consumed chan int
	peers    map[int]*peer // by connection
	peerList []*peer
}

// peer is one recorded client, played by one of our Storages.
type peer struct {
	r    *replayer
	name string

	ops        chan func()
	opsOnce    sync.Once
	workerDone chan struct{}
	closeOnce  sync.Once

	// used by the worker only
	drv         *Storage
	txns        map[int64]zodb.ITxn
	iters       map[int64]zodb.ITxnIterator
	dataIters   map[int64]zodb.IDataIterator // by transaction iterator id
	resolutions map[zodb.Oid][]byte

	evch    chan zodb.Event
	evStop  chan struct{}
	evWG    sync.WaitGroup
	evMu    sync.Mutex
	events  []zodb.Event
	evMoved chan struct{}

	// derived from the frames, used by the interpreter only
	wantEvents  []wantEvent
	begun       map[int64]bool
	voting      map[int64]bool
	iterIDs     map[int64]bool  // transaction iterator ids
	ridOf       map[int64]int64 // record iterator id → transaction iterator id
	followNext  bool            // iterator_start sends its first iterator_next
	followRec   bool            // iterator_record_start sends its first record_next
	lastConn    int
	lastConnCut bool // the peer's last connection was cut by the server
}

type wantEvent struct {
	tid      zodb.Tid
	oids     []zodb.Oid
	errEvent bool
	what     string
}

func (r *replayer) newPeer(name string) *peer {
	p := &peer{
		r: r, name: name,
		ops:         make(chan func(), 64),
		workerDone:  make(chan struct{}),
		txns:        map[int64]zodb.ITxn{},
		iters:       map[int64]zodb.ITxnIterator{},
		dataIters:   map[int64]zodb.IDataIterator{},
		resolutions: map[zodb.Oid][]byte{},
		evch:        make(chan zodb.Event),
		evStop:      make(chan struct{}),
		evMoved:     make(chan struct{}),
		begun:       map[int64]bool{},
		voting:      map[int64]bool{},
		iterIDs:     map[int64]bool{},
		ridOf:       map[int64]int64{},
	}
	go func() {
		defer close(p.workerDone)
		for op := range p.ops {
			op()
		}
	}()
	p.evWG.Add(1)
	go func() {
		defer p.evWG.Done()
		for {
			select {
			case ev := <-p.evch:
				p.evMu.Lock()
				p.events = append(p.events, ev)
				close(p.evMoved)
				p.evMoved = make(chan struct{})
				p.evMu.Unlock()
			case <-p.evStop:
				return
			}
		}
	}()
	r.peerList = append(r.peerList, p)
	return p
}

func (p *peer) closeOps() { p.opsOnce.Do(func() { close(p.ops) }) }

// closeAll closes the peer's storage and stops collecting its events.
func (p *peer) closeAll() {
	p.closeOnce.Do(func() {
		<-p.workerDone
		if p.drv != nil {
			p.drv.Close()
		}
		close(p.evStop)
		p.evWG.Wait()
	})
}

// shutdown ends every peer, also when the test failed midway.
func (r *replayer) shutdown() {
	for _, p := range r.peerList {
		p.closeOps()
	}
	// Operations blocked on the network end when the storages close;
	// the storages are set by the workers, so close them once the
	// workers are done or, for a stuck worker, through the listener
	// and connections the fake server closes.
	for _, p := range r.peerList {
		p.closeAll()
	}
}

func (p *peer) waitEvents(t *testing.T, n int) {
	deadline := time.After(replayTimeout)
	for {
		p.evMu.Lock()
		got, ch := len(p.events), p.evMoved
		p.evMu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Errorf("peer %s: %d events delivered, want %d", p.name, got, n)
			return
		}
	}
}

func (p *peer) checkEvents(t *testing.T) {
	p.evMu.Lock()
	defer p.evMu.Unlock()
	if len(p.events) != len(p.wantEvents) {
		t.Errorf("peer %s: %d events, want %d", p.name, len(p.events), len(p.wantEvents))
	}
	for i := range min(len(p.events), len(p.wantEvents)) {
		w := p.wantEvents[i]
		switch ev := p.events[i].(type) {
		case *zodb.EventError:
			if !w.errEvent {
				t.Errorf("peer %s: event %d: %v, want commit %v (%s)", p.name, i, ev, w.tid, w.what)
			}
		case *zodb.CommitEvent:
			got := slices.Sorted(slices.Values(ev.Changed))
			want := slices.Sorted(slices.Values(w.oids))
			if w.errEvent || ev.Tid != w.tid || !slices.Equal(got, want) {
				t.Errorf("peer %s: event %d: commit %v %v, want %v %v (%s; error event %v)", p.name, i, ev.Tid, got, w.tid, want, w.what, w.errEvent)
			}
		}
	}
}

// value of a frame's message, decoded from the recording.
func (r *replayer) msgOf(f *tFrame) *msg {
	v, err := f.node.value(f.payload)
	if err != nil {
		panic(fmt.Sprintf("frame %d: %v", f.I, err))
	}
	m, err := msgFromValue(v)
	if err != nil {
		panic(fmt.Sprintf("frame %d: %v", f.I, err))
	}
	return m
}

func (r *replayer) replyOf(f *tFrame) *tFrame {
	if f.Reply == nil {
		return nil
	}
	return r.byI[*f.Reply]
}

// connFrames returns the frames of f's connection in one direction.
func (r *replayer) connFrames(conn int, dir string) []*tFrame {
	var out []*tFrame
	for _, f := range r.tr.byConn[conn] {
		if f.Dir == dir {
			out = append(out, f)
		}
	}
	return out
}

func (r *replayer) nextC2S(f *tFrame) *tFrame {
	for _, g := range r.connFrames(f.Conn, "c2s") {
		if g.N == f.N+1 {
			return g
		}
	}
	return nil
}

func mustTid(v any) zodb.Tid {
	tid, err := tidArg(v)
	if err != nil {
		panic(err)
	}
	return tid
}

func mustOid(v any) zodb.Oid {
	oid, err := oidArg(v)
	if err != nil {
		panic(err)
	}
	return oid
}

func mustInt(v any) int64 {
	i, ok := intArg(v)
	if !ok {
		panic(fmt.Sprintf("not an int: %s", formatValue(v)))
	}
	return i
}

// interpret walks the recorded frames: it starts the operation that made
// each client frame (or notes that our client sends it by itself, as part
// of an operation already started) and waits for the fake server to have
// checked it.
func (r *replayer) interpret(srv *fakeServer) {
	t := r.t
	for _, f := range r.frames {
		tc := r.tr.Connections[f.Conn-1]
		p := r.peers[f.Conn]
		if p == nil {
			if tc.Note == "reconnection" {
				for i := len(r.peerList) - 1; i >= 0; i-- {
					if r.peerList[i].name == tc.Peer {
						p = r.peerList[i]
						break
					}
				}
			}
			if p == nil {
				p = r.newPeer(tc.Peer)
				r.deriveEvents(p, f.Conn)
				p.ops <- r.openOp(p, f.Conn)
			} else {
				r.deriveEvents(p, f.Conn)
			}
			r.peers[f.Conn] = p
			p.lastConnCut = len(tc.End) > 0 && tc.End[0].Type == "cut"
			p.lastConn = f.Conn
		}
		if f.Dir != "c2s" {
			continue
		}
		if f.Kind != "handshake" {
			if op := r.classify(p, f); op != nil {
				p.ops <- op
			}
		}
		select {
		case i := <-r.consumed:
			if i != f.I {
				t.Fatalf("server consumed frame %d, expected %d", i, f.I)
			}
		case <-srv.failed:
			t.Fatalf("fake server: %v", srv.err)
		case <-time.After(replayTimeout):
			t.Fatalf("frame %d (conn %d, step %d %q: %s) was not sent by our client", f.I, f.Conn, f.Step, r.tr.Steps[f.Step].Label, f.Text)
		}
	}
}

// deriveEvents appends the events the recording implies for the peer on
// one of its connections: invalidations from the server, its own commits,
// and what verification found after a reconnection.
func (r *replayer) deriveEvents(p *peer, conn int) {
	changed := map[int64][]zodb.Oid{}
	add := func(txn int64, oid zodb.Oid) {
		if !slices.Contains(changed[txn], oid) {
			changed[txn] = append(changed[txn], oid)
		}
	}
	var fs []*tFrame
	for _, f := range r.tr.Frames {
		if f.Conn == conn {
			fs = append(fs, f)
		}
	}
	for _, f := range fs {
		if f.node == nil {
			continue
		}
		m := r.msgOf(f)
		a, _ := m.args.(tuple)
		switch {
		case f.Dir == "s2c" && m.method == "invalidateTransaction":
			oids, _ := oidList(a[1])
			p.wantEvents = append(p.wantEvents, wantEvent{tid: mustTid(a[0]), oids: oids, what: "invalidateTransaction"})
		case f.Dir == "c2s" && (m.method == "storea" || m.method == "deleteObject"):
			add(mustInt(a[len(a)-1]), mustOid(a[0]))
		case f.Dir == "c2s" && m.method == "restorea":
			add(mustInt(a[4]), mustOid(a[0]))
		case f.Dir == "c2s" && m.method == "vote" && len(a) == 1:
			if rf := r.replyOf(f); rf != nil && rf.Kind == "reply" {
				for _, x := range mustItems(r.msgOf(rf).args) {
					if b, ok := x.([]byte); ok {
						add(mustInt(a[0]), mustOid(b))
					}
				}
			}
		case f.Dir == "c2s" && m.method == "tpc_finish":
			if rf := r.replyOf(f); rf != nil && rf.Kind == "reply" {
				tid := mustTid(r.msgOf(rf).args)
				p.wantEvents = append(p.wantEvents, wantEvent{tid: tid, oids: changed[mustInt(a[0])], what: "own commit"})
			}
		case f.Dir == "c2s" && m.method == "getInvalidations":
			if rf := r.replyOf(f); rf != nil && rf.Kind == "reply" {
				rv := r.msgOf(rf).args
				if rv == nil {
					p.wantEvents = append(p.wantEvents, wantEvent{errEvent: true, what: "getInvalidations -> None"})
				} else {
					t := mustItems(rv)
					oids, _ := oidList(t[1])
					p.wantEvents = append(p.wantEvents, wantEvent{tid: mustTid(t[0]), oids: oids, what: "getInvalidations"})
				}
			}
		}
	}
}

func mustItems(v any) []any {
	xs, ok := items(v)
	if !ok {
		panic(fmt.Sprintf("not a sequence: %s", formatValue(v)))
	}
	return xs
}

// openOp opens the peer's Storage as the recorded client connected: storage
// name and read-only flag from register, label from set_client_label.
func (r *replayer) openOp(p *peer, conn int) func() {
	c2s := r.connFrames(conn, "c2s")
	name, readOnly, label := "1", false, ""
	succeeds := false
	for _, f := range c2s {
		if f.node == nil {
			continue
		}
		m := r.msgOf(f)
		a, _ := m.args.(tuple)
		switch m.method {
		case "register":
			name = a[0].(string)
			readOnly = a[1] == true
		case "set_client_label":
			label = a[0].(string)
		case "get_info":
			if rf := r.replyOf(f); rf != nil && rf.Kind == "reply" {
				succeeds = true
			}
		}
	}
	u := "zeo://" + r.addr + "?storage=" + url.QueryEscape(name)
	if label != "" {
		u += "&client_label=" + url.QueryEscape(label)
	}
	return func() {
		t := r.t
		pu, err := url.Parse(u)
		if err != nil {
			t.Errorf("%s: %v", u, err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
		defer cancel()
		resolver := func(ctx context.Context, oid zodb.Oid, old, committed, new []byte) ([]byte, error) {
			if old == nil || committed == nil {
				return nil, fmt.Errorf("resolver called without old/committed data")
			}
			if d, ok := p.resolutions[oid]; ok {
				return d, nil
			}
			return nil, errors.New("not resolvable (as recorded)")
		}
		drv, _, err := open(ctx, pu, &zodb.DriverOptions{ReadOnly: readOnly, Watchq: p.evch, Resolver: resolver})
		if !succeeds {
			if err == nil {
				t.Errorf("peer %s: open succeeded; the recorded client failed to connect", p.name)
				drv.Close()
			} else {
				t.Logf("peer %s: open failed as recorded: %v", p.name, err)
			}
			return
		}
		if err != nil {
			t.Errorf("peer %s: open: %v", p.name, err)
			return
		}
		p.drv = drv.(*Storage)
	}
}

// errClass maps a recorded error class to the Go error our client must
// return.
func checkErr(t *testing.T, what string, err error, r *replayer, rf *tFrame) {
	t.Helper()
	if rf == nil {
		t.Errorf("%s: no recorded reply", what)
		return
	}
	if rf.Kind != "error" {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	cls := mustItems(r.msgOf(rf).args)[0].(string)
	if err == nil {
		t.Errorf("%s: no error, want %s", what, cls)
		return
	}
	ok := false
	switch strings.TrimPrefix(cls, posException) {
	case "POSKeyError":
		var e *zodb.NoObjectError
		ok = errors.As(err, &e)
	case "ConflictError":
		var e *zodb.ConflictError
		ok = errors.As(err, &e) && e.Oid != zodb.InvalidOid && e.CommittedSerial != 0 && e.ReadSerial != 0
	case "ReadConflictError":
		var e *zodb.ReadConflictError
		ok = errors.As(err, &e) && e.Oid != zodb.InvalidOid && e.CommittedSerial != 0 && e.ReadSerial != 0
	case "MultipleUndoErrors", "UndoError":
		var e *zodb.UndoError
		ok = errors.As(err, &e) && e.Reason != ""
	case "StorageTransactionError":
		var e *zodb.TransactionError
		ok = errors.As(err, &e)
	default:
		var e *ServerError
		ok = errors.As(err, &e) && e.Class == cls
	}
	if !ok {
		t.Errorf("%s: error %v (%T) does not match the recorded %s", what, err, err, cls)
	}
}

// classify returns the operation that makes frame f, or nil when our
// client sends f by itself within an operation already started.
func (r *replayer) classify(p *peer, f *tFrame) func() {
	t := r.t
	m := r.msgOf(f)
	a, _ := m.args.(tuple)
	rf := r.replyOf(f)
	what := fmt.Sprintf("peer %s frame %d (%s)", p.name, f.I, f.Text)
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), replayTimeout)
	}
	var reply any
	if rf != nil {
		reply = r.msgOf(rf).args
	}
	okReply := rf != nil && rf.Kind == "reply"

	if f.Kind == "heartbeat" {
		return func() {
			c, cancel := ctx()
			defer cancel()
			if err := p.drv.heartbeat(c); err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	}
	switch m.method {
	case "register", "get_info", "set_client_label", "getInvalidations", "iterator_gc":
		return nil // sent by the client itself
	case "storeBlobStart", "storeBlobChunk", "storeBlobEnd":
		return nil // sent by StoreBlob, started at the storea before
	}

	// Frames our client sends within an operation started before.
	txnOf := func() int64 { return mustInt(a[len(a)-1]) }
	switch m.method {
	case "vote":
		if p.voting[txnOf()] {
			return nil
		}
	case "storea":
		if p.voting[txnOf()] {
			return nil
		}
	case "loadSerial":
		for _, v := range p.voting {
			if v {
				return nil
			}
		}
	case "iterator_next":
		if p.followNext {
			p.followNext = false
			if okReply && reply == nil {
				delete(p.iterIDs, mustInt(a[0]))
			}
			return nil
		}
	case "iterator_record_next":
		if p.followRec {
			p.followRec = false
			return nil
		}
	}

	switch m.method {
	case "ping":
		return func() {
			c, cancel := ctx()
			defer cancel()
			checkErr(t, what, p.drv.ping(c), r, rf)
		}
	case "new_oids":
		return func() {
			c, cancel := ctx()
			defer cancel()
			oids, err := p.drv.NewOids(c, 1)
			want, _ := oidList(reply)
			if err != nil || len(oids) != 1 || oids[0] != slices.Min(want) {
				t.Errorf("%s: NewOids = %v, %v; want [%v]", what, oids, err, slices.Min(want))
			}
		}
	case "tpc_begin":
		id := mustInt(a[0])
		p.begun[id] = true
		ext, _ := a[3].(*dict)
		meta := zodb.TxnMeta{User: a[1].([]byte), Description: a[2].([]byte)}
		meta.Extension, _ = encodeExtension(ext)
		if a[4] != nil {
			meta.Tid = mustTid(a[4])
		}
		if s := a[5].(string); s != " " {
			meta.Status = zodb.TxnStatus(s[0])
		}
		return func() {
			c, cancel := ctx()
			defer cancel()
			txn, err := p.drv.Begin(c, meta)
			if err != nil {
				t.Errorf("%s: Begin: %v", what, err)
				return
			}
			p.txns[id] = txn
		}
	case "storea", "checkCurrentSerialInTransaction", "deleteObject", "restorea", "undoa":
		id := txnOf()
		if m.method == "storea" {
			if op := r.storeBlobOp(p, f, what); op != nil {
				return op
			}
		}
		return func() {
			c, cancel := ctx()
			defer cancel()
			txn := p.txns[id]
			if txn == nil {
				t.Errorf("%s: no transaction", what)
				return
			}
			var err error
			switch m.method {
			case "storea":
				err = txn.Store(c, mustOid(a[0]), mustTid(a[1]), a[2].([]byte))
			case "checkCurrentSerialInTransaction":
				err = txn.CheckCurrentSerial(c, mustOid(a[0]), mustTid(a[1]))
			case "deleteObject":
				err = txn.Delete(c, mustOid(a[0]), mustTid(a[1]))
			case "restorea":
				var data []byte
				if a[2] != nil {
					data = a[2].([]byte)
				}
				var prev zodb.Tid
				if a[3] != nil {
					prev = mustTid(a[3])
				}
				err = txn.Restore(c, mustOid(a[0]), data, prev)
			case "undoa":
				var tid zodb.Tid
				if tid, err = tidFromUndoID(a[0]); err == nil {
					_, err = txn.Undo(c, tid)
				}
			}
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	case "vote":
		id := txnOf()
		if !p.begun[id] {
			break // a raw call, below
		}
		p.voting[id] = true
		// What the recorded client resolved, and the final vote's reply.
		resolutions := map[zodb.Oid][]byte{}
		var resolved []zodb.Oid
		final := rf
		for _, g := range r.connFrames(f.Conn, "c2s") {
			if g.N <= f.N || g.node == nil {
				continue
			}
			gm := r.msgOf(g)
			ga, _ := gm.args.(tuple)
			if gm.method == "tpc_finish" || gm.method == "tpc_abort" {
				break
			}
			if gm.method == "storea" && mustInt(ga[3]) == id {
				resolutions[mustOid(ga[0])] = ga[2].([]byte)
				resolved = append(resolved, mustOid(ga[0]))
			}
			if gm.method == "vote" && mustInt(ga[0]) == id {
				final = r.replyOf(g)
			}
		}
		return func() {
			c, cancel := ctx()
			defer cancel()
			txn := p.txns[id]
			if txn == nil {
				t.Errorf("%s: no transaction", what)
				return
			}
			p.resolutions = resolutions
			got, err := txn.Vote(c)
			// A conflict handed back to the client that the recorded
			// client did not resolve fails the vote on the client.
			if final != nil && final.Kind == "reply" {
				for _, x := range mustItems(r.msgOf(final).args) {
					d, ok := x.(*dict)
					if !ok {
						continue
					}
					ov, _ := d.get("oid")
					sv, _ := d.get("serials")
					ss := mustItems(sv)
					want := &zodb.ConflictError{Oid: mustOid(ov), CommittedSerial: mustTid(ss[0]), ReadSerial: mustTid(ss[1])}
					var e *zodb.ConflictError
					if !errors.As(err, &e) || e.Oid != want.Oid || e.CommittedSerial != want.CommittedSerial || e.ReadSerial != want.ReadSerial {
						t.Errorf("%s: Vote: %v, want %v", what, err, want)
					}
					return
				}
			}
			checkErr(t, what, err, r, final)
			if err == nil && final != nil && final.Kind == "reply" {
				want := slices.Clone(resolved)
				for _, x := range mustItems(r.msgOf(final).args) {
					if b, ok := x.([]byte); ok {
						want = append(want, mustOid(b))
					}
				}
				if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
					t.Errorf("%s: Vote = %v, want %v", what, got, want)
				}
			}
		}
	case "tpc_finish", "tpc_abort":
		id := txnOf()
		delete(p.voting, id)
		// Iterators the recorded client dropped are released after this.
		var dropped []int64
		if g := r.nextC2S(f); g != nil && g.node != nil && r.msgOf(g).method == "iterator_gc" {
			for _, x := range mustItems(mustItems(r.msgOf(g).args)[0]) {
				if id := mustInt(x); p.iterIDs[id] {
					dropped = append(dropped, id)
					delete(p.iterIDs, id)
				}
			}
		}
		return func() {
			c, cancel := ctx()
			defer cancel()
			p.dropIterators(t, dropped)
			txn := p.txns[id]
			if txn == nil {
				t.Errorf("%s: no transaction", what)
				return
			}
			if m.method == "tpc_abort" {
				checkErr(t, what, txn.Abort(c), r, rf)
				return
			}
			tid, err := txn.Finish(c)
			checkErr(t, what, err, r, rf)
			if okReply && tid != mustTid(reply) {
				t.Errorf("%s: Finish = %v, want %s", what, tid, formatValue(reply))
			}
		}
	case "loadBefore":
		oid, before := mustOid(a[0]), mustTid(a[1])
		at := zodb.TidMax
		if before != zodb.TidMax {
			at = before - 1
		}
		return func() {
			c, cancel := ctx()
			defer cancel()
			data, serial, next, err := p.drv.Load(c, zodb.Xid{Oid: oid, At: at})
			if okReply && reply == nil {
				var e *zodb.NoDataError
				if !errors.As(err, &e) {
					t.Errorf("%s: Load: %v, want NoDataError", what, err)
				}
				return
			}
			checkErr(t, what, err, r, rf)
			if okReply {
				rv := mustItems(reply)
				wantNext, _ := optTid(rv[2])
				if !bytes.Equal(data, rv[0].([]byte)) || serial != mustTid(rv[1]) || next != wantNext {
					t.Errorf("%s: Load = %q %v %v, want %s", what, data, serial, next, formatValue(reply))
				}
			}
		}
	case "sendBlob":
		return r.loadBlobOp(p, f, what)
	case "loadSerial":
		return func() {
			c, cancel := ctx()
			defer cancel()
			data, err := p.drv.loadSerial(c, mustOid(a[0]), mustTid(a[1]))
			checkErr(t, what, err, r, rf)
			if okReply && !bytes.Equal(data, reply.([]byte)) {
				t.Errorf("%s: loadSerial = %q", what, data)
			}
		}
	case "history":
		return func() {
			c, cancel := ctx()
			defer cancel()
			h, err := p.drv.History(c, mustOid(a[0]), int(mustInt(a[1])))
			checkErr(t, what, err, r, rf)
			if okReply {
				var want []zodb.Tid
				for _, x := range mustItems(reply) {
					tv, _ := x.(*dict).get("tid")
					want = append(want, mustTid(tv))
				}
				var got []zodb.Tid
				for _, e := range h {
					got = append(got, e.Tid)
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s: History tids %v, want %v", what, got, want)
				}
			}
		}
	case "undoLog":
		return func() {
			c, cancel := ctx()
			defer cancel()
			u, err := p.drv.UndoLog(c, int(mustInt(a[0])), int(mustInt(a[1])), nil)
			checkErr(t, what, err, r, rf)
			if okReply {
				checkUndo(t, what, u, reply)
			}
		}
	case "undoInfo":
		return func() {
			c, cancel := ctx()
			defer cancel()
			spec, _ := a[2].(*dict)
			u, err := p.drv.undoInfo(c, int(mustInt(a[0])), int(mustInt(a[1])), spec)
			checkErr(t, what, err, r, rf)
			if okReply {
				checkUndo(t, what, u, reply)
			}
		}
	case "pack":
		wait := a[1] == true
		return func() {
			c, cancel := ctx()
			defer cancel()
			var err error
			if wait {
				err = p.drv.Pack(c, zodb.TidFromTime(time.Now()), true)
			} else {
				err = p.drv.pack(c, float64(time.Now().UnixNano())/1e9, false)
			}
			checkErr(t, what, err, r, rf)
		}
	case "iterator_start":
		p.followNext = true
		var iid int64 = -1
		if okReply {
			iid = mustInt(reply)
			p.iterIDs[iid] = true
		}
		var tmin, tmax zodb.Tid = 0, zodb.TidMax
		if a[0] != nil {
			tmin = mustTid(a[0])
		}
		if a[1] != nil {
			tmax = mustTid(a[1])
		}
		next := r.nextC2S(f)
		return func() {
			c, cancel := ctx()
			defer cancel()
			it := p.drv.Iterate(c, tmin, tmax)
			p.iters[iid] = it
			p.nextTxn(t, what, it, iid, r, next)
		}
	case "iterator_next":
		iid := mustInt(a[0])
		if !p.iterIDs[iid] {
			break // unknown to the client: a raw call, below
		}
		if okReply && reply == nil {
			delete(p.iterIDs, iid)
		}
		return func() {
			p.nextTxn(t, what, p.iters[iid], iid, r, f)
		}
	case "iterator_record_start":
		iid := mustInt(a[0])
		p.followRec = true
		next := r.nextC2S(f)
		if okReply {
			p.ridOf[mustInt(reply)] = iid
		}
		return func() {
			p.nextData(t, what, iid, r, next)
		}
	case "iterator_record_next":
		iid, ok := p.ridOf[mustInt(a[0])]
		if !ok {
			break
		}
		return func() {
			p.nextData(t, what, iid, r, f)
		}
	}

	// A server method the zodb API has no operation for: a raw call.
	return func() {
		c, cancel := ctx()
		defer cancel()
		got, err := p.drv.call(c, m.method, []any(a)...)
		checkErr(t, what, err, r, rf)
		if okReply && !equalValue(got, reply) {
			t.Errorf("%s: reply %s, want %s", what, formatValue(got), formatValue(reply))
		}
	}
}

func checkUndo(t *testing.T, what string, got []zodb.UndoInfo, reply any) {
	var want []zodb.Tid
	for _, x := range mustItems(reply) {
		idv, _ := x.(*dict).get("id")
		tid, err := tidFromUndoID(idv)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		want = append(want, tid)
	}
	var gt []zodb.Tid
	for _, u := range got {
		gt = append(gt, u.Tid)
	}
	if !slices.Equal(gt, want) {
		t.Errorf("%s: undo log %v, want %v", what, gt, want)
	}
}

// nextTxn calls NextTxn and checks it against the reply to frame f (an
// iterator_next call).
func (p *peer) nextTxn(t *testing.T, what string, it zodb.ITxnIterator, iid int64, r *replayer, f *tFrame) {
	ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
	defer cancel()
	if it == nil {
		t.Errorf("%s: no iterator %d", what, iid)
		return
	}
	info, di, err := it.NextTxn(ctx)
	rf := r.replyOf(f)
	if rf == nil || rf.Kind != "reply" {
		checkErr(t, what, err, r, rf)
		return
	}
	reply := r.msgOf(rf).args
	if reply == nil {
		if err != io.EOF {
			t.Errorf("%s: NextTxn: %v, want EOF", what, err)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: NextTxn: %v", what, err)
		return
	}
	rv := mustItems(reply)
	ext, _ := rv[4].(*dict)
	wantExt, _ := encodeExtension(ext)
	if info.Tid != mustTid(rv[0]) || !bytes.Equal(info.User, rv[2].([]byte)) || !bytes.Equal(info.Description, rv[3].([]byte)) || !bytes.Equal(info.Extension, wantExt) {
		t.Errorf("%s: NextTxn = %+v, want %s", what, info, formatValue(reply))
	}
	p.dataIters[iid] = di
}

// nextData calls NextData on the current record iterator of transaction
// iterator iid and checks it against the reply to frame f.
func (p *peer) nextData(t *testing.T, what string, iid int64, r *replayer, f *tFrame) {
	ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
	defer cancel()
	di := p.dataIters[iid]
	if di == nil {
		t.Errorf("%s: no record iterator for iterator %d", what, iid)
		return
	}
	rec, err := di.NextData(ctx)
	rf := r.replyOf(f)
	if rf == nil || rf.Kind != "reply" {
		checkErr(t, what, err, r, rf)
		return
	}
	reply := r.msgOf(rf).args
	if reply == nil {
		if err != io.EOF {
			t.Errorf("%s: NextData: %v, want EOF", what, err)
		}
		return
	}
	if err != nil {
		t.Errorf("%s: NextData: %v", what, err)
		return
	}
	rv := mustItems(reply)
	var data []byte
	if rv[2] != nil {
		data = rv[2].([]byte)
	}
	dataTid, _ := optTid(rv[3])
	if rec.Oid != mustOid(rv[0]) || rec.Tid != mustTid(rv[1]) || !bytes.Equal(rec.Data, data) || rec.DataTid != dataTid {
		t.Errorf("%s: NextData = %+v, want %s", what, rec, formatValue(reply))
	}
}

// dropIterators forgets transaction iterators as the recorded client did,
// and waits until our client noticed (its cleanup queues their release).
func (p *peer) dropIterators(t *testing.T, ids []int64) {
	if len(ids) == 0 {
		return
	}
	for _, id := range ids {
		delete(p.iters, id)
		delete(p.dataIters, id)
	}
	deadline := time.Now().Add(replayTimeout)
	for {
		runtime.GC()
		p.drv.mu.Lock()
		pending := slices.Clone(p.drv.iterGC)
		p.drv.mu.Unlock()
		all := true
		for _, id := range ids {
			if !slices.Contains(pending, id) {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("peer %s: dropped iterators %v not released (pending %v)", p.name, ids, pending)
			return
		}
		runtime.Gosched()
	}
}

// storeBlobOp returns, for a storea that the recorded client followed with
// storeBlobStart, the StoreBlob that sends it all: the record of the
// storea, the content of the storeBlobChunks; storeBlobEnd must repeat the
// storea's arguments. It returns nil for a plain storea.
func (r *replayer) storeBlobOp(p *peer, f *tFrame, what string) func() {
	t := r.t
	var rest []*tFrame
	for _, g := range r.connFrames(f.Conn, "c2s") {
		if g.N > f.N && g.node != nil {
			rest = append(rest, g)
		}
	}
	if len(rest) == 0 || r.msgOf(rest[0]).method != "storeBlobStart" {
		return nil
	}
	a := r.msgOf(f).args.(tuple)
	var blob []byte
	ended := false
	for _, g := range rest[1:] {
		gm := r.msgOf(g)
		ga, _ := gm.args.(tuple)
		if gm.method == "storeBlobChunk" {
			if len(ga) != 1 {
				t.Fatalf("frame %d: storeBlobChunk with %d arguments", g.I, len(ga))
			}
			blob = append(blob, ga[0].([]byte)...)
			continue
		}
		if gm.method != "storeBlobEnd" || !equalValue(ga, a) {
			t.Fatalf("frame %d: after the chunks of the blob stored at frame %d comes %s; want storeBlobEnd with the storea's arguments", g.I, f.I, g.Text)
		}
		ended = true
		break
	}
	if !ended {
		t.Fatalf("frame %d: the blob upload has no storeBlobEnd", f.I)
	}
	id := mustInt(a[3])
	oid, serial, data := mustOid(a[0]), mustTid(a[1]), a[2].([]byte)
	return func() {
		c, cancel := context.WithTimeout(context.Background(), replayTimeout)
		defer cancel()
		txn := p.txns[id]
		if txn == nil {
			t.Errorf("%s: no transaction", what)
			return
		}
		btxn, ok := txn.(zodb.IBlobTxn)
		if !ok {
			t.Errorf("%s: the transaction (%T) does not implement zodb.IBlobTxn", what, txn)
			return
		}
		// An io.Reader that returns short reads, so that the chunks
		// are cut by our client, not by the reader.
		if err := btxn.StoreBlob(c, oid, serial, data, &trickle{b: blob, n: 1000}); err != nil {
			t.Errorf("%s: StoreBlob: %v", what, err)
		}
	}
}

// trickle reads at most n bytes at a time.
type trickle struct {
	b []byte
	n int
}

func (tr *trickle) Read(p []byte) (int, error) {
	if len(tr.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), tr.n)], tr.b)
	tr.b = tr.b[k:]
	return k, nil
}

// loadBlobOp returns LoadBlob for a sendBlob frame; the content must be
// what the recorded server streamed (receiveBlobChunk) before its reply.
func (r *replayer) loadBlobOp(p *peer, f *tFrame, what string) func() {
	t := r.t
	a := r.msgOf(f).args.(tuple)
	oid, serial := mustOid(a[0]), mustTid(a[1])
	rf := r.replyOf(f)
	var want []byte
	if rf != nil {
		for _, g := range r.connFrames(f.Conn, "s2c") {
			if g.I < f.I || g.I > rf.I || g.node == nil {
				continue
			}
			gm := r.msgOf(g)
			ga, _ := gm.args.(tuple)
			if gm.method == "receiveBlobChunk" && equalValue(ga[0], a[0]) && equalValue(ga[1], a[1]) {
				want = append(want, ga[2].([]byte)...)
			}
		}
	}
	return func() {
		c, cancel := context.WithTimeout(context.Background(), replayTimeout)
		defer cancel()
		var bl zodb.IBlobLoader = p.drv
		rc, err := bl.LoadBlob(c, oid, serial)
		if rf != nil && rf.Kind == "error" && strings.HasSuffix(mustItems(r.msgOf(rf).args)[0].(string), ".POSKeyError") {
			var e *zodb.NoBlobError
			if !errors.As(err, &e) || e.Oid != oid || e.Serial != serial {
				t.Errorf("%s: LoadBlob: %v, want NoBlobError", what, err)
			}
			return
		}
		checkErr(t, what, err, r, rf)
		if err != nil {
			return
		}
		got, err := io.ReadAll(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Errorf("%s: read the blob: %v", what, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: LoadBlob gave %d bytes, want the %d bytes the server sent", what, len(got), len(want))
		}
	}
}
