package neonet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// Errors describing why a link went down. Every error returned by a link
// that is down wraps ErrLinkDown and the cause, e.g. ErrClosed, ErrPeerClosed,
// a *MalformedError or the socket error.
var (
	ErrLinkDown   = errors.New("link down")
	ErrClosed     = errors.New("closed locally")
	ErrPeerClosed = errors.New("connection closed by peer")
)

// ProtocolError is what a link reports when the peer broke the request /
// answer rules (e.g. an answer to no pending request). Like NEO/py, the
// link answers with Error(PROTOCOL_ERROR) and aborts.
type ProtocolError struct {
	What  string
	msgID uint32 // id of the offending packet, used for the Error answer
}

func (e *ProtocolError) Error() string { return "protocol error: " + e.What }

// AbortedError is the cause of a link taken down by Request.Abort.
type AbortedError struct {
	Sent string // the packet sent before closing
}

func (e *AbortedError) Error() string { return "aborted after sending " + e.Sent }

const (
	// readBufSize is the size of a read: NEO/py reads 64 KiB at a time.
	readBufSize = 64 << 10
	// queueLimit bounds the bytes of received requests and notifications
	// waiting for Recv. Past it the link stops reading from the socket, so a
	// fast peer is slowed down by TCP flow control instead of filling memory.
	queueLimit = 16 << 20
	// queueItemCost is what every queued packet counts for besides its
	// bytes, so that a flood of tiny packets is bounded too.
	queueItemCost = 256
	// abortLinger bounds how long an aborting link waits for the peer to
	// close after the last packet, so that this packet is not lost to a
	// reset caused by closing a socket with unread input.
	abortLinger = 5 * time.Second
	// abortWriteWait bounds how long the link's goroutine waits to send
	// the Error packet of an abort when the link is busy writing.
	abortWriteWait = 10 * time.Second
)

// Link is a NEO connection after the handshake: it sends requests and
// matches their answers by message id, sends notifications, and queues the
// peer's requests and notifications for Recv.
//
// Ask, Notify, Recv, Request.Reply and Close may be called from any
// goroutine. The connection is read by the goroutines waiting in Recv or
// for answers, in turn, and by the link's own goroutine while nobody
// waits; Close waits for that goroutine.
//
// The owner of a link must keep calling Recv until it fails (or Close the
// link): received requests and notifications wait in a bounded queue, and
// while it is full the link reads nothing, answers included. Pings from the
// peer are answered by Recv (see Recv).
type Link struct {
	conn net.Conn // the stream: a *net.TCPConn or a *tls.Conn over it
	raw  net.Conn // the TCP connection under conn

	// wsem is held (one token) by whoever writes to conn; taking it can be
	// abandoned with a context, unlike a mutex.
	wsem chan struct{}
	wbuf []byte // encoding buffer, used with wsem held
	held int    // wbuf[:held] are buffered packets not yet written (SendBuffered)

	mu       sync.Mutex
	nextID   uint32
	pending  map[uint32]*Call // requests waiting for their answers
	queue    []*Request       // received requests and notifications
	qhead    int              // first live element of queue
	qbytes   int              // cost of queue[qhead:]
	qwake    chan struct{}    // (cap 1) signalled when the queue gets an item, or to take the read turn
	queued   uint64           // requests and notifications queued since the start
	taken    uint64           // ... and taken by Recv
	handled  uint64           // ... and handled: Recv was called again after taking them
	progress chan struct{}    // closed when handled advances, if Sync waits
	err      error            // why the link is down; nil while up
	down     chan struct{}    // closed when the link goes down
	isDown   atomic.Bool      // err != nil, readable without mu
	aborting bool             // down by an abort: the link's goroutine lingers

	// The read turn (see read.go).
	rbusy      bool          // taken
	turnGen    uint64        // incremented when given back
	kicked     bool          // the holder's reads were made to fail (its context ended)
	rwait      []*Call       // calls waiting for their answer, which may take the turn
	recvWait   int           // Recv calls waiting, which may take the turn
	passive    bool          // Recv never takes the turn (SetPassiveRecv)
	rerr       error         // why reading ended: the turn is the link goroutine's
	bgwake     chan struct{} // (cap 1) wakes the link's goroutine: rerr is set
	idle       *time.Timer   // wakes the link's goroutine to read when nobody does
	idleAfter  time.Duration // readIdle when the link was made
	idleWait   time.Duration // how long idle is set for: idleAfter, more while the link is in use
	idleArmed  bool          // idle is set and has not fired
	idleFired  uint64        // times idle fired (for tests)
	freeAt     time.Time     // when the turn was last given back free
	kick       func()        // kickRead
	delivered  uint64        // answers, and requests to a waiting Recv, dispatched
	handedOver uint64        // answers read by another goroutine than their caller's

	lingering   chan struct{} // closed by lingerClose
	lingerUntil time.Time     // end of the lingering of an abort

	// Owned by the holder of the read turn (and by the handshake before
	// the link's goroutine starts).
	buf     []byte // read buffer; buf[r:w] is not yet parsed
	r, w    int
	scan    scanner
	offset  int64  // stream offset of buf[r] (after the handshake)
	big     []byte // a big packet being read (see readBig)
	bigW    int    // bytes of big received
	reading chan struct{}
}

