package neonet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
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
	// abortWriteWait bounds how long the reader waits to send the Error
	// packet of an abort when the link is busy writing.
	abortWriteWait = 10 * time.Second
)

// Link is a NEO connection after the handshake: it sends requests and
// matches their answers by message id, sends notifications, and queues the
// peer's requests and notifications for Recv.
//
// Ask, Notify, Recv, Request.Reply and Close may be called from any
// goroutine. A link has one goroutine of its own, the reader, which Close
// waits for.
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
	qwake    chan struct{}    // (cap 1) signalled when the queue gets an item
	qspace   chan struct{}    // (cap 1) signalled when the queue drops below its limit
	queued   uint64           // requests and notifications queued since the start
	taken    uint64           // ... and taken by Recv
	handled  uint64           // ... and handled: Recv was called again after taking them
	progress chan struct{}    // closed when handled advances, if Sync waits
	err      error            // why the link is down; nil while up
	down     chan struct{}    // closed when the link goes down
	isDown   atomic.Bool      // err != nil, readable without mu

	// Owned by the reader goroutine (and by the handshake before it starts).
	buf     []byte // read buffer; buf[r:w] is not yet parsed
	r, w    int
	scan    scanner
	offset  int64 // stream offset of buf[r] (after the handshake)
	reading chan struct{}
}

func newLink(conn, raw net.Conn) *Link {
	return &Link{
		conn:    conn,
		raw:     raw,
		wsem:    make(chan struct{}, 1),
		pending: make(map[uint32]*Call),
		qwake:   make(chan struct{}, 1),
		qspace:  make(chan struct{}, 1),
		down:    make(chan struct{}),
		reading: make(chan struct{}),
		buf:     make([]byte, readBufSize),
	}
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
// closes the socket unless the link is aborting (then its reader closes it
// after lingering, and queued requests are dropped; otherwise Recv still
// returns them). It returns false if the link was already down.
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
	answer    Msg
	buf       *pktBuf // memory answer was decoded in, if any
	err       error
	seq       uint64 // link.queued when the answer was received
	abandoned bool   // its waiter gave up; a late answer is dropped
	waited    bool   // Wait returned
}

var callPool = sync.Pool{New: func() any { return &Call{done: make(chan struct{}, 1)} }}

// MsgID returns the message id of the request.
func (c *Call) MsgID() uint32 { return c.id }

// Ask sends the request req and waits for its answer. An Error packet
// received as the answer is returned as an error (see PeerError). If ctx
// ends first, the answer, when it comes, is dropped.
func (l *Link) Ask(ctx context.Context, req Msg) (Msg, error) {
	c := callPool.Get().(*Call)
	if err := l.start(ctx, c, req); err != nil {
		callPool.Put(c)
		return nil, err
	}
	answer, err := c.wait(ctx)
	if !c.abandoned {
		*c = Call{done: c.done}
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
	*c = Call{done: c.done}
	callPool.Put(c)
}

func (c *Call) wait(ctx context.Context) (Msg, error) {
	c.waited = true
	select {
	case <-c.done:
	case <-ctx.Done():
		l := c.link
		l.mu.Lock()
		if l.pending[c.id] == c {
			// Keep the id reserved, so that a late answer is not taken for
			// a protocol violation.
			c.abandoned = true
			l.mu.Unlock()
			return nil, fmt.Errorf("ask %s (msg id %d): %w", codeName(c.reqCode), c.id, ctx.Err())
		}
		l.mu.Unlock()
		<-c.done // the answer or the link's failure is being delivered
	}
	if c.err != nil {
		return nil, fmt.Errorf("ask %s (msg id %d): %w", codeName(c.reqCode), c.id, c.err)
	}
	if e, ok := c.answer.(*proto.Error); ok {
		return nil, fmt.Errorf("ask %s (msg id %d): peer answered: %w", codeName(c.reqCode), c.id, e)
	}
	return c.answer, nil
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
	c := callPool.Get().(*Call)
	if err := l.start(ctx, c, ping); err != nil {
		callPool.Put(c)
		return fmt.Errorf("sync: %w", err)
	}
	_, err := c.wait(ctx)
	seq := c.seq
	if !c.abandoned {
		*c = Call{done: c.done}
		callPool.Put(c)
	}
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	for {
		l.mu.Lock()
		if l.handled >= seq {
			l.mu.Unlock()
			return nil
		}
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return fmt.Errorf("sync: %w", err)
		}
		if l.progress == nil {
			l.progress = make(chan struct{})
		}
		progress := l.progress
		l.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("sync: %w", ctx.Err())
		}
	}
}

