package mem

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/neozodb/neo/zodb"
)

// Transactions hold the storage's commit lock from Begin to Finish or
// Abort, so every check against committed data made while a transaction
// runs stays true until it finishes: conflicts are reported at once by the
// call that finds them, and Vote only repeats the first of them.

type txnState int

const (
	txnActive    txnState = iota // storing
	txnVoted                     // voted, waiting for Finish
	txnFinishing                 // Finish installing and sending events
	txnFinished
	txnAborted
)

type txn struct {
	d    *Driver
	meta zodb.TxnMeta

	mu       sync.Mutex
	state    txnState
	failed   error             // first conflict found; the commit cannot succeed
	recs     []zodb.DataInfo   // records, in store order
	idx      map[zodb.Oid]int  // oid → index in recs
	resolved map[zodb.Oid]bool // oids whose data came from conflict resolution
	tid      zodb.Tid          // allocated at Vote
}

// Begin starts a transaction, waiting for the commit lock.
func (d *Driver) Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error) {
	if err := d.check(ctx); err != nil {
		return nil, d.opErr("begin", nil, err)
	}
	if d.readOnly {
		return nil, d.opErr("begin", nil, zodb.ErrReadOnly)
	}
	switch meta.Status {
	case 0:
		meta.Status = zodb.TxnComplete
	case zodb.TxnComplete, zodb.TxnPacked:
	default:
		return nil, d.opErr("begin", nil, fmt.Errorf("cannot commit with status %q", meta.Status))
	}
	meta.User = cloneBytes(meta.User)
	meta.Description = cloneBytes(meta.Description)
	meta.Extension = cloneBytes(meta.Extension)

	db := d.db
	select {
	case db.commitLock <- struct{}{}:
	case <-ctx.Done():
		return nil, d.opErr("begin", nil, ctx.Err())
	case <-d.closed:
		return nil, d.opErr("begin", nil, zodb.ErrClosed)
	}
	t := &txn{d: d, meta: meta, idx: map[zodb.Oid]int{}, resolved: map[zodb.Oid]bool{}}
	db.mu.Lock()
	last := db.last
	ok := meta.Tid == 0 || meta.Tid > last
	if ok {
		db.cur = t
	}
	db.mu.Unlock()
	if !ok {
		<-db.commitLock
		return nil, d.opErr("begin", nil, fmt.Errorf("tid %v is not after the last tid %v", meta.Tid, last))
	}
	// Close may have run between taking the lock and registering.
	select {
	case <-d.closed:
		t.abort()
		return nil, d.opErr("begin", nil, zodb.ErrClosed)
	default:
	}
	return t, nil
}

// usable checks, with t.mu held, that the transaction accepts op in the
// given state.
func (t *txn) usable(ctx context.Context, want txnState, op string) error {
	if err := t.d.check(ctx); err != nil {
		return err
	}
	if t.state != want {
		switch t.state {
		case txnActive:
			return &zodb.TransactionError{Msg: op + " before vote"}
		case txnVoted:
			return &zodb.TransactionError{Msg: op + " after vote"}
		case txnAborted:
			return &zodb.TransactionError{Msg: op + " after abort"}
		default:
			return &zodb.TransactionError{Msg: op + " after finish"}
		}
	}
	if t.failed != nil {
		return t.failed
	}
	return nil
}

// fail records the first conflict of the transaction.
func (t *txn) fail(err error) error {
	if t.failed == nil {
		t.failed = err
	}
	return err
}

// put adds or replaces the record of r.Oid.
func (t *txn) put(r zodb.DataInfo) {
	if i, ok := t.idx[r.Oid]; ok {
		t.recs[i] = r
		return
	}
	t.idx[r.Oid] = len(t.recs)
	t.recs = append(t.recs, r)
}

// committedSerial returns the serial of the current revision of oid (0 if
// none), with db.mu held.
func (db *database) committedSerial(oid zodb.Oid) zodb.Tid {
	revs := db.objs[oid]
	if len(revs) == 0 {
		return 0
	}
	return revs[len(revs)-1].serial
}

func (t *txn) Store(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte) error {
	err := t.store(ctx, oid, serial, data)
	if err != nil {
		return t.d.opErr("store", oid, err)
	}
	return nil
}

