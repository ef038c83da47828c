package master

import (
	"github.com/neozodb/neo/neo/proto"
)

// Election and the secondary role (§6.1, §6.2, §5.3).
//
// A master plays the primary role first. While RECOVERING, it connects to
// every other known master and identifies with its election timestamp (the
// time it entered the primary role): a peer still electing compares
// timestamps (then addresses), the smaller wins; a peer that accepts the
// identification is the primary, and this master becomes secondary.
// A secondary keeps one link to the primary, follows its node list and
// cluster state, and redirects everyone else with NotPrimaryMaster. When
// the primary is lost and no other master answers as primary, it plays the
// primary role again.

// Master roles.
const (
	rolePrimary = iota
	roleSecondary
)

// electing tells whether the primary is still in its election: masters
// challenge each other only while the cluster is RECOVERING.
func (c *Core) electing() bool {
	return c.role == rolePrimary && c.state == proto.ClusterRecovering
}

// dial asks the network layer to connect to master n.
func (c *Core) dial(n *node) {
	if !n.addr.Ok || c.dialing[n] {
		return
	}
	c.nextTag++
	c.dials[c.nextTag] = n
	c.dialing[n] = true
	c.out = append(c.out, ActDial{Addr: n.addr.V.String(), Tag: c.nextTag})
}

// electionDial connects to the other masters not connected yet.
func (c *Core) electionDial() {
	if !c.electing() {
		return
	}
	for _, n := range c.nodes {
		if n.typ == proto.Master && n != c.self && !n.identified() && !c.dialing[n] && n.addr.Ok {
			c.dial(n)
		}
	}
}

// secondaryDial keeps a secondary connected, or connecting, to the master
// it believes primary: without a link nor an attempt to it, nothing would
// ever happen (it would wait for a primary that waits for it).
func (c *Core) secondaryDial() {
	if c.role != roleSecondary || c.exiting || c.primary == nil || c.primaryLink != 0 || c.dialing[c.primary] {
		return
	}
	c.dial(c.primary)
}

// dialed handles the end of a connection attempt.
func (c *Core) dialed(ev EvDialed) {
	n := c.dials[ev.Tag]
	if n == nil {
		if ev.Link != 0 {
			c.closeLink(ev.Link)
		}
		return
	}
	delete(c.dials, ev.Tag)
	if ev.Err != nil || ev.Link == 0 {
		c.log.Debug("master not reachable", "addr", n.addr, "error", ev.Err)
		delete(c.dialing, n)
		c.masterUnreachable(n)
		return
	}
	useful := c.electing() && !n.identified() || c.role == roleSecondary && n == c.primary && c.primaryLink == 0
	if !useful {
		delete(c.dialing, n)
		c.closeLink(ev.Link)
		return
	}
	p := &peer{id: ev.Link, node: n, outgoing: true}
	c.peers[ev.Link] = p
	ri := &proto.RequestIdentification{NodeType: proto.Master, NID: c.self.nid, Address: c.self.addr, ClusterName: c.cfg.Cluster, Extra: proto.Dict{}}
	if c.role == rolePrimary {
		ri.IDTimestamp = proto.Some(c.electionTS)
	} else {
		c.primaryLink = ev.Link
	}
	c.nextTag++
	c.asks[c.nextTag] = ask{link: ev.Link, phase: c.phase, op: c.operation}
	p.asking++
	c.out = append(c.out, ActAsk{Link: ev.Link, Msg: ri, Tag: c.nextTag})
}

// masterUnreachable handles a master that could not be reached or whose
// outgoing link went down.
func (c *Core) masterUnreachable(n *node) {
	if c.role == roleSecondary && n == c.primary {
		c.primaryLost()
		return
	}
	if n.state != proto.NodeDown && !n.identified() {
		n.state = proto.NodeDown
	}
}

// outgoingDown handles the loss of a link this master opened.
func (c *Core) outgoingDown(p *peer) {
	n := p.node
	delete(c.dialing, n)
	if n.link == p.id {
		n.link = 0
	}
	if c.role == roleSecondary && p.id == c.primaryLink {
		c.primaryLink = 0
		c.primaryLost()
	}
}

// outgoingAccepted handles AcceptIdentification from a master this master
// connected to: that master is the primary.
func (c *Core) outgoingAccepted(p *peer, m *proto.AcceptIdentification) {
	n := p.node
	if m.NodeType != proto.Master || m.YourNID == proto.NoNode {
		c.closeLink(p.id)
		return
	}
	if n.nid != m.NID && m.NID != proto.NoNode {
		if other := c.nodeByID(m.NID); other != nil && other != n {
			other.nid = proto.NoNode
		}
		n.nid = m.NID
	}
	c.setOwnID(m.YourNID)
	n.state = proto.NodeRunning
	n.link = p.id
	if c.role == rolePrimary {
		c.log.Info("another master is primary", "primary", n.nid, "addr", n.addr)
		c.becomeSecondary(n, p.id)
		return
	}
	if n != c.primary {
		if c.primaryIdentified() {
			// Already identified with another primary.
			c.detachPeer(p)
			return
		}
		// A master that accepts masters is the primary.
		if old := c.peers[c.primaryLink]; old != nil {
			c.detachPeer(old)
		}
		c.primary = n
		c.primaryLink = 0
	}
	if c.primaryLink == 0 {
		c.primaryLink = p.id
	}
	c.log.Info("identified with the primary master", "primary", n.nid)
	c.primaryTried = map[proto.Address]bool{c.cfg.Addr: true}
}

