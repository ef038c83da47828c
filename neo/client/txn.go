package client

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

type txnState int

const (
	txnActive txnState = iota
	txnVoted
	txnFinished
	txnAborted
)

// What a transaction does with an object.
type objKind int

const (
	objStore  objKind = iota // new data
	objDelete                // a revision without data
	objCheck                 // CheckCurrentSerial only
)

type txnObj struct {
	kind       objKind
	readSerial zodb.Tid // the serial the application based its change on
	serial     zodb.Tid // the serial sent with the last store
	dataSerial zodb.Tid // undo back-pointer, or InvalidTid
	data       []byte   // uncompressed data, kept for conflict resolution
	resolvedAt zodb.Tid // greatest conflict serial resolved
	resolved   bool
	undo       bool // stored by Undo: a conflict is an undo error
}

type callKind int

const (
	callStore callKind = iota
	callCheck
	callRelock
)

// pendingCall is a request to a storage whose answer is not handled yet.
type pendingCall struct {
	call *neonet.Call
	nid  proto.NodeID
	oid  zodb.Oid
	kind callKind
}

// txn is a transaction being committed: zodb.ITxn.
type txn struct {
	c      *Client
	meta   zodb.TxnMeta
	master *neonet.Link // the master session the transaction began in
	ttid   zodb.Tid

	mu       sync.Mutex // the fields below; the deadlock handler runs in a storage link's goroutine
	state    txnState
	voting   bool // stores are all answered: deadlock notifications are ignored
	objs     map[zodb.Oid]*txnObj
	order    []zodb.Oid // oids stored or checked, in first-store order
	pending  []*pendingCall
	involved map[proto.NodeID]bool // storages that received requests
	failed   map[proto.NodeID]bool // storages lost during the transaction
	// links: the link to each storage the transaction used. A storage
	// forgets the transactions of a client whose link closed, so the
	// transaction never goes on over another link to it.
	links map[proto.NodeID]*neonet.Link
	// lockless: per partition, the storages that took a write without
	// checking it (answered ZERO_TID: their cell was being replicated),
	// relying on another cell of the partition to check it.
	lockless map[int]map[proto.NodeID]bool
	resolved []zodb.Oid
}

// maxPending bounds the store requests in flight before Store waits for
// answers.
const maxPending = 1024

// Begin starts a transaction: the master gives it a temporary tid.
func (c *Client) Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error) {
	if err := c.alive(); err != nil {
		return nil, c.opError("begin", nil, err)
	}
	if c.cfg.ReadOnly {
		return nil, c.opError("begin", nil, zodb.ErrReadOnly)
	}
	select {
	case c.commitSem <- struct{}{}:
	case <-ctx.Done():
		return nil, c.opError("begin", nil, ctx.Err())
	case <-c.ctx.Done():
		return nil, c.opError("begin", nil, zodb.ErrClosed)
	}
	release := func() { <-c.commitSem }
	if meta.Status != 0 && meta.Status != zodb.TxnComplete {
		// NEO's AskStoreTransaction has no status: the transaction is
		// recorded as complete.
		c.log.Warn("transaction status not recorded by NEO", "status", string(rune(meta.Status)))
	}
	want := zodb.InvalidTid
	if meta.Tid != 0 {
		// The master would refuse it, closing the connection.
		if head := c.head(); meta.Tid <= head {
			release()
			return nil, c.opError("begin", nil, fmt.Errorf("tid %v is not after the last transaction %v", meta.Tid, head))
		}
		want = meta.Tid
	}
	var link *neonet.Link
	var m proto.Msg
	var err error
	for attempt := 0; ; attempt++ {
		link, err = c.masterLink(ctx)
		if err != nil {
			release()
			return nil, c.opError("begin", nil, err)
		}
		m, err = link.Ask(ctx, &proto.AskBeginTransaction{Tid: want})
		// A begin lost with its connection left nothing behind.
		if err != nil && attempt < 2 && errors.Is(err, neonet.ErrLinkDown) && peerError(err) == nil && ctx.Err() == nil && !c.closed.Load() {
			continue
		}
		break
	}
	if err != nil {
		release()
		if pe := peerError(err); pe != nil && pe.Code == proto.ReadOnlyAccess {
			err = fmt.Errorf("%w: %w", zodb.ErrReadOnly, err)
		}
		return nil, c.opError("begin", nil, err)
	}
	a, ok := m.(*proto.AnswerBeginTransaction)
	if !ok {
		release()
		return nil, c.opError("begin", nil, fmt.Errorf("unexpected answer %T", m))
	}
	t := &txn{
		c:        c,
		meta:     meta,
		master:   link,
		ttid:     a.TTid,
		objs:     map[zodb.Oid]*txnObj{},
		involved: map[proto.NodeID]bool{},
		failed:   map[proto.NodeID]bool{},
		links:    map[proto.NodeID]*neonet.Link{},
		lockless: map[int]map[proto.NodeID]bool{},
	}
	c.cur.Store(t)
	c.log.Debug("transaction begun", "ttid", t.ttid)
	return t, nil
}

