package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// protocolError is a violation of the protocol rules by the master or a
// peer: answered with Error(PROTOCOL_ERROR), then the link is closed.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "protocol error: " + e.msg }

func protoErrorf(format string, args ...any) error {
	return &protocolError{fmt.Sprintf(format, args...)}
}

// masterIn is what the goroutine receiving from the master link hands over.
type masterIn struct {
	req *neonet.Request
	err error
}

// connectPrimary finds the primary master and identifies to it. It returns
// the link, packets already received from it, the channel of the next ones
// and a function that stops and waits for the goroutine receiving them.
func (s *Storage) connectPrimary(ctx context.Context) (*neonet.Link, []*neonet.Request, <-chan masterIn, func(), error) {
	i := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, nil, err
		}
		s.mu.Lock()
		if i >= len(s.masters) {
			i = 0
		}
		addr := s.masters[i]
		s.mu.Unlock()
		link, pending, in, stop, next, err := s.identifyToMaster(ctx, addr)
		if err == nil {
			return link, pending, in, stop, nil
		}
		if ctx.Err() != nil {
			return nil, nil, nil, nil, ctx.Err()
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return nil, nil, nil, nil, fatal.err
		}
		s.logf(slog.LevelInfo, "master not available", "addr", addr, "err", err)
		if next >= 0 {
			i = next
		} else {
			i++
		}
	}
}

