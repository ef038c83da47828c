package neonet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// TCP keep-alive as NEO/py sets it on every socket: dead peers are found
// after about 90 s without traffic. There is no applicative keep-alive.
var keepAlive = net.KeepAliveConfig{
	Enable:   true,
	Idle:     60 * time.Second,
	Interval: 10 * time.Second,
	Count:    3,
}

// Network is where links get their connections: TCP by default. Tests put
// their own in between to delay, drop or cut what nodes send each other.
// Its connections must honour deadlines: links use them to end the
// handshake in time, and to interrupt a read made for a waiter (Ask,
// Recv) whose context ends.
type Network interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Listen(ctx context.Context, network, addr string) (net.Listener, error)
}

// TCP is the default Network: TCP sockets with NEO/py's keep-alive settings.
var TCP Network = tcpNetwork{}

type tcpNetwork struct{}

func (tcpNetwork) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{KeepAliveConfig: keepAlive}
	return nd.DialContext(ctx, network, addr)
}

func (tcpNetwork) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	nlc := net.ListenConfig{KeepAliveConfig: keepAlive}
	return nlc.Listen(ctx, network, addr)
}

func netOf(n Network) Network {
	if n == nil {
		return TCP
	}
	return n
}

// ConnectLimit is NEO/py's reconnection throttle: a new connection to an
// address is not attempted less than this after the previous attempt.
const ConnectLimit = 1 * time.Second

// DefaultHandshakeTimeout bounds how long an accepted connection may take
// to complete its TLS and NEO handshakes. NEO/py has no such limit; a NEO
// peer sends its handshake at once, so only non-NEO peers are affected.
const DefaultHandshakeTimeout = 10 * time.Second

// Dial connects to a NEO node at addr (host:port) and exchanges the
// handshake (after TLS when tlsConf is not nil). ctx bounds the whole
// setup. Dial does not throttle reconnections; see Dialer.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*Link, error) {
	d := Dialer{TLS: tlsConf}
	return d.Dial(ctx, addr)
}

// Dialer opens links. Its zero value dials in plain text without
// throttling; a node uses one Dialer for all its outgoing links, with
// ConnectLimit set, to throttle reconnections per address as NEO/py does.
type Dialer struct {
	TLS          *tls.Config   // nil: no TLS; see TLSConfig
	ConnectLimit time.Duration // min delay between two attempts to one address
	Net          Network       // nil: TCP

	mu   sync.Mutex
	next map[string]time.Time // per address: earliest time of the next attempt
}

// ResetThrottle lets the next connection to addr be attempted at once (NEO/py
// does it after a successful replication or a neoctl connection).
func (d *Dialer) ResetThrottle(addr string) {
	d.mu.Lock()
	delete(d.next, addr)
	d.mu.Unlock()
}

// throttle waits until an attempt to addr is allowed and books it.
func (d *Dialer) throttle(ctx context.Context, addr string) error {
	if d.ConnectLimit <= 0 {
		return nil
	}
	for {
		d.mu.Lock()
		now := time.Now()
		if d.next == nil {
			d.next = make(map[string]time.Time)
		}
		t, ok := d.next[addr]
		if !ok || !now.Before(t) {
			for a, t := range d.next { // forget expired entries
				if now.After(t) {
					delete(d.next, a)
				}
			}
			d.next[addr] = now.Add(d.ConnectLimit)
			d.mu.Unlock()
			return nil
		}
		d.mu.Unlock()
		timer := time.NewTimer(t.Sub(now))
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
	}
}

// Dial connects to addr; see the package-level Dial.
func (d *Dialer) Dial(ctx context.Context, addr string) (*Link, error) {
	if err := d.throttle(ctx, addr); err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	raw, err := netOf(d.Net).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	setNoDelay(raw)
	l, err := clientHandshake(ctx, raw, d.TLS)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return l, nil
}

func setNoDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // Go's default already; NEO/py sets it explicitly
		setUserTimeout(tc)
	}
}