func (t *txn) opError(op string, args any, err error) error {
	if err == nil {
		return nil
	}
	return t.c.opError(op, args, fmt.Errorf("transaction %v: %w", t.ttid, err))
}

func misuse(format string, args ...any) error {
	return &zodb.TransactionError{Msg: fmt.Sprintf(format, args...)}
}

// checkActive fails unless stores are allowed. t.mu is held.
func (t *txn) checkActiveLocked(op string) error {
	switch t.state {
	case txnVoted:
		return misuse("%s after vote", op)
	case txnFinished:
		return misuse("%s after finish", op)
	case txnAborted:
		return misuse("%s after abort", op)
	}
	return nil
}

// zlibWriters holds writers at zlib.BestSpeed: zlib's default level spends
// about 20 µs resetting its tables for every object (6 times as long as
// compressing 100 bytes at BestSpeed, for an output of the same size);
// any level gives data that every NEO node inflates.
var zlibWriters sync.Pool

// compress returns the data as sent: zlib-compressed if that is smaller.
func (c *Client) compress(data []byte) (uint8, []byte) {
	if c.cfg.NoCompress || len(data) < 32 {
		return 0, data
	}
	var b bytes.Buffer
	w, _ := zlibWriters.Get().(*zlib.Writer)
	if w == nil {
		w, _ = zlib.NewWriterLevel(&b, zlib.BestSpeed)
	} else {
		w.Reset(&b)
	}
	w.Write(data)
	w.Close()
	zlibWriters.Put(w)
	if b.Len() < len(data) {
		return 1, b.Bytes()
	}
	return 0, data
}

// storeMsg builds the AskStoreObject of oid's current state in t.
func (t *txn) storeMsg(oid zodb.Oid, o *txnObj) *proto.AskStoreObject {
	m := &proto.AskStoreObject{Oid: oid, Serial: o.serial, DataSerial: o.dataSerial, TTid: t.ttid}
	if o.kind == objDelete || o.data == nil {
		m.Data = []byte{} // no data: empty, ZERO_HASH
		return m
	}
	m.Compression, m.Data = t.c.compress(o.data)
	m.Checksum = sha1.Sum(m.Data)
	return m
}

