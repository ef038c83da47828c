package storage

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// peer is a node linked with this one.
type peer struct {
	nid proto.NodeID
	typ proto.NodeType
}

// acceptLoop accepts links until ctx ends.
func (s *Storage) acceptLoop(ctx context.Context) {
	for {
		link, err := s.ln.Accept(ctx)
		if err != nil {
			return
		}
		s.linkWG.Add(1)
		go func() {
			defer s.linkWG.Done()
			s.serveLink(ctx, link)
		}()
	}
}

// peerError is an Error packet to answer, closing the link if abort.
type peerError struct {
	code  proto.ErrorCode
	msg   string
	abort bool
}

func (e *peerError) Error() string { return fmt.Sprintf("%v: %s", e.code, e.msg) }

// serveLink identifies the peer of an accepted link and serves it.
func (s *Storage) serveLink(ctx context.Context, link *neonet.Link) {
	defer link.Close()
	r, err := link.Recv(ctx)
	if err != nil {
		return
	}
	id, ok := r.Msg.(*proto.RequestIdentification)
	if !ok {
		r.Abort(ctx, proto.Err(proto.ProtocolError, "%T before identification", r.Msg))
		return
	}
	p, err := s.identifyPeer(ctx, id)
	if err != nil {
		var pe *peerError
		if errors.As(err, &pe) {
			r.Abort(ctx, proto.Err(pe.code, "%s", pe.msg))
		}
		return
	}
	s.mu.Lock()
	if !s.operational {
		s.mu.Unlock()
		r.Abort(ctx, proto.Err(proto.NotReady, "not ready"))
		return
	}
	s.links[link] = p
	pc := s.registerPeer(link, p)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.links, link)
		s.unregisterPeer(pc)
		if p.typ == proto.Client && s.operational && s.tm != nil {
			if err := s.tm.abortFor(context.Background(), p.nid, false); err != nil {
				s.log.Error("abort transactions of a lost client", "client", p.nid.String(), "err", err)
			}
		}
		s.unlock()
	}()
	if err := r.Reply(ctx, &proto.AcceptIdentification{NodeType: proto.Storage, NID: s.nidNow(p), YourNID: p.nid}); err != nil {
		return
	}
	s.serveRequests(ctx, link, p, pc)
}

// serveRequests handles the requests and notifications an identified peer
// sends on link, until the link is down.
func (s *Storage) serveRequests(ctx context.Context, link *neonet.Link, p *peer, pc *peerConn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	// requests waiting for a lock give up when the link goes down
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-link.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	h := &linkHandler{s: s, link: link, peer: p, pc: pc, wg: &wg}
	for {
		r, err := link.Recv(ctx)
		if err != nil {
			return
		}
		if err := h.handle(ctx, r); err != nil && h.answerError(ctx, r, err) {
			return
		}
	}
}

// answerError answers a request that failed with the Error packet NEO/py
// sends, closing the link after the errors that do (closed true).
func (h *linkHandler) answerError(ctx context.Context, r *neonet.Request, err error) (closed bool) {
	s := h.s
	var pe *peerError
	var perr *protocolError
	switch {
	case errors.As(err, &pe):
		if pe.abort {
			r.Abort(ctx, proto.Err(pe.code, "%s", pe.msg))
			return true
		}
		r.Reply(ctx, proto.Err(pe.code, "%s", pe.msg))
		return false
	case errors.As(err, &perr):
		s.logf(slog.LevelWarn, "protocol error", "peer", h.peer.nid.String(), "err", perr.msg)
		r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", perr.msg))
	default:
		if ctx.Err() == nil {
			s.logf(slog.LevelError, "request failed", "peer", h.peer.nid.String(), "request", fmt.Sprintf("%T", r.Msg), "err", err)
		}
		r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", err.Error()))
	}
	return true
}

