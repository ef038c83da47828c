//go:build !linux

package neonet

import "net"

func setUserTimeout(c *net.TCPConn) {}
