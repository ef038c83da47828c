package neonet

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/neozodb/neo/neo/proto"
)

// countingNet is a Network that counts the connections it made.
type countingNet struct {
	dials, accepts atomic.Int32
}

func (n *countingNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.dials.Add(1)
	return TCP.DialContext(ctx, network, addr)
}

func (n *countingNet) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	l, err := TCP.Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return countingListener{l, n}, nil
}

type countingListener struct {
	net.Listener
	n *countingNet
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.accepts.Add(1)
	}
	return c, err
}

func TestNetworkHook(t *testing.T) {
	ctx := context.Background()
	n := &countingNet{}
	ln, err := ListenConfig{Net: n}.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := Dialer{Net: n}
	cl, err := d.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sl, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	if err := cl.Notify(ctx, &proto.Ping{}); err != nil {
		t.Fatal(err)
	}
	if n.dials.Load() != 1 || n.accepts.Load() != 1 {
		t.Fatalf("dials=%d accepts=%d, want 1 and 1", n.dials.Load(), n.accepts.Load())
	}
}