func newLink(conn, raw net.Conn) *Link {
	l := &Link{
		conn:      conn,
		raw:       raw,
		wsem:      make(chan struct{}, 1),
		pending:   make(map[uint32]*Call),
		qwake:     make(chan struct{}, 1),
		down:      make(chan struct{}),
		bgwake:    make(chan struct{}, 1),
		idle:      time.NewTimer(readIdle),
		idleAfter: readIdle,
		idleWait:  readIdle,
		idleArmed: true,
		lingering: make(chan struct{}),
		reading:   make(chan struct{}),
		buf:       make([]byte, readBufSize),
	}
	l.kick = l.kickRead // made once: registering it with a context allocates less
	return l
}

// LocalAddr returns the local network address.
func (l *Link) LocalAddr() net.Addr { return l.raw.LocalAddr() }

// RemoteAddr returns the peer's network address.
func (l *Link) RemoteAddr() net.Addr { return l.raw.RemoteAddr() }

func (l *Link) String() string {
	return fmt.Sprintf("%s ↔ %s", l.LocalAddr(), l.RemoteAddr())
}

// Done returns a channel closed when the link goes down.
func (l *Link) Done() <-chan struct{} { return l.down }

// Err returns why the link is down, or nil while it is up.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close takes the link down at once, as NEO/py's close: data not yet sent
// is lost, pending Asks fail with an error wrapping ErrLinkDown and
// ErrClosed. It waits for the link's goroutine and returns nil, or the
// error that had already taken the link down.
func (l *Link) Close() error {
	prev := l.Err()
	l.shutdown(ErrClosed, false)
	l.raw.Close()
	<-l.reading
	if prev != nil && !errors.Is(prev, ErrClosed) {
		return prev
	}
	return nil
}

// shutdown marks the link down because of cause, fails pending Asks, and
// closes the socket unless the link is aborting (then its goroutine closes
// it after lingering, and queued requests are dropped; otherwise Recv
// still returns them). It returns false if the link was already down.
func (l *Link) shutdown(cause error, aborting bool) bool {
	err := fmt.Errorf("link %s: %w: %w", l, ErrLinkDown, cause)
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return false
	}
	l.err = err
	l.isDown.Store(true)
	pending := l.pending
	l.pending = nil
	if aborting {
		// NEO/py processes nothing more on an aborted connection.
		clear(l.queue)
		l.queue, l.qhead, l.qbytes = l.queue[:0], 0, 0
		l.aborting = true
		// A read in progress ends now (the socket stays open while the
		// abort lingers); the link's goroutine then reads on, to linger.
		l.raw.SetReadDeadline(time.Unix(1, 0))
	}
	close(l.down)
	if l.progress != nil {
		close(l.progress)
		l.progress = nil
	}
	l.mu.Unlock()
	for _, c := range pending {
		c.err = err
		c.done <- struct{}{}
	}
	if !aborting {
		l.raw.Close()
	}
	return true
}

// ---- sending ----

// lockWrite takes the right to write, unless ctx ends or the link is down.
func (l *Link) lockWrite(ctx context.Context) error {
	select {
	case l.wsem <- struct{}{}: // fast path: nobody writing
	default:
		select {
		case l.wsem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.down:
			return l.Err()
		}
	}
	if l.isDown.Load() {
		<-l.wsem
		return l.Err()
	}
	return nil
}

// encode appends m to the output buffer, after the buffered packets if
// any. Called with the write token held.
func (l *Link) encode(msgID uint32, m Msg) []byte {
	l.wbuf = appendPacket(l.wbuf[:l.held], msgID, m)
	l.held = 0
	return l.wbuf
}

