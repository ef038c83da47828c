package master

import (
	"errors"
	"strings"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

// adminRecv handles the requests of an admin node (§6.12).
func (c *Core) adminRecv(n *node, ev EvRecv) {
	var answer proto.Msg
	switch m := ev.Msg.(type) {
	case *proto.SetClusterState:
		answer = c.setClusterState(m.State)
	case *proto.SetNodeState:
		answer = c.setNodeState(m.NID, m.State)
	case *proto.AddPendingNodes:
		answer = c.addPendingNodes(m.NIDs)
	case *proto.TweakPartitionTable:
		answer = c.tweakPartitionTable(m.DryRun, m.Exclude)
	case *proto.SetNumReplicas:
		answer = c.setNumReplicas(m.NumReplicas)
	case *proto.Repair:
		answer = c.repair(m.NIDs, m.DryRun)
	case *proto.Truncate:
		answer = c.truncate(m.Tid)
	case *proto.CheckReplicas:
		answer = c.checkReplicas(m)
	case *proto.AskNodeList:
		var list []proto.NodeInfo
		for _, x := range c.nodes {
			if !m.NodeType.Ok || x.typ == m.NodeType.V {
				list = append(list, x.info())
			}
		}
		if list == nil {
			list = []proto.NodeInfo{}
		}
		answer = &proto.AnswerNodeList{Nodes: list}
	case *proto.AskPartitionList:
		rows := c.pt.Rows()
		lo, hi := int(m.MinOffset), int(m.MaxOffset)
		if hi == 0 || hi > len(rows) {
			hi = len(rows)
		}
		if lo > hi {
			lo = hi
		}
		answer = &proto.AnswerPartitionList{PTid: c.ptidOpt(), NumReplicas: uint32(c.pt.NumReplicas), Rows: rows[lo:hi]}
	default:
		c.unexpected(ev)
		return
	}
	c.reply(ev.Link, ev.MsgID, answer)
	// What must happen after the answer (NEO/py raises after answering).
	if c.afterAnswer != nil {
		f := c.afterAnswer
		c.afterAnswer = nil
		f()
	}
}

// clusterStateWorkflow lists, for each state SetClusterState may ask, the
// states it may be asked from (STOPPING: from any).
var clusterStateWorkflow = map[proto.ClusterState][]proto.ClusterState{
	proto.ClusterVerifying:      {proto.ClusterRecovering},
	proto.ClusterStartingBackup: {proto.ClusterRunning, proto.ClusterStoppingBackup},
	proto.ClusterStoppingBackup: {proto.ClusterBackingUp, proto.ClusterStartingBackup},
}

func (c *Core) setClusterState(state proto.ClusterState) proto.Msg {
	if from, ok := clusterStateWorkflow[state]; ok {
		allowed := false
		for _, s := range from {
			allowed = allowed || s == c.state
		}
		if !allowed {
			return denied("Can not switch to this state")
		}
	} else if state != proto.ClusterStopping {
		return denied("Invalid state requested")
	}
	switch state {
	case proto.ClusterVerifying:
		storages := c.storages(true)
		if len(storages) == 0 {
			return denied("Cannot exit recovery without any storage node")
		}
		for _, s := range storages {
			if c.linkAsking(s) {
				return denied("Cannot exit recovery now: node %s is entering cluster", s.nid)
			}
		}
		c.startupAllowed = true
		if c.pt.PTid < c.minPTid {
			c.log.Warn("starting from an older partition table than this master had, as the operator asks", "ptid", c.pt.PTid, "had", c.minPTid)
		}
		c.minPTid = 0
	case proto.ClusterStartingBackup:
		if c.tm.hasPending() || len(c.clients()) > 0 {
			return denied("Can not switch to %s state with pending transactions or connected clients", state)
		}
		return denied("No upstream cluster to backup defined in configuration")
	case proto.ClusterStopping:
		c.afterAnswer = c.beginShutdown
	}
	return ack("Cluster state changed")
}

func (c *Core) clients() []*node {
	var v []*node
	for _, n := range c.nodes {
		if n.typ == proto.Client && n.identified() {
			v = append(v, n)
		}
	}
	return v
}

func (c *Core) setNodeState(nid proto.NodeID, state proto.NodeState) proto.Msg {
	c.log.Info("set node state", "nid", nid, "state", state)
	n := c.nodeByID(nid)
	if n == nil {
		return denied("unknown node")
	}
	allowed := false
	switch n.typ {
	case proto.Master:
		allowed = state == proto.NodeDown
	case proto.Storage:
		allowed = state == proto.NodeDown || state == proto.NodeUnknown
	}
	if !allowed {
		return denied("can not switch node to %s state", state)
	}
	if nid == c.self.nid {
		return denied("can not kill primary master node")
	}
	changed := state != n.state
	message := "state changed"
	if !changed {
		message = "node already in " + state.String() + " state"
	}
	if n.typ == proto.Storage {
		keep := state == proto.NodeDown
		if n.state == proto.NodeRunning && !keep {
			return denied("a running node must be stopped before removal")
		}
		drop, err := c.dropNode(nid)
		if err != nil {
			return denied("%s", err)
		}
		n.state = state
		if n.identified() {
			// It shuts down (and, for UNKNOWN, erases its database).
			c.send(n, &proto.NotifyNodeInformation{Timestamp: c.monotonicTime(), Nodes: []proto.NodeInfo{n.info()}})
			c.detach(n)
		}
		var changes []proto.CellChange
		if keep {
			changes = c.pt.Outdate(c.nodeRunning, proto.NoNode)
		} else {
			changes = drop
			if len(changes) > 0 {
				message = "node permanently removed"
			}
			c.removeNode(n)
			delete(c.ptExtra, nid)
		}
		c.broadcastPartitionChanges(changes)
	} else {
		n.state = state
	}
	if changed {
		c.afterAnswer = func() {
			if n.identified() {
				c.send(n, &proto.NotifyNodeInformation{Timestamp: c.monotonicTime(), Nodes: []proto.NodeInfo{n.info()}})
			}
			c.broadcastNodes([]*node{n})
		}
	}
	return ack("%s", message)
}

// detach closes the link of a node put down by an admin; its loss is
// handled now: the link's going down is ignored.
func (c *Core) detach(n *node) {
	l := n.link
	if p := c.peers[l]; p != nil {
		p.node = nil
	}
	c.closeLink(l)
	n.link = 0
	if n.typ == proto.Storage {
		c.setStorageNotReady(n.nid)
		c.tm.storageLost(n.nid)
	}
}

// dropNode is NEO/py's pt.dropNodeList([nid]): the changes removing the
// cells of nid, where a FEEDING cell left in a row becomes UP_TO_DATE; an
// error if it held the only readable copy of a partition.
func (c *Core) dropNode(nid proto.NodeID) ([]proto.CellChange, error) {
	var changes []proto.CellChange
	for p := 0; p < c.pt.NP(); p++ {
		row := c.pt.Row(p)
		var feeding *pt.Cell
		dropReadable, upToDate, dropped := false, false, false
		for i, cell := range row {
			if cell.NID == nid {
				changes = append(changes, proto.CellChange{Partition: uint32(p), NID: nid, State: proto.CellDiscarded})
				dropped = true
				dropReadable = dropReadable || cell.Readable()
				continue
			}
			switch cell.State {
			case proto.CellFeeding:
				feeding = &row[i]
			case proto.CellUpToDate:
				upToDate = true
			}
		}
		if feeding != nil {
			if dropped {
				changes = append(changes, proto.CellChange{Partition: uint32(p), NID: feeding.NID, State: proto.CellUpToDate})
			}
		} else if dropReadable && !upToDate {
			return nil, errors.New("Refuse to drop nodes that contain the only readable copies of partition " + itoa(p))
		}
	}
	return changes, nil
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	neg := i < 0
	if neg {
		i = -i
	}
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	if neg {
		n--
		b[n] = '-'
	}
	return string(b[n:])
}

// ptChangeAllowed is NEO/py's check_state for the requests changing the
// partition table.
func (c *Core) stateAllows(rpc string, states ...proto.ClusterState) proto.Msg {
	for _, s := range states {
		if c.state == s {
			return nil
		}
	}
	return denied("%s RPC can not be used in %s state", rpc, c.state)
}

func (c *Core) ptChangeAllowed(rpc string) proto.Msg {
	return c.stateAllows(rpc, proto.ClusterRunning, proto.ClusterStartingBackup, proto.ClusterBackingUp)
}

func (c *Core) addPendingNodes(nids []proto.NodeID) proto.Msg {
	if e := c.ptChangeAllowed("addPendingNodes"); e != nil {
		return e
	}
	want := map[proto.NodeID]bool{}
	for _, nid := range nids {
		want[nid] = true
	}
	inPT := map[proto.NodeID]bool{}
	for _, nid := range c.ptNodes() {
		inPT[nid] = true
	}
	var added []*node
	for _, n := range c.storages(false) {
		if n.state == proto.NodePending && want[n.nid] && !inPT[n.nid] {
			added = append(added, n)
		}
	}
	if len(added) == 0 {
		c.log.Warn("No node added")
		return ack("No node added")
	}
	names := make([]string, len(added))
	for i, n := range added {
		c.ptExtra[n.nid] = true
		n.state = proto.NodeRunning
		c.startStorage(n)
		names[i] = n.nid.String()
	}
	c.broadcastNodes(added)
	return ack("Nodes added: %s", strings.Join(names, ", "))
}

func (c *Core) tweakPartitionTable(dryRun bool, exclude []proto.NodeID) proto.Msg {
	if e := c.ptChangeAllowed("tweakPartitionTable"); e != nil {
		return e
	}
	excluded := map[proto.NodeID]bool{}
	for _, nid := range exclude {
		excluded[nid] = true
	}
	var drop []proto.NodeID
	for _, n := range c.storages(false) {
		if excluded[n.nid] || n.state == proto.NodePending {
			drop = append(drop, n.nid)
		} else if n.state != proto.NodeRunning {
			return denied("tweak: down nodes must be listed explicitly")
		}
	}
	changes, err := c.pt.Tweak(c.ptNodes(), drop)
	if err != nil {
		return denied("%s", err)
	}
	var rows [][]proto.CellInfo
	if dryRun {
		t := c.pt.Clone()
		if _, err := t.Commit(changes); err != nil {
			return denied("%s", err)
		}
		rows = t.Rows()
	} else {
		c.broadcastPartitionChanges(changes)
		rows = c.pt.Rows()
	}
	return &proto.AnswerTweakPartitionTable{Changed: len(changes) > 0, Rows: rows}
}

func (c *Core) setNumReplicas(nr uint32) proto.Msg {
	if e := c.ptChangeAllowed("setNumReplicas"); e != nil {
		return e
	}
	msg := &proto.NotifyPartitionChanges{PTid: c.pt.PTid + 1, NumReplicas: nr, Changes: []proto.CellChange{}}
	if err := c.pt.Update(msg, true); err != nil {
		return denied("%s", err)
	}
	c.sendPartitionChanges(msg)
	return ack("")
}

func (c *Core) repair(nids []proto.NodeID, dryRun bool) proto.Msg {
	var targets []*node
	for _, nid := range nids {
		n := c.nodeByID(nid)
		if n == nil || n.typ != proto.Storage || !n.identified() {
			return denied("invalid storage node %s", nid)
		}
		targets = append(targets, n)
	}
	for _, n := range targets {
		c.send(n, &proto.NotifyRepair{DryRun: dryRun})
	}
	return ack("")
}

func (c *Core) truncate(tid zodb.Tid) proto.Msg {
	if e := c.stateAllows("truncate", proto.ClusterRunning); e != nil {
		return e
	}
	if c.lastTid <= tid {
		return denied("Truncating after last transaction does nothing")
	}
	if c.tm.firstTid > tid {
		return denied("Truncating before first transaction is probably not what you intended to do")
	}
	if approved, _ := c.packs.approvedRejected(tid + 1); len(approved) > 0 {
		return denied("Can not truncate before an approved pack")
	}
	c.afterAnswer = func() { c.stopOperation(tid) }
	return ack("")
}

// checkReplicas sends CheckPartition orders (§10.3).
func (c *Core) checkReplicas(m *proto.CheckReplicas) proto.Msg {
	maxTid := m.MaxTid
	if maxTid == zodb.InvalidTid {
		maxTid = c.lastTid
	}
	if m.MinTid > maxTid {
		c.log.Warn("nothing to check", "min_tid", m.MinTid, "max_tid", maxTid)
		return ack("")
	}
	busy := map[proto.NodeID]bool{}
	for _, part := range m.Partitions {
		p := int(part.Partition)
		if p >= c.pt.NP() {
			continue
		}
		cells := c.pt.ReadableCells(p)
		if len(cells) <= 1 {
			continue
		}
		// As NEO/py: the last readable cell's node, unless an earlier one
		// already checks another partition (then that one).
		var target *node
		var nid proto.NodeID
		for _, cell := range cells {
			nid = cell.NID
			if busy[nid] {
				break
			}
		}
		busy[nid] = true
		target = c.nodeByID(nid)
		if target == nil || !target.identified() {
			continue
		}
		src := proto.CheckSource{}
		if part.Reference != proto.NoNode {
			if s := c.nodeByID(part.Reference); s != nil {
				src.Addr = s.addr
			}
		}
		c.send(target, &proto.CheckPartition{Partition: uint32(p), Source: src, MinTid: m.MinTid, MaxTid: maxTid})
	}
	return ack("")
}

// flushLog forwards FlushLog to every connected node but the sender.
func (c *Core) flushLog(from *node) {
	for _, n := range c.identifiedNodes() {
		if n != from {
			c.send(n, &proto.FlushLog{})
		}
	}
}
