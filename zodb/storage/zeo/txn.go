package zeo

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/neozodb/neo/zodb"
)

// maxResolveRounds bounds client-side conflict resolution: vote, resolve,
// store again, vote again, as ZEO's client does.
const maxResolveRounds = 9

type txnState int

const (
	txnOpen txnState = iota
	txnVoted
	txnFinished
	txnAborted
	txnFailed // a call failed: only Abort is allowed
)

// txn is one two-phase commit over ZEO. tpc_begin, storea,
// checkCurrentSerialInTransaction, deleteObject, restorea and undoa are
// one-way: the server logs them and reports their errors at vote.
type txn struct {
	s    *Storage
	c    *conn
	id   int64
	meta zodb.TxnMeta

	mu      sync.Mutex
	state   txnState
	changed []zodb.Oid
	stored  map[zodb.Oid]bool
}

// Begin starts a transaction (tpc_begin). The commit lock is taken at Vote.
func (s *Storage) Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error) {
	if s.readOnly {
		return nil, s.opErr("tpc_begin", nil, zodb.ErrReadOnly)
	}
	ext, err := decodeExtension(meta.Extension)
	if err != nil {
		return nil, s.opErr("tpc_begin", nil, err)
	}
	// One transaction at a time on the connection, as ZEO's client: a
	// second Begin waits for the first transaction to finish or abort.
	select {
	case s.txnSlot <- struct{}{}:
	case <-ctx.Done():
		return nil, s.opErr("tpc_begin", nil, ctx.Err())
	case <-s.closed:
		return nil, s.opErr("tpc_begin", nil, zodb.ErrClosed)
	}
	ok := false
	defer func() {
		if !ok {
			<-s.txnSlot
		}
	}()
	c, err := s.conn(ctx)
	if err != nil {
		return nil, s.opErr("tpc_begin", nil, err)
	}
	var tid any
	if meta.Tid != 0 {
		tid = meta.Tid.Bytes()
	}
	status := string(zodb.TxnComplete)
	if meta.Status != 0 {
		status = string(rune(meta.Status))
	}
	s.mu.Lock()
	s.nextTxnID++
	id := s.nextTxnID
	s.mu.Unlock()
	user, desc := meta.User, meta.Description
	if user == nil {
		user = []byte{}
	}
	if desc == nil {
		desc = []byte{}
	}
	if err := c.async("tpc_begin", tuple{id, user, desc, ext, tid, status}); err != nil {
		return nil, s.opErr("tpc_begin", nil, err)
	}
	ok = true
	return &txn{s: s, c: c, id: id, meta: meta, stored: map[zodb.Oid]bool{}}, nil
}

func (t *txn) opErr(op string, args any, err error) error { return t.s.opErr(op, args, err) }

// checkOpen verifies the transaction accepts operations.
func (t *txn) checkOpen(op string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case txnOpen:
	case txnVoted:
		return &zodb.TransactionError{Msg: op + " after vote"}
	case txnFinished:
		return &zodb.TransactionError{Msg: op + " after finish"}
	case txnAborted:
		return &zodb.TransactionError{Msg: op + " after abort"}
	default:
		return &zodb.TransactionError{Msg: op + " after a failed call (abort the transaction)"}
	}
	if t.c.isDown() {
		t.state = txnFailed
		return t.c.disconnectedErr()
	}
	return nil
}

func (t *txn) noteChanged(oid zodb.Oid) {
	t.mu.Lock()
	if !t.stored[oid] {
		t.stored[oid] = true
		t.changed = append(t.changed, oid)
	}
	t.mu.Unlock()
}

func (t *txn) send(op string, args any, method string, a tuple) error {
	if err := t.checkOpen(op); err != nil {
		return t.opErr(op, args, err)
	}
	if err := t.c.async(method, a); err != nil {
		t.mu.Lock()
		t.state = txnFailed
		t.mu.Unlock()
		return t.opErr(op, args, err)
	}
	return nil
}

// Store sends storea(oid, serial, data). Conflicts show at Vote.
func (t *txn) Store(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	if err := t.send("store", oid, "storea", tuple{oid.Bytes(), serial.Bytes(), data, t.id}); err != nil {
		return err
	}
	t.noteChanged(oid)
	return nil
}