// write sends encoded packets with the write token held, and releases it.
// A failed write takes the link down: a packet may have been cut.
func (l *Link) write(b []byte) error {
	_, err := l.conn.Write(b)
	if cap(l.wbuf) > 1<<20 {
		l.wbuf = nil // do not keep the buffer of an exceptional packet
	}
	<-l.wsem
	if err != nil {
		l.shutdown(fmt.Errorf("write: %w", err), false)
		return l.Err()
	}
	return nil
}

// send writes m with message id msgID (a reply, or a packet reusing a
// request's id as NEO allows).
func (l *Link) send(ctx context.Context, msgID uint32, m Msg) error {
	if err := l.lockWrite(ctx); err != nil {
		return err
	}
	return l.write(l.encode(msgID, m))
}

func appendPacket(b []byte, msgID uint32, m Msg) []byte {
	return proto.AppendPacket(b, msgID, m)
}

// newID returns the next message id, skipping ids still waiting for an
// answer after the counter wrapped. Called with l.mu held.
func (l *Link) newID() uint32 {
	for {
		id := l.nextID
		l.nextID++
		if _, busy := l.pending[id]; !busy {
			return id
		}
	}
}

// Notify sends m as a new packet that expects no answer (a notification).
// Like every packet originated by a node, it takes the next message id.
func (l *Link) Notify(ctx context.Context, m Msg) error {
	if err := l.lockWrite(ctx); err != nil {
		return fmt.Errorf("notify %s: %w", msgName(m), err)
	}
	l.mu.Lock()
	id := l.newID()
	l.mu.Unlock()
	if err := l.write(l.encode(id, m)); err != nil {
		return fmt.Errorf("notify %s: %w", msgName(m), err)
	}
	return nil
}

// Send sends m with the given message id, which is not taken from the
// link's counter. NEO uses it for packets that refer to a request of the
// peer: replication data carries the id of the fetch request it serves,
// and relayed answers carry the id of the request they answer.
func (l *Link) Send(ctx context.Context, msgID uint32, m Msg) error {
	if err := l.send(ctx, msgID, m); err != nil {
		return fmt.Errorf("send %s: %w", msgName(m), err)
	}
	return nil
}

// bufferedLimit is NEO/py's threshold for packets that are not "nodelay":
// they are written once more than this is queued.
const bufferedLimit = 64 << 10

// SendBuffered is Send for the packets NEO/py does not send at once
// (AddTransaction, AddObject: replication data): m is kept in the output
// buffer until more than 64 KiB are buffered or another packet is sent
// (the answer that ends the replication batch, usually), and they all go
// out in one write.
func (l *Link) SendBuffered(ctx context.Context, msgID uint32, m Msg) error {
	if err := l.lockWrite(ctx); err != nil {
		return fmt.Errorf("send %s: %w", msgName(m), err)
	}
	l.wbuf = appendPacket(l.wbuf[:l.held], msgID, m)
	if len(l.wbuf) <= bufferedLimit {
		l.held = len(l.wbuf)
		<-l.wsem
		return nil
	}
	l.held = 0
	if err := l.write(l.wbuf); err != nil {
		return fmt.Errorf("send %s: %w", msgName(m), err)
	}
	return nil
}

// Call is a request sent by Start whose answer is awaited by Wait.
type Call struct {
	link      *Link
	id        uint32
	reqCode   uint16
	done      chan struct{} // (cap 1) signalled when answer or err is set
	turn      chan struct{} // (cap 1) signalled when the read turn may be taken
	answer    Msg
	buf       []byte // memory answer was decoded in, if any
	err       error
	seq       uint64 // link.queued when the answer was received
	abandoned bool   // its waiter gave up; a late answer is dropped
	waited    bool   // Wait returned
}

var callPool = sync.Pool{New: func() any {
	return &Call{done: make(chan struct{}, 1), turn: make(chan struct{}, 1)}
}}

// reset clears c for reuse.
func (c *Call) reset() {
	*c = Call{done: c.done, turn: c.turn}
	select {
	case <-c.turn:
	default:
	}
}

// MsgID returns the message id of the request.
func (c *Call) MsgID() uint32 { return c.id }

// Ask sends the request req and waits for its answer. An Error packet
// received as the answer is returned as an error (see PeerError). If ctx
// ends first, the answer, when it comes, is dropped.
func (l *Link) Ask(ctx context.Context, req Msg) (Msg, error) {
	c := callPool.Get().(*Call)
	if err := l.start(ctx, c, req); err != nil {
		c.reset() // start may have left the link's error in c
		callPool.Put(c)
		return nil, err
	}
	answer, err := c.wait(ctx)
	if !c.abandoned {
		c.reset()
		callPool.Put(c)
	}
	return answer, err
}