func clientHandshake(ctx context.Context, raw net.Conn, tlsConf *tls.Config) (*Link, error) {
	stop := deadlineFromContext(ctx, raw)
	defer stop()
	conn := raw
	if tlsConf != nil {
		tc := tls.Client(raw, enforceTLS(tlsConf))
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", ctxErr(ctx, err))
		}
		conn = tc
	}
	l := newLink(conn, raw)
	if err := l.handshake(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	stop()
	raw.SetDeadline(time.Time{})
	go l.reader()
	return l, nil
}

// deadlineFromContext makes blocking I/O on c fail when ctx ends. The
// returned function undoes the hook: once it returns, ctx no longer
// changes c's deadline (the caller then resets it).
func deadlineFromContext(ctx context.Context, c net.Conn) (stop func()) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	var mu sync.Mutex
	stopped := false
	unhook := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			c.SetDeadline(time.Unix(1, 0))
		}
	})
	return func() {
		unhook()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}

// ctxErr prefers ctx's error to the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Done() != nil {
		// The socket's deadline is ctx's: ctx ends now, if not yet.
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// handshake sends our handshake and checks the peer's. The two are
// independent: NEO/py sends its own without waiting for the peer's. Bytes
// the peer sent after its handshake stay in the buffer for the link.
func (l *Link) handshake() error {
	if _, err := l.conn.Write(proto.Handshake); err != nil {
		return fmt.Errorf("send handshake: %w", err)
	}
	for {
		n, err := checkHandshake(l.buf[:l.w])
		if err == nil {
			l.r = n
			return nil
		}
		if err != errIncomplete {
			return fmt.Errorf("handshake: %w", err)
		}
		m, err := l.conn.Read(l.buf[l.w:])
		l.w += m
		if m == 0 && err != nil {
			if err == io.EOF {
				err = ErrPeerClosed
			}
			return fmt.Errorf("handshake: %w", err)
		}
	}
}

// ListenConfig holds the options of a listener.
type ListenConfig struct {
	TLS              *tls.Config   // nil: no TLS; see TLSConfig
	HandshakeTimeout time.Duration // 0: DefaultHandshakeTimeout
	Net              Network       // nil: TCP

	// OnReject, if set, is told about every accepted connection that did
	// not become a link (failed TLS or NEO handshake). By default they
	// are logged with log/slog, a version mismatch as a warning, the rest
	// at debug level, as NEO/py does.
	OnReject func(remote net.Addr, err error)
}

// Listen listens for NEO connections on addr (host:port; port 0 picks one).
func Listen(ctx context.Context, addr string, tlsConf *tls.Config) (*Listener, error) {
	return ListenConfig{TLS: tlsConf}.Listen(ctx, addr)
}