// Delete sends deleteObject(oid, serial).
func (t *txn) Delete(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	if err := t.send("delete", oid, "deleteObject", tuple{oid.Bytes(), serial.Bytes(), t.id}); err != nil {
		return err
	}
	t.noteChanged(oid)
	return nil
}

// CheckCurrentSerial sends checkCurrentSerialInTransaction(oid, serial).
func (t *txn) CheckCurrentSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	return t.send("checkCurrentSerial", oid, "checkCurrentSerialInTransaction", tuple{oid.Bytes(), serial.Bytes(), t.id})
}

// Restore sends restorea(oid, tid, data, prev_txn), tid being the one the
// transaction was begun with (z64 when the server allocates it). With data nil and dataTid set, the data of
// revision dataTid is loaded first (ZEO's restore carries the data).
func (t *txn) Restore(ctx context.Context, oid zodb.Oid, data []byte, dataTid zodb.Tid) error {
	var d, prev any
	if data != nil {
		d = data
	}
	if dataTid != 0 {
		prev = dataTid.Bytes()
		if data == nil {
			b, err := t.s.loadSerial(ctx, oid, dataTid)
			if err != nil {
				return t.opErr("restore", oid, fmt.Errorf("data of %v@%v: %w", oid, dataTid, err))
			}
			d = b
		}
	}
	if err := t.send("restore", oid, "restorea", tuple{oid.Bytes(), t.meta.Tid.Bytes(), d, prev, t.id}); err != nil {
		return err
	}
	t.noteChanged(oid)
	return nil
}

// Undo sends undoa(undo id of undoTid). The objects it changes are known
// only at Vote, which returns them.
func (t *txn) Undo(ctx context.Context, undoTid zodb.Tid) ([]zodb.Oid, error) {
	return nil, t.send("undo", undoTid, "undoa", tuple{undoID(undoTid), t.id})
}

// Vote votes, resolving on the client the conflicts the server hands back
// (server option client-conflict-resolution) with the storage's resolver.
func (t *txn) Vote(ctx context.Context) ([]zodb.Oid, error) {
	if err := t.checkOpen("vote"); err != nil {
		return nil, t.opErr("vote", nil, err)
	}
	fail := func(err error) ([]zodb.Oid, error) {
		t.mu.Lock()
		t.state = txnFailed
		t.mu.Unlock()
		return nil, t.opErr("vote", nil, err)
	}
	var resolved []zodb.Oid
	for round := 1; ; round++ {
		r, err := t.c.call(ctx, "vote", tuple{t.id}, nil)
		if err != nil {
			return fail(err)
		}
		xs, ok := items(r)
		if r != nil && !ok {
			return fail(fmt.Errorf("bad reply %.200s", formatValue(r)))
		}
		var conflicts []*dict
		for _, x := range xs {
			switch x := x.(type) {
			case []byte:
				oid, err := oidArg(x)
				if err != nil {
					return fail(err)
				}
				if !slices.Contains(resolved, oid) {
					resolved = append(resolved, oid)
				}
				t.noteChanged(oid)
			case *dict:
				conflicts = append(conflicts, x)
			default:
				return fail(fmt.Errorf("bad vote result %.200s", formatValue(x)))
			}
		}
		if len(conflicts) == 0 {
			t.mu.Lock()
			t.state = txnVoted
			t.mu.Unlock()
			return resolved, nil
		}
		for _, cd := range conflicts {
			oid, err := t.resolve(ctx, cd, round)
			if err != nil {
				return fail(err)
			}
			if !slices.Contains(resolved, oid) {
				resolved = append(resolved, oid)
			}
		}
	}
}

