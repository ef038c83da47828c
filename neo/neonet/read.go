package neonet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// Reading.
//
// One goroutine at a time reads the connection and dispatches what it
// reads: the holder of the read turn (l.rbusy). A goroutine waiting for an
// answer (Call.Wait, Ask, Sync) or in Recv takes the turn when it is free,
// reads until what it waits for came, and gives the turn back; an answer
// read by the goroutine waiting for it reaches it with no hand-over between
// goroutines (which costs more than the system calls of a round trip on
// loopback). Others wait, and are woken by the dispatch of what they wait
// for, or to take the turn when it is given back.
//
// While nobody waits, the link's own goroutine takes the turn once it has
// been free for readIdle, and keeps reading (queueing requests for Recv,
// noticing the peer closing) until a waiter shows up or receives
// something. It also ends the link: whoever meets an error while reading
// hands the turn over to it, for good.
//
// The link's goroutine learns that the turn is free from a timer, not from
// whoever gives it back, and the timer is not moved on every round trip
// (see armIdle). While the link is in use (each time the timer fires, the
// turn was taken or given back since), the goroutine looks less and less
// often, up to every maxIdleWait. A timer firing every millisecond on a
// busy link costs more than the wake-up of one goroutine: on a machine
// whose idle CPUs sleep, it moves the link's threads across CPUs, and a
// round trip with another process on the same machine took 27-48 µs
// instead of 8-11 µs.

// readIdle is how long the read turn stays free, with nobody waiting,
// before the link's goroutine takes it. (A variable for tests.)
var readIdle = time.Millisecond

// maxIdleWait bounds how long the link's goroutine waits, while the link
// is in use, before it looks at the turn again: a turn that the users of a
// busy link stop taking is read by the link's goroutine after readIdle to
// maxIdleWait.
const maxIdleWait = 100 * time.Millisecond

// takeTurn takes the read turn if it is free and there is something to
// read for. Called with l.mu held.
func (l *Link) takeTurn() bool {
	if l.rbusy || l.err != nil || l.qbytes >= queueLimit {
		return false
	}
	l.rbusy = true
	return true
}

// giveTurn gives the read turn back, and wakes someone to take it. Called
// with l.mu held.
func (l *Link) giveTurn() {
	l.rbusy = false
	l.turnGen++
	if l.kicked {
		// The read of a waiter was interrupted, or about to be.
		l.kicked = false
		if l.err == nil {
			l.raw.SetReadDeadline(time.Time{})
		}
	}
	l.wakeReader()
}

// wakeReader makes sure someone takes the read turn, if free: a waiting
// call, a waiting Recv, or else, later, the link's goroutine. Called with
// l.mu held.
func (l *Link) wakeReader() {
	if l.rbusy {
		return
	}
	for _, c := range l.rwait {
		if l.pending[c.id] == c { // not woken by its answer already
			select {
			case c.turn <- struct{}{}:
			default:
			}
			l.armIdle()
			return
		}
	}
	if l.recvWait > 0 {
		select {
		case l.qwake <- struct{}{}:
		default:
		}
	}
	l.armIdle()
}

// armIdle notes that the read turn is free from now on, and makes sure the
// link's goroutine looks at it later (idleWait). The timer is not moved
// while it runs (moving a timer may cost waking the runtime's network
// poller, on every round trip): when it fires early, the link's goroutine
// sets it again. Called with l.mu held.
func (l *Link) armIdle() {
	l.freeAt = time.Now()
	if !l.idleArmed {
		l.idleArmed = true
		l.idle.Reset(l.idleWait)
	}
}

// endTurn hands the read turn over to the link's goroutine after err (nil
// if the link went down) ended reading. Called with l.mu held.
func (l *Link) endTurn(err error) {
	if err == nil {
		err = errLinkEnded
	}
	l.rerr = err
	select {
	case l.bgwake <- struct{}{}:
	default:
	}
}

// errLinkEnded is the reading error of a link taken down by other means.
var errLinkEnded = errors.New("link down")