func (t *txn) store(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(ctx, txnActive, "store"); err != nil {
		return err
	}
	if data == nil {
		return fmt.Errorf("nil data (a deletion is written by Delete)")
	}
	db := t.d.db
	db.mu.RLock()
	committed := db.committedSerial(oid)
	var old, cur []byte
	if serial != committed {
		revs := db.objs[oid]
		if i := exactRev(revs, serial); i >= 0 {
			old = revs[i].data
		}
		if len(revs) > 0 {
			cur = revs[len(revs)-1].data
		}
	}
	db.mu.RUnlock()

	resolved := false
	if serial != committed {
		conflict := &zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: serial}
		if t.d.resolver == nil {
			return t.fail(conflict)
		}
		if old == nil || cur == nil {
			conflict.Msg = "no committed state to resolve against"
			return t.fail(conflict)
		}
		merged, err := t.d.resolver(ctx, oid, old, cur, data)
		if err != nil {
			conflict.Msg = err.Error()
			return t.fail(conflict)
		}
		data = merged
		resolved = true
	}
	t.put(zodb.DataInfo{Oid: oid, Data: cloneBytes(data)})
	if resolved {
		t.resolved[oid] = true
	} else {
		delete(t.resolved, oid)
	}
	return nil
}

func (t *txn) Delete(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(ctx, txnActive, "delete"); err != nil {
		return t.d.opErr("delete", oid, err)
	}
	db := t.d.db
	db.mu.RLock()
	committed := db.committedSerial(oid)
	db.mu.RUnlock()
	if serial != committed {
		return t.d.opErr("delete", oid, t.fail(&zodb.ConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: serial}))
	}
	t.put(zodb.DataInfo{Oid: oid})
	delete(t.resolved, oid)
	return nil
}

func (t *txn) CheckCurrentSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(ctx, txnActive, "checkCurrentSerial"); err != nil {
		return t.d.opErr("checkCurrentSerial", oid, err)
	}
	db := t.d.db
	db.mu.RLock()
	committed := db.committedSerial(oid)
	db.mu.RUnlock()
	if serial != committed {
		return t.d.opErr("checkCurrentSerial", oid, t.fail(&zodb.ReadConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: serial}))
	}
	return nil
}

func (t *txn) Restore(ctx context.Context, oid zodb.Oid, data []byte, dataTid zodb.Tid) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(ctx, txnActive, "restore"); err != nil {
		return t.d.opErr("restore", oid, err)
	}
	if dataTid != 0 {
		db := t.d.db
		db.mu.RLock()
		revs := db.objs[oid]
		i := exactRev(revs, dataTid)
		var have []byte
		if i >= 0 {
			have = revs[i].data
		}
		db.mu.RUnlock()
		switch {
		case have != nil && data == nil:
			data = have
		case have != nil && bytes.Equal(have, data):
		case data != nil:
			dataTid = 0 // not the same data: keep the data given
		default:
			return t.d.opErr("restore", oid, fmt.Errorf("no data of %v at %v to reuse", oid, dataTid))
		}
	}
	t.put(zodb.DataInfo{Oid: oid, Data: cloneBytes(data), DataTid: dataTid})
	delete(t.resolved, oid)
	return nil
}

// Undo writes, for every object of transaction undoTid, the revision
// before it (or a deletion when undoTid created the object). An object
// changed since undoTid can be undone only through conflict resolution;
// otherwise Undo fails with *UndoError and writes nothing.
func (t *txn) Undo(ctx context.Context, undoTid zodb.Tid) ([]zodb.Oid, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(ctx, txnActive, "undo"); err != nil {
		return nil, t.d.opErr("undo", undoTid, err)
	}
	type undoRec struct {
		oid          zodb.Oid
		undone, cur  []byte
		prev         *revision
		changedSince bool
	}
	db := t.d.db
	db.mu.RLock()
	rec := db.undoIdx[undoTid]
	var todo []undoRec
	var err error
	switch {
	case rec == nil:
		err = &zodb.UndoError{Oid: zodb.InvalidOid, Reason: fmt.Sprintf("no transaction %v", undoTid)}
	case rec.info.Status == zodb.TxnPacked:
		err = &zodb.UndoError{Oid: zodb.InvalidOid, Reason: fmt.Sprintf("transaction %v was packed", undoTid)}
	default:
		for _, r := range rec.recs {
			revs := db.objs[r.Oid]
			i := exactRev(revs, undoTid)
			if i < 0 {
				err = &zodb.UndoError{Oid: r.Oid, Reason: "revision lost by pack"}
				break
			}
			u := undoRec{oid: r.Oid, undone: revs[i].data}
			if i > 0 {
				p := revs[i-1]
				u.prev = &p
			}
			cur := revs[len(revs)-1]
			u.cur = cur.data
			u.changedSince = cur.serial != undoTid
			if j, ok := t.idx[r.Oid]; ok {
				u.cur = t.recs[j].Data
				u.changedSince = true
			}
			if u.changedSince && sameData(u.cur, u.undone) {
				u.changedSince = false
			}
			todo = append(todo, u)
		}
	}
	db.mu.RUnlock()
	if err != nil {
		return nil, t.d.opErr("undo", undoTid, err)
	}

	out := make([]zodb.DataInfo, 0, len(todo))
	for _, u := range todo {
		var r zodb.DataInfo
		r.Oid = u.oid
		switch {
		case !u.changedSince:
			if u.prev != nil && u.prev.data != nil {
				r.Data = u.prev.data
				r.DataTid = u.prev.serial
				if u.prev.dataTid != 0 {
					r.DataTid = u.prev.dataTid
				}
			}
		case t.d.resolver != nil && u.undone != nil && u.cur != nil && u.prev != nil && u.prev.data != nil:
			merged, rerr := t.d.resolver(ctx, u.oid, u.undone, u.cur, u.prev.data)
			if rerr != nil {
				return nil, t.d.opErr("undo", undoTid, &zodb.UndoError{Oid: u.oid,
					Reason: "modified by a later transaction, and conflict resolution failed: " + rerr.Error()})
			}
			r.Data = cloneBytes(merged)
		default:
			return nil, t.d.opErr("undo", undoTid, &zodb.UndoError{Oid: u.oid, Reason: "modified by a later transaction"})
		}
		out = append(out, r)
	}
	oids := make([]zodb.Oid, len(out))
	for i, r := range out {
		t.put(r)
		delete(t.resolved, r.Oid)
		oids[i] = r.Oid
	}
	return oids, nil
}