// resolve handles one conflict dict {oid, serials: (committed, read), data}.
func (t *txn) resolve(ctx context.Context, cd *dict, round int) (zodb.Oid, error) {
	ov, _ := cd.get("oid")
	oid, err := oidArg(ov)
	if err != nil {
		return 0, fmt.Errorf("conflict: %w", err)
	}
	sv, _ := cd.get("serials")
	ss, ok := items(sv)
	if !ok || len(ss) != 2 {
		return 0, fmt.Errorf("conflict on %v: bad serials %.100s", oid, formatValue(sv))
	}
	committed, err := tidArg(ss[0])
	if err != nil {
		return 0, fmt.Errorf("conflict on %v: %w", oid, err)
	}
	read, err := tidArg(ss[1])
	if err != nil {
		return 0, fmt.Errorf("conflict on %v: %w", oid, err)
	}
	dv, _ := cd.get("data")
	data, ok := dv.([]byte)
	if !ok {
		return 0, fmt.Errorf("conflict on %v: bad data %.100s", oid, formatValue(dv))
	}
	cerr := &zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: read}
	if t.s.resolver == nil {
		return 0, cerr
	}
	if round > maxResolveRounds {
		cerr.Msg = fmt.Sprintf("still conflicting after %d rounds of resolution", maxResolveRounds)
		return 0, cerr
	}
	old, err := t.s.loadSerial(ctx, oid, read)
	if err != nil {
		return 0, fmt.Errorf("conflict on %v: load %v@%v: %w", oid, oid, read, err)
	}
	cur, err := t.s.loadSerial(ctx, oid, committed)
	if err != nil {
		return 0, fmt.Errorf("conflict on %v: load %v@%v: %w", oid, oid, committed, err)
	}
	merged, err := t.s.resolver(ctx, oid, old, cur, data)
	if err != nil {
		cerr.Msg = err.Error()
		return 0, cerr
	}
	if err := t.c.async("storea", tuple{oid.Bytes(), committed.Bytes(), merged, t.id}); err != nil {
		return 0, err
	}
	return oid, nil
}

// Finish commits (tpc_finish) and returns the tid. The CommitEvent of the
// transaction is queued when the reply arrives, in order with the
// invalidations of other commits, and Finish returns once it was delivered.
func (t *txn) Finish(ctx context.Context) (zodb.Tid, error) {
	t.mu.Lock()
	st := t.state
	t.mu.Unlock()
	if st != txnVoted {
		return 0, t.opErr("finish", nil, &zodb.TransactionError{Msg: "finish without a successful vote"})
	}
	var tid zodb.Tid
	var tidErr error
	r, err := t.c.call(ctx, "tpc_finish", tuple{t.id}, func(reply any) {
		tid, tidErr = tidArg(reply)
		if tidErr == nil {
			t.mu.Lock()
			changed := slices.Clone(t.changed)
			t.mu.Unlock()
			t.s.enqueue(&zodb.CommitEvent{Tid: tid, Changed: changed}, tid)
		}
	})
	_ = r
	if err == nil {
		err = tidErr
	}
	if err != nil {
		// The transaction is over: the server aborts it when it cannot
		// finish it, and so does the loss of the connection.
		t.mu.Lock()
		t.state = txnAborted
		t.mu.Unlock()
		<-t.s.txnSlot
		return 0, t.opErr("finish", nil, err)
	}
	t.mu.Lock()
	t.state = txnFinished
	t.mu.Unlock()
	<-t.s.txnSlot
	t.s.sendIteratorGC(t.c)
	if err := t.s.waitHead(ctx, tid); err != nil {
		return tid, t.opErr("finish", tid, err)
	}
	return tid, nil
}

// Abort aborts (tpc_abort). After a lost connection there is nothing to
// abort: the server aborted the transaction when the connection dropped.
func (t *txn) Abort(ctx context.Context) error {
	t.mu.Lock()
	st := t.state
	if st == txnFinished || st == txnAborted {
		t.mu.Unlock()
		return nil
	}
	t.state = txnAborted
	t.mu.Unlock()
	defer func() { <-t.s.txnSlot }()
	if t.c.isDown() {
		return nil
	}
	_, err := t.c.call(ctx, "tpc_abort", tuple{t.id}, nil)
	if _, down := err.(*DisconnectedError); down {
		err = nil
	}
	t.s.sendIteratorGC(t.c)
	return t.opErr("abort", nil, err)
}