// Start sends the request req and returns at once; Wait returns the answer.
// It lets a caller keep several requests in flight, or know the message id
// of its request (see Send), or give the answer's memory back once done
// with it (see Call.Release).
func (l *Link) Start(ctx context.Context, req Msg) (*Call, error) {
	c := callPool.Get().(*Call)
	if err := l.start(ctx, c, req); err != nil {
		c.reset() // start may have left the link's error in c
		callPool.Put(c)
		return nil, err
	}
	return c, nil
}

func (l *Link) start(ctx context.Context, c *Call, req Msg) error {
	if err := l.lockWrite(ctx); err != nil {
		return fmt.Errorf("ask %s: %w", msgName(req), err)
	}
	c.link, c.reqCode = l, req.MsgCode()
	l.mu.Lock()
	if l.err != nil { // went down since lockWrite
		err := l.err
		l.mu.Unlock()
		<-l.wsem
		return fmt.Errorf("ask %s: %w", msgName(req), err)
	}
	c.id = l.newID()
	// Registered before writing: the answer may come before Write returns.
	l.pending[c.id] = c
	l.mu.Unlock()
	if err := l.write(l.encode(c.id, req)); err != nil {
		// The link went down with c pending: its failure is delivered to c
		// (once, as for any pending call); take it so c can be reused.
		<-c.done
		return fmt.Errorf("ask %s: %w", msgName(req), err)
	}
	return nil
}

// Wait waits for the answer to the request. Wait may be called once; if
// ctx ends first, the answer is dropped when it comes.
func (c *Call) Wait(ctx context.Context) (Msg, error) {
	return c.wait(ctx)
}

