package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// idleClose is how long links opened for replication stay unused before
// they are closed (NEO/py's idle timeout of client connections).
const idleClose = 100 * time.Second

// fetchCount is NEO/py's FETCH_COUNT: items per replication chunk (a
// variable for tests).
var fetchCount = 1000

// replPart is the replication state of an own OUT_OF_DATE cell.
type replPart struct {
	progress zodb.Tid // replicated up to (inclusive)
	target   zodb.Tid // to replicate up to; 0 until the master answered
	pending  map[zodb.Tid]bool
	asked    bool // AskUnfinishedTransactions answered
	done     bool // reported to the transaction manager
	failures int
}

// replicator catches up the node's OUT_OF_DATE cells (§10.1) and runs
// replica checks ordered by the master. Its fields are guarded by
// Storage.mu, except the worker's own.
type replicator struct {
	s      *Storage
	parts  map[uint32]*replPart
	wakeCh chan struct{}
	checks []*proto.CheckPartition

	// ttids finished while an AskUnfinishedTransactions was in flight
	// (its answer is not ordered with the master's notifications)
	asking   int
	finished map[zodb.Tid]zodb.Tid

	// packNone is the last approved pack id for which the master had no
	// order to give (worker only)
	packNone zodb.Tid

	ctx      context.Context
	cancelFn context.CancelFunc
	wg       sync.WaitGroup // worker and master asks
}

func newReplicator(s *Storage) *replicator {
	return &replicator{s: s, parts: map[uint32]*replPart{}, wakeCh: make(chan struct{}, 1), finished: map[zodb.Tid]zodb.Tid{}}
}

func (r *replicator) wake() {
	select {
	case r.wakeCh <- struct{}{}:
	default:
	}
}

// start starts the worker; mu held.
func (r *replicator) start() {
	if r.cancelFn != nil {
		return
	}
	r.ctx, r.cancelFn = context.WithCancel(r.s.runCtx)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.work(r.ctx)
	}()
}

// cancel stops the worker and forgets the replication state; mu not held.
func (r *replicator) cancel() {
	r.s.mu.Lock()
	cancel := r.cancelFn
	r.cancelFn = nil
	r.parts = map[uint32]*replPart{}
	r.checks = nil
	r.s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
}

func (r *replicator) stop() { r.cancel() }

// add starts tracking a partition to replicate; mu held.
func (r *replicator) add(p uint32, progress zodb.Tid) {
	r.parts[p] = &replPart{progress: progress, pending: map[zodb.Tid]bool{}}
}

// discard stops replicating partitions; mu held.
func (r *replicator) discard(ps []uint32) {
	for _, p := range ps {
		delete(r.parts, p)
	}
}

// askUnfinished asks the master for the pending transactions; mu held.
func (r *replicator) askUnfinished(master *neonet.Link, ps []uint32) {
	if r.cancelFn == nil {
		return
	}
	ctx := r.ctx
	r.asking++
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.s.flushed(ctx, master) // what was queued before (NotifyReady) goes first
		ans, err := master.Ask(ctx, &proto.AskUnfinishedTransactions{Partitions: ps})
		s := r.s
		s.mu.Lock()
		defer s.unlock()
		r.asking--
		finished := r.finished
		if r.asking == 0 {
			r.finished = map[zodb.Tid]zodb.Tid{}
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("AskUnfinishedTransactions failed", "err", err)
			}
			return
		}
		a, ok := ans.(*proto.AnswerUnfinishedTransactions)
		if !ok {
			return
		}
		for _, p := range ps {
			part := r.parts[p]
			if part == nil || part.asked {
				continue
			}
			part.asked = true
			part.target = a.MaxTid
			for _, ttid := range a.TTids {
				if tid, ok := finished[ttid]; ok {
					if tid != zodb.InvalidTid && tid > part.target {
						part.target = tid
					}
					continue
				}
				part.pending[ttid] = true
			}
		}
		r.wake()
	}()
}

// transactionFinished tells that a transaction was committed (tid) or
// aborted (InvalidTid); mu held.
func (r *replicator) transactionFinished(ttid, tid zodb.Tid) {
	if r == nil {
		return
	}
	if r.asking > 0 {
		r.finished[ttid] = tid
	}
	for _, part := range r.parts {
		if part.pending[ttid] {
			delete(part.pending, ttid)
			if tid != zodb.InvalidTid && tid > part.target {
				part.target = tid
			}
		}
	}
	r.wake()
}