// afterLocks runs fn once blocked (called with mu held) is false: at once,
// or later in a goroutine of the link, which meanwhile goes on (NEO/py
// delays such requests without holding up the connection).
func (h *linkHandler) afterLocks(ctx context.Context, r *neonet.Request, blocked func() bool, fn func() error) error {
	s := h.s
	s.mu.Lock()
	b := s.tm != nil && blocked()
	s.mu.Unlock()
	if !b {
		return fn()
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s.mu.Lock()
		err := s.waitWhile(ctx, blocked)
		s.mu.Unlock()
		if err == nil {
			err = fn()
		}
		if err != nil {
			h.answerError(ctx, r, err)
		}
	}()
	return nil
}

// peerConn is a link with another storage, accepted or dialed, which the
// replicator and the checker use as requester: replication data carrying
// the msg id of the current fetch goes to it.
type peerConn struct {
	nid  proto.NodeID
	link *neonet.Link

	mu      sync.Mutex
	fetchID uint32
	active  bool
	onData  func(proto.Msg) error
	err     error // first error of onData
}

// deliver hands replication data to the current fetch; anything else
// (left-overs of an aborted replication) is ignored.
func (pc *peerConn) deliver(r *neonet.Request) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.active || r.MsgID != pc.fetchID || pc.err != nil {
		return
	}
	pc.err = pc.onData(r.Msg)
}

// registerPeer records the link of an identified storage; mu held.
func (s *Storage) registerPeer(link *neonet.Link, p *peer) *peerConn {
	if p.typ != proto.Storage || p.nid == proto.NoNode {
		return nil
	}
	pc := &peerConn{nid: p.nid, link: link}
	if old := s.peers[p.nid]; old == nil || isDown(old.link) {
		s.peers[p.nid] = pc
	}
	return pc
}

// unregisterPeer forgets a link; mu held.
func (s *Storage) unregisterPeer(pc *peerConn) {
	if pc != nil && s.peers[pc.nid] == pc {
		delete(s.peers, pc.nid)
	}
}

func isDown(l *neonet.Link) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// nidNow is the node id to put in AcceptIdentification (nil for
// anonymous peers).
func (s *Storage) nidNow(p *peer) proto.NodeID {
	if p.nid == proto.NoNode {
		return proto.NoNode
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nid
}

func (s *Storage) myNID() proto.NodeID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nid
}

