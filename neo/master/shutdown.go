package master

import (
	"github.com/neozodb/neo/neo/proto"
)

// beginShutdown enters STOPPING (§6.11): no new transaction begins, and the
// master stops once those in progress are finished.
func (c *Core) beginShutdown() {
	c.rec = nil
	c.ver = nil
	c.changeClusterState(proto.ClusterStopping)
	c.blockBegin = true
}

// shutdownStep stops the master once no transaction is pending: storages
// are told they are DOWN (they exit), every link is closed.
func (c *Core) shutdownStep() {
	if c.tm.hasPending() && !c.forceShutdown {
		return
	}
	c.log.Info("asking remaining nodes to shutdown")
	c.out = append(c.out, ActStopListening{})
	for _, p := range c.peers {
		if n := p.node; n != nil && n.typ == proto.Storage && !p.closing {
			info := proto.NodeInfo{Type: n.typ, Addr: n.addr, NID: n.nid, State: proto.NodeDown}
			c.sendLink(p.id, &proto.NotifyNodeInformation{Timestamp: c.monotonicTime(), Nodes: []proto.NodeInfo{info}})
		}
	}
	for _, p := range c.peers {
		if !p.closing {
			c.closeLink(p.id)
		}
	}
	c.exiting = true
	c.out = append(c.out, ActExit{})
}