// queueCheck queues a replica check order; mu held.
func (r *replicator) queueCheck(m *proto.CheckPartition) {
	r.checks = append(r.checks, m)
	r.wake()
}

// work replicates partitions one at a time, then runs queued checks.
func (r *replicator) work(ctx context.Context) {
	s := r.s
	// links dialed by the worker, closed when it ends
	links := map[proto.NodeID]*peerConn{}
	defer func() {
		for _, pc := range links {
			pc.link.Close()
		}
	}()
	for ctx.Err() == nil {
		s.mu.Lock()
		if !s.operational || s.tm == nil {
			s.mu.Unlock()
			wait(ctx, r.wakeCh, 0)
			continue
		}
		p, part, src, idle := r.pick()
		if part != nil && src == nil {
			// replicated up to the target, no pending transaction left
			part.done = true
			s.tm.replicatedUpTo(ctx, p, part.target)
			s.unlock()
			continue
		}
		var from, to zodb.Tid
		if part != nil {
			from, to = part.progress, part.target
		}
		var check *proto.CheckPartition
		if part == nil && len(r.checks) > 0 {
			check = r.checks[0]
			r.checks = r.checks[1:]
		}
		s.mu.Unlock()
		switch {
		case part != nil:
			err := r.replicate(ctx, links, p, src, from, to)
			s.mu.Lock()
			if cur := r.parts[p]; cur == part {
				if err != nil {
					part.failures++
				} else {
					part.failures = 0
				}
			}
			s.mu.Unlock()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.logf(slog.LevelWarn, "replication failed", "partition", p, "source", src.nid.String(), "err", err)
				if pc := links[src.nid]; pc != nil {
					pc.link.Close()
					delete(links, src.nid)
				}
				wait(ctx, r.wakeCh, time.Second)
			}
		case check != nil:
			if err := r.check(ctx, links, check); err != nil && ctx.Err() == nil {
				s.logf(slog.LevelWarn, "replica check failed", "partition", check.Partition, "err", err)
			}
		default:
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.mu.Lock()
				for p, part := range r.parts {
					s.log.Debug("replication idle", "partition", p, "progress", part.progress, "target", part.target,
						"pending", len(part.pending), "asked", part.asked, "done", part.done)
				}
				s.mu.Unlock()
			}
			if did, err := r.packNext(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.logf(slog.LevelWarn, "pack failed", "err", err)
				wait(ctx, r.wakeCh, time.Second)
				continue
			} else if did {
				continue
			}
			if !idle || len(links) == 0 {
				wait(ctx, r.wakeCh, 0)
				continue
			}
			// links opened for replication are closed after a while
			// without use (the peer may use them meanwhile)
			t := time.NewTimer(idleClose)
			select {
			case <-r.wakeCh:
			case <-ctx.Done():
			case <-t.C:
				for nid, pc := range links {
					pc.link.Close()
					delete(links, nid)
				}
			}
			t.Stop()
		}
	}
}

// source is a storage to replicate from.
type source struct {
	nid  proto.NodeID
	addr string
}

// pick chooses the next partition to work on: one that is behind its
// target (with a source), or one that is complete (src nil); mu held.
func (r *replicator) pick() (p uint32, part *replPart, src *source, idle bool) {
	s := r.s
	var ps []uint32
	for p, part := range r.parts {
		if part.asked && !part.done {
			ps = append(ps, p)
		}
	}
	// furthest behind first, then those with no pending transaction
	slices.SortFunc(ps, func(a, b uint32) int {
		x, y := r.parts[a], r.parts[b]
		if c := cmpTid(x.progress, y.progress); c != 0 {
			return c
		}
		if c := len(x.pending) - len(y.pending); c != 0 {
			return c
		}
		return int(a) - int(b)
	})
	for _, p := range ps {
		part := r.parts[p]
		if part.progress >= part.target {
			if len(part.pending) == 0 {
				return p, part, nil, false
			}
			continue
		}
		var cands []source
		for _, c := range s.pt.ReadableCells(int(p)) {
			if c.NID == s.nid {
				continue
			}
			n := s.nodes[c.NID]
			if n == nil || n.state != proto.NodeRunning {
				continue
			}
			a, ok := n.addr.Get()
			if !ok {
				continue
			}
			cands = append(cands, source{c.NID, a.String()})
		}
		if len(cands) == 0 {
			continue
		}
		c := cands[rand.IntN(len(cands))]
		return p, part, &c, false
	}
	return 0, nil, nil, len(ps) == 0
}