// readTurn reads and dispatches, holding the read turn, until done
// (called with l.mu held) returns true or ctx ends; it then gives the turn
// back. When reading fails, or the link goes down, the turn goes to the
// link's goroutine, and readTurn returns nil: the caller's wait ends with
// the link's failure.
func (l *Link) readTurn(ctx context.Context, done func() bool) error {
	var stop func() bool
	if ctx.Done() != nil {
		// A read cannot wait for ctx: make it fail at once when ctx ends.
		stop = context.AfterFunc(ctx, l.kick)
	}
	for {
		err := l.step()
		l.mu.Lock()
		if l.kickedRead(err) {
			if ctx.Err() != nil {
				l.giveTurn()
				l.mu.Unlock()
				stop()
				return ctx.Err()
			}
			l.mu.Unlock()
			continue // the kick was meant for an earlier holder
		}
		if err != nil || l.err != nil {
			l.endTurn(err)
			l.mu.Unlock()
			if stop != nil {
				stop()
			}
			return nil
		}
		if done() || l.qbytes >= queueLimit || ctx.Err() != nil {
			l.giveTurn()
			l.mu.Unlock()
			if stop != nil {
				stop()
			}
			return ctx.Err()
		}
		l.mu.Unlock()
	}
}

// kickRead makes the read of the holder of the read turn fail at once
// (its context ended). A late kick, meant for an earlier holder, only
// makes the read start again.
func (l *Link) kickRead() {
	l.mu.Lock()
	if l.rbusy && l.rerr == nil && l.err == nil {
		l.kicked = true
		l.raw.SetReadDeadline(time.Unix(1, 0))
	}
	l.mu.Unlock()
}

// kickedRead tells whether err, from a read of the holder of the read
// turn, is that of a read interrupted by kickRead, and then clears the
// kick. Called with l.mu held.
func (l *Link) kickedRead(err error) bool {
	if err == nil || !l.kicked || l.err != nil || !errors.Is(err, errTimeout) {
		return false
	}
	l.kicked = false
	l.raw.SetReadDeadline(time.Time{})
	return true
}

// errTimeout is what a read interrupted by a past deadline fails with.
var errTimeout = errors.New("i/o timeout")