// ---- receiving ----

// Request is a request or a notification received from the peer.
type Request struct {
	MsgID uint32
	Msg   Msg
	link  *Link
	buf   *pktBuf // memory Msg was decoded in, if any
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
// lets the reader discard input until the peer closes (or abortLinger
// passes), then close the socket.
func (l *Link) lingerClose() {
	if cw, ok := l.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() // TLS: close_notify
	}
	if l.conn != l.raw {
		if cw, ok := l.raw.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	l.raw.SetReadDeadline(time.Now().Add(abortLinger))
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
			freed := wasFull && l.qbytes < queueLimit
			l.taken++
			l.mu.Unlock()
			if freed {
				select {
				case l.qspace <- struct{}{}:
				default:
				}
			}
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
		l.mu.Unlock()
		select {
		case <-l.qwake:
		case <-l.down:
		case <-ctx.Done():
			return nil, fmt.Errorf("recv: %w", ctx.Err())
		}
	}
}

// enqueue adds r for Recv, waiting while the queue is over its limit.
func (l *Link) enqueue(r *Request) error {
	for {
		l.mu.Lock()
		if l.err != nil {
			l.mu.Unlock()
			return nil // down: the reader stops on its next read
		}
		if l.qbytes < queueLimit {
			l.queue = append(l.queue, r)
			l.qbytes += r.cost
			l.queued++
			l.mu.Unlock()
			select {
			case l.qwake <- struct{}{}:
			default:
			}
			return nil
		}
		l.mu.Unlock()
		select {
		case <-l.qspace:
		case <-l.down:
		}
	}
}

// reader is the link's goroutine: it parses the stream and hands packets
// over, until the link goes down.
func (l *Link) reader() {
	defer close(l.reading)
	err := l.readPackets()
	var perr *ProtocolError
	if errors.As(err, &perr) && l.shutdown(err, true) {
		l.sendAbortError(perr.msgID, perr.What)
		l.lingerClose()
		l.discardInput()
		l.raw.Close()
		return
	}
	if errors.Is(err, io.EOF) {
		err = ErrPeerClosed
	}
	if !l.shutdown(err, false) {
		// Aborting (or closed): read until the peer closes, then close.
		l.discardInput()
		l.raw.Close()
	}
}

// sendAbortError sends Error(PROTOCOL_ERROR, what) before an abort the
// link decided itself. The link is already down for its users.
func (l *Link) sendAbortError(msgID uint32, what string) {
	t := time.NewTimer(abortWriteWait)
	defer t.Stop()
	select {
	case l.wsem <- struct{}{}:
	case <-t.C:
		return
	}
	l.raw.SetWriteDeadline(time.Now().Add(abortWriteWait))
	l.conn.Write(l.encode(msgID, &proto.Error{Code: proto.ProtocolError, Message: what}))
	<-l.wsem
}

func (l *Link) discardInput() {
	var b [4096]byte
	for {
		if _, err := l.conn.Read(b[:]); err != nil {
			return
		}
	}
}

// readPackets reads and dispatches packets until an error.
func (l *Link) readPackets() error {
	for {
		for {
			n, err := l.scan.next(l.buf[l.r:l.w])
			if err == errIncomplete {
				if l.w-l.r >= MaxPacketSize {
					return &MalformedError{Offset: l.offset, What: fmt.Sprintf("packet larger than the %d-byte limit", MaxPacketSize)}
				}
				break
			}
			if err != nil {
				return &MalformedError{Offset: l.offset, What: err.Error()}
			}
			p := l.buf[l.r : l.r+n]
			l.r += n
			if err := l.dispatch(p, nil); err != nil {
				return err
			}
			l.offset += int64(n)
		}
		if need := l.scan.need; need >= bigPacket && need+bigSlack <= 2*(l.w-l.r)+bigAhead {
			if err := l.readBig(); err != nil {
				return err
			}
			continue
		}
		if err := l.fill(); err != nil {
			return err
		}
	}
}