func sameData(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func (t *txn) Vote(ctx context.Context) ([]zodb.Oid, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.usable(ctx, txnActive, "vote"); err != nil {
		return nil, t.d.opErr("vote", nil, err)
	}
	db := t.d.db
	db.mu.RLock()
	last := db.last
	db.mu.RUnlock()
	t.tid = t.meta.Tid
	if t.tid == 0 {
		t.tid = zodb.NewTid(time.Now(), last)
	}
	t.state = txnVoted
	var resolved []zodb.Oid
	for _, r := range t.recs {
		if t.resolved[r.Oid] {
			resolved = append(resolved, r.Oid)
		}
	}
	return resolved, nil
}

func (t *txn) Finish(ctx context.Context) (zodb.Tid, error) {
	t.mu.Lock()
	if err := t.usable(ctx, txnVoted, "finish"); err != nil {
		t.mu.Unlock()
		return 0, t.d.opErr("finish", nil, err)
	}
	t.state = txnFinishing
	t.mu.Unlock()

	tid := t.tid
	info := zodb.TxnInfo{
		Tid:         tid,
		Status:      t.meta.Status,
		User:        t.meta.User,
		Description: t.meta.Description,
		Extension:   t.meta.Extension,
	}
	for i := range t.recs {
		t.recs[i].Tid = tid
	}
	rec := &txnRecord{info: info, recs: t.recs, size: recordSize(&info, t.recs)}
	changed := make([]zodb.Oid, len(t.recs))

	db := t.d.db
	db.mu.Lock()
	db.txns = append(db.txns, rec)
	db.undoIdx[tid] = rec
	for i, r := range t.recs {
		db.objs[r.Oid] = append(db.objs[r.Oid], revision{serial: tid, data: r.Data, dataTid: r.DataTid})
		db.oidMax = max(db.oidMax, r.Oid)
		changed[i] = r.Oid
	}
	db.last = tid
	handles := make([]*Driver, 0, len(db.handles))
	for h := range db.handles {
		handles = append(handles, h)
	}
	db.mu.Unlock()

	// The data is visible to loads at tid from here on; LastTid reports
	// tid only once every handle's watcher has the event.
	for _, h := range handles {
		if h.watchq == nil {
			continue
		}
		ev := &zodb.CommitEvent{Tid: tid, Changed: append([]zodb.Oid(nil), changed...)}
		select {
		case h.watchq <- ev:
		case <-h.closed:
		}
	}

	db.mu.Lock()
	db.head = tid
	db.cur = nil
	db.mu.Unlock()
	<-db.commitLock

	t.mu.Lock()
	t.state = txnFinished
	t.mu.Unlock()
	return tid, nil
}

func (t *txn) Abort(ctx context.Context) error {
	t.abort()
	return nil
}

// abort releases the transaction; a no-op once it finished or aborted.
func (t *txn) abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != txnActive && t.state != txnVoted {
		return
	}
	t.state = txnAborted
	t.recs = nil
	db := t.d.db
	db.mu.Lock()
	if db.cur == t {
		db.cur = nil
	}
	db.mu.Unlock()
	<-db.commitLock
}