// peerLink returns a link to a storage: one it already has (accepted or
// dialed; NEO/py nodes refuse a second one), else a new one, identified as
// this node, whose requests are served like those of an accepted link.
func (r *replicator) peerLink(ctx context.Context, links map[proto.NodeID]*peerConn, src *source) (*peerConn, error) {
	s := r.s
	if pc := links[src.nid]; pc != nil && isDown(pc.link) {
		delete(links, src.nid)
	}
	s.mu.Lock()
	pc := s.peers[src.nid]
	s.mu.Unlock()
	if pc != nil && !isDown(pc.link) {
		return pc, nil
	}
	link, err := s.dialer.Dial(ctx, src.addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	req := &proto.RequestIdentification{NodeType: proto.Storage, NID: s.nid, Address: proto.Some(s.addr),
		ClusterName: s.cfg.Cluster, IDTimestamp: s.ownIDTime, Extra: proto.Dict{}}
	s.mu.Unlock()
	ans, err := link.Ask(ctx, req)
	if err != nil {
		link.Close()
		return nil, fmt.Errorf("identify to %s: %w", src.nid, err)
	}
	acc, ok := ans.(*proto.AcceptIdentification)
	if !ok || acc.NodeType != proto.Storage || acc.NID != src.nid {
		link.Close()
		return nil, fmt.Errorf("identify to %s: unexpected answer %v", src.nid, ans)
	}
	p := &peer{nid: src.nid, typ: proto.Storage}
	s.mu.Lock()
	if !s.operational {
		s.mu.Unlock()
		link.Close()
		return nil, fmt.Errorf("not operational")
	}
	s.links[link] = p
	pc = s.registerPeer(link, p)
	s.mu.Unlock()
	links[src.nid] = pc
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer link.Close()
		s.serveRequests(ctx, link, p, pc)
		s.mu.Lock()
		delete(s.links, link)
		s.unregisterPeer(pc)
		s.mu.Unlock()
	}()
	return pc, nil
}

// fetch sends a replication request and hands the data packets that carry
// its msg id to onData, in order, until the answer has come and every
// packet sent before it was handled.
func fetch(ctx context.Context, pc *peerConn, req proto.Msg, onData func(proto.Msg) error) (proto.Msg, error) {
	pc.mu.Lock()
	call, err := pc.link.Start(ctx, req)
	if err != nil {
		pc.mu.Unlock()
		return nil, err
	}
	pc.fetchID, pc.active, pc.onData, pc.err = call.MsgID(), true, onData, nil
	pc.mu.Unlock()
	defer func() {
		pc.mu.Lock()
		pc.active, pc.onData = false, nil
		pc.mu.Unlock()
	}()
	ans, err := call.Wait(ctx)
	if err != nil {
		return nil, err
	}
	// the data was sent before the answer: once the link is synced, the
	// loop receiving it has handled it
	if err := pc.link.Sync(ctx); err != nil {
		return nil, err
	}
	pc.mu.Lock()
	err = pc.err
	pc.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return ans, nil
}