const (
	// bigPacket is the size from which a packet is read into memory of its
	// own rather than into the shared read buffer: the bytes of a big
	// packet (typically object data) then come from the kernel straight
	// into the memory the decoded message keeps, with no second copy. Only
	// what came with the packet's header, in the shared buffer, is copied:
	// a read into an empty shared buffer takes at most bigPacket bytes.
	bigPacket = 8 << 10
	// bigSlack is read past the end of what a big packet is known to need,
	// so that its last small elements come with its bulk in one read.
	// What is read past the packet is moved back to the shared buffer.
	bigSlack = 512
	// bigAhead bounds how much is allocated for a big packet beyond twice
	// what was received of it: a header announcing a big byte string costs
	// no more memory than the peer actually sends (within a factor of two).
	// A packet announcing more is first received into the shared buffer,
	// as any packet, until it may have memory of its own.
	bigAhead = 256 << 10
)

// bigSize returns the size to allocate for a big packet of which have
// bytes were received and at least need bytes are announced, and the most
// memory that allocation may take. The first allocation (grow false) is for
// need. When more is needed and the end of the packet is not announced far
// ahead (it goes on with many small elements), the size grows by half at
// least, so that a long packet is not copied over and over.
func bigSize(have, need int, grow bool) (size, limit int) {
	n := need + bigSlack
	if grow && need-have < bigPacket {
		n = max(n, have+have/2)
	}
	limit = max(have+1, min(2*have+bigAhead, MaxPacketSize+bigSlack))
	return max(have+1, min(n, limit)), limit
}

// readBig reads the rest of the packet at buf[r:w], whose scanner needs at
// least bigPacket bytes, into memory of its own, and dispatches it decoded
// in place: the message keeps that memory. What is read past the packet
// goes back to the (then empty) shared buffer.
func (l *Link) readBig() error {
	have := l.w - l.r
	pb := getBuf(bigSize(have, l.scan.need, false))
	w := copy(pb.b, l.buf[l.r:l.w])
	l.r, l.w = 0, 0
	for {
		pkt := pb.b
		n, err := l.scan.next(pkt[:w])
		if err == errIncomplete {
			if w >= MaxPacketSize {
				putBuf(pb)
				return &MalformedError{Offset: l.offset, What: fmt.Sprintf("packet larger than the %d-byte limit", MaxPacketSize)}
			}
			if w == len(pkt) || l.scan.need > len(pkt) && len(pkt)-w < bigPacket {
				npb := getBuf(bigSize(w, l.scan.need, true))
				copy(npb.b, pkt[:w])
				putBuf(pb)
				pb, pkt = npb, npb.b
			}
			m, err := l.conn.Read(pkt[w:])
			w += m
			if m == 0 {
				putBuf(pb)
				return readError(err, true)
			}
			continue
		}
		if err != nil {
			putBuf(pb)
			return &MalformedError{Offset: l.offset, What: err.Error()}
		}
		if w-n > len(l.buf) {
			l.buf = make([]byte, w-n) // shrunk again by fill once parsed
		}
		l.w = copy(l.buf, pkt[n:w])
		// The message keeps pb if it was asked for about the packet's
		// size; otherwise (pb grew by half) it gets a copy of the packet
		// in memory of the right size, and pb is reused.
		if len(pkt)-n <= bigSlack+n/8 {
			err = l.dispatch(pkt[:n:n], pb)
		} else {
			err = l.dispatch(pkt[:n:n], nil)
			putBuf(pb)
		}
		if err != nil {
			return err
		}
		l.offset += int64(n)
		return nil
	}
}

// fill reads more bytes: at least one, as many as come.
//
// The buffer grows (doubling) only when one incomplete packet fills it, so
// its size follows what the peer actually sent, not what a packet header
// announces.
func (l *Link) fill() error {
	if l.r == l.w { // everything parsed: start over at the beginning
		l.r, l.w = 0, 0
		if len(l.buf) > 4*readBufSize {
			l.buf = make([]byte, readBufSize) // after an exceptional packet
		}
	}
	if l.w == len(l.buf) {
		have := l.w - l.r
		if l.r == 0 {
			nbuf := make([]byte, 2*len(l.buf))
			copy(nbuf, l.buf[:have])
			l.buf = nbuf
		} else {
			copy(l.buf, l.buf[l.r:l.w])
		}
		l.r, l.w = 0, have
	}
	end := len(l.buf)
	if l.r == l.w {
		end = min(end, bigPacket) // see bigPacket
	}
	n, err := l.conn.Read(l.buf[l.w:end])
	l.w += n
	if n > 0 {
		return nil
	}
	return readError(err, l.r != l.w)
}

