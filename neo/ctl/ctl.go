// Package ctl is neoctl, the command-line tool that manages a NEO cluster
// through its admin node.
//
// Run executes one command: it connects to the admin node (lazily, only when
// the command needs it; neoctl never identifies), sends the command's
// request, waits for the answer and prints the result to stdout formatted
// byte for byte as NEO/py's neoctl does, so that scripts parsing neoctl's
// output keep working.
//
// When a command fails, Run returns an error whose text is what NEO/py's
// neoctl prints on stderr before exiting with status 1: the admin's or
// master's message for a refused command (DENIED), "ERROR: <message>" when
// the cluster is not ready (NOT_READY, no connection), "invalid command: ..."
// for an unknown command.
package ctl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// DefaultAddr is the admin node neoctl talks to when none is given.
const DefaultAddr = "127.0.0.1:9999"

// defaultPort is the port of an admin address given without one.
const defaultPort = "9999"

// Run executes one neoctl command line (args after the global flags, e.g.
// ["print", "node"]) against the admin node at addr and writes the output,
// formatted like NEO/py's neoctl, to stdout. addr may omit the port (9999).
// Without args, Run prints the list of commands.
func Run(ctx context.Context, addr string, tlsConf *tls.Config, args []string, stdout io.Writer) error {
	if addr == "" {
		addr = DefaultAddr
	}
	c := &client{addr: withDefaultPort(addr), tls: tlsConf}
	defer c.close()
	out, show, err := execute(ctx, c, args)
	if err != nil {
		return err
	}
	if show {
		if _, err := io.WriteString(stdout, out+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// withDefaultPort adds the default admin port to an address without one,
// as neoctl's --address: "host", "[v6addr]" and a bare IPv6 address.
func withDefaultPort(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if strings.HasSuffix(addr, "]") {
			return addr + ":" + defaultPort
		}
		return addr
	}
	switch strings.Count(addr, ":") {
	case 0:
		return net.JoinHostPort(addr, defaultPort)
	case 1:
		return addr
	}
	return net.JoinHostPort(addr, defaultPort) // IPv6 without brackets nor port
}

// client is neoctl's connection to the admin node.
type client struct {
	addr string
	tls  *tls.Config

	link *neonet.Link
	wg   sync.WaitGroup
	// notified receives the Error packets the admin sends as notifications
	// instead of answers (NEO/py's admin does that for a bad partition
	// offset); neoctl takes them as the answer to its pending request.
	notified chan *proto.Error
}

var errNotReady = errors.New("not ready")

// notReady is NEO/py's NotReadyException, printed "ERROR: <message>".
func notReady(msg string) error { return fmt.Errorf("ERROR: %s%w", msg, silent{errNotReady}) }

// silent wraps an error without adding to the text.
type silent struct{ error }

func (silent) Error() string   { return "" }
func (s silent) Unwrap() error { return s.error }

func (c *client) connect(ctx context.Context) error {
	if c.link != nil {
		return nil
	}
	l, err := neonet.Dial(ctx, c.addr, c.tls)
	if err != nil {
		return notReady("not connected")
	}
	c.link = l
	c.notified = make(chan *proto.Error, 1)
	c.wg.Go(func() {
		for {
			r, err := l.Recv(context.Background()) // ends when the link is closed
			if err != nil {
				return
			}
			if e, ok := r.Msg.(*proto.Error); ok {
				select {
				case c.notified <- e:
				default:
				}
			}
		}
	})
	return nil
}

func (c *client) close() {
	if c.link != nil {
		c.link.Close()
		c.wg.Wait()
	}
}

// ask sends req and returns its answer. An Error answer is returned as
// *proto.Error, except DENIED and NOT_READY which end the command with
// NEO/py's texts.
func (c *client) ask(ctx context.Context, req proto.Msg) (proto.Msg, error) {
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	call, err := c.link.Start(ctx, req)
	if err != nil {
		return nil, notReady("Connection closed")
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		msg proto.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := call.Wait(waitCtx)
		done <- result{m, err}
	}()
	var r result
	select {
	case r = <-done:
	case e := <-c.notified:
		cancel()
		<-done
		r = result{err: e}
	}
	if r.err != nil {
		var perr *proto.Error
		if !errors.As(r.err, &perr) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, notReady("Connection closed")
		}
		switch perr.Code {
		case proto.Denied:
			return nil, errors.New(perr.Message)
		case proto.NotReady:
			return nil, notReady(perr.Message)
		}
		return nil, perr
	}
	return r.msg, nil
}

// askAck sends a request answered by Error(ACK, message) and returns the
// message.
func (c *client) askAck(ctx context.Context, req proto.Msg) (string, error) {
	_, err := c.ask(ctx, req)
	var perr *proto.Error
	if errors.As(err, &perr) && perr.Code == proto.Ack {
		return perr.Message, nil
	}
	if err == nil {
		return "", fmt.Errorf("unexpected answer to %T", req)
	}
	return "", unexpected(err)
}

// askFor sends req and checks that the answer has type T.
func askFor[T proto.Msg](ctx context.Context, c *client, req proto.Msg) (T, error) {
	var zero T
	m, err := c.ask(ctx, req)
	if err != nil {
		return zero, unexpected(err)
	}
	a, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("unexpected answer %T to %T", m, req)
	}
	return a, nil
}

// unexpected describes an Error answer neoctl has no meaning for (NEO/py's
// neoctl fails with the packet's contents).
func unexpected(err error) error {
	var perr *proto.Error
	if errors.As(err, &perr) {
		return fmt.Errorf("unexpected answer: Error %s: %s", perr.Code, perr.Message)
	}
	return err
}

// notify sends a notification and waits until it is written.
func (c *client) notify(ctx context.Context, m proto.Msg) error {
	if err := c.connect(ctx); err != nil {
		return err
	}
	if err := c.link.Notify(ctx, m); err != nil {
		return notReady("Connection closed")
	}
	return nil
}
