package master

import (
	"sort"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// provideService enters RUNNING (§6.6).
func (c *Core) provideService() {
	c.changeClusterState(proto.ClusterRunning)
	for _, n := range c.storages(true) {
		if n.state == proto.NodeRunning {
			c.startStorage(n)
		}
	}
}

// startStorage tells a storage to start operating; transactions wait
// until it is ready.
func (c *Core) startStorage(n *node) {
	c.send(n, &proto.StartOperation{Backup: c.backupTid != zodb.InvalidTid})
	if _, ready := c.readyDict[n.nid]; !ready {
		c.startingSet[n.nid] = true
	}
}

func (c *Core) setStorageReady(n *node) {
	if !c.startingSet[n.nid] {
		return
	}
	delete(c.startingSet, n.nid)
	c.readiness++
	c.readyDict[n.nid] = c.readiness
	if approved, rejected := c.packs.approvedRejected(0); len(approved)+len(rejected) > 0 {
		c.send(n, &proto.NotifyPackSigned{Approved: approved, Rejected: rejected})
	}
	c.runDelayed()
}

func (c *Core) setStorageNotReady(nid proto.NodeID) {
	delete(c.startingSet, nid)
	delete(c.readyDict, nid)
	c.runDelayed()
}

// readySet returns the storages that were ready at the given readiness
// (all ready ones for -1).
func (c *Core) readySet(readiness int) map[proto.NodeID]bool {
	set := map[proto.NodeID]bool{}
	for nid, r := range c.readyDict {
		if readiness < 0 || r <= readiness {
			set[nid] = true
		}
	}
	return set
}

// operationalWithout is NEO/py's pt.operational(exclude): every partition
// has a readable cell on a RUNNING storage not in exclude.
func (c *Core) operationalWithout(exclude map[proto.NodeID]bool) bool {
	return c.pt.Filled() && c.pt.Operational(func(nid proto.NodeID) bool {
		return !exclude[nid] && c.nodeRunning(nid)
	})
}

// runDelayed retries the requests that were delayed, in order.
func (c *Core) runDelayed() {
	if len(c.delayed) == 0 || c.runningDelayed {
		return
	}
	c.runningDelayed = true
	defer func() { c.runningDelayed = false }()
	for {
		queue := c.delayed
		c.delayed = nil
		progress := false
		for _, d := range queue {
			p := c.peers[d.link]
			if p == nil || p.node == nil || p.closing {
				continue
			}
			if !c.clientRequest(p.node, EvRecv{Link: d.link, MsgID: d.msgID, Msg: d.msg}, true) {
				// still delayed: it keeps its place
				c.delayed = append(c.delayed, d)
				continue
			}
			progress = true
		}
		if !progress || len(c.delayed) == 0 {
			return
		}
	}
}

// --- storages ---

func (c *Core) storageRecv(n *node, ev EvRecv) {
	switch m := ev.Msg.(type) {
	case *proto.NotifyReady:
		if c.state != proto.ClusterRunning && c.state != proto.ClusterStopping {
			// Sent before the storage got the StopOperation of an
			// operation that ended meanwhile: stale, not an error
			// (NEO/py drops the link, and the storage reconnects).
			c.log.Info("ignored NotifyReady of a stopped operation", "storage", n.nid, "state", c.state)
			return
		}
		c.setStorageReady(n)
	case *proto.AskUnfinishedTransactions:
		if c.state != proto.ClusterRunning && c.state != proto.ClusterStopping {
			c.unexpected(ev)
			return
		}
		var ttids []zodb.Tid
		for ttid, t := range c.tm.txns {
			t.notify[n.nid] = 0
			ttids = append(ttids, ttid)
		}
		sort.Slice(ttids, func(i, j int) bool { return ttids[i] < ttids[j] })
		if ttids == nil {
			ttids = []zodb.Tid{}
		}
		c.reply(ev.Link, ev.MsgID, &proto.AnswerUnfinishedTransactions{MaxTid: c.lastTid, TTids: ttids})
		c.setUpdatable(n.nid, m.Partitions)
	case *proto.NotifyReplicationDone:
		if c.state != proto.ClusterRunning && c.state != proto.ClusterStopping {
			c.unexpected(ev)
			return
		}
		changes, err := c.setUpToDate(n.nid, int(m.Partition))
		if err != "" {
			c.protocolError(ev.Link, ev.MsgID, "%s", err)
			return
		}
		if changes == nil {
			c.log.Info("ignored late notification of replication done", "storage", n.nid, "partition", m.Partition, "tid", m.Tid)
			return
		}
		c.broadcastPartitionChanges(changes)
	case *proto.NotifyPartitionCorrupted:
		c.partitionCorrupted(m)
	case *proto.AskPackOrders:
		c.askPackOrders(n, ev, m.MinPackID)
	case *proto.NotifyPackCompleted:
		n.completedPack = m.PackID
		c.updateCompletedPack()
	default:
		c.unexpected(ev)
	}
}

// storageLost handles the loss of a storage's link (§6.10).
func (c *Core) storageLost(n *node) {
	switch c.state {
	case proto.ClusterRecovering:
		if c.rec != nil {
			c.recoveryStorageLost(n)
		}
		return
	case proto.ClusterVerifying:
		c.verifyStorageLost(n)
	}
	switch n.state {
	case proto.NodePending:
		c.log.Info("drop a pending storage", "nid", n.nid)
		n.state = proto.NodeUnknown
		c.removeNode(n)
		delete(c.ptExtra, n.nid)
	case proto.NodeDown, proto.NodeUnknown:
		// put DOWN or dropped by an admin: nothing more
		c.setStorageNotReady(n.nid)
		c.tm.storageLost(n.nid)
		return
	default:
		n.state = proto.NodeDown
	}
	c.broadcastNodes([]*node{n})
	c.oldPackStorageLost(n)
	if !c.storageLostOutdate(n) {
		return
	}
	c.setStorageNotReady(n.nid)
	c.tm.storageLost(n.nid)
}

// storageLostOutdate outdates the cells of a lost storage; it reports
// false when operation stopped.
func (c *Core) storageLostOutdate(n *node) bool {
	if c.truncateTid != zodb.InvalidTid {
		c.lostOperation()
		return false
	}
	c.broadcastPartitionChanges(c.pt.Outdate(c.nodeRunning, n.nid))
	if !c.operationalWithout(nil) {
		c.lostOperation()
		return false
	}
	return true
}

// lostOperation stops operation after a failure; during STOPPING, the
// master stops without waiting for transactions.
func (c *Core) lostOperation() {
	if c.state == proto.ClusterStopping {
		c.log.Error("no longer operational")
		c.forceShutdown = true
		return
	}
	c.stopOperation(zodb.InvalidTid)
}

// stopOperation goes back to RECOVERING (§6.3), truncating at truncate if
// it is not InvalidTid.
func (c *Core) stopOperation(truncate zodb.Tid) {
	c.log.Error("no longer operational")
	c.startupAllowed = !(c.truncateTid != zodb.InvalidTid || truncate != zodb.InvalidTid)
	c.packs.reset()
	c.oldPacks = nil
	c.readiness = 0
	c.readyDict = map[proto.NodeID]int{}
	c.startingSet = map[proto.NodeID]bool{}
	c.operation++
	var changed []*node
	for _, n := range c.identifiedNodes() {
		switch n.typ {
		case proto.Client:
			c.send(n, &proto.StopOperation{})
			c.closeLink(n.link)
		case proto.Storage:
			c.send(n, &proto.StopOperation{})
			if truncate != zodb.InvalidTid {
				c.send(n, &proto.Truncate{Tid: truncate})
			}
			if n.state == proto.NodeRunning {
				n.state = proto.NodePending
				changed = append(changed, n)
			}
		}
	}
	c.broadcastNodes(changed)
	c.delayed = nil
	c.startRecovery()
}

// setUpdatable marks the non-readable cells of nid in partitions as
// updatable (§7.6).
func (c *Core) setUpdatable(nid proto.NodeID, partitions []uint32) {
	for _, p := range partitions {
		if int(p) >= c.pt.NP() {
			continue
		}
		if cell, ok := c.pt.Cell(int(p), nid); ok && !cell.Readable() {
			if c.updatable == nil {
				c.updatable = map[cellKey]bool{}
			}
			c.updatable[cellKey{int(p), nid}] = true
		}
	}
}

type cellKey struct {
	partition int
	nid       proto.NodeID
}

// setUpToDate is NEO/py's pt.setUpToDate (§7.6): the changes making the
// cell of nid in partition p UP_TO_DATE and dropping FEEDING cells no longer
// needed; nil when the notification is late. A non-empty error string is a
// protocol error.
func (c *Core) setUpToDate(nid proto.NodeID, p int) ([]proto.CellChange, string) {
	if p < 0 || p >= c.pt.NP() {
		return nil, "Non-assigned partition"
	}
	cell, ok := c.pt.Cell(p, nid)
	if !ok {
		return nil, "Non-assigned partition"
	}
	if cell.State != proto.CellOutOfDate || !c.updatable[cellKey{p, nid}] {
		return nil, ""
	}
	changes := []proto.CellChange{{Partition: uint32(p), NID: nid, State: proto.CellUpToDate}}
	row := c.pt.Row(p)
	readable := 0
	var feeding []proto.NodeID
	for _, x := range row {
		if x.NID == nid || x.Readable() {
			readable++
		}
		if x.State == proto.CellFeeding {
			feeding = append(feeding, x.NID)
		}
	}
	if readable != len(row) {
		allFeeding := func(id proto.NodeID) bool {
			for q := 0; q < c.pt.NP(); q++ {
				if x, ok := c.pt.Cell(q, id); ok && x.State != proto.CellFeeding {
					return false
				}
			}
			return true
		}
		sort.SliceStable(feeding, func(i, j int) bool { return allFeeding(feeding[i]) && !allFeeding(feeding[j]) })
		keep := readable - c.pt.NumReplicas
		if keep < 0 {
			keep = 0
		}
		if len(feeding) > keep {
			feeding = feeding[:keep]
		}
	}
	for _, f := range feeding {
		changes = append(changes, proto.CellChange{Partition: uint32(p), NID: f, State: proto.CellDiscarded})
	}
	return changes, ""
}

// --- clients ---

// maxNewOids bounds AskNewOIDs.
const maxNewOids = 1 << 20

func (c *Core) clientRecv(n *node, ev EvRecv) {
	c.clientRequest(n, ev, false)
}

// readOnly refuses a write request of a client that identified as
// read-only.
func (c *Core) readOnly(ev EvRecv) {
	c.reply(ev.Link, ev.MsgID, proto.Err(proto.ReadOnlyAccess, "read-only access as requested by the client"))
}

// clientRequest handles a client's request; it reports false when the
// request is delayed (it is then queued, unless it was already).
func (c *Core) clientRequest(n *node, ev EvRecv, retry bool) bool {
	delay := func() bool {
		if !retry {
			c.delayed = append(c.delayed, delayedRequest{link: ev.Link, msgID: ev.MsgID, msg: ev.Msg})
		}
		return false
	}
	if n.readOnly {
		switch ev.Msg.(type) {
		case *proto.AskBeginTransaction, *proto.AskNewOIDs, *proto.AskFinishTransaction,
			*proto.AskFinalTID, *proto.AbortTransaction:
			c.readOnly(ev)
			return true
		}
	}
	switch m := ev.Msg.(type) {
	case *proto.AskBeginTransaction:
		// Wait until starting storages are ready: the transaction must
		// be written in full to them.
		if len(c.startingSet) > 0 || c.blockBegin {
			return delay()
		}
		ttid, err := c.tm.begin(n, c.readiness, m.Tid)
		if err != nil {
			c.protocolError(ev.Link, ev.MsgID, "%s", err)
			return true
		}
		c.reply(ev.Link, ev.MsgID, &proto.AnswerBeginTransaction{TTid: ttid})
	case *proto.AskNewOIDs:
		// NEO/py clients ask 100; a bound keeps a bad request from
		// exhausting memory (NEO/py has none).
		if m.NumOids > maxNewOids {
			c.protocolError(ev.Link, ev.MsgID, "too many oids requested: %d", m.NumOids)
			return true
		}
		c.reply(ev.Link, ev.MsgID, &proto.AnswerNewOIDs{Oids: c.tm.newOids(m.NumOids)})
	case *proto.FailedVote:
		ok, delayed, err := c.vote(m.TTid, m.Failed)
		switch {
		case err != nil:
			c.protocolError(ev.Link, ev.MsgID, "%s", err)
		case delayed:
			return delay()
		case ok:
			c.reply(ev.Link, ev.MsgID, proto.Err(proto.Ack, ""))
		default:
			c.reply(ev.Link, ev.MsgID, proto.Err(proto.IncompleteTransaction, ""))
		}
	case *proto.AskFinishTransaction:
		c.finishTransaction(n, ev, m)
	case *proto.AskFinalTID:
		switch t := c.tm.txns[m.TTid]; {
		case c.tm.lastTID() < m.TTid:
			c.reply(ev.Link, ev.MsgID, &proto.AnswerFinalTID{Tid: zodb.InvalidTid})
		case t != nil:
			t.notify[n.nid] = ev.MsgID
		default:
			c.reply(ev.Link, ev.MsgID, &proto.AnswerFinalTID{Tid: zodb.TidMax})
		}
	case *proto.AbortTransaction:
		t := c.tm.txns[m.TTid]
		if t == nil {
			c.log.Info("abort of an unknown transaction", "ttid", m.TTid, "client", n.nid)
			return true
		}
		if t.tid != 0 {
			c.protocolError(ev.Link, ev.MsgID, "commit already requested for ttid %s", m.TTid)
			return true
		}
		involved := map[proto.NodeID]bool{}
		for nid := range t.notify {
			involved[nid] = true
		}
		for _, nid := range m.NIDs {
			involved[nid] = true
		}
		c.tm.remove(m.TTid)
		c.notifyTransactionAborted(m.TTid, involved)
	case *proto.WaitForPack:
		if !c.packs.waitForPack(n, ev.MsgID, m.PackID) {
			c.reply(ev.Link, ev.MsgID, &proto.WaitedForPack{})
		}
	default:
		c.unexpected(ev)
	}
	return true
}

// vote is NEO/py's tm.vote: whether a transaction whose stores failed on
// some storages may still be finished.
func (c *Core) vote(ttid zodb.Tid, failedList []proto.NodeID) (ok, delayed bool, err error) {
	t, err := c.tm.get(ttid)
	if err != nil {
		return false, false, err
	}
	// Storages not ready when the transaction began are not expected to
	// hold it in full.
	ready := c.readySet(t.readiness)
	failed := map[proto.NodeID]bool{}
	for _, nid := range failedList {
		if ready[nid] {
			failed[nid] = true
		}
	}
	if len(failed) == 0 {
		return true, false, nil
	}
	if !c.operationalWithout(failed) {
		return false, false, nil
	}
	all := map[proto.NodeID]bool{}
	for nid := range failed {
		all[nid] = true
	}
	for _, x := range c.tm.txns {
		for nid := range x.failed {
			all[nid] = true
		}
	}
	if !c.operationalWithout(all) {
		return false, true, nil
	}
	t.failed = failed
	return true, false, nil
}

func (c *Core) notifyTransactionAborted(ttid zodb.Tid, nids map[proto.NodeID]bool) {
	for nid := range c.readySet(-1) {
		if nids[nid] {
			c.send(c.nodeByID(nid), &proto.AbortTransaction{TTid: ttid, NIDs: []proto.NodeID{}})
		}
	}
}

// finishTransaction handles AskFinishTransaction (§8.6).
func (c *Core) finishTransaction(n *node, ev EvRecv, m *proto.AskFinishTransaction) {
	t, err := c.tm.get(m.TTid)
	if err != nil {
		c.protocolError(ev.Link, ev.MsgID, "%s", err)
		return
	}
	if t.tid != 0 {
		c.protocolError(ev.Link, ev.MsgID, "commit already requested for ttid %s", m.TTid)
		return
	}
	if pk, ok := m.Pack.Get(); ok {
		if pk.PackTid == 0 || pk.PackTid > c.lastTid || pk.PackTid == zodb.InvalidTid {
			c.protocolError(ev.Link, ev.MsgID, "invalid pack time")
			return
		}
	}
	if len(t.failed) > 0 && !c.operationalWithout(t.failed) {
		c.reply(ev.Link, ev.MsgID, proto.Err(proto.IncompleteTransaction, ""))
		c.tm.remove(m.TTid)
		c.notifyTransactionAborted(m.TTid, c.readySet(-1))
		return
	}
	np := c.pt.NP()
	ready := c.readySet(t.readiness)
	// listed: partitions of modified and deleted oids (InvalidatePartitions);
	// pset adds those of the metadata and of checked oids.
	listed := map[int]bool{}
	for _, oid := range m.Oids {
		listed[c.pt.Partition(uint64(oid))] = true
	}
	for _, p := range m.Deleted {
		if int(p) < np {
			listed[int(p)] = true
		}
	}
	pset := map[int]bool{c.pt.Partition(uint64(m.TTid)): true}
	partitions := []uint32{}
	for p := range listed {
		pset[p] = true
		partitions = append(partitions, uint32(p))
	}
	sort.Slice(partitions, func(i, j int) bool { return partitions[i] < partitions[j] })
	for _, p := range m.Checked {
		if int(p) < np {
			pset[int(p)] = true
		}
	}
	plist := make([]int, 0, len(pset))
	for p := range pset {
		plist = append(plist, p)
	}
	sort.Ints(plist)
	involved := map[proto.NodeID]bool{}
	var lockNodes []*node
	op := c.operation
	for _, p := range plist {
		for _, cell := range c.pt.Row(p) {
			s := c.nodeByID(cell.NID)
			if s == nil || !s.identified() || involved[s.nid] {
				continue
			}
			if t.failed[s.nid] {
				// Disconnecting it outdates its cells before the
				// transaction is locked.
				c.closeLink(s.link)
				c.storageLostNow(s)
			} else if ready[s.nid] {
				involved[s.nid] = true
				lockNodes = append(lockNodes, s)
			}
		}
	}
	if op != c.operation {
		// Disconnecting the failed storages stopped operation: the
		// transaction is gone with it.
		return
	}
	if len(lockNodes) == 0 {
		c.reply(ev.Link, ev.MsgID, proto.Err(proto.IncompleteTransaction, ""))
		c.tm.remove(m.TTid)
		c.notifyTransactionAborted(m.TTid, c.readySet(-1))
		return
	}
	var tid zodb.Tid
	if c.tm.inQueue(m.TTid) {
		tid = m.TTid
	} else {
		tid = c.tm.nextTID(c.now, m.TTid, np)
		c.tm.queue = append(c.tm.queue, m.TTid)
	}
	t.tid = tid
	t.oids = m.Oids
	t.partitions = partitions
	t.msgID = ev.MsgID
	t.involved = involved
	t.locking = map[proto.NodeID]bool{}
	for nid := range involved {
		t.locking[nid] = true
	}
	for _, oid := range m.Oids {
		c.tm.setLastOid(oid)
	}
	if pk, ok := m.Pack.Get(); ok {
		t.pack = c.packs.add(tid, pk)
		t.packInfo = pk
	}
	t.lockPTid = c.pt.PTid
	for _, s := range lockNodes {
		c.ask(s, &proto.AskLockInformation{TTid: m.TTid, Tid: tid, Pack: t.pack}, m.TTid)
	}
}

// storageLostNow handles a storage whose link the master closes itself, at
// once, so that its loss is accounted before what follows; the link's
// going down is then ignored.
func (c *Core) storageLostNow(s *node) {
	if p := c.peers[s.link]; p != nil {
		p.node = nil
	}
	s.link = 0
	c.nodeLost(s)
}

// transactionCommitted tells everyone about a committed transaction
// (NEO/py's onTransactionCommitted).
func (c *Core) transactionCommitted(t *txn) {
	c.log.Debug("transaction committed", "ttid", t.ttid, "tid", t.tid)
	inval := &proto.InvalidateObjects{Tid: t.tid, Oids: t.oids}
	if inval.Oids == nil {
		inval.Oids = []zodb.Oid{}
	}
	var clients []*node
	for _, n := range c.nodes {
		if n.typ == proto.Client && n.identified() {
			clients = append(clients, n)
		}
	}
	for _, n := range clients {
		if n == t.client {
			c.reply(n.link, t.msgID, &proto.AnswerTransactionFinished{TTid: t.ttid, Tid: t.tid})
		} else if n.backupName != "" {
			c.send(n, &proto.InvalidatePartitions{Tid: t.tid, Partitions: t.partitions})
		} else {
			c.send(n, inval)
		}
	}
	unlock := &proto.NotifyUnlockInformation{TTid: t.ttid}
	for _, n := range c.storages(true) {
		if t.involved[n.nid] {
			c.send(n, unlock)
		}
	}
	if t.pack {
		signed := &proto.NotifyPackSigned{Approved: []zodb.Tid{t.tid}, Rejected: []zodb.Tid{}}
		for nid := range c.readySet(-1) {
			c.send(c.nodeByID(nid), signed)
		}
		for _, n := range clients {
			if n.backupName != "" {
				c.send(n, signed)
			}
		}
	}
	finished := &proto.NotifyTransactionFinished{TTid: t.ttid, MaxTid: t.tid}
	for nid, msgID := range t.notify {
		n := c.nodeByID(nid)
		if n == nil || !n.identified() {
			continue
		}
		if n.typ == proto.Client {
			c.reply(n.link, msgID, &proto.AnswerFinalTID{Tid: t.tid})
		} else {
			c.send(n, finished)
		}
	}
	if t.tid <= c.lastTid {
		c.log.Error("committed tids not increasing", "tid", t.tid, "last", c.lastTid)
	}
	c.lastTid = t.tid
}

// clientLost aborts the client's transactions not being finished and
// forgets it (§6.7).
func (c *Core) clientLost(n *node) {
	var ttids []zodb.Tid
	for ttid := range c.tm.txns {
		ttids = append(ttids, ttid)
	}
	sort.Slice(ttids, func(i, j int) bool { return ttids[i] < ttids[j] })
	for _, ttid := range ttids {
		t := c.tm.txns[ttid]
		if t == nil {
			continue
		}
		if t.client == n {
			if t.tid != 0 {
				t.client = nil // orphan: it still completes
				continue
			}
			notify := map[proto.NodeID]bool{}
			for nid := range t.notify {
				notify[nid] = true
			}
			c.tm.remove(ttid)
			c.notifyTransactionAborted(ttid, notify)
		} else {
			delete(t.notify, n.nid)
		}
	}
	c.packs.clientLost(n)
	n.state = proto.NodeUnknown
	c.removeNode(n)
	c.broadcastNodes([]*node{n})
}
