package zeo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/neozodb/neo/zodb"
)

// conn is one connection to the server: the handshake, a reader goroutine
// that matches replies to calls by message id, and the writes of calls.
// It knows messages, not storage semantics; what the server sends on its
// own (invalidations, info) goes to its Storage.
type conn struct {
	s     *Storage
	nc    net.Conn
	codec codec

	wmu sync.Mutex // one frame at a time on the wire

	mu      sync.Mutex
	nextID  int64
	pending map[string]*call
	err     error         // why the connection is down; set once
	down    chan struct{} // closed when the connection is down

	readerDone chan struct{}
	// Until the connection is verified and installed, invalidations
	// are held here (guarded by Storage.mu).
	holding bool
	held    []*zodb.CommitEvent
	nread   atomic.Int64 // messages read (tests wait on it)
	// blobs being downloaded, by oid+serial bytes (guarded by mu)
	blobs map[string]*blobRecv
}

// call is a synchronous call waiting for its reply.
type call struct {
	method string
	done   chan struct{}
	reply  any
	err    error
	// onReply, if set, runs in the reader goroutine on a normal reply,
	// before the caller is woken: it keeps what it does ordered with the
	// messages that follow the reply.
	onReply func(reply any)
}

// handshake reads the server's protocol announcement and answers it. It
// returns the codec to speak.
func handshake(ctx context.Context, nc net.Conn, fr *frameReader) (codec, error) {
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	hs, err := fr.readFrame()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if len(hs) < 2 || len(hs) > 64 {
		return nil, fmt.Errorf("handshake: bad protocol announcement %q", hs)
	}
	cd, ok := codecFor(hs[0])
	if !ok {
		return nil, fmt.Errorf("handshake: unknown encoding in protocol announcement %q", hs)
	}
	// Answer min(server version, ours), compared as byte strings; we only
	// speak version 5.
	ver := hs[1:]
	if bytes.Compare(ver, []byte("5")) > 0 {
		ver = []byte("5")
	}
	if string(ver) != "5" {
		return nil, fmt.Errorf("handshake: server protocol %q is not supported (need version 5)", hs)
	}
	reply := appendFrame(nil, append([]byte{hs[0]}, ver...))
	if _, err := nc.Write(reply); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return cd, nil
}

func newConn(s *Storage, nc net.Conn, cd codec) *conn {
	return &conn{
		s:          s,
		nc:         nc,
		codec:      cd,
		pending:    map[string]*call{},
		holding:    true,
		down:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
}

// shutdown takes the connection down for reason err (kept if first) and
// fails the outstanding calls.
func (c *conn) shutdown(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = map[string]*call{}
	close(c.down)
	c.mu.Unlock()
	c.s.dropConn(c)
	c.nc.Close()
	derr := c.disconnectedErr()
	for _, cl := range pending {
		cl.err = derr
		close(cl.done)
	}
}

func (c *conn) disconnectedErr() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if errors.Is(err, zodb.ErrClosed) {
		return zodb.ErrClosed
	}
	return &DisconnectedError{Addr: c.s.addr, Err: err}
}

func (c *conn) isDown() bool {
	select {
	case <-c.down:
		return true
	default:
		return false
	}
}

func (c *conn) writeMsg(m *msg) error {
	payload, err := c.codec.encode(m.value())
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.method, err)
	}
	frame := appendFrame(make([]byte, 0, 4+len(payload)), payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isDown() {
		return c.disconnectedErr()
	}
	if _, err := c.nc.Write(frame); err != nil {
		c.shutdown(fmt.Errorf("write: %w", err))
		return c.disconnectedErr()
	}
	return nil
}

// msgKey is how a message id is matched: ints by value, loadBefore's
// (oid, tid) tuple by its bytes.
func msgKey(id any) (string, bool) {
	switch id := id.(type) {
	case int64:
		return "#" + strconv.FormatInt(id, 10), true
	case tuple:
		if len(id) == 2 {
			a, ok1 := id[0].([]byte)
			b, ok2 := id[1].([]byte)
			if ok1 && ok2 {
				return "L" + string(a) + "\x00" + string(b), true
			}
		}
	}
	return "", false
}

// call makes a synchronous call and waits for its reply. A loadBefore call
// uses (oid, tid) as its message id and shares the reply of an identical
// call already outstanding.
func (c *conn) call(ctx context.Context, method string, args tuple, onReply func(any)) (any, error) {
	cl, key, err := c.start(method, args, onReply)
	if err != nil {
		return nil, err
	}
	return c.wait(ctx, cl, key)
}