// send sends req about oid to every cell of oid's partition (the writes
// go to all cells, whatever their state). t.mu is held.
func (t *txn) sendLocked(ctx context.Context, oid zodb.Oid, req proto.Msg, kind callKind) error {
	p, err := t.c.partition(uint64(oid))
	if err != nil {
		return err
	}
	sent := 0
	var lastErr error
	for _, nid := range t.c.writeCells(p) {
		if t.failed[nid] {
			continue
		}
		t.involved[nid] = true
		link, err := t.storageLocked(ctx, nid)
		if err == nil {
			var call *neonet.Call
			call, err = link.Start(ctx, req)
			if err == nil {
				t.pending = append(t.pending, &pendingCall{call: call, nid: nid, oid: oid, kind: kind})
				sent++
				continue
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStorageDown) {
			t.c.log.Debug("storage not running: not written", "storage", nid, "ttid", t.ttid)
		} else {
			t.c.log.Warn("storage lost during a transaction", "storage", nid, "ttid", t.ttid, "err", err)
		}
		t.failed[nid] = true
		lastErr = err
	}
	if sent == 0 {
		if lastErr == nil {
			lastErr = errors.New("no cell")
		}
		return fmt.Errorf("oid %v: no storage to write to: %w", oid, lastErr)
	}
	return nil
}

// storageLocked returns the link to storage nid for the transaction: the
// one it used first. Once that link is down, the storage has forgotten the
// transaction's stores and the transaction cannot go on with it (nor
// reconnect to it): it is failed. t.mu is held.
func (t *txn) storageLocked(ctx context.Context, nid proto.NodeID) (*neonet.Link, error) {
	if link, ok := t.links[nid]; ok {
		if err := link.Err(); err != nil {
			return nil, fmt.Errorf("link used by the transaction lost: %w", err)
		}
		return link, nil
	}
	link, err := t.c.storage(ctx, nid)
	if err != nil {
		return nil, err
	}
	t.links[nid] = link
	return link, nil
}

// store sends a new state of oid.
func (t *txn) store(ctx context.Context, op string, oid zodb.Oid, serial zodb.Tid, data []byte, kind objKind, dataSerial zodb.Tid) error {
	if err := t.futureSerial(ctx, oid, serial); err != nil {
		return err
	}
	t.mu.Lock()
	if err := t.checkActiveLocked(op); err != nil {
		t.mu.Unlock()
		return err
	}
	o := t.objs[oid]
	if o == nil {
		o = &txnObj{readSerial: serial}
		t.objs[oid] = o
		t.order = append(t.order, oid)
	} else if o.kind == objCheck {
		o.readSerial = serial
	}
	o.kind, o.serial, o.dataSerial = kind, serial, dataSerial
	o.undo = op == "undo"
	o.data = nil
	if kind == objStore && data != nil {
		o.data = slices.Clone(data)
	}
	err := t.sendLocked(ctx, oid, t.storeMsg(oid, o), callStore)
	n := len(t.pending)
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if n > maxPending {
		return t.drain(ctx, maxPending/2)
	}
	return nil
}

func (t *txn) Store(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	return t.opError("store", oid, t.store(ctx, "store", oid, serial, data, objStore, zodb.InvalidTid))
}

func (t *txn) Delete(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	return t.opError("delete", oid, t.store(ctx, "delete", oid, serial, nil, objDelete, zodb.InvalidTid))
}

func (t *txn) CheckCurrentSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	if err := t.futureSerial(ctx, oid, serial); err != nil {
		return t.opError("checkCurrentSerial", oid, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkActiveLocked("checkCurrentSerial"); err != nil {
		return t.opError("checkCurrentSerial", oid, err)
	}
	if _, ok := t.objs[oid]; ok {
		return nil // stored by the transaction: the store checks it
	}
	t.objs[oid] = &txnObj{kind: objCheck, readSerial: serial, serial: serial, dataSerial: zodb.InvalidTid}
	t.order = append(t.order, oid)
	err := t.sendLocked(ctx, oid, &proto.AskCheckCurrentSerial{TTid: t.ttid, Oid: oid, Serial: serial}, callCheck)
	return t.opError("checkCurrentSerial", oid, err)
}

// Restore writes a revision without conflict check: it is based on the
// current serial, whatever it is.
func (t *txn) Restore(ctx context.Context, oid zodb.Oid, data []byte, dataTid zodb.Tid) error {
	serial, err := t.c.currentSerial(ctx, oid)
	if err != nil {
		return t.opError("restore", oid, err)
	}
	kind := objStore
	if data == nil && dataTid == 0 {
		kind = objDelete
	}
	ds := zodb.InvalidTid
	if dataTid != 0 {
		ds = dataTid
	}
	return t.opError("restore", oid, t.store(ctx, "restore", oid, serial, data, kind, ds))
}

// futureSerial returns a conflict for a serial after the last transaction
// the cluster committed, which no client can have read: such a store is
// not sent, as NEO/py's storages stop on an assertion when asked to lock an
// object on a serial they do not have.
func (t *txn) futureSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	if serial == 0 || serial <= t.c.head() {
		return nil
	}
	// This client may not know yet of a commit another client made.
	m, err := t.c.askMaster(ctx, &proto.AskLastTransaction{})
	if err != nil {
		return err
	}
	if a, ok := m.(*proto.AnswerLastTransaction); !ok || serial <= a.Tid {
		return nil
	}
	cur, err := t.c.currentSerial(ctx, oid)
	if err != nil {
		return err
	}
	return &zodb.ConflictError{Oid: oid, ReadSerial: serial, CommittedSerial: cur}
}

// currentSerial returns the serial of oid's last revision (0 if none).
func (c *Client) currentSerial(ctx context.Context, oid zodb.Oid) (zodb.Tid, error) {
	a, err := c.loadAnswer(ctx, &proto.AskObject{Oid: oid, At: zodb.InvalidTid, Before: zodb.TidMax})
	if err != nil {
		var no *zodb.NoObjectError
		var nd *zodb.NoDataError
		if errors.As(err, &no) || errors.As(err, &nd) {
			return 0, nil
		}
		return 0, err
	}
	return a.Serial, nil
}

// drain handles answers until at most keep requests are in flight.
func (t *txn) drain(ctx context.Context, keep int) error {
	for {
		t.mu.Lock()
		if len(t.pending) <= keep {
			t.mu.Unlock()
			return nil
		}
		pc := t.pending[0]
		t.pending = t.pending[1:]
		t.mu.Unlock()
		m, err := pc.call.Wait(ctx)
		if err := t.handleAnswer(ctx, pc, m, err); err != nil {
			return err
		}
	}
}

// handleAnswer handles the answer to a store, check or relock.
func (t *txn) handleAnswer(ctx context.Context, pc *pendingCall, m proto.Msg, err error) error {
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if pe := peerError(err); pe != nil {
			if pe.Code == proto.UndoPackError {
				return &zodb.UndoError{Oid: pc.oid, Reason: "data to undo to were packed away: " + pe.Message}
			}
			return fmt.Errorf("storage %v: oid %v: %w", pc.nid, pc.oid, err)
		}
		if t.c.closed.Load() {
			return fmt.Errorf("%w: %w", zodb.ErrClosed, err)
		}
		// The storage is gone: the write is done if other cells took it.
		t.c.log.Warn("storage lost during a transaction", "storage", pc.nid, "ttid", t.ttid, "err", err)
		t.mu.Lock()
		t.failed[pc.nid] = true
		t.mu.Unlock()
		return nil
	}
	var conflict zodb.Tid
	switch a := m.(type) {
	case *proto.AnswerStoreObject:
		conflict = a.Conflict
	case *proto.AnswerCheckCurrentSerial:
		conflict = a.Conflict
	case *proto.AnswerRelockObject:
		if !a.Conflict.Ok {
			return nil
		}
		conflict = a.Conflict.V.ConflictSerial
	default:
		return fmt.Errorf("storage %v: oid %v: unexpected answer %T", pc.nid, pc.oid, m)
	}
	t.c.log.Debug("answer", "ttid", t.ttid, "storage", pc.nid, "oid", pc.oid, "kind", pc.kind, "conflict", conflict)
	if conflict == 0 && pc.kind != callRelock {
		// stored without lock: another cell must have checked it
		p, err := t.c.partition(uint64(pc.oid))
		if err != nil {
			return err
		}
		t.mu.Lock()
		if t.lockless[p] == nil {
			t.lockless[p] = map[proto.NodeID]bool{}
		}
		t.lockless[p][pc.nid] = true
		t.mu.Unlock()
		return nil
	}
	if conflict == zodb.InvalidTid || conflict == 0 {
		return nil // locked
	}
	return t.resolve(ctx, pc.oid, conflict)
}