// readError returns the error to report for a read that returned no bytes
// and err, midPacket telling whether a packet was partly received.
func readError(err error, midPacket bool) error {
	if err == nil {
		err = io.ErrNoProgress
	}
	if err == io.EOF {
		if midPacket {
			return fmt.Errorf("%w in the middle of a packet", io.ErrUnexpectedEOF)
		}
		return io.EOF
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w (%w)", ErrPeerClosed, err)
	}
	return fmt.Errorf("read: %w", err)
}

// dispatch hands one packet over: an answer to its Ask, anything else to
// the queue for Recv. With pb, p lies in memory of the packet's own, which
// the decoded message may point into, and which dispatch takes over;
// otherwise p is in the shared read buffer.
func (l *Link) dispatch(p []byte, pb *pktBuf) error {
	if l.isDown.Load() {
		if pb != nil {
			putBuf(pb)
		}
		return nil // aborting: discard
	}
	h, err := parseHeader(p)
	if err != nil {
		if pb != nil {
			putBuf(pb)
		}
		return &MalformedError{Offset: l.offset, What: err.Error()}
	}
	if h.code&proto.AnswerBit == 0 || h.code == proto.CodeError && !l.isPending(h.msgID) {
		m, pb, err := l.decode(h, p, pb)
		if err != nil {
			return err
		}
		r := requestPool.Get().(*Request)
		*r = Request{MsgID: h.msgID, Msg: m, link: l, buf: pb, cost: queueItemCost + len(p)}
		return l.enqueue(r)
	}
	l.mu.Lock()
	c := l.pending[h.msgID]
	if c == nil {
		l.mu.Unlock()
		if pb != nil {
			putBuf(pb)
		}
		return &ProtocolError{What: fmt.Sprintf("Unexpected answer: packet 0x%04x with msg id %d answers no request", h.code, h.msgID), msgID: h.msgID}
	}
	delete(l.pending, h.msgID)
	c.seq = l.queued
	abandoned := c.abandoned
	l.mu.Unlock()
	if abandoned {
		if pb != nil {
			putBuf(pb)
		}
		return nil
	}
	if h.code != proto.CodeError && h.code != c.reqCode|proto.AnswerBit {
		if pb != nil {
			putBuf(pb)
		}
		c.err = &ProtocolError{What: fmt.Sprintf("Unexpected answer: packet 0x%04x to request 0x%04x", h.code, c.reqCode), msgID: h.msgID}
		c.done <- struct{}{}
		return c.err
	}
	m, pb, err := l.decode(h, p, pb)
	if err != nil {
		c.err = err
		c.done <- struct{}{}
		return err
	}
	c.answer, c.buf = m, pb
	c.done <- struct{}{}
	return nil
}

func (l *Link) isPending(id uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.pending[id]
	return ok
}

// decode decodes the packet p, of header h. A message that may hold byte
// strings is decoded in place, in memory of the packet's own: pb, if p lies
// there, or else a copy of p; it is returned with the message (nil for
// other messages), to be released with it. decode takes pb over.
func (l *Link) decode(h header, p []byte, pb *pktBuf) (Msg, *pktBuf, error) {
	m, holdsBytes, err := getMsg(h.code)
	if err == nil {
		switch {
		case !holdsBytes:
			if pb != nil {
				putBuf(pb) // (a big packet of no byte strings: many small elements)
				pb = nil
			}
			err = m.DecodeArgs(h.args)
		case pb != nil:
			err = proto.DecodeArgsNoCopy(m, h.args)
		default:
			pb = getBuf(len(p), classSize(classOf(len(p))))
			copy(pb.b, p)
			err = proto.DecodeArgsNoCopy(m, pb.b[len(p)-len(h.args):])
		}
		if err != nil {
			putMsg(m)
			if pb != nil {
				putBuf(pb)
			}
		}
	}
	if err != nil {
		return nil, nil, &MalformedError{Offset: l.offset, What: fmt.Sprintf("msg id %d: %v", h.msgID, err)}
	}
	return m, pb, nil
}