// identifyPeer checks a RequestIdentification (§5.4), waiting for the
// master's news about a peer that is newer than what we know.
func (s *Storage) identifyPeer(ctx context.Context, id *proto.RequestIdentification) (*peer, error) {
	if id.ClusterName != s.cfg.Cluster {
		return nil, &peerError{proto.ProtocolError, "invalid cluster name", true}
	}
	for {
		s.mu.Lock()
		if !s.operational {
			s.mu.Unlock()
			return nil, &peerError{proto.NotReady, "not ready", true}
		}
		if id.NID == proto.NoNode {
			s.mu.Unlock()
			if id.NodeType != proto.Storage {
				return nil, &peerError{proto.ProtocolError, "reject anonymous non-storage node", true}
			}
			return &peer{typ: proto.Storage}, nil
		}
		if id.NID == s.nid {
			s.mu.Unlock()
			return nil, &peerError{proto.ProtocolError, "uuid conflict or loopback connection", true}
		}
		n := s.nodes[id.NID]
		if n == nil || n.idTime != id.IDTimestamp {
			ts, ok := id.IDTimestamp.Get()
			if ok && s.nodesTime < ts {
				// the master's notification is on its way
				ch := s.nodesChanged
				s.mu.Unlock()
				select {
				case <-ch:
					continue
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			s.mu.Unlock()
			return nil, &peerError{proto.NotReady, "unknown by master", true}
		}
		s.mu.Unlock()
		switch id.NodeType {
		case proto.Client, proto.Storage:
			if n.typ != id.NodeType {
				return nil, &peerError{proto.ProtocolError, "node type mismatch", true}
			}
			return &peer{nid: id.NID, typ: id.NodeType}, nil
		}
		return nil, &peerError{proto.ProtocolError, "reject non-client-or-storage node", true}
	}
}

// linkHandler handles the requests of one identified peer.
type linkHandler struct {
	s    *Storage
	link *neonet.Link
	peer *peer
	pc   *peerConn // storage peers: where replication data goes
	wg   *sync.WaitGroup
	obj  backend.Object // reused by loads
}

func nonReadable(what string) error {
	return &peerError{proto.NonReadableCell, what, false}
}

func (h *linkHandler) handle(ctx context.Context, r *neonet.Request) error {
	s := h.s
	client := h.peer.typ == proto.Client
	switch m := r.Msg.(type) {
	case *proto.CloseClient:
		return nil
	case *proto.AddTransaction, *proto.AddObject:
		if client || h.pc == nil {
			break
		}
		h.pc.deliver(r)
		return nil
	case *proto.Error:
		s.logf(slog.LevelDebug, "error notified by a peer", "code", m.Code, "msg", m.Message)
		return nil
	case *proto.AskObject:
		if !client {
			break
		}
		return h.askObject(ctx, r, m)
	case *proto.AskStoreObject:
		if !client {
			break
		}
		return h.askStoreObject(ctx, r, m)
	case *proto.AskCheckCurrentSerial:
		if !client {
			break
		}
		return h.askCheckCurrentSerial(ctx, r, m)
	case *proto.AskRelockObject:
		if !client {
			break
		}
		return h.askRelockObject(ctx, r, m)
	case *proto.AskStoreTransaction:
		if !client {
			break
		}
		if err := h.readOnly(); err != nil {
			return err
		}
		meta := &backend.TxnMeta{User: m.User, Description: m.Description, Extension: m.Extension, Oids: m.Oids}
		if pk, ok := m.Pack.Get(); ok {
			oids, partial := pk.Oids.Get()
			meta.Pack = &backend.PackOrder{Partial: partial && len(oids) > 0, Oids: oids, PackTid: pk.PackTid}
		}
		s.mu.Lock()
		defer s.unlock()
		if s.tm == nil {
			return &peerError{proto.NotReady, "not operational", true}
		}
		s.tm.register(h.link, h.peer.nid, m.TTid)
		if err := s.tm.vote(ctx, m.TTid, meta); err != nil {
			return err
		}
		s.answer(r, &proto.AnswerStoreTransaction{})
		return nil
	case *proto.AskVoteTransaction:
		if !client {
			break
		}
		if err := h.readOnly(); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.unlock()
		if s.tm == nil {
			return &peerError{proto.NotReady, "not operational", true}
		}
		if err := s.tm.vote(ctx, m.TTid, nil); err != nil {
			return err
		}
		s.answer(r, &proto.AnswerVoteTransaction{})
		return nil
	case *proto.AbortTransaction:
		if !client {
			break
		}
		s.mu.Lock()
		defer s.unlock()
		if s.tm != nil {
			if err := s.tm.abort(ctx, m.TTid, false); err != nil {
				return err
			}
			s.repl.transactionFinished(m.TTid, zodb.InvalidTid)
		}
		return nil
	case *proto.AskFinalTID:
		if !client {
			break
		}
		if err := h.readOnly(); err != nil {
			return err
		}
		s.mu.Lock()
		tid, err := s.finalTid(ctx, m.TTid)
		s.mu.Unlock()
		if err != nil {
			return err
		}
		return r.Reply(ctx, &proto.AnswerFinalTID{Tid: tid})
	case *proto.AskTIDs:
		if !client {
			break
		}
		return h.askTIDs(ctx, r, m)
	case *proto.AskTIDsFrom:
		if !client {
			break
		}
		return h.askTIDsFrom(ctx, r, m)
	case *proto.AskOIDsFrom:
		if !client {
			break
		}
		return h.askOIDsFrom(ctx, r, m)
	case *proto.AskTransactionInformation:
		if !client {
			break
		}
		return h.askTransactionInformation(ctx, r, m)
	case *proto.AskObjectHistory:
		if !client {
			break
		}
		return h.askObjectHistory(ctx, r, m)
	case *proto.AskObjectUndoSerial:
		if !client {
			break
		}
		return h.askObjectUndoSerial(ctx, r, m)
	case *proto.AskFetchTransactions:
		if client {
			break
		}
		return h.askFetchTransactions(ctx, r, m)
	case *proto.AskFetchObjects:
		if client {
			break
		}
		return h.askFetchObjects(ctx, r, m)
	case *proto.AskCheckTIDRange:
		if client {
			break
		}
		return h.askCheckTIDRange(ctx, r, m)
	case *proto.AskCheckSerialRange:
		if client {
			break
		}
		return h.askCheckSerialRange(ctx, r, m)
	}
	return protoErrorf("unexpected packet %T", r.Msg)
}

func (h *linkHandler) readOnly() error {
	if h.backupTid() != zodb.InvalidTid {
		return &peerError{proto.ReadOnlyAccess, "read-only access because cluster is in backuping mode", false}
	}
	return nil
}

// backupTid returns the tid reads are capped at (InvalidTid: none).
func (h *linkHandler) backupTid() zodb.Tid {
	h.s.viewMu.RLock()
	defer h.s.viewMu.RUnlock()
	return h.s.backupTid
}

// waitUntil waits until cond (called with mu held) is false; it returns
// with mu held.
func (s *Storage) waitWhile(ctx context.Context, cond func() bool) error {
	for {
		if s.tm == nil {
			return &peerError{proto.NotReady, "not operational", true}
		}
		if !cond() {
			return nil
		}
		ch := s.tm.released
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.mu.Lock()
			return ctx.Err()
		}
		s.mu.Lock()
	}
}

// askObject loads a revision. A read-locked oid is loaded once unlocked,
// by a goroutine of its own so that the link goes on.
func (h *linkHandler) askObject(ctx context.Context, r *neonet.Request, m *proto.AskObject) error {
	s := h.s
	if b := h.backupTid(); b != zodb.InvalidTid {
		// read-only service of a backup cluster: nothing after b
		c := *m
		switch {
		case c.At != zodb.InvalidTid:
			if c.At > b {
				c.At = 0 // not found, or does not exist
			}
		case c.Before != zodb.InvalidTid:
			c.Before = min(c.Before, b+1)
		default:
			c.Before = b + 1
		}
		m = &c
	}
	s.viewMu.RLock()
	p := s.partitionOf(uint64(m.Oid))
	if !s.readable(p) {
		s.viewMu.RUnlock()
		return nonReadable(m.Oid.String())
	}
	locked := s.tm != nil && s.tm.loadLock[m.Oid] != 0
	s.viewMu.RUnlock()
	if !locked {
		return h.load(ctx, r, m, &h.obj)
	}
	return h.afterLocks(ctx, r, func() bool { return s.tm.loadLock[m.Oid] != 0 }, func() error {
		s.viewMu.RLock()
		ok := s.readable(s.partitionOf(uint64(m.Oid)))
		s.viewMu.RUnlock()
		if !ok {
			return nonReadable(m.Oid.String())
		}
		var o backend.Object
		return h.load(ctx, r, m, &o)
	})
}

func (h *linkHandler) load(ctx context.Context, r *neonet.Request, m *proto.AskObject, o *backend.Object) error {
	err := h.s.db.Load(ctx, m.Oid, m.At, m.Before, o)
	switch {
	case errors.Is(err, backend.ErrOidDoesNotExist):
		return &peerError{proto.OidDoesNotExist, m.Oid.String(), false}
	case errors.Is(err, backend.ErrOidNotFound):
		return &peerError{proto.OidNotFound, m.Oid.String(), false}
	case err != nil:
		return err
	}
	a := proto.AnswerObject{Oid: m.Oid, Serial: o.Serial, NextSerial: o.NextSerial, DataSerial: o.DataSerial, Data: o.Data}
	if o.HasData {
		a.Compression = proto.Some(o.Compression)
		a.Checksum = o.Checksum
	} else {
		a.Data = nil
	}
	return r.Reply(ctx, &a)
}

func (h *linkHandler) askStoreObject(ctx context.Context, r *neonet.Request, m *proto.AskStoreObject) error {
	s := h.s
	if err := h.readOnly(); err != nil {
		return err
	}
	if m.Compression > 1 {
		return protoErrorf("invalid compression value")
	}
	hasData := len(m.Data) > 0 || m.Checksum != (proto.Checksum{})
	if hasData && sha1.Sum(m.Data) != m.Checksum {
		return protoErrorf("invalid checksum")
	}
	s.mu.Lock()
	defer s.unlock()
	if s.tm == nil {
		return &peerError{proto.NotReady, "not operational", true}
	}
	s.tm.register(h.link, h.peer.nid, m.TTid)
	run := func() error {
		conflict, err := s.tm.storeObject(ctx, m.TTid, m.Serial, m.Oid, m.Compression, m.Checksum, m.Data, hasData, m.DataSerial)
		switch {
		case errors.Is(err, errDelay):
			return err
		case errors.Is(err, backend.ErrUndoData):
			s.answer(r, proto.Err(proto.UndoPackError, "Could not undo for oid %s", m.Oid))
		case err != nil:
			s.log.Error("store failed", "oid", m.Oid, "ttid", m.TTid, "err", err)
			s.answerAbort(r, proto.Err(proto.ProtocolError, "store %s: %v", m.Oid, err))
		default:
			s.answer(r, &proto.AnswerStoreObject{Conflict: conflict})
		}
		return nil
	}
	s.runOrDelay(m.TTid, run, run)
	return nil
}

// runOrDelay runs first, a step of transaction ttid; if it must wait
// (errDelay), later runs when ttid's turn comes, unless operation was
// restarted meanwhile (a new transaction manager). s.mu is held.
func (s *Storage) runOrDelay(ttid zodb.Tid, first, later func() error) {
	if err := first(); !errors.Is(err, errDelay) {
		return
	}
	tm := s.tm
	tm.queueDelayed(ttid, func() error {
		if s.tm != tm {
			return nil
		}
		return later()
	})
}

func (h *linkHandler) askCheckCurrentSerial(ctx context.Context, r *neonet.Request, m *proto.AskCheckCurrentSerial) error {
	s := h.s
	if err := h.readOnly(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.unlock()
	if s.tm == nil {
		return &peerError{proto.NotReady, "not operational", true}
	}
	s.tm.register(h.link, h.peer.nid, m.TTid)
	run := func() error {
		conflict, err := s.tm.checkCurrentSerial(ctx, m.TTid, m.Oid, m.Serial)
		switch {
		case errors.Is(err, errDelay):
			return err
		case err != nil:
			s.answerAbort(r, proto.Err(proto.ProtocolError, "check %s: %v", m.Oid, err))
		default:
			s.answer(r, &proto.AnswerCheckCurrentSerial{Conflict: conflict})
		}
		return nil
	}
	s.runOrDelay(m.TTid, run, run)
	return nil
}

func (h *linkHandler) askRelockObject(ctx context.Context, r *neonet.Request, m *proto.AskRelockObject) error {
	s := h.s
	if err := h.readOnly(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.unlock()
	if s.tm == nil {
		return &peerError{proto.NotReady, "not operational", true}
	}
	run := func(unlock bool) error {
		conflict, err := s.tm.relockObject(ctx, m.TTid, m.Oid, unlock)
		switch {
		case errors.Is(err, errDelay):
			return err
		case err != nil:
			s.answerAbort(r, proto.Err(proto.ProtocolError, "relock %s: %v", m.Oid, err))
		default:
			s.answer(r, &proto.AnswerRelockObject{Conflict: conflict})
		}
		return nil
	}
	s.runOrDelay(m.TTid, func() error { return run(true) }, func() error { return run(false) })
	return nil
}

func (h *linkHandler) askTIDs(ctx context.Context, r *neonet.Request, m *proto.AskTIDs) error {
	if m.First >= m.Last {
		return protoErrorf("invalid offsets")
	}
	s := h.s
	s.mu.Lock()
	var ps []uint32
	if m.Partition == 0xffffffff {
		ps = s.readablePartitions()
	} else if !s.readable(int(m.Partition)) {
		s.mu.Unlock()
		return nonReadable(fmt.Sprintf("partition %d", m.Partition))
	} else {
		ps = []uint32{m.Partition}
	}
	s.mu.Unlock()
	n := m.Last - m.First
	if n > 1<<20 {
		n = 1 << 20
	}
	tids, err := s.db.TIDs(ctx, int(min(m.First, 1<<40)), int(n), ps)
	if err != nil {
		return err
	}
	if b := h.backupTid(); b != zodb.InvalidTid {
		tids = slices.DeleteFunc(tids, func(t zodb.Tid) bool { return t > b })
	}
	return r.Reply(ctx, &proto.AnswerTIDs{Tids: tids})
}

func (h *linkHandler) askTIDsFrom(ctx context.Context, r *neonet.Request, m *proto.AskTIDsFrom) error {
	s := h.s
	s.mu.Lock()
	if !s.readable(int(m.Partition)) {
		s.mu.Unlock()
		return nonReadable(fmt.Sprintf("partition %d", m.Partition))
	}
	s.mu.Unlock()
	return h.afterLocks(ctx, r, func() bool { return s.tm.isLockedTid(m.MaxTid) }, func() error {
		maxTid := m.MaxTid
		if b := h.backupTid(); b != zodb.InvalidTid {
			maxTid = min(maxTid, b)
		}
		tids, err := s.db.TIDsFrom(ctx, m.Partition, m.MinTid, maxTid, int(m.Length))
		if err != nil {
			return err
		}
		return r.Reply(ctx, &proto.AnswerTIDsFrom{Tids: tids})
	})
}

func (h *linkHandler) askOIDsFrom(ctx context.Context, r *neonet.Request, m *proto.AskOIDsFrom) error {
	s := h.s
	s.mu.Lock()
	if !s.readable(int(m.Partition)) {
		s.mu.Unlock()
		return nonReadable(fmt.Sprintf("partition %d", m.Partition))
	}
	s.mu.Unlock()
	return h.afterLocks(ctx, r, func() bool { return s.tm.isLockedTid(m.Tid) }, func() error {
		oids, next, ok, err := s.db.OIDsFrom(ctx, m.Partition, int(m.Length), m.MinOid, m.Tid)
		if err != nil {
			return err
		}
		a := &proto.AnswerOIDsFrom{NextOid: zodb.InvalidOid, Oids: oids}
		if ok {
			a.NextOid = next
		}
		return r.Reply(ctx, a)
	})
}

func (h *linkHandler) askTransactionInformation(ctx context.Context, r *neonet.Request, m *proto.AskTransactionInformation) error {
	s := h.s
	s.mu.Lock()
	ok := s.readable(s.partitionOf(uint64(m.Tid)))
	s.mu.Unlock()
	if !ok {
		return nonReadable(m.Tid.String())
	}
	if b := h.backupTid(); b != zodb.InvalidTid && m.Tid > b {
		return &peerError{proto.TidNotFound, fmt.Sprintf("tids > %s are not fully fetched yet", b), false}
	}
	t, err := s.db.Transaction(ctx, m.Tid, false)
	if errors.Is(err, backend.ErrTidNotFound) {
		return &peerError{proto.TidNotFound, m.Tid.String() + " does not exist", false}
	}
	if err != nil {
		return err
	}
	return r.Reply(ctx, &proto.AnswerTransactionInformation{Tid: m.Tid, User: t.User, Description: t.Description,
		Extension: t.Extension, Packed: t.Packed, Oids: t.Oids})
}

func (h *linkHandler) askObjectHistory(ctx context.Context, r *neonet.Request, m *proto.AskObjectHistory) error {
	if m.First >= m.Last {
		return protoErrorf("invalid offsets")
	}
	s := h.s
	s.mu.Lock()
	if !s.readable(s.partitionOf(uint64(m.Oid))) {
		s.mu.Unlock()
		return nonReadable(m.Oid.String())
	}
	s.mu.Unlock()
	return h.afterLocks(ctx, r, func() bool { return s.tm.loadLock[m.Oid] != 0 }, func() error {
		return h.history(ctx, r, m)
	})
}

func (h *linkHandler) history(ctx context.Context, r *neonet.Request, m *proto.AskObjectHistory) error {
	s := h.s
	n := m.Last - m.First
	if n > 1<<20 {
		n = 1 << 20
	}
	hist, err := s.db.History(ctx, m.Oid, int(min(m.First, 1<<40)), int(n))
	if errors.Is(err, backend.ErrOidNotFound) || errors.Is(err, backend.ErrOidDoesNotExist) || err == nil && len(hist) == 0 {
		return &peerError{proto.OidNotFound, m.Oid.String(), false}
	}
	if err != nil {
		return err
	}
	a := &proto.AnswerObjectHistory{Oid: m.Oid, History: make([]proto.HistoryEntry, len(hist))}
	for i, e := range hist {
		a.History[i] = proto.HistoryEntry{Serial: e.Serial, Size: uint64(e.Size)}
	}
	return r.Reply(ctx, a)
}

func (h *linkHandler) askObjectUndoSerial(ctx context.Context, r *neonet.Request, m *proto.AskObjectUndoSerial) error {
	// a transaction between lock and unlock is committed: wait until its
	// records are where UndoInfo looks for them
	s := h.s
	return h.afterLocks(ctx, r, func() bool {
		for _, oid := range m.Oids {
			if s.tm.loadLock[oid] != 0 {
				return true
			}
		}
		return false
	}, func() error { return h.undoSerial(ctx, r, m) })
}

func (h *linkHandler) undoSerial(ctx context.Context, r *neonet.Request, m *proto.AskObjectUndoSerial) error {
	s := h.s
	type item struct {
		oid     zodb.Oid
		current zodb.Tid
	}
	items := make([]item, 0, len(m.Oids))
	s.mu.Lock()
	for _, oid := range m.Oids {
		if !s.readable(s.partitionOf(uint64(oid))) {
			s.mu.Unlock()
			return nonReadable(oid.String())
		}
		cur := zodb.InvalidTid
		if s.tm != nil {
			if t, ok := s.tm.txns[m.TTid]; ok {
				if st, ok := t.store[oid]; ok {
					cur = m.TTid
					if st.dataSerial != zodb.InvalidTid {
						cur = st.dataSerial
					}
				}
			}
		}
		items = append(items, item{oid, cur})
	}
	s.mu.Unlock()
	a := &proto.AnswerObjectUndoSerial{}
	for _, it := range items {
		u, found, err := s.db.UndoInfo(ctx, it.oid, m.LTid, m.UndoneTid, it.current)
		if errors.Is(err, backend.ErrOidNotFound) {
			return &peerError{proto.OidNotFound, it.oid.String(), false}
		}
		if err != nil {
			return err
		}
		if found {
			a.Serials = append(a.Serials, proto.UndoSerial{Oid: it.oid, CurrentSerial: u.Current, UndoSerial: u.UndoTo, IsCurrent: u.IsCurrent})
		}
	}
	return r.Reply(ctx, a)
}

// askFetchTransactions serves a replication chunk of transactions.
func (h *linkHandler) askFetchTransactions(ctx context.Context, r *neonet.Request, m *proto.AskFetchTransactions) error {
	s := h.s
	s.mu.Lock()
	c, ok := s.ownCell(int(m.Partition))
	if !ok || !c.Readable() {
		s.mu.Unlock()
		return &peerError{proto.ReplicationError, fmt.Sprintf("partition %d not readable", m.Partition), false}
	}
	err := s.waitWhile(ctx, func() bool { return s.tm.isLockedTid(m.MaxTid) })
	s.mu.Unlock()
	if err != nil {
		return err
	}
	length := int(min(m.Length, 1<<20))
	tids, err := s.db.TIDsFrom(ctx, m.Partition, m.MinTid, m.MaxTid, length+1)
	if err != nil {
		return err
	}
	next := zodb.InvalidTid
	if len(tids) > length {
		next = tids[length]
		tids = tids[:length]
	}
	have := make(map[zodb.Tid]bool, len(m.Have))
	for _, t := range m.Have {
		have[t] = true
	}
	for _, tid := range tids {
		if have[tid] {
			delete(have, tid)
			continue
		}
		t, err := s.db.Transaction(ctx, tid, false)
		if errors.Is(err, backend.ErrTidNotFound) {
			return &peerError{proto.ReplicationError, fmt.Sprintf("partition %d dropped", m.Partition), false}
		}
		if err != nil {
			return err
		}
		add := &proto.AddTransaction{Tid: tid, User: t.User, Description: t.Description, Extension: t.Extension,
			Packed: t.Packed, TTid: t.TTid, Oids: t.Oids}
		if t.Pack != nil {
			tp := proto.TxnPackInfo{Approved: t.Pack.Approved, Partial: t.Pack.Partial, PackTid: t.Pack.PackTid}
			if t.Pack.Partial {
				tp.Oids = proto.Some(t.Pack.Oids)
			}
			add.Pack = proto.Some(tp)
		}
		if err := r.Link().SendBuffered(ctx, r.MsgID, add); err != nil {
			return err
		}
	}
	a := &proto.AnswerFetchTransactions{NextTid: next, CompletedPack: zodb.InvalidTid}
	for t := range have {
		if next == zodb.InvalidTid || t < next {
			a.Delete = append(a.Delete, t)
		}
	}
	slices.SortFunc(a.Delete, cmpTid)
	if m.AskPackInfo && c.State != proto.CellOutOfDate {
		cells, err := s.db.PartitionTable(ctx)
		if err != nil {
			return err
		}
		for _, bc := range cells {
			if bc.Partition == m.Partition && bc.HasPack && bc.NID == s.myNID() {
				a.CompletedPack = bc.Pack
			}
		}
	}
	return r.Reply(ctx, a)
}

// askFetchObjects serves a replication chunk of object records.
func (h *linkHandler) askFetchObjects(ctx context.Context, r *neonet.Request, m *proto.AskFetchObjects) error {
	s := h.s
	s.mu.Lock()
	if !s.readable(int(m.Partition)) {
		s.mu.Unlock()
		return &peerError{proto.ReplicationError, fmt.Sprintf("partition %d not readable", m.Partition), false}
	}
	if s.tm == nil {
		s.mu.Unlock()
		return &peerError{proto.NotReady, "not operational", true}
	}
	locked := s.tm.isLockedTid(m.MaxTid)
	s.mu.Unlock()
	if locked {
		return protoErrorf("transactions must be fetched before objects")
	}
	length := int(min(m.Length, 1<<20))
	xids, err := s.db.ObjectsFrom(ctx, m.Partition, m.MinTid, m.MaxTid, m.MinOid, length+1)
	if err != nil {
		return err
	}
	a := &proto.AnswerFetchObjects{NextTid: zodb.InvalidTid, NextOid: zodb.InvalidOid}
	if len(xids) > length {
		a.NextTid, a.NextOid = xids[length].At, xids[length].Oid
		xids = xids[:length]
	}
	have := map[zodb.Xid]bool{}
	for _, so := range m.Have {
		for _, oid := range so.Oids {
			have[zodb.Xid{Oid: oid, At: so.Serial}] = true
		}
	}
	var o backend.Object
	for _, x := range xids {
		if have[x] {
			delete(have, x)
			continue
		}
		err := s.db.Load(ctx, x.Oid, x.At, zodb.InvalidTid, &o)
		if errors.Is(err, backend.ErrOidNotFound) || errors.Is(err, backend.ErrOidDoesNotExist) {
			return &peerError{proto.ReplicationError, fmt.Sprintf("partition %d dropped or truncated", m.Partition), false}
		}
		if err != nil {
			return err
		}
		add := &proto.AddObject{Oid: x.Oid, Serial: x.At, DataSerial: o.DataSerial}
		if o.HasData {
			add.Compression, add.Checksum, add.Data = o.Compression, o.Checksum, o.Data
		}
		if err := r.Link().SendBuffered(ctx, r.MsgID, add); err != nil {
			return err
		}
	}
	bySerial := map[zodb.Tid][]zodb.Oid{}
	for x := range have {
		if a.NextTid != zodb.InvalidTid && (x.At > a.NextTid || x.At == a.NextTid && x.Oid >= a.NextOid) {
			continue
		}
		bySerial[x.At] = append(bySerial[x.At], x.Oid)
	}
	for serial, oids := range bySerial {
		slices.Sort(oids)
		a.Delete = append(a.Delete, proto.SerialOids{Serial: serial, Oids: oids})
	}
	slices.SortFunc(a.Delete, func(x, y proto.SerialOids) int { return cmpTid(x.Serial, y.Serial) })
	return r.Reply(ctx, a)
}
