package admin

import (
	"fmt"
	"slices"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
)

// nodeTable is the admin's copy of the master's node list, kept up to date
// from NotifyNodeInformation as every NEO node does.
type nodeTable struct {
	nodes []*proto.NodeInfo
	// lastTimestamp is the timestamp of the last NotifyNodeInformation
	// processed since the connection to the master; 0 before the first.
	lastTimestamp float64
}

// reset prepares for a new connection to the master: its first
// notification is then a full list and timestamps start again.
func (t *nodeTable) reset() { t.lastTimestamp = 0 }

func (t *nodeTable) byNID(nid proto.NodeID) *proto.NodeInfo {
	if nid == proto.NoNode {
		return nil
	}
	for _, n := range t.nodes {
		if n.NID == nid {
			return n
		}
	}
	return nil
}

func (t *nodeTable) byAddr(addr proto.Opt[proto.Address]) *proto.NodeInfo {
	if !addr.Ok {
		return nil
	}
	for _, n := range t.nodes {
		if n.Addr.Ok && n.Addr.V == addr.V {
			return n
		}
	}
	return nil
}

func (t *nodeTable) remove(node *proto.NodeInfo) {
	t.nodes = slices.DeleteFunc(t.nodes, func(n *proto.NodeInfo) bool { return n == node })
}

// update applies NotifyNodeInformation. The first one after a connection
// to the master is the full list: nodes it does not name are forgotten,
// except storages that still have cells in the partition table (tab may be
// nil).
func (t *nodeTable) update(msg *proto.NotifyNodeInformation, tab *pt.Table) error {
	if msg.Timestamp <= t.lastTimestamp {
		return fmt.Errorf("node information timestamp %v not after the previous one (%v)",
			msg.Timestamp, t.lastTimestamp)
	}
	full := t.lastTimestamp == 0
	t.lastTimestamp = msg.Timestamp
	var listed []*proto.NodeInfo
	for _, e := range msg.Nodes {
		byNID, byAddr := t.byNID(e.NID), t.byAddr(e.Addr)
		node := byAddr
		if node == nil {
			node = byNID
		}
		if node == nil {
			if e.State == proto.NodeUnknown {
				continue // nothing to forget
			}
			n := e
			t.nodes = append(t.nodes, &n)
			listed = append(listed, &n)
			continue
		}
		if byNID != nil && byAddr != nil && byNID != byAddr {
			// The id moved to the node known by its address.
			byNID.NID = proto.NoNode
		}
		if e.State == proto.NodeUnknown {
			t.remove(node)
			continue
		}
		*node = e
		listed = append(listed, node)
	}
	if full {
		t.nodes = slices.DeleteFunc(t.nodes, func(n *proto.NodeInfo) bool {
			if slices.Contains(listed, n) {
				return false
			}
			return n.Type != proto.Storage || tab == nil || !hasCells(tab, n.NID)
		})
	}
	return nil
}

// list returns copies of the known nodes of type typ (all when !typ.Ok),
// sorted by id, nodes without id last.
func (t *nodeTable) list(typ proto.Opt[proto.NodeType]) []proto.NodeInfo {
	var l []proto.NodeInfo
	for _, n := range t.nodes {
		if !typ.Ok || n.Type == typ.V {
			l = append(l, *n)
		}
	}
	slices.SortStableFunc(l, func(a, b proto.NodeInfo) int {
		switch {
		case a.NID == proto.NoNode && b.NID == proto.NoNode:
			return 0
		case a.NID == proto.NoNode:
			return 1
		case b.NID == proto.NoNode:
			return -1
		case a.NID < b.NID:
			return -1
		case a.NID > b.NID:
			return 1
		}
		return 0
	})
	return l
}

func hasCells(tab *pt.Table, nid proto.NodeID) bool {
	for p := range tab.NP() {
		if _, ok := tab.Cell(p, nid); ok {
			return true
		}
	}
	return false
}

// ptSummary counts the cells of tab per state, and the storages having
// cells that are not running ("down" in the monitoring summary).
func ptSummary(tab *pt.Table, nodes *nodeTable) (counts map[proto.CellState]int, down int) {
	counts = map[proto.CellState]int{}
	if tab == nil {
		return counts, 0
	}
	downSet := map[proto.NodeID]bool{}
	for p := range tab.NP() {
		for _, c := range tab.Row(p) {
			counts[c.State]++
			if n := nodes.byNID(c.NID); n == nil || n.State != proto.NodeRunning {
				downSet[c.NID] = true
			}
		}
	}
	return counts, len(downSet)
}