// setOwnID adopts the node id the primary gave.
func (c *Core) setOwnID(nid proto.NodeID) {
	if nid == c.self.nid {
		return
	}
	if other := c.nodeByID(nid); other != nil && other != c.self {
		other.nid = proto.NoNode
	}
	c.self.nid = nid
	c.log = c.baseLog.With("nid", nid.String())
}

// becomeSecondary switches to the secondary role with n as primary; link is
// this master's link to it if already identified there (else 0).
func (c *Core) becomeSecondary(n *node, link LinkID) {
	c.log.Info("secondary role", "primary", n.addr)
	c.role = roleSecondary
	c.primary = n
	c.primaryLink = link
	c.rec, c.ver = nil, nil
	c.delayed = nil
	c.tm.reset()
	c.primaryTried = map[proto.Address]bool{c.cfg.Addr: true}
	if link == 0 {
		// The link this master opened to the winner for the election
		// is kept: the winner accepts the identification sent there.
		// Dialing it again would be throttled (neonet's ConnectLimit),
		// leaving this master unidentified for a while.
		for id, p := range c.peers {
			if p.outgoing && p.node == n && !p.closing {
				link = id
				c.primaryLink = id
				break
			}
		}
	}
	for id, p := range c.peers {
		if id == link {
			continue
		}
		c.detachPeer(p)
	}
	c.forgetPeers()
	if link == 0 {
		c.dial(n)
	}
}

// forgetPeers forgets the clients and admins, and marks storages DOWN,
// when this master changes its role.
func (c *Core) forgetPeers() {
	for _, x := range append([]*node(nil), c.nodes...) {
		switch x.typ {
		case proto.Storage:
			x.state = proto.NodeDown
		case proto.Client, proto.Admin:
			c.removeNode(x)
		}
	}
}

// detachPeer closes a link, forgetting its node's connection without the
// handling of a loss.
func (c *Core) detachPeer(p *peer) {
	if p.node != nil && p.node.link == p.id {
		p.node.link = 0
	}
	if p.outgoing && p.node != nil {
		delete(c.dialing, p.node)
	}
	p.node = nil
	c.closeLink(p.id)
}

// primaryLost looks for the primary again after losing the link to it (or
// failing to reach it); with no master left to try, this master plays the
// primary role again.
func (c *Core) primaryLost() {
	old := c.primary
	wasRunning := old.state == proto.NodeRunning
	old.state = proto.NodeDown
	if wasRunning {
		// Retry the same primary first.
		c.primaryTried = map[proto.Address]bool{c.cfg.Addr: true}
		c.dial(old)
		return
	}
	if old.addr.Ok {
		c.primaryTried[old.addr.V] = true
	}
	for _, n := range c.nodes {
		if n.typ == proto.Master && n != c.self && n.addr.Ok && !c.primaryTried[n.addr.V] {
			c.primary = n
			c.dial(n)
			return
		}
	}
	c.becomePrimary()
}

// becomePrimary enters the primary role (§6.1).
func (c *Core) becomePrimary() {
	c.log.Info("primary role")
	for _, p := range c.peers {
		c.detachPeer(p)
	}
	c.role = rolePrimary
	c.primary = nil
	c.primaryLink = 0
	c.forgetPeers()
	for _, n := range c.nodes {
		if n.typ == proto.Master && n != c.self {
			n.state = proto.NodeDown
		}
	}
	c.self.state = proto.NodeRunning
	c.electionTS = c.monotonicTime()
	c.startupAllowed = false
	c.startRecovery()
}

// lessElection compares election keys: (timestamp, address) tuples.
func lessElection(ts1 float64, a1 proto.Address, ts2 float64, a2 proto.Address) bool {
	if ts1 != ts2 {
		return ts1 < ts2
	}
	if a1.Host != a2.Host {
		return a1.Host < a2.Host
	}
	return a1.Port < a2.Port
}

// --- secondary role ---

