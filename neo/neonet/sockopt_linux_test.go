package neonet

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// Both ends of a link get NEO/py's socket options.
func TestSocketOptions(t *testing.T) {
	c, s := pair(t)
	for _, l := range []*Link{c, s} {
		sc, err := l.raw.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []struct {
			name       string
			level, opt int
			want       int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 60},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 10},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 3},
			{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
			{"TCP_USER_TIMEOUT", syscall.IPPROTO_TCP, 0x12, int(userTimeout / time.Millisecond)},
		} {
			var v int
			var gerr error
			err := sc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), o.level, o.opt) })
			if err != nil || gerr != nil {
				t.Fatalf("%s: %v %v", o.name, err, gerr)
			}
			if v != o.want {
				t.Errorf("link %s: %s = %d, want %d", l, o.name, v, o.want)
			}
		}
	}
}

func TestListenerSocketOptions(t *testing.T) {
	ln, err := Listen(testCtx(t), "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sc, err := ln.nl.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := sc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if v != 1 {
		t.Fatalf("SO_REUSEADDR = %d, want 1", v)
	}
}
