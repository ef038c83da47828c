// Package faultnet is a neonet.Network for tests whose links between named
// endpoints can be delayed, blackholed or cut, per direction, while the
// nodes run.
//
// A test creates one Network and gives every node its own endpoint,
// Endpoint("M1"), Endpoint("S1"), ..., as the node's Config.Net: the
// endpoint's listeners are known by the endpoint's name, and the connections
// it dials carry that name to the listening side. Faults are set between
// names with Delay, Blackhole and Cut, and removed with Heal; Any stands for
// every endpoint. A fault concerns the bytes going from one endpoint to the
// other:
//
//   - Delay: what is written reaches the peer the given time later (writes
//     return at once, as into a socket buffer), and a new connection waits
//     that long;
//   - Blackhole: what is written is held until the fault is removed (nothing
//     is lost: TCP would retransmit) and dropped if the connection is closed
//     first; new connections wait as if the peer's address did not answer;
//   - Cut: connections between the two endpoints are closed when the fault
//     is set, new connections in that direction are refused, and those in the
//     other direction die at their first write in the cut direction (a
//     connection needs both ways: for a one-way fault, use Blackhole).
//
// Connections are made by an inner Network (TCP by default), so the nodes
// really talk over sockets; only the endpoints' own connections are wrapped.
package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/neozodb/neo/neo/neonet"
)

// Any, as a name in a fault, matches every endpoint.
const Any = "*"

// Kind is the kind of a fault.
type Kind int

const (
	Pass       Kind = iota // no fault
	Delayed                // writes and dials wait
	Blackholed             // writes and dials hang until healed
	CutOff                 // connections closed, dials refused
)

