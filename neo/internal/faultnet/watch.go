package faultnet

import (
	"errors"
	"sync"

	"github.com/neozodb/neo/neo/proto"
)

// Packet is a NEO packet about to go from one endpoint to another, as a
// packet watch sees it.
type Packet struct {
	From, To string
	MsgID    uint32
	Code     uint16
	Raw      []byte // the whole packet; valid during the call only
}

// Decode decodes the packet's message.
func (p Packet) Decode() (proto.Msg, error) {
	_, m, _, err := proto.DecodePacket(p.Raw)
	return m, err
}

// A Trigger is a packet watch set by OnPacket.
type Trigger struct {
	n        *Network
	from, to string
	code     uint16
	action   func(Packet) bool
	mu       sync.Mutex // held while action runs
	done     bool
	fired    chan struct{}
}

// OnPacket watches the NEO packets with the given code going from one
// endpoint to the other (Any matches every endpoint). For each of them,
// action is called in the writer's goroutine before the packet is passed
// on, so that a fault the action sets (Cut, Blackhole, Isolate) already
// applies to it; the bytes written before it in the same write are passed
// on first. When action returns true the trigger has fired: it is removed
// and Fired is closed; false lets the packet go and keeps watching.
//
// action must not wait for the nodes (their writers are blocked while it
// runs): to stop a node, set a fault in action and stop the node after
// Fired. Only plain links are watched: the bytes of a TLS link are not
// packets.
func (n *Network) OnPacket(from, to string, code uint16, action func(Packet) bool) *Trigger {
	t := &Trigger{n: n, from: from, to: to, code: code, action: action, fired: make(chan struct{})}
	n.wmu.Lock()
	n.watches = append(n.watches, t)
	n.wmu.Unlock()
	return t
}

// Fired is closed once the trigger's action returned true.
func (t *Trigger) Fired() <-chan struct{} { return t.fired }

// Stop removes the trigger (Fired stays open if it did not fire).
func (t *Trigger) Stop() {
	t.n.wmu.Lock()
	defer t.n.wmu.Unlock()
	for i, w := range t.n.watches {
		if w == t {
			t.n.watches = append(t.n.watches[:i:i], t.n.watches[i+1:]...)
			return
		}
	}
}

// run calls the action of a trigger that did not fire yet.
func (t *Trigger) run(p Packet) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done || !t.action(p) {
		return
	}
	t.done = true
	t.Stop()
	close(t.fired)
}

// match returns the triggers interested in a packet.
func (n *Network) match(from, to string, code uint16) []*Trigger {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	var v []*Trigger
	for _, t := range n.watches {
		if t.code == code && (t.from == Any || t.from == from) && (t.to == Any || t.to == to) {
			v = append(v, t)
		}
	}
	return v
}

// tap follows the framing of what a connection writes: the handshake, then
// packets. A packet's bytes are held until it is complete, so that its
// watches run before any of it is passed on.
type tap struct {
	mu      sync.Mutex
	hs      int    // handshake bytes seen
	off     bool   // not a plain NEO stream (TLS, other): bytes pass as they are
	pending []byte // beginning of a packet not complete yet
}

// tapWrite passes p on through write, running packet watches on the way.
func (c *conn) tapWrite(p []byte) (int, error) {
	remote, err := c.peer()
	if err != nil {
		return 0, err
	}
	t := &c.tap
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.off {
		return c.write(p)
	}
	n := len(p)
	// The handshake passes as it is.
	if t.hs < len(proto.Handshake) {
		k := min(len(proto.Handshake)-t.hs, len(p))
		for i := range k {
			if p[i] != proto.Handshake[t.hs+i] {
				t.off = true
				return c.write(p)
			}
		}
		t.hs += k
		if _, err := c.write(p[:k]); err != nil {
			return 0, err
		}
		p = p[k:]
	}
	b := p
	if len(t.pending) > 0 {
		t.pending = append(t.pending, p...)
		b = t.pending
	}
	start := 0 // b[:start] is passed on
	i := 0     // b[:i] is complete packets
	for i < len(b) {
		l, err := proto.PacketLen(b[i:])
		if errors.Is(err, proto.ErrIncomplete) {
			break
		}
		if err != nil {
			// Not packets as we know them: stop looking.
			t.off = true
			t.pending = nil
			if _, err := c.write(b[start:]); err != nil {
				return 0, err
			}
			return n, nil
		}
		if id, code, ok := packetHeader(b[i : i+l]); ok {
			for _, w := range c.n.match(c.local, remote, code) {
				if i > start {
					if _, err := c.write(b[start:i]); err != nil {
						t.pending = nil
						return 0, err
					}
					start = i
				}
				w.run(Packet{From: c.local, To: remote, MsgID: id, Code: code, Raw: b[i : i+l]})
			}
		}
		i += l
	}
	// Pass on the complete packets; keep an incomplete one.
	if i > start {
		if _, err := c.write(b[start:i]); err != nil {
			t.pending = nil
			return 0, err
		}
	}
	if i < len(b) {
		t.pending = append([]byte(nil), b[i:]...)
	} else {
		t.pending = nil
	}
	return n, nil
}

// packetHeader reads the msg id and code of a complete packet.
func packetHeader(b []byte) (id uint32, code uint16, ok bool) {
	if len(b) < 1 || b[0] != 0x93 {
		return 0, 0, false
	}
	b = b[1:]
	v, n, ok := msgpackUint(b)
	if !ok || v > 1<<32-1 {
		return 0, 0, false
	}
	id = uint32(v)
	v, _, ok = msgpackUint(b[n:])
	if !ok || v > 1<<16-1 {
		return 0, 0, false
	}
	return id, uint16(v), true
}

func msgpackUint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	switch c := b[0]; {
	case c <= 0x7f:
		return uint64(c), 1, true
	case c == 0xcc && len(b) >= 2:
		return uint64(b[1]), 2, true
	case c == 0xcd && len(b) >= 3:
		return uint64(b[1])<<8 | uint64(b[2]), 3, true
	case c == 0xce && len(b) >= 5:
		return uint64(b[1])<<24 | uint64(b[2])<<16 | uint64(b[3])<<8 | uint64(b[4]), 5, true
	}
	return 0, 0, false
}
