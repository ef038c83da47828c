package master

import (
	"sort"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// Stages of VERIFYING (§6.5).
const (
	verifyLocked    = iota // AskLockedTransactions sent, waiting
	verifyFinalTID         // asking AskFinalTID for voted ttids not known locked
	verifyLastIDs          // AskLastIDs sent, waiting
	verifyPackOrder        // AskPackOrders sent, waiting
	verifyDone
)

// verification is the state of VERIFYING.
type verification struct {
	stage   int
	waiting map[proto.NodeID]bool // storages whose answer is awaited

	locked map[zodb.Tid]zodb.Tid              // ttid → final tid
	voted  map[zodb.Tid]map[proto.NodeID]bool // ttid → storages that voted it

	// AskFinalTID: the ttids to resolve, in order, and the storages left
	// to ask for the current one.
	finalTTids []zodb.Tid
	finalAsk   []proto.NodeID
	finalTid   zodb.Tid // answer of the storage asked (InvalidTid: none)
	asked      bool     // a storage is being asked for finalTTids[0]

	lastTid zodb.Tid
	lastOid zodb.Oid
	haveOid bool
	orders  []proto.PackOrder
}

func (c *Core) startVerification() {
	c.changeClusterState(proto.ClusterVerifying)
	for _, n := range c.storages(true) {
		c.sendPartitionTable(n)
	}
	c.tm.reset()
	c.ver = &verification{
		waiting: map[proto.NodeID]bool{},
		locked:  map[zodb.Tid]zodb.Tid{},
		voted:   map[zodb.Tid]map[proto.NodeID]bool{},
	}
	if c.backupTid != zodb.InvalidTid {
		c.ver.stage = verifyFinalTID
		return
	}
	c.askAndWait(&proto.AskLockedTransactions{}, c.readableStorages())
}

// readableStorages returns the identified storages having a readable cell.
func (c *Core) readableStorages() []*node {
	set := map[proto.NodeID]bool{}
	for p := 0; p < c.pt.NP(); p++ {
		for _, cell := range c.pt.ReadableCells(p) {
			set[cell.NID] = true
		}
	}
	var v []*node
	for _, n := range c.storages(true) {
		if set[n.nid] {
			v = append(v, n)
		}
	}
	return v
}

func (c *Core) askAndWait(m proto.Msg, nodes []*node) {
	for _, n := range nodes {
		c.ver.waiting[n.nid] = true
		c.ask(n, m, 0)
	}
}

// verifyStep advances verification; it reports whether the cluster state
// changed.
func (c *Core) verifyStep() bool {
	v := c.ver
	for len(v.waiting) == 0 && !v.asked {
		switch v.stage {
		case verifyLocked:
			for ttid := range v.voted {
				if _, ok := v.locked[ttid]; !ok {
					v.finalTTids = append(v.finalTTids, ttid)
				}
			}
			sort.Slice(v.finalTTids, func(i, j int) bool { return v.finalTTids[i] < v.finalTTids[j] })
			v.stage = verifyFinalTID
			v.finalAsk = nil
		case verifyFinalTID:
			if len(v.finalTTids) == 0 {
				c.validateTransactions()
				v.stage = verifyLastIDs
				c.askAndWait(&proto.AskLastIDs{}, c.storages(true))
				continue
			}
			ttid := v.finalTTids[0]
			if v.finalAsk == nil {
				v.finalAsk = []proto.NodeID{}
				for _, cell := range c.pt.ReadableCells(c.pt.Partition(uint64(ttid))) {
					if !v.voted[ttid][cell.NID] {
						v.finalAsk = append(v.finalAsk, cell.NID)
					}
				}
			}
			var target *node
			for len(v.finalAsk) > 0 && target == nil {
				n := c.nodeByID(v.finalAsk[0])
				v.finalAsk = v.finalAsk[1:]
				if n != nil && n.identified() {
					target = n
				}
			}
			if target == nil {
				// Nobody knows a final tid: the storages drop it.
				v.finalTTids = v.finalTTids[1:]
				v.finalAsk = nil
				continue
			}
			v.asked = true
			v.finalTid = zodb.InvalidTid
			c.ver.waiting[target.nid] = true
			c.ask(target, &proto.AskFinalTID{TTid: ttid}, ttid)
		case verifyLastIDs:
			c.lastTid = v.lastTid
			if v.haveOid {
				c.tm.setLastOid(v.lastOid)
			}
			c.truncateTid = zodb.InvalidTid
			v.stage = verifyPackOrder
			nodes := c.readableStorages()
			min := zodb.InvalidTid
			for _, n := range nodes {
				if n.completedPack != 0 && (min == zodb.InvalidTid || n.completedPack < min) {
					min = n.completedPack
				}
			}
			from := zodb.Tid(0)
			if min != zodb.InvalidTid {
				from = min + 1
			}
			c.askAndWait(&proto.AskPackOrders{MinPackID: from}, nodes)
		case verifyPackOrder:
			c.packs.load(v.orders)
			c.ver = nil
			c.provideService()
			return true
		default:
			return false
		}
	}
	return false
}

// validateTransactions sends ValidateTransaction for every transaction
// with a known final tid to the storages that voted it.
func (c *Core) validateTransactions() {
	v := c.ver
	ttids := make([]zodb.Tid, 0, len(v.locked))
	for ttid := range v.locked {
		ttids = append(ttids, ttid)
	}
	sort.Slice(ttids, func(i, j int) bool { return ttids[i] < ttids[j] })
	for _, ttid := range ttids {
		tid := v.locked[ttid]
		voters := v.voted[ttid]
		for _, n := range c.storages(true) {
			if voters[n.nid] {
				c.send(n, &proto.ValidateTransaction{TTid: ttid, Tid: tid})
			}
		}
	}
}

func (c *Core) verifyAnswer(n *node, a ask, m proto.Msg) {
	if c.state != proto.ClusterVerifying || a.phase != c.phase || c.ver == nil {
		return
	}
	v := c.ver
	if !v.waiting[n.nid] {
		return
	}
	delete(v.waiting, n.nid)
	switch m := m.(type) {
	case *proto.AnswerLockedTransactions:
		for _, lt := range m.Transactions {
			if lt.Tid != zodb.InvalidTid {
				v.locked[lt.TTid] = lt.Tid
			}
			if v.voted[lt.TTid] == nil {
				v.voted[lt.TTid] = map[proto.NodeID]bool{}
			}
			v.voted[lt.TTid][n.nid] = true
		}
	case *proto.AnswerFinalTID:
		v.asked = false
		if m.Tid != zodb.InvalidTid && len(v.finalTTids) > 0 {
			v.locked[v.finalTTids[0]] = m.Tid
			v.finalTTids = v.finalTTids[1:]
			v.finalAsk = nil
		}
	case *proto.AnswerLastIDs:
		if m.LastTid != zodb.InvalidTid && m.LastTid > v.lastTid {
			v.lastTid = m.LastTid
		}
		if m.LastOid != zodb.InvalidOid && (!v.haveOid || m.LastOid > v.lastOid) {
			v.lastOid, v.haveOid = m.LastOid, true
		}
		c.tm.setFirstTid(m.FirstTid)
	case *proto.AnswerPackOrders:
		v.orders = append(v.orders, m.Orders...)
	}
}

// verifyStorageLost forgets what was awaited from a lost storage.
func (c *Core) verifyStorageLost(n *node) {
	v := c.ver
	if v == nil {
		return
	}
	if v.waiting[n.nid] {
		delete(v.waiting, n.nid)
		if v.stage == verifyFinalTID {
			v.asked = false
		}
	}
}