// fatalError is an identification failure that retrying cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// identifyToMaster dials one master. next is the index of the master to try
// next (a redirection), or -1.
func (s *Storage) identifyToMaster(ctx context.Context, addr string) (link *neonet.Link, pending []*neonet.Request, in <-chan masterIn, stop func(), next int, err error) {
	next = -1
	link, err = s.dialer.Dial(ctx, addr)
	if err != nil {
		return nil, nil, nil, nil, next, err
	}
	inCh := make(chan masterIn, 16)
	done := make(chan struct{})
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			r, err := link.Recv(ctx)
			select {
			case inCh <- masterIn{r, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	stop = func() {
		link.Close()
		close(done)
		<-recvDone
	}
	fail := func(e error) (*neonet.Link, []*neonet.Request, <-chan masterIn, func(), int, error) {
		stop()
		return nil, nil, nil, nil, next, e
	}

	s.mu.Lock()
	req := &proto.RequestIdentification{
		NodeType:    proto.Storage,
		NID:         s.nid,
		Address:     proto.Some(s.addr),
		ClusterName: s.cfg.Cluster,
		Extra:       proto.Dict{{Key: "devpath", Value: []string{}}, {Key: "new_nid", Value: []int{}}},
	}
	s.mu.Unlock()
	call, err := link.Start(ctx, req)
	if err != nil {
		return fail(err)
	}
	type answer struct {
		m   proto.Msg
		err error
	}
	ansCh := make(chan answer, 1)
	go func() {
		m, err := call.Wait(ctx)
		ansCh <- answer{m, err}
	}()
	var ans answer
	recvEnded := false
wait:
	for {
		select {
		case ans = <-ansCh:
			break wait
		case x := <-inCh:
			if x.err != nil {
				recvEnded = true
				ans = <-ansCh
				if ans.err == nil {
					ans.err = x.err
				}
				break wait
			}
			if npm, ok := x.req.Msg.(*proto.NotPrimaryMaster); ok {
				next = s.learnMasters(npm)
				continue
			}
			pending = append(pending, x.req)
		}
	}
	if ans.err != nil {
		// a NotPrimaryMaster may be queued behind the failure
		link.Close()
		for !recvEnded {
			x := <-inCh
			if x.err != nil {
				break
			}
			if npm, ok := x.req.Msg.(*proto.NotPrimaryMaster); ok {
				next = s.learnMasters(npm)
			}
		}
		var pe *proto.Error
		if errors.As(ans.err, &pe) && pe.Code == proto.ProtocolError {
			s.logf(slog.LevelWarn, "master refused identification", "addr", addr, "err", pe.Message)
			if pe.Message == "already connected" {
				s.forgetUnusedNID(ctx)
			}
		}
		return fail(ans.err)
	}
	acc, ok := ans.m.(*proto.AcceptIdentification)
	if !ok || acc.NodeType != proto.Master {
		return fail(fmt.Errorf("identification to %s: unexpected answer %T", addr, ans.m))
	}
	if acc.YourNID == proto.NoNode {
		return fail(fmt.Errorf("identification to %s: no node id given", addr))
	}
	if t, ok := acc.YourNID.Type(); !ok || t != proto.Storage {
		return fail(fmt.Errorf("identification to %s: given node id %s is not a storage id", addr, acc.YourNID))
	}
	s.mu.Lock()
	changed := s.nid != acc.YourNID
	s.viewMu.Lock()
	s.nid = acc.YourNID
	s.viewMu.Unlock()
	s.log = s.logger.With("node", s.nid.String())
	s.master = link
	s.ownIDTime = proto.Opt[float64]{}
	s.packReported = 0
	s.nodesSeen = false
	s.nodesTime = 0
	s.nodes[acc.NID] = &nodeInfo{typ: proto.Master, nid: acc.NID, state: proto.NodeRunning}
	s.mu.Unlock()
	if changed {
		if err := s.db.SetConfig(ctx, backend.KeyNID, strconv.FormatInt(int64(acc.YourNID), 10), true); err != nil {
			return fail(&fatalError{fmt.Errorf("storage: record node id: %w", err)})
		}
		if err := s.db.Commit(ctx); err != nil {
			return fail(&fatalError{fmt.Errorf("storage: record node id: %w", err)})
		}
	}
	s.logf(slog.LevelInfo, "connected to primary master", "addr", addr, "master", acc.NID.String())
	return link, pending, inCh, stop, next, nil
}

// forgetUnusedNID drops the node id a master gave, after the primary
// refused it as another node's, when this storage holds no cell under it
// (no data can be attributed to it) and the operator did not set it. Two
// masters both acting as primary during an election may each have given
// the same id to a different new storage; without this, the one the final
// primary does not know would be refused for ever. A storage that owns
// cells keeps its id: it must not take the place of another.
func (s *Storage) forgetUnusedNID(ctx context.Context) {
	s.mu.Lock()
	nid := s.nid
	if nid == proto.NoNode || nid == s.cfg.NodeID || s.pt != nil && slices.Contains(s.pt.Nodes(), nid) {
		s.mu.Unlock()
		return
	}
	s.viewMu.Lock()
	s.nid = proto.NoNode
	s.viewMu.Unlock()
	s.log = s.logger
	s.mu.Unlock()
	s.logf(slog.LevelWarn, "node id in use by another storage and owning no cell here: asking for a new one", "nid", nid.String())
	if err := s.db.SetConfig(ctx, backend.KeyNID, "", false); err != nil {
		s.logf(slog.LevelError, "forget node id", "err", err)
		return
	}
	if err := s.db.Commit(ctx); err != nil {
		s.logf(slog.LevelError, "forget node id", "err", err)
	}
}

// learnMasters records the masters of a NotPrimaryMaster and returns the
// index of the primary in the known list, or -1.
func (s *Storage) learnMasters(m *proto.NotPrimaryMaster) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range m.KnownMasters {
		if !slices.Contains(s.masters, a.String()) {
			s.masters = append(s.masters, a.String())
		}
	}
	// NEO/py sends the index of the primary in known_masters (nil when
	// unknown, which decodes like index 0: trying the first one then is
	// harmless, it redirects again if it is not the primary).
	if i := int(m.Primary); i >= 0 && i < len(m.KnownMasters) {
		return slices.Index(s.masters, m.KnownMasters[i].String())
	}
	return -1
}

// masterSession handles the master's packets until the link goes down or
// the master orders a shutdown (errShutdown).
func (s *Storage) masterSession(ctx context.Context, link *neonet.Link, pending []*neonet.Request, in <-chan masterIn) error {
	s.mu.Lock()
	s.repl = newReplicator(s)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		r := s.repl
		s.repl = nil
		s.mu.Unlock()
		r.stop()
	}()
	handle := func(r *neonet.Request) error {
		err := s.handleMaster(ctx, r)
		var pe *protocolError
		if errors.As(err, &pe) {
			s.logf(slog.LevelError, "protocol error from master", "err", pe.msg)
			r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", pe.msg))
		}
		return err
	}
	for _, r := range pending {
		if err := handle(r); err != nil {
			return err
		}
	}
	for {
		select {
		case x := <-in:
			if x.err != nil {
				return x.err
			}
			if err := handle(x.req); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// handleMaster handles one packet from the primary master.
func (s *Storage) handleMaster(ctx context.Context, r *neonet.Request) error {
	s.mu.Lock()
	defer s.unlock()
	switch m := r.Msg.(type) {
	case *proto.NotifyNodeInformation:
		return s.notifyNodeInformation(ctx, m)
	case *proto.NotifyClusterInformation:
		s.clusterState = m.State
		if m.State == proto.ClusterStopping {
			s.log.Info("cluster is stopping")
		}
		return nil
	case *proto.AskRecovery:
		a := &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid}
		if s.pt != nil && s.pt.PTid != 0 {
			a.PTid = proto.Some(s.pt.PTid)
		}
		var err error
		if a.BackupTid, err = s.configTid(ctx, backend.KeyBackupTid); err != nil {
			return err
		}
		if a.TruncateTid, err = s.configTid(ctx, backend.KeyTruncateTid); err != nil {
			return err
		}
		s.answer(r, a)
		return nil
	case *proto.AskPartitionTable:
		a := &proto.AnswerPartitionTable{}
		if s.pt != nil {
			if s.pt.PTid != 0 {
				a.PTid = proto.Some(s.pt.PTid)
			}
			a.NumReplicas = uint32(s.pt.NumReplicas)
			a.Rows = s.pt.Rows()
		}
		s.answer(r, a)
		return nil
	case *proto.SendPartitionTable:
		return s.sendPartitionTable(ctx, m)
	case *proto.NotifyPartitionChanges:
		return s.notifyPartitionChanges(ctx, m)
	case *proto.Truncate:
		if err := s.db.SetConfig(ctx, backend.KeyBackupTid, "", false); err != nil {
			return err
		}
		if err := s.db.SetConfig(ctx, backend.KeyTruncateTid, m.Tid.String(), true); err != nil {
			return err
		}
		return s.db.Commit(ctx)
	case *proto.AskLastIDs:
		a, err := s.lastIDs(ctx)
		if err != nil {
			return err
		}
		if _, done, ok, err := s.packProgress(ctx, s.nid); err != nil {
			return err
		} else if ok && done != 0 {
			s.packReported = 0
			s.notifyPackCompleted(done)
		}
		s.answer(r, a)
		return nil
	case *proto.AskLockedTransactions:
		u, err := s.db.Unfinished(ctx)
		if err != nil {
			return err
		}
		a := &proto.AnswerLockedTransactions{}
		for ttid, tid := range u {
			a.Transactions = append(a.Transactions, proto.LockedTransaction{TTid: ttid, Tid: tid})
		}
		slices.SortFunc(a.Transactions, func(x, y proto.LockedTransaction) int { return cmpTid(x.TTid, y.TTid) })
		s.answer(r, a)
		return nil
	case *proto.ValidateTransaction:
		if err := s.db.Lock(ctx, m.TTid, m.Tid, false); err != nil {
			return err
		}
		if err := s.db.Unlock(ctx, m.TTid, m.Tid); err != nil {
			return err
		}
		return s.db.Commit(ctx)
	case *proto.AskFinalTID:
		tid, err := s.finalTid(ctx, m.TTid)
		if err != nil {
			return err
		}
		s.answer(r, &proto.AnswerFinalTID{Tid: tid})
		return nil
	case *proto.AskPackOrders:
		orders, err := s.db.PackOrders(ctx, m.MinPackID, s.assignedPartitions())
		if err != nil {
			return err
		}
		a := &proto.AnswerPackOrders{}
		for _, o := range orders {
			po := proto.PackOrder{PackID: o.ID, Approved: o.Approved, Partial: o.Partial, PackTid: o.PackTid}
			if o.Partial {
				po.Oids = proto.Some(o.Oids)
			}
			a.Orders = append(a.Orders, po)
		}
		s.answer(r, a)
		return nil
	case *proto.NotifyPackSigned:
		if _, err := s.db.SignPackOrders(ctx, m.Approved, m.Rejected); err != nil {
			return err
		}
		for _, id := range m.Approved {
			if id > s.lastPackID {
				s.lastPackID = id
			}
		}
		if s.repl != nil {
			s.repl.wake()
		}
		return s.db.Commit(ctx)
	case *proto.StartOperation:
		if s.operational {
			return nil
		}
		return s.startOperation(ctx, m.Backup)
	case *proto.StopOperation:
		if s.operational {
			s.mu.Unlock()
			s.leaveOperation("operation stopped by the master")
			s.mu.Lock()
		}
		return nil
	case *proto.AskLockInformation:
		if !s.operational {
			return protoErrorf("AskLockInformation while not operational")
		}
		if err := s.tm.lock(ctx, m.TTid, m.Tid, m.Pack); err != nil {
			return err
		}
		s.answer(r, &proto.AnswerInformationLocked{TTid: m.TTid})
		return nil
	case *proto.NotifyUnlockInformation:
		if !s.operational {
			return protoErrorf("NotifyUnlockInformation while not operational")
		}
		return s.tm.unlock(ctx, m.TTid)
	case *proto.AbortTransaction:
		if s.operational {
			if err := s.tm.abort(ctx, m.TTid, false); err != nil {
				return err
			}
			s.repl.transactionFinished(m.TTid, zodb.InvalidTid)
		}
		return nil
	case *proto.NotifyTransactionFinished:
		if s.operational {
			if err := s.tm.abort(ctx, m.TTid, false); err != nil {
				return err
			}
			s.repl.transactionFinished(m.TTid, m.MaxTid)
		}
		return nil
	case *proto.CheckPartition:
		if s.operational {
			s.repl.queueCheck(m)
		}
		return nil
	case *proto.Replicate:
		s.log.Warn("backup replication is not supported; order ignored", "tid", m.Tid, "upstream", m.UpstreamName)
		return nil
	case *proto.NotifyRepair, *proto.FlushLog:
		return nil
	case *proto.Error:
		s.log.Warn("error notified by the master", "code", m.Code, "msg", m.Message)
		return nil
	default:
		return protoErrorf("unexpected packet %T from the master", r.Msg)
	}
}

func cmpTid(a, b zodb.Tid) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// configTid reads a tid kept in the config table as hex (InvalidTid: unset).
func (s *Storage) configTid(ctx context.Context, key string) (zodb.Tid, error) {
	v, ok, err := s.db.Config(ctx, key)
	if err != nil || !ok {
		return zodb.InvalidTid, err
	}
	t, err := zodb.ParseTid(v)
	if err != nil {
		return zodb.InvalidTid, fmt.Errorf("storage: config %s %q: %w", key, v, err)
	}
	return t, nil
}

// notifyNodeInformation applies a node list from the master; mu held.
func (s *Storage) notifyNodeInformation(ctx context.Context, m *proto.NotifyNodeInformation) error {
	if s.nodesSeen && m.Timestamp <= s.nodesTime {
		s.log.Warn("node information not newer than the previous one", "timestamp", m.Timestamp, "previous", s.nodesTime)
	}
	full := !s.nodesSeen
	listed := map[proto.NodeID]bool{}
	for _, n := range m.Nodes {
		if n.NID == proto.NoNode {
			continue
		}
		listed[n.NID] = true
		if n.NID == s.nid {
			s.ownIDTime = n.IDTime
			switch n.State {
			case proto.NodeDown:
				s.log.Info("told to stop by the master")
				return errShutdown
			case proto.NodeUnknown:
				s.log.Warn("dropped from the cluster by the master: erasing the database")
				if err := s.erase(ctx); err != nil {
					s.log.Error("erase failed", "err", err)
				}
				return errShutdown
			}
			continue
		}
		if n.State == proto.NodeUnknown {
			delete(s.nodes, n.NID)
			s.closeLinksOf(n.NID)
		} else {
			s.nodes[n.NID] = &nodeInfo{typ: n.Type, addr: n.Addr, nid: n.NID, state: n.State, idTime: n.IDTime}
		}
		if n.Type == proto.Client && n.State != proto.NodeRunning && s.tm != nil {
			if err := s.tm.abortFor(ctx, n.NID, true); err != nil {
				return err
			}
		}
	}
	if full {
		for nid, n := range s.nodes {
			if listed[nid] || n.typ == proto.Master {
				continue
			}
			if s.pt != nil && n.typ == proto.Storage && slices.Contains(s.pt.Nodes(), nid) {
				continue
			}
			delete(s.nodes, nid)
		}
	}
	s.nodesSeen = true
	s.nodesTime = m.Timestamp
	close(s.nodesChanged)
	s.nodesChanged = make(chan struct{})
	if s.repl != nil {
		s.repl.wake()
	}
	return nil
}

// closeLinksOf closes the links with a node; mu held.
func (s *Storage) closeLinksOf(nid proto.NodeID) {
	for l, p := range s.links {
		if p.nid == nid {
			l.Close() // its goroutine ends when it sees the link down
		}
	}
}

// erase deletes the node's data, as NEO/py does when the master forgets it.
func (s *Storage) erase(ctx context.Context) error {
	if err := s.db.DropUnfinished(ctx); err != nil {
		return err
	}
	var all []uint32
	for p := 0; p < s.db.NP(); p++ {
		all = append(all, uint32(p))
	}
	if err := s.db.DropPartitions(ctx, all); err != nil {
		return err
	}
	if err := s.db.ChangePartitionTable(ctx, 0, 0, nil, true, 0); err != nil {
		return err
	}
	for _, k := range []string{backend.KeyNID, backend.KeyPTid, backend.KeyBackupTid, backend.KeyTruncateTid} {
		if err := s.db.SetConfig(ctx, k, "", false); err != nil {
			return err
		}
	}
	return s.db.Commit(ctx)
}

// sendPartitionTable replaces the stored partition table; mu held.
func (s *Storage) sendPartitionTable(ctx context.Context, m *proto.SendPartitionTable) error {
	ptid, ok := m.PTid.Get()
	if !ok {
		return protoErrorf("partition table without ptid")
	}
	t := pt.FromRows(ptid, m.NumReplicas, m.Rows)
	if t.NP() == 0 || !t.Filled() {
		return protoErrorf("partial partition table received")
	}
	var changes []proto.CellChange
	var unassigned []uint32
	for p := 0; p < t.NP(); p++ {
		own := false
		for _, c := range t.Row(p) {
			changes = append(changes, proto.CellChange{Partition: uint32(p), NID: c.NID, State: c.State})
			own = own || c.NID == s.nid
		}
		if !own {
			unassigned = append(unassigned, uint32(p))
		}
	}
	if s.np() != 0 && s.np() != t.NP() {
		return protoErrorf("partition table of %d partitions, the database has %d", t.NP(), s.np())
	}
	if s.np() != 0 && len(unassigned) > 0 {
		if err := s.db.DropPartitions(ctx, unassigned); err != nil {
			return err
		}
	}
	if err := s.db.ChangePartitionTable(ctx, ptid, int(m.NumReplicas), changes, true, s.lastPackID); err != nil {
		return err
	}
	if err := s.db.Commit(ctx); err != nil {
		return err
	}
	s.viewMu.Lock()
	s.pt = t
	s.viewMu.Unlock()
	return nil
}

// notifyPartitionChanges applies changes of the partition table; mu held.
func (s *Storage) notifyPartitionChanges(ctx context.Context, m *proto.NotifyPartitionChanges) error {
	if s.pt == nil {
		return protoErrorf("partition changes without a partition table")
	}
	if m.PTid != s.pt.PTid+1 {
		return protoErrorf("wrong partition table id %d (have %d)", m.PTid, s.pt.PTid)
	}
	old := s.pt.Clone()
	s.viewMu.Lock()
	err := s.pt.Update(m, true)
	s.viewMu.Unlock()
	if err != nil {
		return protoErrorf("partition changes: %v", err)
	}
	if err := s.db.ChangePartitionTable(ctx, m.PTid, int(m.NumReplicas), m.Changes, false, s.lastPackID); err != nil {
		return err
	}
	var dropped, outdated, nowReadable []uint32
	for _, c := range m.Changes {
		if c.NID != s.nid {
			continue
		}
		was, had := old.Cell(int(c.Partition), s.nid)
		switch c.State {
		case proto.CellDiscarded, proto.CellCorrupted:
			dropped = append(dropped, c.Partition)
		case proto.CellOutOfDate:
			if !had || was.State != proto.CellOutOfDate {
				outdated = append(outdated, c.Partition)
			}
		case proto.CellUpToDate, proto.CellFeeding:
			if had && was.State == proto.CellOutOfDate {
				nowReadable = append(nowReadable, c.Partition)
			}
		}
	}
	if s.operational {
		if len(dropped) > 0 {
			if err := s.tm.discarded(ctx, dropped); err != nil {
				return err
			}
			s.repl.discard(dropped)
		}
		if len(nowReadable) > 0 {
			s.tm.readable(nowReadable)
			s.repl.discard(nowReadable) // replicated
		}
		if len(outdated) > 0 {
			s.startReplication(outdated)
		}
	}
	if len(dropped) > 0 {
		if err := s.db.DropPartitions(ctx, dropped); err != nil {
			return err
		}
	}
	return s.db.Commit(ctx)
}

// assignedPartitions returns the partitions with a cell of this node.
func (s *Storage) assignedPartitions() []uint32 {
	var ps []uint32
	for p := 0; p < s.np(); p++ {
		if _, ok := s.ownCell(p); ok {
			ps = append(ps, uint32(p))
		}
	}
	return ps
}

// readablePartitions returns the partitions this node has readable.
func (s *Storage) readablePartitions() []uint32 {
	var ps []uint32
	for p := 0; p < s.np(); p++ {
		if s.readable(p) {
			ps = append(ps, uint32(p))
		}
	}
	return ps
}

// lastIDs runs a pending truncation and answers AskLastIDs; mu held.
func (s *Storage) lastIDs(ctx context.Context) (*proto.AnswerLastIDs, error) {
	tt, err := s.configTid(ctx, backend.KeyTruncateTid)
	if err != nil {
		return nil, err
	}
	if tt != zodb.InvalidTid {
		s.log.Info("truncating", "tid", tt)
		if err := s.db.Truncate(ctx, tt); err != nil {
			return nil, err
		}
		if err := s.db.Commit(ctx); err != nil {
			return nil, err
		}
		if s.pt != nil {
			if t, err := s.loadPT(ctx); err == nil && t != nil {
				s.viewMu.Lock()
				s.pt = t
				s.viewMu.Unlock()
			}
		}
	}
	a := &proto.AnswerLastIDs{LastTid: zodb.InvalidTid, LastOid: zodb.InvalidOid, FirstTid: zodb.TidMax}
	for _, p := range s.readablePartitions() {
		tid, oid, ok, err := s.db.LastIDs(ctx, p)
		if err != nil {
			return nil, err
		}
		if ok {
			if a.LastTid == zodb.InvalidTid || tid > a.LastTid {
				a.LastTid = tid
			}
			if oid != zodb.InvalidOid && (a.LastOid == zodb.InvalidOid || oid > a.LastOid) {
				a.LastOid = oid
			}
		}
		first, err := s.db.FirstTid(ctx, p)
		if err != nil {
			return nil, err
		}
		if first < a.FirstTid {
			a.FirstTid = first
		}
	}
	return a, nil
}

// finalTid answers AskFinalTID; mu held.
func (s *Storage) finalTid(ctx context.Context, ttid zodb.Tid) (zodb.Tid, error) {
	if s.tm != nil {
		if t, ok := s.tm.txns[ttid]; ok {
			if t.tid == 0 {
				return zodb.InvalidTid, nil
			}
			return t.tid, nil
		}
	}
	tid, ok, err := s.db.FinalTid(ctx, ttid)
	if err != nil || !ok {
		return zodb.InvalidTid, err
	}
	return tid, nil
}

// startOperation makes the node operational; mu held.
func (s *Storage) startOperation(ctx context.Context, backup bool) error {
	if s.pt == nil {
		return protoErrorf("StartOperation without a partition table")
	}
	if err := s.db.DropUnfinished(ctx); err != nil {
		return err
	}
	backupTid, err := s.configTid(ctx, backend.KeyBackupTid)
	if err != nil {
		return err
	}
	if backup && backupTid == zodb.InvalidTid {
		// entering backup mode: the data is complete up to the last tid
		ids, err := s.lastIDs(ctx)
		if err != nil {
			return err
		}
		backupTid = 0
		if ids.LastTid != zodb.InvalidTid {
			backupTid = ids.LastTid
		}
		if err := s.db.SetConfig(ctx, backend.KeyBackupTid, backupTid.String(), true); err != nil {
			return err
		}
		if err := s.db.Commit(ctx); err != nil {
			return err
		}
	}
	s.viewMu.Lock()
	s.operational = true
	s.backupTid = backupTid
	s.tm = newTxnManager(s)
	s.viewMu.Unlock()
	s.log.Info("operational", "backup", backup)
	s.send(s.master, &proto.NotifyReady{})
	var outdated []uint32
	for p := 0; p < s.np(); p++ {
		if c, ok := s.ownCell(p); ok && c.State == proto.CellOutOfDate {
			outdated = append(outdated, uint32(p))
		}
	}
	s.repl.start()
	if len(outdated) > 0 {
		s.startReplication(outdated)
	}
	return nil
}

// leaveOperation stops serving: peers are disconnected, transactions in
// memory forgotten, replication cancelled.
func (s *Storage) leaveOperation(why string) {
	s.mu.Lock()
	was := s.operational
	s.viewMu.Lock()
	s.operational = false
	if s.tm != nil {
		close(s.tm.released) // requests waiting for a lock give up
	}
	s.tm = nil
	s.viewMu.Unlock()
	r := s.repl
	s.mu.Unlock()
	if was {
		s.logf(slog.LevelInfo, "not operational any more", "why", why)
	}
	if r != nil {
		r.cancel()
	}
	s.closePeerLinks()
}

// startReplication marks partitions as replicating (stores become
// lockless) and asks the master which transactions are pending; mu held.
func (s *Storage) startReplication(partitions []uint32) {
	cells, err := s.db.PartitionTable(context.Background())
	if err != nil {
		s.log.Error("read replication progress", "err", err)
	}
	progress := map[uint32]zodb.Tid{}
	for _, c := range cells {
		if c.NID == s.nid && c.State == proto.CellOutOfDate {
			progress[c.Partition] = c.Replicated
		}
	}
	s.tm.replicating(partitions)
	for _, p := range partitions {
		s.repl.add(p, progress[p])
	}
	master := s.master
	if master == nil {
		return
	}
	ps := append([]uint32(nil), partitions...)
	s.repl.askUnfinished(master, ps)
}
