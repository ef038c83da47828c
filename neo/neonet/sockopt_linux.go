package neonet

import (
	"net"
	"syscall"
	"time"
)

// userTimeout bounds how long data we sent may stay unacknowledged before
// the kernel drops the connection (TCP_USER_TIMEOUT). Keep-alive only
// probes idle connections: without this bound, a peer that vanished while
// we had something to tell it (a lock request, an answer) would hold the
// link for as long as the kernel retransmits (about 15 minutes with
// Linux's defaults), and every commit waiting on that link with it. It
// matches the keep-alive budget (60 s idle + 3 × 10 s probes).
const userTimeout = 90 * time.Second

func setUserTimeout(c *net.TCPConn) {
	sc, err := c.SyscallConn()
	if err != nil {
		return
	}
	sc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12 /* TCP_USER_TIMEOUT */, int(userTimeout/time.Millisecond))
	})
}