// secondaryIdentify answers any identification with NotPrimaryMaster
// (§5.3); a master still electing that identified with its timestamp
// becomes the primary if this one has none yet.
func (c *Core) secondaryIdentify(p *peer, msgID uint32, ri *proto.RequestIdentification) {
	if ri.ClusterName != c.cfg.Cluster {
		c.protocolError(p.id, msgID, "invalid cluster name")
		return
	}
	if ri.Address.Ok && ri.Address.V == c.cfg.Addr {
		c.protocolError(p.id, msgID, "address conflict")
		return
	}
	known := c.primaryIdentified()
	if !known && ri.NodeType == proto.Master && ri.IDTimestamp.Ok && ri.Address.Ok {
		n := c.nodeByAddr(ri.Address.V)
		if n == nil {
			n = &node{typ: proto.Master, addr: ri.Address, state: proto.NodeDown}
			c.nodes = append(c.nodes, n)
		}
		c.closeLink(p.id)
		if n != c.primary {
			c.log.Info("another master claims the primary role", "addr", ri.Address)
			old := c.primaryLink
			c.primary = n
			c.primaryLink = 0
			if old != 0 {
				if op := c.peers[old]; op != nil {
					c.detachPeer(op)
				}
			}
			c.dial(n)
		}
		return
	}
	// Our own address comes first: index 0 cannot be told apart from nil
	// in the Go packet type, and it is never the primary.
	masters := []proto.Address{c.cfg.Addr}
	primary := proto.NoNode
	for _, n := range c.nodes {
		if n.typ != proto.Master || n == c.self || !n.addr.Ok {
			continue
		}
		if known && n == c.primary && !(ri.Address.Ok && ri.Address == n.addr) {
			primary = proto.NodeID(len(masters))
		}
		masters = append(masters, n.addr.V)
	}
	c.abort(p.id, msgID, &proto.NotPrimaryMaster{Primary: primary, KnownMasters: masters})
}

func (c *Core) primaryIdentified() bool {
	return c.primary != nil && c.primaryLink != 0 && c.primary.link == c.primaryLink
}

// fromMaster handles what a master this master connected to sends.
func (c *Core) fromMaster(p *peer, ev EvRecv) {
	switch m := ev.Msg.(type) {
	case *proto.NotPrimaryMaster:
		c.notPrimaryMaster(p, m)
	case *proto.NotifyNodeInformation:
		if c.role == roleSecondary && p.id == c.primaryLink {
			c.followNodes(m)
		}
	case *proto.NotifyClusterInformation:
		// Only a primary that accepted this master sends it; its answer
		// to the identification may not have been handled yet.
		if m.State == proto.ClusterStopping && (c.role == roleSecondary || c.electing()) {
			c.log.Info("the cluster stops")
			c.exit()
			return
		}
		if c.role == roleSecondary && p.id == c.primaryLink {
			c.state = m.State
		}
	case *proto.FlushLog:
	default:
		c.unexpected(ev)
	}
}

// notPrimaryMaster learns the masters a peer knows and, if it names the
// primary, connects to it.
func (c *Core) notPrimaryMaster(p *peer, m *proto.NotPrimaryMaster) {
	for _, a := range m.KnownMasters {
		if a != c.cfg.Addr && c.nodeByAddr(a) == nil {
			c.nodes = append(c.nodes, &node{typ: proto.Master, addr: proto.Some(a), state: proto.NodeDown})
		}
	}
	i := int(m.Primary)
	if m.Primary == proto.NoNode || i < 0 || i >= len(m.KnownMasters) || m.KnownMasters[i] == c.cfg.Addr {
		return
	}
	target := c.nodeByAddr(m.KnownMasters[i])
	if c.role == roleSecondary {
		if target != c.primary {
			c.primary = target
			if p.id == c.primaryLink {
				c.primaryLink = 0
			}
			c.dial(target)
		}
		return
	}
	if c.electing() && !target.identified() {
		c.dial(target)
	}
}

// followNodes applies the primary's node list (masters only matter here).
func (c *Core) followNodes(m *proto.NotifyNodeInformation) {
	for _, x := range m.Nodes {
		if x.Type != proto.Master {
			continue
		}
		if x.Addr.Ok && x.Addr.V == c.cfg.Addr || x.NID == c.self.nid && !x.Addr.Ok {
			if x.State == proto.NodeDown || x.State == proto.NodeUnknown {
				c.log.Info("told to stop by the primary master")
				c.exit()
				return
			}
			continue
		}
		if x.NID == c.self.nid {
			// Another master's old entry with this master's id (ids
			// of masters change when a primary is elected).
			continue
		}
		// Masters are known by address: an id may have moved from
		// one master to another.
		var n *node
		if x.Addr.Ok {
			n = c.nodeByAddr(x.Addr.V)
		} else if x.NID != proto.NoNode {
			n = c.nodeByID(x.NID)
		}
		if x.NID != proto.NoNode {
			if o := c.nodeByID(x.NID); o != nil && o != n && o != c.self {
				o.nid = proto.NoNode
			}
		}
		if x.State == proto.NodeUnknown {
			if n != nil && n != c.primary {
				c.removeNode(n)
			}
			continue
		}
		if n == nil {
			n = &node{typ: proto.Master}
			c.nodes = append(c.nodes, n)
		}
		n.nid, n.addr, n.state, n.idTime = x.NID, x.Addr, x.State, x.IDTime
	}
}

// exit ends a secondary master: its links are closed and Run returns.
func (c *Core) exit() {
	for _, p := range c.peers {
		if !p.closing {
			c.closeLink(p.id)
		}
	}
	c.out = append(c.out, ActStopListening{}, ActExit{})
	c.exiting = true
}
