package master

import (
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// node is an entry of the master's node table.
type node struct {
	typ    proto.NodeType
	nid    proto.NodeID // NoNode: not known yet (a master from the configuration)
	addr   proto.Opt[proto.Address]
	state  proto.NodeState
	idTime proto.Opt[float64]
	extra  proto.Dict
	link   LinkID // the link it identified on; 0: not identified

	readOnly   bool   // client: read-only service
	backupName string // client: a backup cluster's master (extra "backup")

	// storage: smallest pack id completed on its partitions
	// (NotifyPackCompleted); 0: not reported
	completedPack zodb.Tid
}

func (n *node) identified() bool { return n.link != 0 }

func (n *node) info() proto.NodeInfo {
	return proto.NodeInfo{Type: n.typ, Addr: n.addr, NID: n.nid, State: n.state, IDTime: n.idTime}
}

func (c *Core) nodeByID(nid proto.NodeID) *node {
	if nid == proto.NoNode {
		return nil
	}
	for _, n := range c.nodes {
		if n.nid == nid {
			return n
		}
	}
	return nil
}

func (c *Core) nodeByAddr(a proto.Address) *node {
	for _, n := range c.nodes {
		if n.addr.Ok && n.addr.V == a {
			return n
		}
	}
	return nil
}

func (c *Core) removeNode(n *node) {
	for i, x := range c.nodes {
		if x == n {
			c.nodes = append(c.nodes[:i:i], c.nodes[i+1:]...)
			return
		}
	}
}

// storages returns the known storages; identified ones only if asked.
func (c *Core) storages(onlyIdentified bool) []*node {
	var v []*node
	for _, n := range c.nodes {
		if n.typ == proto.Storage && (!onlyIdentified || n.identified()) {
			v = append(v, n)
		}
	}
	return v
}

func (c *Core) identifiedNodes() []*node {
	var v []*node
	for _, n := range c.nodes {
		if n.identified() {
			v = append(v, n)
		}
	}
	return v
}

// newNodeID is NEO/py's getNewUUID (§5.2 step 6): the proposed id if it is
// free (or held by a node with the same address), else the first free id
// of the node type's namespace.
func (c *Core) newNodeID(proposed proto.NodeID, addr proto.Opt[proto.Address], t proto.NodeType) proto.NodeID {
	if proposed != proto.NoNode && proposed != c.self.nid {
		n := c.nodeByID(proposed)
		if n == nil || n.addr == addr {
			return proposed
		}
	}
	for i := int32(1); i < 1<<24; i++ {
		nid := proto.NewNodeID(t, i)
		n := c.nodeByID(nid)
		if n == nil || addr.Ok && n.addr == addr {
			if nid != c.self.nid {
				return nid
			}
		}
	}
	panic("master: no node id left") // 2^24 nodes of one type
}

// nodeListFor returns the entries of changed that a node of type to (a
// backup cluster master when backupName is set) must be told about (§6.8).
func nodeListFor(changed []*node, to *node) []proto.NodeInfo {
	var v []proto.NodeInfo
	for _, n := range changed {
		if n.typ == proto.Admin {
			if to.typ == proto.Client && to.backupName != "" && adminMonitors(n, to.backupName) {
				v = append(v, n.info())
			}
			continue
		}
		switch to.typ {
		case proto.Admin, proto.Storage:
			v = append(v, n.info())
		case proto.Client:
			if n.typ != proto.Client {
				v = append(v, n.info())
			}
		case proto.Master:
			if n.typ == proto.Master {
				v = append(v, n.info())
			}
		}
	}
	return v
}

// adminMonitors tells whether an admin identified with extra "backup"
// listing name.
func adminMonitors(admin *node, name string) bool {
	v, ok := admin.extra.Get("backup")
	if !ok {
		return false
	}
	list, ok := v.([]proto.Value)
	if !ok {
		return false
	}
	for _, x := range list {
		if b, ok := x.([]byte); ok && string(b) == name {
			return true
		}
	}
	return false
}

// broadcastNodes sends one NotifyNodeInformation to every identified node
// that must learn about some of the changed nodes (§6.8).
func (c *Core) broadcastNodes(changed []*node) {
	if len(changed) == 0 {
		return
	}
	now := c.monotonicTime()
	for _, n := range c.nodes {
		if !n.identified() {
			continue
		}
		if list := nodeListFor(changed, n); len(list) > 0 {
			c.send(n, &proto.NotifyNodeInformation{Timestamp: now, Nodes: list})
		}
	}
}

// notifyNodeInformation sends the full node list a node gets right after
// its identification: its own entry first.
func (c *Core) notifyNodeInformation(n *node) {
	others := make([]*node, 0, len(c.nodes))
	for _, x := range c.nodes {
		if x != n {
			others = append(others, x)
		}
	}
	list := append([]proto.NodeInfo{n.info()}, nodeListFor(others, n)...)
	c.send(n, &proto.NotifyNodeInformation{Timestamp: c.monotonicTime(), Nodes: list})
}

// broadcastPartitionChanges commits changes to the partition table and
// sends them, with the next ptid, to every identified node but masters
// (§6.8). It does nothing when there is no change.
func (c *Core) broadcastPartitionChanges(changes []proto.CellChange) {
	msg, err := c.pt.Commit(changes)
	if err != nil {
		c.log.Error("partition table change refused", "error", err)
		return
	}
	if msg == nil {
		return
	}
	for _, ch := range msg.Changes {
		if ch.State != proto.CellUpToDate && ch.State != proto.CellFeeding {
			delete(c.updatable, cellKey{int(ch.Partition), ch.NID})
		}
	}
	c.sendPartitionChanges(msg)
}

func (c *Core) sendPartitionChanges(msg *proto.NotifyPartitionChanges) {
	c.log.Info("partition table changed", "ptid", msg.PTid, "changes", len(msg.Changes))
	for _, n := range c.nodes {
		if n.identified() && n.typ != proto.Master {
			c.send(n, msg)
		}
	}
}

// isRunning / isPending as seen from the partition table.
func (c *Core) nodeRunning(nid proto.NodeID) bool {
	n := c.nodeByID(nid)
	return n != nil && n.state == proto.NodeRunning
}

func (c *Core) nodePending(nid proto.NodeID) bool {
	n := c.nodeByID(nid)
	return n != nil && n.state == proto.NodePending
}

// ptNodes returns the storages the partition table works with: those
// having cells, plus those added without cells yet.
func (c *Core) ptNodes() []proto.NodeID {
	set := map[proto.NodeID]bool{}
	for _, nid := range c.pt.Nodes() {
		set[nid] = true
	}
	for nid := range c.ptExtra {
		set[nid] = true
	}
	v := make([]proto.NodeID, 0, len(set))
	for nid := range set {
		v = append(v, nid)
	}
	sortIDs(v)
	return v
}

func sortIDs(v []proto.NodeID) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}