// resolve handles a conflict on oid with the committed serial committed.
func (t *txn) resolve(ctx context.Context, oid zodb.Oid, committed zodb.Tid) error {
	t.mu.Lock()
	o := t.objs[oid]
	if o == nil {
		t.mu.Unlock()
		return fmt.Errorf("conflict on oid %v the transaction did not store", oid)
	}
	if o.resolvedAt >= committed {
		t.mu.Unlock()
		return nil // already resolved against this revision
	}
	// The data to merge are based on the serial they were last stored
	// with: the one read, or the one of a conflict already resolved.
	kind, readSerial, base, data, undo := o.kind, o.readSerial, o.serial, o.data, o.undo
	t.mu.Unlock()
	if kind == objCheck {
		return &zodb.ReadConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: readSerial}
	}
	resolver := t.c.resolver
	if resolver == nil || kind == objDelete || data == nil {
		if undo {
			return &zodb.UndoError{Oid: oid, Reason: fmt.Sprintf("some data were modified by a later transaction (%v)", committed)}
		}
		return &zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: readSerial}
	}
	var old []byte
	if base != 0 {
		var err error
		old, _, err = t.c.loadSerial(ctx, oid, base)
		if err != nil {
			return &zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: readSerial, Msg: fmt.Sprintf("loading the revision %v the data are based on: %v", base, err)}
		}
	}
	cur, _, err := t.c.loadSerial(ctx, oid, committed)
	if err != nil {
		return &zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: readSerial, Msg: fmt.Sprintf("loading the committed revision: %v", err)}
	}
	merged, err := resolver(ctx, oid, old, cur, data)
	if err != nil && undo {
		return &zodb.UndoError{Oid: oid, Reason: "some data were modified by a later transaction: " + err.Error()}
	}
	if err != nil {
		return &zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: readSerial, Msg: err.Error()}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkActiveLocked("conflict resolution"); err != nil {
		return err
	}
	// The merged data replace an undo's back-pointer.
	o.resolvedAt, o.serial, o.data, o.dataSerial = committed, committed, slices.Clone(merged), zodb.InvalidTid
	if !o.resolved {
		o.resolved = true
		t.resolved = append(t.resolved, oid)
	}
	return t.sendLocked(ctx, oid, t.storeMsg(oid, o), callStore)
}

