package neonet

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// rawServer accepts one connection, sends reply to it, and returns what
// the dialer sent before closing (or 6 bytes).
func rawServer(t *testing.T, reply []byte) (addr string, got <-chan []byte) {
	t.Helper()
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	ch := make(chan []byte, 1)
	go func() {
		conn, err := nl.Accept()
		if err != nil {
			ch <- nil
			return
		}
		defer conn.Close()
		conn.Write(reply)
		b := make([]byte, len(proto.Handshake))
		n, _ := io.ReadFull(conn, b)
		ch <- b[:n]
	}()
	return nl.Addr().String(), ch
}

func TestDialHandshakeFailures(t *testing.T) {
	for _, tt := range []struct {
		name  string
		reply string
		check func(error) bool
	}{
		{"version 6", "\x92\xa3NEO\x06", func(err error) bool {
			var v *proto.VersionError
			return errors.As(err, &v) && v.Version == 6
		}},
		{"version 200", "\x92\xa3NEO\xcc\xc8", func(err error) bool {
			var v *proto.VersionError
			return errors.As(err, &v) && v.Version == 200
		}},
		{"HTTP", "HTTP/1.1 400 Bad Request\r\n", func(err error) bool { return errors.Is(err, proto.ErrNotNEO) }},
		{"TLS alert", "\x15\x03\x03\x00\x02\x02\x28", func(err error) bool { return errors.Is(err, proto.ErrNotNEO) }},
		{"closed", "", func(err error) bool { return errors.Is(err, ErrPeerClosed) }},
		{"closed in handshake", "\x92\xa3N", func(err error) bool { return errors.Is(err, ErrPeerClosed) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := rawServer(t, []byte(tt.reply))
			l, err := Dial(testCtx(t), addr, nil)
			if err == nil {
				l.Close()
				t.Fatal("dial succeeded")
			}
			if !tt.check(err) {
				t.Fatalf("unexpected error: %v", err)
			}
			// We sent our handshake without waiting, and nothing else.
			if b := <-got; string(b) != string(proto.Handshake) {
				t.Fatalf("server got % x", b)
			}
		})
	}
}

func TestDialContext(t *testing.T) {
	// A server that accepts but never sends its handshake.
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	go func() {
		conn, err := nl.Accept()
		if err == nil {
			io.Copy(io.Discard, conn)
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, nl.Addr().String(), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(testCtx(t))
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = Dial(ctx, nl.Addr().String(), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want Canceled", err)
	}
}

// rejectingListener returns a listener whose rejections go to the channel.
func rejectingListener(t *testing.T, lc ListenConfig) (*Listener, <-chan error) {
	t.Helper()
	rejected := make(chan error, 10)
	lc.OnReject = func(_ net.Addr, err error) { rejected <- err }
	ln, err := lc.Listen(testCtx(t), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, rejected
}

// The accepting side sends its handshake at once, and closes without
// sending anything else when the peer's is wrong.
func TestAcceptHandshakeFailures(t *testing.T) {
	ln, rejected := rejectingListener(t, ListenConfig{})
	for _, tt := range []struct {
		name, send string
		check      func(error) bool
	}{
		{"version 4", "\x92\xa3NEO\x04\x93\x00\x02\x90", func(err error) bool {
			var v *proto.VersionError
			return errors.As(err, &v) && v.Version == 4
		}},
		{"HTTP", "GET / HTTP/1.0\r\n\r\n", func(err error) bool { return errors.Is(err, proto.ErrNotNEO) }},
		{"msgpack bin NEO", "\x92\xc4\x03NEO\x05", func(err error) bool { return errors.Is(err, proto.ErrNotNEO) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte(tt.send))
			p := &rawPeer{conn}
			p.expect(t, proto.Handshake)
			p.expectEOF(t)
			if err := <-rejected; !tt.check(err) {
				t.Fatalf("unexpected error: %v", err)
			}
		})
	}
}

// The peer's handshake may come in pieces, and with packets after it in
// the same piece.
func TestAcceptHandshakeInPieces(t *testing.T) {
	ctx := testCtx(t)
	ln, _ := rejectingListener(t, ListenConfig{})
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hs := proto.Handshake
	for i := range 5 {
		conn.Write(hs[i : i+1])
	}
	conn.Write(proto.AppendPacket([]byte{hs[5]}, 0, &proto.NotifyReady{}))
	l, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.Recv(ctx)
	if err != nil || r.Msg.MsgCode() != proto.CodeNotifyReady {
		t.Fatalf("got %v, %v", r, err)
	}
}

func TestAcceptHandshakeTimeout(t *testing.T) {
	ln, rejected := rejectingListener(t, ListenConfig{HandshakeTimeout: 50 * time.Millisecond})
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := <-rejected; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

func TestListenerClose(t *testing.T) {
	ctx := testCtx(t)
	ln, err := Listen(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A connection stuck in its handshake does not hold Close.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept(ctx)
		accepted <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept: %v, want net.ErrClosed", err)
	}
	if _, err := Dial(ctx, ln.Addr().String(), nil); err == nil {
		t.Fatal("dial to a closed listener succeeded")
	}
}

// Dialer throttles attempts to one address as NEO/py: not twice within
// ConnectLimit, unless reset.
func TestDialerThrottle(t *testing.T) {
	ctx := testCtx(t)
	ln, err := Listen(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			l, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			l.Close()
		}
	}()
	addr := ln.Addr().String()
	d := &Dialer{ConnectLimit: ConnectLimit}
	start := time.Now()
	for range 2 {
		l, err := d.Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	if el := time.Since(start); el < ConnectLimit {
		t.Fatalf("two connections in %v, less than %v", el, ConnectLimit)
	}
	// The next attempt is throttled: a short context gives up.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := d.Dial(sctx, addr); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("throttled dial: %v, want DeadlineExceeded", err)
	}
	d.ResetThrottle(addr)
	start = time.Now()
	l, err := d.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if el := time.Since(start); el >= ConnectLimit {
		t.Fatalf("dial after reset took %v", el)
	}
}