// replicate fetches partition p from src, from progress+1 up to target.
func (r *replicator) replicate(ctx context.Context, links map[proto.NodeID]*peerConn, p uint32, src *source, progress, target zodb.Tid) error {
	s := r.s
	pc, err := r.peerLink(ctx, links, src)
	if err != nil {
		return err
	}
	start := progress + 1
	if progress == 0 {
		start = 0
	}
	s.mu.Lock()
	part := r.parts[p]
	s.mu.Unlock()
	// current tells whether p is still to be replicated; if it was
	// discarded meanwhile, what was written is dropped again.
	current := func() error {
		s.mu.Lock()
		ok := part != nil && r.parts[p] == part
		s.mu.Unlock()
		if ok {
			return nil
		}
		if err := s.db.DropPartitions(ctx, []uint32{p}); err != nil {
			return err
		}
		return fmt.Errorf("partition %d no longer replicated here", p)
	}
	s.logf(slog.LevelInfo, "replicating", "partition", p, "from", src.nid.String(), "min", start, "max", target)

	// transactions
	for minTid, first := start, true; ; first = false {
		if err := current(); err != nil {
			return err
		}
		have, err := s.db.TIDsFrom(ctx, p, minTid, target, fetchCount)
		if err != nil {
			return err
		}
		ans, err := fetch(ctx, pc, &proto.AskFetchTransactions{Partition: p, Length: uint32(fetchCount), MinTid: minTid,
			MaxTid: target, Have: have, AskPackInfo: first}, func(m proto.Msg) error {
			t, ok := m.(*proto.AddTransaction)
			if !ok {
				return fmt.Errorf("unexpected %T during replication", m)
			}
			meta := &backend.TxnMeta{Tid: t.Tid, TTid: t.TTid, User: t.User, Description: t.Description,
				Extension: t.Extension, Packed: t.Packed, Oids: t.Oids}
			if pk, ok := t.Pack.Get(); ok {
				oids, _ := pk.Oids.Get()
				meta.Pack = &backend.PackOrder{Approved: pk.Approved, Partial: pk.Partial, Oids: oids, PackTid: pk.PackTid}
			}
			return s.db.StoreTransaction(ctx, meta)
		})
		if err != nil {
			return replicationErr(err)
		}
		a, ok := ans.(*proto.AnswerFetchTransactions)
		if !ok {
			return fmt.Errorf("unexpected answer %T", ans)
		}
		for _, tid := range a.Delete {
			if err := s.db.DeleteTransaction(ctx, tid); err != nil {
				return err
			}
		}
		if first && a.CompletedPack != zodb.InvalidTid {
			if err := r.lowerPack(ctx, p, a.CompletedPack); err != nil {
				return err
			}
		}
		if err := s.db.Commit(ctx); err != nil {
			return err
		}
		if a.NextTid == zodb.InvalidTid {
			break
		}
		minTid = a.NextTid
	}

	// objects
	minTid, minOid := start, zodb.Oid(0)
	for {
		if err := current(); err != nil {
			return err
		}
		xids, err := s.db.ObjectsFrom(ctx, p, minTid, target, minOid, fetchCount)
		if err != nil {
			return err
		}
		var have []proto.SerialOids
		for _, x := range xids {
			if n := len(have); n > 0 && have[n-1].Serial == x.At {
				have[n-1].Oids = append(have[n-1].Oids, x.Oid)
			} else {
				have = append(have, proto.SerialOids{Serial: x.At, Oids: []zodb.Oid{x.Oid}})
			}
		}
		ans, err := fetch(ctx, pc, &proto.AskFetchObjects{Partition: p, Length: uint32(fetchCount), MinTid: minTid,
			MaxTid: target, MinOid: minOid, Have: have}, func(m proto.Msg) error {
			o, ok := m.(*proto.AddObject)
			if !ok {
				return fmt.Errorf("unexpected %T during replication", m)
			}
			if o.Compression > 1 {
				return fmt.Errorf("object %s@%s: invalid compression %d", o.Oid, o.Serial, o.Compression)
			}
			return s.db.StoreObject(ctx, &backend.Object{Oid: o.Oid, Serial: o.Serial,
				HasData: len(o.Data) > 0 || o.Checksum != (proto.Checksum{}), Compression: o.Compression,
				Checksum: o.Checksum, Data: o.Data, DataSerial: o.DataSerial})
		})
		if err != nil {
			return replicationErr(err)
		}
		a, ok := ans.(*proto.AnswerFetchObjects)
		if !ok {
			return fmt.Errorf("unexpected answer %T", ans)
		}
		for _, so := range a.Delete {
			for _, oid := range so.Oids {
				if err := s.db.DeleteObject(ctx, oid, so.Serial); err != nil {
					return err
				}
			}
		}
		done := a.NextTid == zodb.InvalidTid
		upTo := target
		if !done {
			upTo = a.NextTid - 1
		}
		if err := s.db.SetReplicated(ctx, p, upTo); err != nil {
			return err
		}
		if err := s.db.Commit(ctx); err != nil {
			return err
		}
		if done {
			break
		}
		minTid, minOid = a.NextTid, a.NextOid
	}
	s.mu.Lock()
	if r.parts[p] == part && part.progress < target {
		part.progress = target
	}
	s.mu.Unlock()
	s.logf(slog.LevelInfo, "partition replicated", "partition", p, "tid", target)
	return nil
}

// lowerPack lowers the completed pack id of an own cell to the source's,
// so that packs the source did not do are done again.
func (r *replicator) lowerPack(ctx context.Context, p uint32, sourcePack zodb.Tid) error {
	s := r.s
	cells, err := s.db.PartitionTable(ctx)
	if err != nil {
		return err
	}
	nid := s.myNID()
	for _, c := range cells {
		if c.Partition == p && c.NID == nid && c.HasPack && sourcePack < c.Pack {
			return s.db.SetPartitionPacked(ctx, p, sourcePack)
		}
	}
	return nil
}

func replicationErr(err error) error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return fmt.Errorf("source refused: %s (%v)", pe.Message, pe.Code)
	}
	return err
}