// Release gives the memory of the call and of its answer back to the link,
// for reuse by later packets: see "Releasing received messages" in the
// package documentation. After Release, neither c nor the answer returned
// by Wait (nor any byte string, slice or value reachable from it) may be
// used: copy out first what must outlive it. Release may be called whatever
// Wait returned, at most once; not calling it is fine (the garbage
// collector then takes the memory). Released before Wait, the call is
// abandoned as if Wait's context had ended.
func (c *Call) Release() {
	if !c.waited {
		l := c.link
		l.mu.Lock()
		if l.pending[c.id] == c {
			c.abandoned = true // the answer is dropped when it comes
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		<-c.done // the answer or the link's failure is being delivered
	}
	if c.abandoned {
		return // still known to the link, until a late answer comes
	}
	if c.answer != nil {
		putMsg(c.answer)
	}
	if c.buf != nil {
		putBuf(c.buf)
	}
	c.reset()
	callPool.Put(c)
}

func (c *Call) wait(ctx context.Context) (Msg, error) {
	c.waited = true
	l := c.link
	offered := false // c was offered the read turn
	for {
		l.mu.Lock()
		if l.pending[c.id] != c {
			if offered {
				l.wakeReader()
			}
			l.mu.Unlock()
			break // the answer or the link's failure is being delivered
		}
		if l.takeTurn() {
			l.mu.Unlock()
			offered = false
			if err := l.readTurn(ctx, c.answeredLocked); err != nil {
				if c.abandon() {
					return nil, fmt.Errorf("ask %s (msg id %d): %w", codeName(c.reqCode), c.id, err)
				}
				break
			}
			continue
		}
		l.rwait = append(l.rwait, c)
		l.mu.Unlock()
		var err error
		handed := false
		select {
		case <-c.done:
			c.done <- struct{}{} // taken again below
			handed = true
		case <-c.turn:
			offered = true
		case <-ctx.Done():
			err = ctx.Err()
		}
		l.mu.Lock()
		if handed {
			l.handedOver++
		}
		c.unwait()
		l.mu.Unlock()
		if err != nil {
			if c.abandon() {
				return nil, fmt.Errorf("ask %s (msg id %d): %w", codeName(c.reqCode), c.id, err)
			}
			break
		}
	}
	<-c.done
	if c.err != nil {
		return nil, fmt.Errorf("ask %s (msg id %d): %w", codeName(c.reqCode), c.id, c.err)
	}
	if e, ok := c.answer.(*proto.Error); ok {
		return nil, fmt.Errorf("ask %s (msg id %d): peer answered: %w", codeName(c.reqCode), c.id, e)
	}
	return c.answer, nil
}

// answeredLocked tells whether the answer (or the link's failure) is being
// delivered to c. Called with l.mu held.
func (c *Call) answeredLocked() bool { return c.link.pending[c.id] != c }

// unwait takes c off the calls waiting for the read turn, and offers the
// turn to another one if c was offered it meanwhile. Called with l.mu held.
func (c *Call) unwait() {
	l := c.link
	if i := slices.Index(l.rwait, c); i >= 0 {
		l.rwait = slices.Delete(l.rwait, i, i+1)
	}
	select {
	case <-c.turn:
		l.wakeReader()
	default:
	}
}

// abandon gives up waiting for the answer, if it is still to come: the id
// stays reserved, so that a late answer is not taken for a protocol
// violation. It returns false if the answer (or the link's failure) is
// being delivered.
func (c *Call) abandon() bool {
	l := c.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[c.id] != c {
		return false
	}
	c.abandoned = true
	return true
}

// Sync is a barrier: it pings the peer and returns once every packet the
// peer sent before its Pong has been handled here. The peer answers the
// Ping after handling what we sent before it (NEO/py handles a
// connection's packets in order, and so does Recv), so answers the peer
// gives right away to our earlier requests have been delivered too; answers
// it gives later (after the Pong) have not.
//
// A received request or notification counts as handled once Recv has been
// called again after returning it: Sync assumes one goroutine receives and
// handles the link's packets in turn, and must not be called from it.
func (l *Link) Sync(ctx context.Context) error {
	if _, err := l.AskSynced(ctx, ping); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// AskSynced is Ask followed by the barrier of Sync without its round trip:
// it returns the answer once every request and notification the peer sent
// before it has been handled here (with the same assumption as Sync on who
// handles them). An answer that is an Error packet returns at once. If the
// link goes down before the barrier is passed, the answer is returned with
// the error.
func (l *Link) AskSynced(ctx context.Context, req Msg) (Msg, error) {
	c := callPool.Get().(*Call)
	if err := l.start(ctx, c, req); err != nil {
		c.reset()
		callPool.Put(c)
		return nil, err
	}
	answer, err := c.wait(ctx)
	if c.abandoned {
		// An abandoned call stays the link's until its answer comes (which
		// sets its seq): it is neither read nor recycled here.
		return answer, err
	}
	seq := c.seq
	c.reset()
	callPool.Put(c)
	if err != nil {
		return answer, err
	}
	if err := l.waitHandled(ctx, seq); err != nil {
		return answer, fmt.Errorf("ask %s: answered, then: %w", msgName(req), err)
	}
	return answer, nil
}

// waitHandled waits until the packets received before the seq-th one have
// been handled.
func (l *Link) waitHandled(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		if l.handled >= seq {
			l.mu.Unlock()
			return nil
		}
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return err
		}
		if l.progress == nil {
			l.progress = make(chan struct{})
		}
		progress := l.progress
		l.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ---- receiving ----

// Request is a request or a notification received from the peer.
type Request struct {
	MsgID uint32
	Msg   Msg
	link  *Link
	buf   []byte // memory Msg was decoded in, if any
	cost  int
}

var requestPool = sync.Pool{New: func() any { return new(Request) }}

// Link returns the link the request came on.
func (r *Request) Link() *Link { return r.link }

// Release gives the memory of r.Msg back to the link, for reuse by later
// packets: see "Releasing received messages" in the package documentation.
// After Release, neither r nor r.Msg (nor any byte string, slice or value
// reachable from it) may be used: copy out first what must outlive it, and
// release only once a Reply or Send of anything pointing into r.Msg has
// returned. Release may be called at most once; not calling it is fine
// (the garbage collector then takes the memory).
func (r *Request) Release() {
	if r.Msg != nil {
		putMsg(r.Msg)
	}
	if r.buf != nil {
		putBuf(r.buf)
	}
	*r = Request{}
	requestPool.Put(r)
}

// Reply sends m as the answer to the request (an Error packet too). It may
// be called at any time, from any goroutine: answers need not follow the
// order of requests.
func (r *Request) Reply(ctx context.Context, m Msg) error {
	if err := r.link.send(ctx, r.MsgID, m); err != nil {
		return fmt.Errorf("reply %s to msg id %d: %w", msgName(m), r.MsgID, err)
	}
	return nil
}

// Abort answers the request with m (usually an Error packet) and closes
// the link once m is sent, as NEO/py's abort: from now on nothing more is
// received, and pending Asks fail.
func (r *Request) Abort(ctx context.Context, m Msg) error {
	return r.link.abort(ctx, r.MsgID, m)
}

func (l *Link) abort(ctx context.Context, msgID uint32, m Msg) error {
	if err := l.lockWrite(ctx); err != nil {
		return fmt.Errorf("abort with %s: %w", msgName(m), err)
	}
	if !l.shutdown(&AbortedError{Sent: msgName(m)}, true) {
		<-l.wsem
		return fmt.Errorf("abort with %s: %w", msgName(m), l.Err())
	}
	_, err := l.conn.Write(l.encode(msgID, m))
	<-l.wsem
	l.lingerClose()
	if err != nil {
		l.raw.Close()
		return fmt.Errorf("abort with %s: write: %w", msgName(m), err)
	}
	return nil
}

// lingerClose ends an abort: it tells the peer we send nothing more, and
// lets the link's goroutine discard input until the peer closes (or
// abortLinger passes), then close the socket.
func (l *Link) lingerClose() {
	if cw, ok := l.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() // TLS: close_notify
	}
	if l.conn != l.raw {
		if cw, ok := l.raw.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	l.mu.Lock()
	select {
	case <-l.lingering:
	default:
		l.lingerUntil = time.Now().Add(abortLinger)
		close(l.lingering)
	}
	l.mu.Unlock()
}

// Recv returns the next request or notification received from the peer,
// in the order they were received. When the link is down, Recv still
// returns what was received before, then the error that took the link
// down.
//
// Recv answers Ping itself: the Pong is sent when Recv gets to the Ping,
// i.e. after the packets received before it were returned, so that a peer
// using Ping as a barrier (as NEO/py clients do) sees it work.
func (l *Link) Recv(ctx context.Context) (*Request, error) {
	for {
		l.mu.Lock()
		if l.handled != l.taken {
			l.handled = l.taken
			if l.progress != nil {
				close(l.progress)
				l.progress = nil
			}
		}
		if l.qhead < len(l.queue) {
			r := l.queue[l.qhead]
			l.queue[l.qhead] = nil
			l.qhead++
			if l.qhead == len(l.queue) {
				l.queue, l.qhead = l.queue[:0], 0
			}
			wasFull := l.qbytes >= queueLimit
			l.qbytes -= r.cost
			if wasFull && l.qbytes < queueLimit || !l.rbusy && l.recvWait > 0 {
				l.wakeReader()
			}
			l.taken++
			l.mu.Unlock()
			if r.Msg.MsgCode() == proto.CodePing {
				err := r.Reply(ctx, pong)
				r.Release()
				if err != nil && l.Err() == nil {
					return nil, fmt.Errorf("recv: answer ping: %w", err)
				}
				continue
			}
			return r, nil
		}
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return nil, fmt.Errorf("recv: %w", err)
		}
		if l.passive {
			l.mu.Unlock()
			select {
			case <-l.qwake:
			case <-l.down:
			case <-ctx.Done():
				return nil, fmt.Errorf("recv: %w", ctx.Err())
			}
			continue
		}
		if l.takeTurn() {
			l.mu.Unlock()
			if err := l.readTurn(ctx, l.queueReady); err != nil {
				return nil, fmt.Errorf("recv: %w", err)
			}
			continue
		}
		l.recvWait++
		l.mu.Unlock()
		var err error
		select {
		case <-l.qwake:
		case <-l.down:
		case <-ctx.Done():
			err = ctx.Err()
		}
		l.mu.Lock()
		l.recvWait--
		if err != nil {
			l.wakeReader() // in case the turn was offered to this call
			l.mu.Unlock()
			return nil, fmt.Errorf("recv: %w", err)
		}
		l.mu.Unlock()
	}
}

// SetPassiveRecv makes Recv leave reading to the goroutines waiting for
// answers and, while none waits, to the link's own goroutine (once the
// turn has been free for readIdle; while the link is in use, it may look
// only every maxIdleWait, so a packet that nobody waits for may wait that
// long). It is for links whose peer seldom sends requests or notifications
// unasked, such as a client's links to storages: a goroutine always in
// Recv would otherwise hold the read turn, and every answer would be
// handed over to its caller instead of read by it.
func (l *Link) SetPassiveRecv() {
	l.mu.Lock()
	l.passive = true
	l.mu.Unlock()
}

// queueReady tells whether Recv has something to return. Called with l.mu
// held.
func (l *Link) queueReady() bool { return l.qhead < len(l.queue) }