// Listen listens for NEO connections on addr.
func (lc ListenConfig) Listen(ctx context.Context, addr string) (*Listener, error) {
	nl, err := netOf(lc.Net).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if lc.HandshakeTimeout <= 0 {
		lc.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if lc.TLS != nil {
		lc.TLS = enforceTLS(lc.TLS)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	ln := &Listener{
		ctx:     lctx,
		cancel:  lcancel,
		cfg:     lc,
		nl:      nl,
		links:   make(chan *Link),
		closing: make(chan struct{}),
		setups:  make(chan struct{}, maxSetups),
	}
	ln.wg.Add(1)
	go ln.acceptLoop()
	return ln, nil
}

// maxSetups bounds the accepted connections doing their handshakes at once.
const maxSetups = 128

// Listener accepts NEO connections. Connections are accepted and their
// handshakes done in the background; Accept returns the resulting links.
type Listener struct {
	ctx     context.Context // canceled by Close
	cancel  context.CancelFunc
	cfg     ListenConfig
	nl      net.Listener
	links   chan *Link
	closing chan struct{}
	setups  chan struct{} // one token per connection in its handshake
	wg      sync.WaitGroup

	mu        sync.Mutex
	acceptErr error
	closed    bool
}

// Addr returns the listening address.
func (ln *Listener) Addr() net.Addr { return ln.nl.Addr() }

// Accept returns the next link whose handshake succeeded.
func (ln *Listener) Accept(ctx context.Context) (*Link, error) {
	select {
	case l := <-ln.links:
		return l, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("accept on %s: %w", ln.Addr(), ctx.Err())
	case <-ln.closing:
		ln.mu.Lock()
		err := ln.acceptErr
		ln.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return nil, fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
}

// Close stops listening, closes connections still in their handshakes, and
// waits for the listener's goroutines. Links already returned by Accept are
// not affected.
func (ln *Listener) Close() error {
	ln.stop(nil)
	ln.cancel()
	err := ln.nl.Close()
	ln.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// stop makes Accept fail, with err (nil: closed).
func (ln *Listener) stop(err error) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if !ln.closed {
		ln.closed = true
		ln.acceptErr = err
		close(ln.closing)
	}
}

func (ln *Listener) acceptLoop() {
	defer ln.wg.Done()
	for {
		select {
		case ln.setups <- struct{}{}:
		case <-ln.closing:
			return
		}
		raw, err := ln.nl.Accept()
		if err != nil {
			<-ln.setups
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			ln.stop(err)
			return
		}
		ln.wg.Add(1)
		go func() {
			defer ln.wg.Done()
			defer func() { <-ln.setups }()
			ln.setup(raw)
		}()
	}
}

// setup does the handshakes of an accepted connection and hands the link
// to Accept.
func (ln *Listener) setup(raw net.Conn) {
	setNoDelay(raw)
	// Closing the listener (ln.ctx) interrupts handshakes.
	ctx, cancel := context.WithTimeout(ln.ctx, ln.cfg.HandshakeTimeout)
	defer cancel()
	l, err := serverHandshake(ctx, raw, ln.cfg.TLS)
	if err != nil {
		raw.Close()
		ln.reject(raw.RemoteAddr(), err)
		return
	}
	select {
	case ln.links <- l:
	case <-ln.closing:
		l.Close()
	}
}

func (ln *Listener) reject(remote net.Addr, err error) {
	if ln.cfg.OnReject != nil {
		ln.cfg.OnReject(remote, err)
		return
	}
	var verr *proto.VersionError
	if errors.As(err, &verr) {
		slog.Warn("neonet: rejected connection", "remote", remote, "err", err)
	} else {
		slog.Debug("neonet: rejected connection", "remote", remote, "err", err)
	}
}

// ErrNotTLS tells that a peer connected in plain text to a listener that
// requires TLS.
var ErrNotTLS = errors.New("peer does not use TLS")

func serverHandshake(ctx context.Context, raw net.Conn, tlsConf *tls.Config) (*Link, error) {
	stop := deadlineFromContext(ctx, raw)
	defer stop()
	conn := raw
	if tlsConf == nil {
		// NEO/py sends its handshake as soon as it accepts, which l.handshake does.
	} else {
		// Like NEO/py, look at the first byte before starting TLS: a TLS
		// handshake record starts with 0x16; anything else is refused.
		var first [1]byte
		if _, err := io.ReadFull(raw, first[:]); err != nil {
			if err == io.EOF {
				err = ErrPeerClosed
			}
			return nil, fmt.Errorf("TLS handshake: %w", ctxErr(ctx, err))
		}
		if first[0] != 0x16 {
			return nil, fmt.Errorf("%w: first byte 0x%02x", ErrNotTLS, first[0])
		}
		tc := tls.Server(&prefixConn{Conn: raw, prefix: first[:]}, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", ctxErr(ctx, err))
		}
		conn = tc
	}
	l := newLink(conn, raw)
	if err := l.handshake(); err != nil {
		return nil, ctxErr(ctx, err)
	}
	stop()
	raw.SetDeadline(time.Time{})
	go l.reader()
	return l, nil
}

// prefixConn returns prefix before reading from Conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