func (k Kind) String() string {
	switch k {
	case Pass:
		return "pass"
	case Delayed:
		return "delay"
	case Blackholed:
		return "blackhole"
	case CutOff:
		return "cut"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ErrCut is the error of a write or a dial across a cut link.
var ErrCut = errors.New("faultnet: link cut")

type direction struct{ from, to string }

type fault struct {
	kind  Kind
	delay time.Duration
}

// Network is a set of named endpoints whose connections go through faults.
// Its methods may be called from any goroutine.
type Network struct {
	inner neonet.Network

	mu      sync.Mutex
	names   map[string]string // listening address → endpoint name
	faults  map[direction]fault
	conns   map[*conn]struct{}
	changed chan struct{} // closed and replaced at every change of faults

	wmu     sync.Mutex // packet watches (watch.go)
	watches []*Trigger
}

// New returns a Network whose connections are made by inner (nil: TCP).
func New(inner neonet.Network) *Network {
	if inner == nil {
		inner = neonet.TCP
	}
	return &Network{
		inner:   inner,
		names:   map[string]string{},
		faults:  map[direction]fault{},
		conns:   map[*conn]struct{}{},
		changed: make(chan struct{}),
	}
}

// Endpoint returns the Network a node named name uses.
func (n *Network) Endpoint(name string) neonet.Network {
	return &endpoint{n: n, name: name}
}

// Delay makes the bytes from one endpoint to the other wait d.
func (n *Network) Delay(from, to string, d time.Duration) {
	n.set(from, to, fault{kind: Delayed, delay: d})
}

// Blackhole holds the bytes from one endpoint to the other until Heal.
func (n *Network) Blackhole(from, to string) { n.set(from, to, fault{kind: Blackholed}) }

// Cut closes the connections between the two endpoints and refuses new
// ones from from to to until Heal.
func (n *Network) Cut(from, to string) { n.set(from, to, fault{kind: CutOff}) }

// Heal removes the fault set from from to to.
func (n *Network) Heal(from, to string) { n.set(from, to, fault{}) }

// Isolate cuts name from every other endpoint, both ways.
func (n *Network) Isolate(name string) {
	n.Cut(name, Any)
	n.Cut(Any, name)
}

// HealAll removes every fault.
func (n *Network) HealAll() {
	n.mu.Lock()
	n.faults = map[direction]fault{}
	n.notifyLocked()
	n.mu.Unlock()
}

func (n *Network) set(from, to string, f fault) {
	n.mu.Lock()
	d := direction{from, to}
	if f.kind == Pass {
		delete(n.faults, d)
	} else {
		n.faults[d] = f
	}
	var doomed []*conn
	if f.kind == CutOff {
		for c := range n.conns {
			c.mu.Lock()
			remote := c.peerName
			c.mu.Unlock()
			if remote == "" {
				continue // not yet known: its first write checks the faults
			}
			if match(d, c.local, remote) || match(d, remote, c.local) {
				doomed = append(doomed, c)
			}
		}
	}
	n.notifyLocked()
	n.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

func match(d direction, from, to string) bool {
	return (d.from == Any || d.from == from) && (d.to == Any || d.to == to)
}

func (n *Network) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// faultOf returns the fault from from to to, the most specific rule first,
// and a channel closed at the next change.
func (n *Network) faultOf(from, to string) (fault, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, d := range []direction{{from, to}, {from, Any}, {Any, to}, {Any, Any}} {
		if f, ok := n.faults[d]; ok {
			return f, n.changed
		}
	}
	return fault{}, n.changed
}

func (n *Network) nameOf(addr string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if name, ok := n.names[addr]; ok {
		return name
	}
	return addr
}

// NameOf returns the endpoint listening on addr, or addr itself if none.
func (n *Network) NameOf(addr string) string { return n.nameOf(addr) }

type endpoint struct {
	n    *Network
	name string
}

// maxName bounds an endpoint name, which travels in one length byte.
const maxName = 255

// magic starts the preamble of a connection dialed by an endpoint. Other
// dialers (NEO handshake, TLS) start otherwise and go unnamed: their
// endpoint name is their address.
const magic = "\xfffn"

func (e *endpoint) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if len(e.name) > maxName {
		return nil, fmt.Errorf("faultnet: endpoint name %q too long", e.name)
	}
	to := e.n.nameOf(addr)
	for {
		f, changed := e.n.faultOf(e.name, to)
		switch f.kind {
		case CutOff:
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w: %s → %s: %w", ErrCut, e.name, to, syscall.ECONNREFUSED)}
		case Blackholed:
			select {
			case <-ctx.Done():
				return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%s → %s blackholed: %w", e.name, to, ctx.Err())}
			case <-changed:
				continue
			}
		case Delayed:
			t := time.NewTimer(f.delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
			case <-t.C:
			}
		}
		break
	}
	raw, err := e.n.inner.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	// The listening side learns who dialed from a preamble.
	pre := append(append(append([]byte(nil), magic...), byte(len(e.name))), e.name...)
	if _, err := raw.Write(pre); err != nil {
		raw.Close()
		return nil, err
	}
	c := newConn(e.n, raw, e.name)
	c.setRemote(to)
	return c, nil
}

func (e *endpoint) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	ln, err := e.n.inner.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	a := ln.Addr().String()
	e.n.mu.Lock()
	e.n.names[a] = e.name
	e.n.mu.Unlock()
	return &listener{Listener: ln, e: e, addr: a}, nil
}

type listener struct {
	net.Listener
	e    *endpoint
	addr string
	once sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(l.e.n, raw, l.e.name), nil
}

func (l *listener) Close() error {
	l.once.Do(func() {
		l.e.n.mu.Lock()
		if l.e.n.names[l.addr] == l.e.name {
			delete(l.e.n.names, l.addr)
		}
		l.e.n.mu.Unlock()
	})
	return l.Listener.Close()
}

// conn is one side of a connection: its writes go from local to remote.
type conn struct {
	net.Conn
	n     *Network
	local string

	// The accepting side learns remote from the preamble, at its first
	// read or write.
	resolve   sync.Once
	remote    string // set once by resolve
	remoteErr error
	rmu       sync.Mutex
	unread    []byte // bytes read looking for the preamble of a foreign dialer
	unreadErr error

	mu       sync.Mutex
	peerName string // remote, once known (for Cut)

	// Writes held back by faults.
	wmu      sync.Mutex // serializes writes to the inner connection
	qmu      sync.Mutex
	qcond    *sync.Cond // on qmu: queue or closing changed
	queue    []chunk
	qerr     error // the pump failed: later writes fail
	pumping  bool
	closing  bool
	stop     chan struct{} // closed by Close
	pumpDone chan struct{} // closed when the pump ends
	closed   chan struct{} // closed when Close is done
	closeErr error

	tap tap // packet framing, for packet watches (watch.go)
}

func newConn(n *Network, raw net.Conn, local string) *conn {
	c := &conn{Conn: raw, n: n, local: local, stop: make(chan struct{}), pumpDone: make(chan struct{}), closed: make(chan struct{})}
	c.qcond = sync.NewCond(&c.qmu)
	n.mu.Lock()
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	return c
}

func (c *conn) setRemote(name string) {
	c.resolve.Do(func() { c.remote = name })
	c.mu.Lock()
	c.peerName = name
	c.mu.Unlock()
}

func (c *conn) peer() (string, error) {
	c.resolve.Do(func() {
		var m [len(magic) + 1]byte
		n, err := io.ReadFull(c.Conn, m[:])
		if err != nil || string(m[:len(magic)]) != magic {
			// Not dialed through an endpoint: the bytes are the peer's.
			c.unread = append([]byte(nil), m[:n]...)
			c.unreadErr = err
			c.remote = c.Conn.RemoteAddr().String()
		} else {
			name := make([]byte, m[len(magic)])
			if _, err := io.ReadFull(c.Conn, name); err != nil {
				c.remoteErr = fmt.Errorf("faultnet: reading the dialer's name: %w", err)
				return
			}
			c.remote = string(name)
		}
		c.mu.Lock()
		c.peerName = c.remote
		c.mu.Unlock()
	})
	return c.remote, c.remoteErr
}

func (c *conn) Read(p []byte) (int, error) {
	if _, err := c.peer(); err != nil {
		return 0, err
	}
	c.rmu.Lock()
	if len(c.unread) > 0 || c.unreadErr != nil {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		var err error
		if len(c.unread) == 0 {
			err, c.unreadErr = c.unreadErr, nil
		}
		c.rmu.Unlock()
		return n, err
	}
	c.rmu.Unlock()
	return c.Conn.Read(p)
}

// chunk is written data waiting to be passed on.
type chunk struct {
	b   []byte
	due time.Time // not before
}

// Write passes p on at once when no fault stands in its way and nothing is
// queued. Otherwise p is queued, as the kernel's socket buffer would hold
// it, and Write returns: the connection's pump passes it on when the faults
// allow (after the delay, once a blackhole is healed), in order.
func (c *conn) Write(p []byte) (int, error) { return c.tapWrite(p) }

// write is Write once packet watches have run.
func (c *conn) write(p []byte) (int, error) {
	remote, err := c.peer()
	if err != nil {
		return 0, err
	}
	f, _ := c.n.faultOf(c.local, remote)
	c.qmu.Lock()
	if c.qerr != nil {
		err := c.qerr
		c.qmu.Unlock()
		return 0, err
	}
	if c.closing {
		c.qmu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}
	}
	switch {
	case f.kind == Pass && len(c.queue) == 0:
		c.wmu.Lock()
		c.qmu.Unlock()
		defer c.wmu.Unlock()
		return c.Conn.Write(p)
	case f.kind == CutOff:
		c.qmu.Unlock()
		c.abort()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: fmt.Errorf("%w: %s → %s", ErrCut, c.local, remote)}
	}
	ch := chunk{b: append([]byte(nil), p...), due: time.Now()}
	if f.kind == Delayed {
		ch.due = ch.due.Add(f.delay)
	}
	c.queue = append(c.queue, ch)
	if !c.pumping {
		c.pumping = true
		go c.pump(remote)
	}
	c.qcond.Signal()
	c.qmu.Unlock()
	return len(p), nil
}