// onDeadlock handles NotifyDeadlock from a storage: the transaction gives
// up its lock on the oid to an older one and asks it again.
func (c *Client) onDeadlock(nid proto.NodeID, link *neonet.Link, m *proto.NotifyDeadlock) {
	t := c.cur.Load()
	if t == nil || t.ttid != m.TTid {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.voting || t.state != txnActive || t.failed[nid] {
		return
	}
	c.log.Debug("deadlock avoidance: relocking", "ttid", m.TTid, "oid", m.Oid, "storage", nid)
	call, err := link.Start(c.ctx, &proto.AskRelockObject{TTid: m.TTid, Oid: m.Oid})
	if err != nil {
		t.failed[nid] = true
		return
	}
	t.pending = append(t.pending, &pendingCall{call: call, nid: nid, oid: m.Oid, kind: callRelock})
}

// Vote waits for every store's answer, resolving conflicts, then makes the
// storages write the transaction durably.
func (t *txn) Vote(ctx context.Context) ([]zodb.Oid, error) {
	t.mu.Lock()
	if t.state != txnActive {
		err := t.checkActiveLocked("vote")
		if t.state == txnVoted {
			err = misuse("vote twice")
		}
		t.mu.Unlock()
		return nil, t.opError("vote", nil, err)
	}
	t.mu.Unlock()
	if err := t.c.alive(); err != nil {
		return nil, t.opError("vote", nil, err)
	}
	if err := t.drain(ctx, 0); err != nil {
		return nil, t.opError("vote", nil, err)
	}
	t.mu.Lock()
	t.voting = true
	oids := slices.Clone(t.order)
	// Every object must be written to a storage that did not fail.
	for oid := range t.objs {
		p, err := t.c.partition(uint64(oid))
		if err != nil {
			t.mu.Unlock()
			return nil, t.opError("vote", nil, err)
		}
		ok := false
		for _, nid := range t.c.writeCells(p) {
			if t.involved[nid] && !t.failed[nid] {
				ok = true
			}
		}
		if !ok {
			t.mu.Unlock()
			return nil, t.opError("vote", nil, fmt.Errorf("oid %v: no storage took the write (cells %v, failed %v)", oid, t.c.writeCells(p), t.failed))
		}
	}
	t.mu.Unlock()

	// Metadata to the cells of the ttid's partition, a vote to the other
	// storages involved.
	p, err := t.c.partition(uint64(t.ttid))
	if err != nil {
		return nil, t.opError("vote", nil, err)
	}
	type voteCall struct {
		nid  proto.NodeID
		call *neonet.Call
	}
	var calls []voteCall
	meta := map[proto.NodeID]bool{}
	t.mu.Lock()
	for _, nid := range t.c.writeCells(p) {
		if !t.failed[nid] {
			meta[nid] = true
		}
	}
	for nid := range t.involved {
		if !t.failed[nid] && !meta[nid] {
			meta[nid] = false
		}
	}
	t.mu.Unlock()
	nmeta := 0
	for nid, withMeta := range meta {
		var req proto.Msg = &proto.AskVoteTransaction{TTid: t.ttid}
		if withMeta {
			req = &proto.AskStoreTransaction{TTid: t.ttid, User: nonNil(t.meta.User), Description: nonNil(t.meta.Description),
				Extension: nonNil(t.meta.Extension), Oids: oids}
		}
		t.mu.Lock()
		t.involved[nid] = true // also a storage of the metadata only, as in NEO/py
		link, err := t.storageLocked(ctx, nid)
		t.mu.Unlock()
		var call *neonet.Call
		if err == nil {
			call, err = link.Start(ctx, req)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, t.opError("vote", nil, err)
			}
			t.markFailed(nid, err)
			continue
		}
		if withMeta {
			nmeta++
		}
		calls = append(calls, voteCall{nid, call})
	}
	stored := 0
	for _, vc := range calls {
		m, err := vc.call.Wait(ctx)
		if err != nil {
			if ctx.Err() != nil || peerError(err) != nil {
				return nil, t.opError("vote", nil, fmt.Errorf("storage %v: %w", vc.nid, err))
			}
			t.markFailed(vc.nid, err)
			continue
		}
		if _, ok := m.(*proto.AnswerStoreTransaction); ok {
			stored++
		}
	}
	if stored == 0 {
		return nil, t.opError("vote", nil, fmt.Errorf("no storage took the transaction metadata"))
	}
	if t.master.Err() != nil {
		return nil, t.opError("vote", nil, fmt.Errorf("master connection lost: %w", t.master.Err()))
	}
	t.mu.Lock()
	// With storages failed, each write taken without a check must have
	// been checked by a cell that did not fail (NEO/py's "partition not
	// fully write-locked"): else the vote would stand on unchecked writes.
	if len(t.failed) > 0 {
		for p, nids := range t.lockless {
			checked := false
			for _, nid := range t.c.writeCells(p) {
				if !t.failed[nid] && !nids[nid] {
					checked = true
				}
			}
			if !checked {
				t.mu.Unlock()
				return nil, t.opError("vote", nil, fmt.Errorf("partition %d not fully write-locked: the storages that checked its writes failed (%v)", p, t.failed))
			}
		}
	}
	// Tell the master which storages failed, if they still run.
	var failed []proto.NodeID
	for nid := range t.failed {
		if t.involved[nid] && t.c.isRunning(nid) {
			failed = append(failed, nid)
		}
	}
	t.mu.Unlock()
	if len(failed) > 0 {
		slices.Sort(failed)
		_, err := t.master.Ask(ctx, &proto.FailedVote{TTid: t.ttid, Failed: failed})
		if pe := peerError(err); err != nil && (pe == nil || pe.Code != proto.Ack) {
			return nil, t.opError("vote", nil, fmt.Errorf("storages %v failed: %w", failed, err))
		}
	}
	t.mu.Lock()
	t.state = txnVoted
	resolved := slices.Clone(t.resolved)
	t.mu.Unlock()
	return resolved, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (t *txn) markFailed(nid proto.NodeID, err error) {
	if errors.Is(err, errStorageDown) {
		// Known down: its cells are skipped, as expected.
		t.c.log.Debug("storage not running: not written", "storage", nid, "ttid", t.ttid)
	} else {
		t.c.log.Warn("storage lost during a transaction", "storage", nid, "ttid", t.ttid, "err", err)
	}
	t.mu.Lock()
	t.failed[nid] = true
	t.mu.Unlock()
}

func (c *Client) isRunning(nid proto.NodeID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isRunningLocked(nid)
}

// Finish asks the master to commit and returns the final tid.
func (t *txn) Finish(ctx context.Context) (zodb.Tid, error) {
	t.mu.Lock()
	switch t.state {
	case txnActive:
		t.mu.Unlock()
		return 0, t.opError("finish", nil, misuse("finish without vote"))
	case txnFinished:
		t.mu.Unlock()
		return 0, t.opError("finish", nil, misuse("finish twice"))
	case txnAborted:
		t.mu.Unlock()
		return 0, t.opError("finish", nil, misuse("finish after abort"))
	}
	var stored, changed []zodb.Oid
	var deleted, checked []uint32
	for _, oid := range t.order {
		o := t.objs[oid]
		p, err := t.c.partition(uint64(oid))
		if err != nil {
			t.mu.Unlock()
			return 0, t.opError("finish", nil, err)
		}
		switch o.kind {
		case objStore:
			stored = append(stored, oid)
			changed = append(changed, oid)
		case objDelete:
			deleted = append(deleted, uint32(p))
			changed = append(changed, oid)
		case objCheck:
			checked = append(checked, uint32(p))
		}
	}
	t.mu.Unlock()
	slices.Sort(deleted)
	slices.Sort(checked)
	deleted, checked = slices.Compact(deleted), slices.Compact(checked)

	c := t.c
	c.evMu.Lock()
	c.finishing = true
	c.evMu.Unlock()
	tid, err := t.finish(ctx, &proto.AskFinishTransaction{TTid: t.ttid, Oids: nonNilOids(stored), Deleted: nonNilU32(deleted), Checked: nonNilU32(checked)})
	c.evMu.Lock()
	c.finishing = false
	var own *ownCommit
	if err == nil {
		own = &ownCommit{tid: tid, changed: changed}
	}
	if c.sessionReady {
		c.releaseHeld(own)
	} else if own != nil {
		c.held = append(c.held, *own)
	}
	c.evMu.Unlock()

	t.mu.Lock()
	t.state = txnFinished
	t.mu.Unlock()
	t.end()
	if err != nil {
		return 0, t.opError("finish", nil, err)
	}
	return tid, nil
}

func nonNilOids(v []zodb.Oid) []zodb.Oid {
	if v == nil {
		return []zodb.Oid{}
	}
	return v
}

func nonNilU32(v []uint32) []uint32 {
	if v == nil {
		return []uint32{}
	}
	return v
}

// finish sends AskFinishTransaction. If the master goes away before it
// answers, the transaction may still be committed: the client asks the
// next primary for its final tid (AskFinalTID).
//
// The answer is returned once the invalidations the master sent before it
// have been handled: they are of transactions committed before this one.
func (t *txn) finish(ctx context.Context, req *proto.AskFinishTransaction) (zodb.Tid, error) {
	m, err := t.master.AskSynced(ctx, req)
	if a, ok := m.(*proto.AnswerTransactionFinished); ok && a.TTid == t.ttid {
		if err != nil {
			// the session ends: the next one starts from what the new
			// master says, no invalidation is missed
			t.c.log.Debug("finish answered, then", "err", err)
		}
		return a.Tid, nil
	}
	if err == nil {
		return 0, fmt.Errorf("unexpected answer %#v", m)
	}
	if peerError(err) != nil || ctx.Err() != nil || !errors.Is(err, neonet.ErrLinkDown) || t.c.closed.Load() {
		return 0, err
	}
	t.c.log.Warn("master lost while finishing: asking the next one for the transaction's tid", "ttid", t.ttid, "err", err)
	m, err2 := t.c.askMaster(ctx, &proto.AskFinalTID{TTid: t.ttid})
	if err2 != nil {
		return 0, fmt.Errorf("%w; final tid: %w", err, err2)
	}
	a, ok := m.(*proto.AnswerFinalTID)
	if !ok {
		return 0, fmt.Errorf("%w; final tid: unexpected answer %T", err, m)
	}
	switch a.Tid {
	case zodb.InvalidTid:
		return 0, fmt.Errorf("%w; the transaction was aborted", err)
	case zodb.TidMax:
		p, perr := t.c.partition(uint64(t.ttid))
		if perr != nil {
			return 0, perr
		}
		m, err2 := t.c.read(ctx, p, &proto.AskFinalTID{TTid: t.ttid}, nil)
		if err2 != nil {
			return 0, fmt.Errorf("%w; final tid from storages: %w", err, err2)
		}
		a, ok := m.(*proto.AnswerFinalTID)
		if !ok || a.Tid == zodb.InvalidTid {
			return 0, fmt.Errorf("%w; the transaction was aborted", err)
		}
		return a.Tid, nil
	}
	return a.Tid, nil
}

// end releases the commit lock of the client.
func (t *txn) end() {
	if t.c.cur.CompareAndSwap(t, nil) {
		<-t.c.commitSem
	}
}

// Abort discards the transaction on the storages and at the master.
func (t *txn) Abort(ctx context.Context) error {
	t.mu.Lock()
	if t.state == txnFinished || t.state == txnAborted {
		t.mu.Unlock()
		return nil
	}
	t.state = txnAborted
	var nids []proto.NodeID
	for nid := range t.involved {
		nids = append(nids, nid)
	}
	t.pending = nil
	t.mu.Unlock()
	slices.Sort(nids)
	c := t.c
	if !c.closed.Load() {
		// Directly to the storages first: it orders the abort after the
		// stores in flight.
		for _, nid := range nids {
			c.mu.Lock()
			s := c.storages[nid]
			c.mu.Unlock()
			if s == nil {
				continue
			}
			select {
			case <-s.done:
			default:
				continue
			}
			if s.link != nil && s.link.Err() == nil {
				s.link.Notify(ctx, &proto.AbortTransaction{TTid: t.ttid, NIDs: []proto.NodeID{}})
			}
		}
		if t.master.Err() == nil {
			t.master.Notify(ctx, &proto.AbortTransaction{TTid: t.ttid, NIDs: nonNilNIDs(nids)})
		}
	}
	t.end()
	return nil
}

func nonNilNIDs(v []proto.NodeID) []proto.NodeID {
	if v == nil {
		return []proto.NodeID{}
	}
	return v
}
