package master

import (
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

// recovery is the state of RECOVERING (§6.4): finding the newest partition
// table among the storages and waiting for the storages to start with.
type recovery struct {
	targetPTid  proto.PTid     // best ptid seen (0: none)
	askPT       []proto.NodeID // storages having targetPTid; the first one is asked
	backupTids  map[proto.NodeID]zodb.Tid
	truncateTid map[proto.NodeID]zodb.Tid
}

// startRecovery enters RECOVERING with an empty partition table.
func (c *Core) startRecovery() {
	c.pt = pt.New(c.cfg.Partitions, c.cfg.Replicas)
	c.ptExtra = map[proto.NodeID]bool{}
	c.updatable = nil
	c.rec = &recovery{backupTids: map[proto.NodeID]zodb.Tid{}, truncateTid: map[proto.NodeID]zodb.Tid{}}
	c.ver = nil
	c.changeClusterState(proto.ClusterRecovering)
	for _, n := range c.storages(true) {
		c.ask(n, &proto.AskRecovery{}, 0)
	}
}

func (c *Core) recoveryStorageIdentified(n *node) {
	c.ask(n, &proto.AskRecovery{}, 0)
}

func (c *Core) recoveryAnswerRecovery(n *node, a ask, m *proto.AnswerRecovery) {
	if c.state != proto.ClusterRecovering || a.phase != c.phase || c.rec == nil {
		return
	}
	r := c.rec
	if ptid, ok := m.PTid.Get(); ok && ptid >= r.targetPTid {
		if ptid == r.targetPTid {
			r.askPT = append(r.askPT, n.nid)
			if len(r.askPT) == 1 {
				c.ask(n, &proto.AskPartitionTable{}, 0)
			}
		} else {
			r.targetPTid = ptid
			r.askPT = []proto.NodeID{n.nid}
			c.ask(n, &proto.AskPartitionTable{}, 0)
		}
	}
	r.backupTids[n.nid] = m.BackupTid
	r.truncateTid[n.nid] = m.TruncateTid
}

func (c *Core) recoveryAnswerPartitionTable(n *node, a ask, m *proto.AnswerPartitionTable) {
	if c.state != proto.ClusterRecovering || a.phase != c.phase || c.rec == nil {
		return
	}
	r := c.rec
	ptid, ok := m.PTid.Get()
	if !ok || ptid != r.targetPTid {
		return
	}
	if len(m.Rows) == 0 {
		c.protocolError(n.link, 0, "Invalid offset")
		return
	}
	var newNodes []*node
	for _, row := range m.Rows {
		for _, cell := range row {
			if t, ok := cell.NID.Type(); !ok || t != proto.Storage {
				c.protocolError(n.link, 0, "invalid node id %d in partition table", cell.NID)
				return
			}
			if c.nodeByID(cell.NID) == nil {
				x := &node{typ: proto.Storage, nid: cell.NID, state: proto.NodeDown}
				c.nodes = append(c.nodes, x)
				newNodes = append(newNodes, x)
			}
		}
	}
	c.pt = pt.FromRows(ptid, m.NumReplicas, m.Rows)
	c.ptExtra = map[proto.NodeID]bool{}
	var infos []proto.NodeInfo
	for _, x := range newNodes {
		infos = append(infos, x.info())
	}
	nni := &proto.NotifyNodeInformation{Timestamp: c.monotonicTime(), Nodes: infos}
	for _, x := range c.nodes {
		if x.typ == proto.Admin && x.identified() {
			c.send(x, nni)
			c.sendPartitionTable(x)
		}
	}
	if t, ok := r.backupTids[n.nid]; ok {
		c.backupTid = t
	}
	if t, ok := r.truncateTid[n.nid]; ok {
		c.truncateTid = t
	}
}

// recoveryStorageLost handles a storage lost during RECOVERING.
func (c *Core) recoveryStorageLost(n *node) {
	r := c.rec
	delete(r.backupTids, n.nid)
	delete(r.truncateTid, n.nid)
	for i, nid := range r.askPT {
		if nid != n.nid {
			continue
		}
		r.askPT = append(r.askPT[:i:i], r.askPT[i+1:]...)
		if i == 0 {
			if len(r.askPT) > 0 {
				c.ask(c.nodeByID(r.askPT[0]), &proto.AskPartitionTable{}, 0)
			} else {
				c.log.Warn("waiting for a storage to come back: no other one has the partition table", "nid", n.nid, "ptid", r.targetPTid)
			}
		}
		break
	}
	if n.state != proto.NodeDown {
		n.state = proto.NodeDown
		c.broadcastNodes([]*node{n})
	}
}

func (c *Core) linkAsking(n *node) bool {
	p := c.peers[n.link]
	return p != nil && p.asking > 0
}

// recoveryCheck leaves RECOVERING when the conditions of §6.4 are met.
// It reports whether the state changed.
func (c *Core) recoveryCheck() bool {
	if c.pt.PTid < c.minPTid {
		// Only tables older than the last lock so far (or none): a storage
		// that was out of date at that lock would be taken for up to date.
		return false
	}
	var candidates []*node
	if c.pt.Filled() {
		candidates = c.operationalPendingNodes()
		if c.startupAllowed {
			candidates = filterNodes(candidates, func(n *node) bool { return n.state == proto.NodePending })
		} else if len(candidates) > 0 {
			if c.truncateTid != zodb.InvalidTid {
				candidates = nil
				for _, nid := range c.pt.Nodes() {
					candidates = append(candidates, c.nodeByID(nid))
				}
			}
			for _, n := range candidates {
				if n == nil || n.state != proto.NodePending {
					return false
				}
			}
		}
	} else if c.startupAllowed || c.cfg.Autostart > 0 {
		candidates = c.storages(true)
		if !c.startupAllowed && len(candidates) < c.cfg.Autostart {
			return false
		}
	} else {
		return false
	}
	if len(candidates) == 0 {
		return false
	}
	for _, n := range candidates {
		if n == nil || !n.identified() || c.linkAsking(n) {
			return false
		}
	}
	if c.pt.Filled() {
		if c.truncateTid != zodb.InvalidTid {
			var sent bool
			for _, n := range c.storages(true) {
				t, ok := c.rec.truncateTid[n.nid]
				if !ok {
					continue
				}
				if t == zodb.InvalidTid || c.truncateTid < t {
					c.send(n, &proto.Truncate{Tid: c.truncateTid})
					c.rec.truncateTid[n.nid] = c.truncateTid
					c.ask(n, &proto.AskRecovery{}, 0)
					sent = true
				}
			}
			if sent {
				return false
			}
		}
		candidates = nil
		for _, nid := range c.pt.Nodes() {
			if n := c.nodeByID(nid); n != nil && n.identified() {
				candidates = append(candidates, n)
			}
		}
	}
	c.endRecovery(candidates)
	return true
}

// operationalPendingNodes is NEO/py's getOperationalNodeSet during
// recovery: the nodes having a readable cell, if every partition has a
// readable cell on a PENDING (connected) node; else none.
func (c *Core) operationalPendingNodes() []*node {
	if !c.pt.Operational(c.nodePending) {
		return nil
	}
	set := map[proto.NodeID]bool{}
	for p := 0; p < c.pt.NP(); p++ {
		for _, cell := range c.pt.ReadableCells(p) {
			set[cell.NID] = true
		}
	}
	var v []*node
	for _, nid := range c.pt.Nodes() {
		if set[nid] {
			v = append(v, c.nodeByID(nid))
		}
	}
	return v
}

func filterNodes(v []*node, keep func(*node) bool) []*node {
	var out []*node
	for _, n := range v {
		if n != nil && keep(n) {
			out = append(out, n)
		}
	}
	return out
}

// endRecovery starts the cluster with the chosen storages.
func (c *Core) endRecovery(chosen []*node) {
	c.log.Info("startup allowed", "storages", len(chosen))
	for _, n := range chosen {
		n.state = proto.NodeRunning
	}
	for _, n := range c.nodes {
		if n.typ == proto.Master && n != c.self && !n.identified() {
			n.state = proto.NodeDown
		}
	}
	c.broadcastNodes(c.nodes)
	if c.pt.PTid == 0 {
		c.log.Info("creating a new partition table")
		nids := make([]proto.NodeID, len(chosen))
		for i, n := range chosen {
			nids[i] = n.nid
		}
		changes, err := c.pt.Tweak(nids, nil)
		if err == nil {
			_, err = c.pt.Commit(changes)
		}
		if err != nil {
			c.log.Error("cannot create the partition table", "error", err)
			c.pt = pt.New(c.cfg.Partitions, c.cfg.Replicas)
			return
		}
		for _, n := range c.nodes {
			if n.typ == proto.Admin && n.identified() {
				c.sendPartitionTable(n)
			}
		}
	} else {
		changes := c.pt.Outdate(c.nodeRunning, proto.NoNode)
		if len(changes) > 0 {
			msg, err := c.pt.Commit(changes)
			if err != nil {
				c.log.Error("outdating the partition table", "error", err)
			} else {
				for _, n := range c.nodes {
					if n.typ == proto.Admin && n.identified() {
						c.send(n, msg)
					}
				}
			}
		}
	}
	c.rec = nil
	c.startVerification()
}