// reader is the link's goroutine: it reads while nobody else does, and
// ends the link once reading is over.
func (l *Link) reader() {
	defer close(l.reading)
	err := l.readIdleTurns()
	l.idle.Stop()
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

// readIdleTurns takes the read turn whenever it stays free with nobody
// waiting, until reading fails or the link goes down; it then returns with
// the turn held, and the error.
func (l *Link) readIdleTurns() error {
	down := l.down
	for {
		fired := false
		select {
		case <-l.idle.C:
			fired = true
		case <-l.bgwake:
		case <-down:
			down = nil // from now on, woken when the turn is handed over
		}
		l.mu.Lock()
		if fired {
			l.idleArmed = false
			l.idleFired++
			if l.rerr == nil && l.err == nil && (l.rbusy || time.Since(l.freeAt) < l.idleAfter) {
				// In use: look again later, and less often.
				l.idleWait = max(l.idleAfter, min(2*l.idleWait, maxIdleWait))
				if !l.rbusy { // else set when the turn is given back
					l.idleArmed = true
					l.idle.Reset(l.idleWait)
				}
				l.mu.Unlock()
				continue
			}
		}
		if l.rerr != nil { // handed over by a waiter
			err := l.rerr
			l.mu.Unlock()
			if err == errLinkEnded {
				err = nil
			}
			return err
		}
		if l.err != nil && !l.rbusy {
			l.rbusy = true
			l.mu.Unlock()
			return nil
		}
		if l.rbusy || l.qbytes >= queueLimit {
			l.mu.Unlock()
			continue // the holder gives it back; Recv makes room
		}
		if len(l.rwait) > 0 || l.recvWait > 0 {
			l.wakeReader() // again: they were woken, but did not take it
			l.mu.Unlock()
			continue
		}
		l.rbusy = true
		l.idleWait = l.idleAfter // quiet: look again soon once the turn is back
		for {
			delivered := l.delivered
			l.mu.Unlock()
			err := l.step()
			l.mu.Lock()
			if l.kickedRead(err) {
				err = nil // a late kick, meant for a waiter that had the turn before
			}
			if err != nil || l.err != nil {
				l.mu.Unlock()
				return err
			}
			if l.delivered != delivered || len(l.rwait) > 0 || l.recvWait > 0 || l.qbytes >= queueLimit {
				// Someone is waiting, or will be soon: let it read.
				l.giveTurn()
				break
			}
		}
		l.mu.Unlock()
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

// discardInput reads until the peer closes, the socket is closed, or (when
// aborting) the linger time ends.
func (l *Link) discardInput() {
	l.mu.Lock()
	aborting := l.aborting
	l.mu.Unlock()
	if aborting {
		<-l.lingering
		l.raw.SetReadDeadline(l.lingerUntil)
	}
	var b [4096]byte
	for {
		if _, err := l.conn.Read(b[:]); err != nil {
			return
		}
	}
}

// enqueue adds r for Recv. The queue's limit is checked by step before
// each packet, so it may be passed by one (big) packet at most.
func (l *Link) enqueue(r *Request) {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		r.Release() // down: dropped
		return
	}
	l.queue = append(l.queue, r)
	l.qbytes += r.cost
	l.queued++
	if l.recvWait > 0 {
		l.delivered++
	}
	l.mu.Unlock()
	select {
	case l.qwake <- struct{}{}:
	default:
	}
}

func (l *Link) queueFull() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.qbytes >= queueLimit
}

// step dispatches the complete packets buffered; if there are none, it
// reads from the connection until there are. It stops early, leaving
// packets buffered, when the queue for Recv is full.
func (l *Link) step() error {
	for {
		if l.big != nil {
			return l.readBig()
		}
		dispatched := false
		for {
			if l.queueFull() {
				return nil
			}
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
			dispatched = true
		}
		if dispatched {
			return nil
		}
		if need := l.scan.need; need >= bigPacket && need+bigSlack <= 2*(l.w-l.r)+bigAhead {
			return l.readBig()
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
// least bigPacket bytes, into memory of its own (l.big, l.bigW: a read
// interrupted by a waiter's context goes on from there), and dispatches it
// decoded in place: the message keeps that memory. What is read past the
// packet goes back to the (then empty) shared buffer.
func (l *Link) readBig() error {
	if l.big == nil {
		have := l.w - l.r
		l.big = getBuf(bigSize(have, l.scan.need, false))
		l.bigW = copy(l.big, l.buf[l.r:l.w])
		l.r, l.w = 0, 0
	}
	for {
		pkt, w := l.big, l.bigW
		n, err := l.scan.next(pkt[:w])
		if err == errIncomplete {
			if w >= MaxPacketSize {
				return &MalformedError{Offset: l.offset, What: fmt.Sprintf("packet larger than the %d-byte limit", MaxPacketSize)}
			}
			if w == len(pkt) || l.scan.need > len(pkt) && len(pkt)-w < bigPacket {
				npkt := getBuf(bigSize(w, l.scan.need, true))
				copy(npkt, pkt[:w])
				putBuf(l.big)
				l.big, pkt = npkt, npkt
			}
			m, err := l.conn.Read(pkt[w:])
			l.bigW += m
			if m == 0 {
				return readError(err, true)
			}
			continue
		}
		if err != nil {
			return &MalformedError{Offset: l.offset, What: err.Error()}
		}
		l.big, l.bigW = nil, 0
		if w-n > len(l.buf) {
			l.buf = make([]byte, w-n) // shrunk again by fill once parsed
		}
		l.w = copy(l.buf, pkt[n:w])
		// The message keeps pb if it was asked for about the packet's
		// size; otherwise (pb grew by half) it gets a copy of the packet
		// in memory of the right size, and pb is reused.
		if len(pkt)-n <= bigSlack+n/8 {
			err = l.dispatch(pkt[:n:n], pkt)
		} else {
			err = l.dispatch(pkt[:n:n], nil)
			putBuf(pkt)
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
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("read: %w (%w)", errTimeout, err)
	}
	return fmt.Errorf("read: %w", err)
}

// dispatch hands one packet over: an answer to its Ask, anything else to
// the queue for Recv. With pb, p lies in memory of the packet's own, which
// the decoded message may point into, and which dispatch takes over;
// otherwise p is in the shared read buffer.
func (l *Link) dispatch(p, pb []byte) error {
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
		l.enqueue(r)
		return nil
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
	l.delivered++
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
func (l *Link) decode(h header, p, pb []byte) (Msg, []byte, error) {
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
			copy(pb, p)
			err = proto.DecodeArgsNoCopy(m, pb[len(p)-len(h.args):len(p)])
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
