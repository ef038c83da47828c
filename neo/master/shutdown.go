package master

import (
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// stopGrace bounds how long a stopping primary waits for the masters it
// knows but that were not identified with it when the cluster entered
// STOPPING (e.g. a secondary reconnecting after the election, whose new
// connection the throttle of neonet delays): such a master, identifying in
// that time, is told STOPPING, so that it exits instead of taking over as
// primary once this one is gone. It is more than neonet's ConnectLimit.
const stopGrace = 3 * time.Second

// beginShutdown enters STOPPING (§6.11): no new transaction begins, and the
// master stops once those in progress are finished.
func (c *Core) beginShutdown() {
	c.rec = nil
	c.ver = nil
	c.changeClusterState(proto.ClusterStopping)
	c.blockBegin = true
}

// shutdownStep stops the master once no transaction is pending: storages
// are told they are DOWN (they exit), every link is closed. Masters that
// were told STOPPING exit by themselves; the others known get stopGrace to
// identify and be told.
func (c *Core) shutdownStep() {
	if c.tm.hasPending() && !c.forceShutdown {
		return
	}
	if c.stopDeadline.IsZero() {
		c.log.Info("asking remaining nodes to shutdown")
		c.stopDeadline = c.now.Add(stopGrace)
		for _, p := range c.peers {
			if n := p.node; n != nil && n.typ == proto.Storage && !p.closing {
				info := proto.NodeInfo{Type: n.typ, Addr: n.addr, NID: n.nid, State: proto.NodeDown}
				c.sendLink(p.id, &proto.NotifyNodeInformation{Timestamp: c.monotonicTime(), Nodes: []proto.NodeInfo{info}})
			}
		}
		for _, n := range c.nodes {
			if n.typ == proto.Master && n != c.self && n.identified() {
				c.stopTold[n] = true
			}
		}
		for _, p := range c.peers {
			if !p.closing {
				c.closeLink(p.id)
			}
		}
	}
	if c.now.Before(c.stopDeadline) {
		for _, n := range c.nodes {
			if n.typ == proto.Master && n != c.self && n.addr.Ok && !c.stopTold[n] {
				return // wait for it a little
			}
		}
	}
	c.out = append(c.out, ActStopListening{})
	for _, p := range c.peers {
		if !p.closing {
			c.closeLink(p.id)
		}
	}
	c.exiting = true
	c.out = append(c.out, ActExit{})
}

// stoppingIdentify handles an identification once the stopping primary
// waits for its masters: a master is accepted and told STOPPING, anyone
// else is asked to retry later (and finds no primary then).
func (c *Core) stoppingIdentify(p *peer, msgID uint32, ri *proto.RequestIdentification) bool {
	if c.state != proto.ClusterStopping || c.stopDeadline.IsZero() {
		return false
	}
	if ri.NodeType != proto.Master || ri.ClusterName != c.cfg.Cluster || !ri.Address.Ok || ri.Address.V == c.cfg.Addr {
		c.abort(p.id, msgID, proto.Err(proto.NotReady, "Retry Later"))
		return true
	}
	n := c.nodeByAddr(ri.Address.V)
	if n == nil {
		n = &node{typ: proto.Master, addr: ri.Address}
		c.nodes = append(c.nodes, n)
	}
	proposed := ri.NID
	if n.nid != proto.NoNode {
		proposed = n.nid
	}
	nid := c.newNodeID(proposed, ri.Address, proto.Master)
	n.nid = nid
	c.log.Info("master told that the cluster stops", "nid", nid, "addr", ri.Address)
	c.reply(p.id, msgID, &proto.AcceptIdentification{NodeType: proto.Master, NID: c.self.nid, YourNID: nid})
	c.sendLink(p.id, &proto.NotifyClusterInformation{State: proto.ClusterStopping})
	c.closeLink(p.id)
	c.stopTold[n] = true
	return true
}
