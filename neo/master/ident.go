package master

import (
	"github.com/neozodb/neo/neo/proto"
)

// identify handles RequestIdentification on a new link (§5.2).
func (c *Core) identify(p *peer, msgID uint32, ri *proto.RequestIdentification) {
	l := p.id
	if ri.ClusterName != c.cfg.Cluster {
		c.log.Warn("reject an alien cluster", "name", ri.ClusterName)
		c.protocolError(l, msgID, "invalid cluster name")
		return
	}
	if ri.Address.Ok && ri.Address.V == c.cfg.Addr {
		c.protocolError(l, msgID, "address conflict")
		return
	}

	// Resolve the node record (step 3).
	nid := ri.NID
	n := c.nodeByID(nid)
	var byAddr *node
	if ri.Address.Ok {
		byAddr = c.nodeByAddr(ri.Address.V)
	}
	switch {
	case byAddr != nil:
		if byAddr.identified() || !(n == byAddr || n == nil || nid < 0) {
			c.protocolError(l, msgID, "already connected")
			return
		}
		n = byAddr
	case n != nil:
		if n.identified() {
			if nid >= 0 {
				c.protocolError(l, msgID, "already connected")
				return
			}
			// A temporary id already given to another node: a new one.
			n, nid = nil, proto.NoNode
		} else if n == c.self {
			n = nil
		} else {
			n.addr = ri.Address
		}
	}

	extra := make(proto.Dict, 0, len(ri.Extra))
	var newNID []int
	hasNewNID := false
	for _, it := range ri.Extra {
		if it.Key == "new_nid" {
			hasNewNID = true
			newNID = intList(it.Value)
			continue
		}
		extra = append(extra, it)
	}

	state := proto.NodeRunning
	readOnly := false
	backupName := ""
	switch ri.NodeType {
	case proto.Client:
		if b, ok := extra.Get("backup"); ok {
			backupName = string(asBytes(b))
			readOnly = true
		}
		if v, ok := extra.Get("read_only"); ok {
			readOnly = truthy(v)
			extra = dictWithout(extra, "read_only")
		}
		switch c.state {
		case proto.ClusterRunning:
		case proto.ClusterBackingUp:
			if !readOnly {
				c.reply(l, msgID, proto.Err(proto.ReadOnlyAccess, "read-only access as long as the cluster is in backup mode"))
				return
			}
		default:
			c.abort(l, msgID, proto.Err(proto.NotReady, "Retry Later"))
			return
		}
	case proto.Storage:
		if c.state == proto.ClusterStoppingBackup {
			c.abort(l, msgID, proto.Err(proto.NotReady, "Retry Later"))
			return
		}
		known := nid != proto.NoNode && n != nil
		switch c.state {
		case proto.ClusterRecovering:
			state = proto.NodePending
		default:
			if known {
				state = proto.NodeRunning
			} else {
				state = proto.NodePending
			}
		}
		if !ri.Address.Ok {
			if c.state == proto.ClusterRecovering {
				c.abort(l, msgID, proto.Err(proto.NotReady, "Retry Later"))
				return
			}
			if nid != proto.NoNode || len(newNID) == 0 {
				c.protocolError(l, msgID, "")
				return
			}
			// The storage closes the link itself once it learnt its id.
			state = proto.NodeDown
		}
	case proto.Master:
		if c.electing() && ri.IDTimestamp.Ok && ri.Address.Ok &&
			lessElection(ri.IDTimestamp.V, ri.Address.V, c.electionTS, c.cfg.Addr) {
			// The peer entered the primary role first: it wins, and
			// this request is not answered.
			primary := byAddr
			if primary == nil {
				primary = &node{typ: proto.Master, addr: ri.Address, state: proto.NodeDown}
				c.nodes = append(c.nodes, primary)
			}
			c.becomeSecondary(primary, 0)
			return
		}
	case proto.Admin:
	default:
		c.protocolError(l, msgID, "")
		return
	}
	_ = hasNewNID

	nid = c.newNodeID(nid, ri.Address, ri.NodeType)
	if n == nil {
		n = &node{typ: ri.NodeType, addr: ri.Address}
		c.nodes = append(c.nodes, n)
	}
	n.nid = nid
	n.typ = ri.NodeType
	n.addr = ri.Address
	n.extra = extra
	n.readOnly = readOnly
	n.backupName = backupName
	n.idTime = proto.Some(c.monotonicTime())
	n.state = state
	c.log.Info("accept node", "type", ri.NodeType, "nid", nid, "state", state, "addr", ri.Address)
	c.broadcastNodes([]*node{n})
	if len(newNID) > 0 {
		var changes []proto.CellChange
		for _, p := range newNID {
			if p < 0 || p >= c.pt.NP() {
				continue
			}
			changes = append(changes, proto.CellChange{Partition: uint32(p), NID: nid, State: proto.CellOutOfDate})
		}
		c.broadcastPartitionChanges(changes)
	}
	n.link = l
	p.node = n
	c.reply(l, msgID, &proto.AcceptIdentification{NodeType: proto.Master, NID: c.self.nid, YourNID: nid})
	c.notifyNodeInformation(n)
	c.handlerSwitched(n)
}

// handlerSwitched sends what a newly identified node gets after the node
// list, depending on the cluster state (§5.2 step 10.3).
func (c *Core) handlerSwitched(n *node) {
	switch n.typ {
	case proto.Client, proto.Admin:
		c.sendPartitionTable(n)
	case proto.Storage:
		switch c.state {
		case proto.ClusterRecovering:
			c.recoveryStorageIdentified(n)
		case proto.ClusterVerifying:
			c.sendPartitionTable(n)
		default:
			c.sendPartitionTable(n)
			if n.state == proto.NodeRunning && c.state != proto.ClusterStopping {
				c.startStorage(n)
			}
		}
	}
}

// intList decodes a msgpack array of ints (extra "new_nid").
func intList(v proto.Value) []int {
	list, ok := v.([]proto.Value)
	if !ok {
		return nil
	}
	out := make([]int, 0, len(list))
	for _, x := range list {
		switch i := x.(type) {
		case int64:
			out = append(out, int(i))
		case uint64:
			if i < 1<<31 {
				out = append(out, int(i))
			}
		}
	}
	return out
}

func asBytes(v proto.Value) []byte {
	switch b := v.(type) {
	case []byte:
		return b
	case string:
		return []byte(b)
	}
	return nil
}

// truthy is Python's bool() of a decoded msgpack value.
func truthy(v proto.Value) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case uint64:
		return x != 0
	case float64:
		return x != 0
	case []byte:
		return len(x) > 0
	case []proto.Value:
		return len(x) > 0
	}
	return true
}

func dictWithout(d proto.Dict, key string) proto.Dict {
	out := d[:0:0]
	for _, it := range d {
		if it.Key != key {
			out = append(out, it)
		}
	}
	return out
}