// pump passes queued chunks on as the faults allow, until Close.
func (c *conn) pump(remote string) {
	defer close(c.pumpDone)
	for {
		c.qmu.Lock()
		for len(c.queue) == 0 && !c.closing {
			c.qcond.Wait()
		}
		if len(c.queue) == 0 {
			c.qmu.Unlock()
			return
		}
		ch := c.queue[0]
		c.qmu.Unlock()
		if !c.waitFor(remote, ch.due) {
			return
		}
		c.wmu.Lock()
		_, err := c.Conn.Write(ch.b)
		c.wmu.Unlock()
		c.qmu.Lock()
		c.queue = c.queue[1:]
		if err != nil {
			c.qerr = err
			c.queue = nil
			c.qmu.Unlock()
			return
		}
		c.qmu.Unlock()
	}
}

// waitFor waits until a chunk due at due may go from c.local to remote.
// It returns false when the chunk, and those after it, are to be dropped:
// the link was cut, or closed while blackholed.
func (c *conn) waitFor(remote string, due time.Time) bool {
	for {
		f, changed := c.n.faultOf(c.local, remote)
		switch f.kind {
		case CutOff:
			c.fail(fmt.Errorf("%w: %s → %s", ErrCut, c.local, remote))
			go c.abort()
			return false
		case Blackholed:
			select {
			case <-changed:
				continue
			case <-c.stop:
				c.fail(net.ErrClosed)
				return false
			}
		}
		wait := time.Until(due)
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			return true
		case <-c.stop:
			// Closing: what a healthy link would still send goes at once.
			t.Stop()
			return true
		}
	}
}

func (c *conn) fail(err error) {
	c.qmu.Lock()
	if c.qerr == nil {
		c.qerr = &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	c.queue = nil
	c.qmu.Unlock()
}

// flushWait bounds how long Close lets the pump pass on what is queued.
const flushWait = time.Second

// Close passes on what is queued (unless a fault holds it back), then
// closes the connection.
func (c *conn) Close() error {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		<-c.closed
		return c.closeErr
	}
	c.closing = true
	close(c.stop)
	c.qcond.Broadcast()
	pumping := c.pumping
	c.qmu.Unlock()
	if pumping {
		c.Conn.SetWriteDeadline(time.Now().Add(flushWait))
		<-c.pumpDone
	}
	c.closeErr = c.Conn.Close()
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
	close(c.closed)
	return c.closeErr
}

// abort closes the connection at once, dropping what is queued (a cut).
func (c *conn) abort() {
	c.fail(net.ErrClosed)
	c.Conn.Close() // unblocks a pump writing
	c.Close()
}