// start sends a synchronous call; its done channel is closed when the
// reply came or the connection went down. key is the call's entry in
// pending, "" for a loadBefore sharing an outstanding call.
func (c *conn) start(method string, args tuple, onReply func(any)) (*call, string, error) {
	var id any
	var key string
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, "", c.disconnectedErr()
	}
	if method == "loadBefore" && len(args) == 2 {
		id = args
		key, _ = msgKey(id)
		if cl := c.pending[key]; cl != nil {
			c.mu.Unlock()
			return cl, "", nil
		}
	} else {
		c.nextID++
		id = c.nextID
		key, _ = msgKey(id)
	}
	cl := &call{method: method, done: make(chan struct{}), onReply: onReply}
	c.pending[key] = cl
	c.mu.Unlock()

	if err := c.writeMsg(&msg{id: id, flag: false, method: method, args: args}); err != nil {
		c.forget(key, cl)
		return nil, "", err
	}
	return cl, key, nil
}

func (c *conn) forget(key string, cl *call) {
	c.mu.Lock()
	if c.pending[key] == cl {
		delete(c.pending, key)
	}
	c.mu.Unlock()
}

func (c *conn) wait(ctx context.Context, cl *call, key string) (any, error) {
	select {
	case <-cl.done:
		return cl.reply, cl.err
	case <-ctx.Done():
		if key != "" {
			// The reply, if it ever comes, is dropped. A call left
			// without a reply (e.g. a vote) leaves the server in a
			// state only the next calls can tell.
			c.forget(key, cl)
		}
		return nil, ctx.Err()
	}
}

// async sends a one-way call.
func (c *conn) async(method string, args tuple) error {
	return c.writeMsg(&msg{id: int64(0), flag: true, method: method, args: args})
}

// heartbeat sends the keep-alive message ZEO's client sends every minute.
func (c *conn) heartbeat() error {
	return c.writeMsg(&msg{id: int64(-1), flag: int64(0), method: ".reply", args: nil})
}

// readLoop owns the reading side until the connection is down.
func (c *conn) readLoop() {
	defer close(c.readerDone)
	fr := &frameReader{r: c.nc, off: 0}
	for {
		off := fr.off
		payload, err := fr.readFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("connection closed by the server")
			} else if c.isDown() {
				err = nil
			} else {
				err = &ProtocolError{Addr: c.s.addr, Err: err}
			}
			c.shutdown(err)
			return
		}
		c.nread.Add(1)
		if err := c.handleFrame(payload); err != nil {
			perr := &ProtocolError{Addr: c.s.addr, Err: fmt.Errorf("frame at offset %d: %w", off, err)}
			c.s.log.Warn("zeo: closing connection", "addr", c.s.addr, "err", perr)
			c.shutdown(perr)
			return
		}
	}
}

// handleFrame decodes and dispatches one frame. An error means the server
// broke the protocol: the connection is then closed.
func (c *conn) handleFrame(payload []byte) error {
	v, err := c.codec.decode(payload)
	if err != nil {
		return err
	}
	m, err := msgFromValue(v)
	if err != nil {
		return err
	}
	switch flag := m.flag.(type) {
	case int64: // reply (0) or error reply (2)
		if m.method != ".reply" || (flag != 0 && flag != 2) {
			return fmt.Errorf("bad reply %.200s", formatValue(v))
		}
		key, ok := msgKey(m.id)
		if !ok {
			return fmt.Errorf("reply with a bad message id %.200s", formatValue(m.id))
		}
		c.mu.Lock()
		cl := c.pending[key]
		delete(c.pending, key)
		c.mu.Unlock()
		if cl == nil {
			c.s.log.Debug("zeo: reply to a call nobody waits for", "addr", c.s.addr, "msgid", formatValue(m.id))
			return nil
		}
		if flag == 2 {
			cl.err = errorFromReply(m.args)
		} else {
			cl.reply = m.args
			if cl.onReply != nil {
				cl.onReply(m.args)
			}
		}
		close(cl.done)
		return nil
	case bool:
		if !flag || !equalValue(m.id, int64(0)) {
			return fmt.Errorf("bad message %.200s", formatValue(v))
		}
		return c.s.serverCall(c, m)
	}
	return fmt.Errorf("bad message flag %.200s", formatValue(v))
}

var discardLogger = slog.New(slog.DiscardHandler)
