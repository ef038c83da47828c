package fs1

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/neozodb/neo/zodb"
)

type txnState int

const (
	txnActive txnState = iota
	txnVoted
	txnDone
)

// txn is a transaction being committed. Its data records are staged in
// memory with their final file positions already computed (the commit lock
// keeps the end of the file where it was at Begin).
type txn struct {
	s      *FileStorage
	meta   zodb.TxnMeta
	tid    zodb.Tid
	status zodb.TxnStatus
	tpos   int64 // position of the transaction record
	thl    int64 // header length
	state  txnState

	buf      []byte             // staged data records
	tindex   map[zodb.Oid]int64 // oid -> position of its record in this transaction
	changed  []zodb.Oid         // oids in first-write order
	resolved []zodb.Oid
}

// Begin starts a transaction; it waits for the commit lock.
func (s *FileStorage) Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error) {
	if s.readOnly {
		return nil, s.opErr("begin", nil, zodb.ErrReadOnly)
	}
	for what, b := range map[string][]byte{"user": meta.User, "description": meta.Description, "extension": meta.Extension} {
		if len(b) > maxMetaLen {
			return nil, s.opErr("begin", nil, fmt.Errorf("%s too long (%d bytes, max %d)", what, len(b), maxMetaLen))
		}
	}
	switch meta.Status {
	case 0, zodb.TxnComplete, zodb.TxnPacked:
	default:
		return nil, s.opErr("begin", nil, fmt.Errorf("invalid transaction status %q", byte(meta.Status)))
	}
	select {
	case s.commitSem <- struct{}{}:
	case <-ctx.Done():
		return nil, s.opErr("begin", nil, ctx.Err())
	case <-s.down:
		return nil, s.opErr("begin", nil, zodb.ErrClosed)
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.RLock()
	closed, last, end := s.closed, s.lastTid, s.index.TopPos
	s.mu.RUnlock()
	if closed {
		<-s.commitSem
		return nil, s.opErr("begin", nil, zodb.ErrClosed)
	}
	t := &txn{s: s, meta: meta, status: meta.Status, tpos: end, tindex: map[zodb.Oid]int64{}}
	if t.status == 0 {
		t.status = zodb.TxnComplete
	}
	if meta.Tid != 0 {
		if meta.Tid <= last {
			<-s.commitSem
			return nil, s.opErr("begin", nil, &zodb.TransactionError{Msg: fmt.Sprintf("tid %v is not after the last tid %v", meta.Tid, last)})
		}
		t.tid = meta.Tid
	} else {
		t.tid = zodb.NewTid(time.Now(), last)
	}
	t.thl = TxnHeaderFixSize + int64(len(meta.User)+len(meta.Description)+len(meta.Extension))
	s.cur = t
	return t, nil
}

// enter starts a transaction operation: it checks the state and holds
// opMu until the returned function is called.
func (t *txn) enter(op string, want txnState) (func(), error) {
	s := t.s
	s.opMu.Lock()
	if s.cur != t || t.state == txnDone {
		s.opMu.Unlock()
		select {
		case <-s.down:
			return nil, s.opErr(op, nil, zodb.ErrClosed)
		default:
		}
		return nil, s.opErr(op, nil, &zodb.TransactionError{Msg: op + " on a finished or aborted transaction"})
	}
	if t.state != want {
		s.opMu.Unlock()
		msg := op + " after vote"
		if want == txnVoted {
			msg = op + " before vote"
		}
		return nil, s.opErr(op, nil, &zodb.TransactionError{Msg: msg})
	}
	return s.opMu.Unlock, nil
}

// committed returns the position and header of the committed record of oid,
// or nil when the oid is not in the storage.
func (t *txn) committed(oid zodb.Oid) (*DataHeader, error) {
	s := t.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	pos, ok := s.index.Get(oid)
	if !ok {
		return nil, nil
	}
	dh, err := ReadDataHeader(s.file, pos, s.index.TopPos)
	if err == nil && dh.Oid != oid {
		err = fmtErr(pos, nil, "record of %v where %v was expected", dh.Oid, oid)
	}
	return dh, err
}

// loadAt returns the data of oid's revision with serial exactly serial.
func (t *txn) loadSerial(oid zodb.Oid, serial zodb.Tid) ([]byte, error) {
	s := t.s
	data, got, _, err := s.load(zodb.Xid{Oid: oid, At: serial})
	if err != nil {
		return nil, err
	}
	if got != serial {
		return nil, &zodb.NoDataError{Oid: oid}
	}
	return data, nil
}

// loadCommitted returns the data of a committed record (nil for a deletion).
func (t *txn) loadRecord(dh *DataHeader) ([]byte, error) {
	t.s.mu.RLock()
	defer t.s.mu.RUnlock()
	data, _, err := LoadData(t.s.file, dh)
	return data, err
}

// appendRecord stages a data record; back is used when data is nil.
func (t *txn) appendRecord(oid zodb.Oid, prev int64, data []byte, back int64) {
	here := t.tpos + t.thl + int64(len(t.buf))
	plen := int64(len(data))
	t.buf = appendDataHeader(t.buf, oid, t.tid, prev, t.tpos, plen)
	if plen > 0 {
		t.buf = append(t.buf, data...)
	} else {
		t.buf = binary.BigEndian.AppendUint64(t.buf, uint64(back))
	}
	if _, ok := t.tindex[oid]; !ok {
		t.changed = append(t.changed, oid)
	}
	t.tindex[oid] = here
	t.s.noteOid(oid)
}

func (t *txn) Store(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte) error {
	leave, err := t.enter("store", txnActive)
	if err != nil {
		return err
	}
	defer leave()
	xid := zodb.Xid{Oid: oid, At: serial}
	if len(data) == 0 {
		return t.s.opErr("store", xid, errors.New("empty data"))
	}
	cur, err := t.committed(oid)
	if err != nil {
		return t.s.opErr("store", xid, err)
	}
	var prev int64
	if cur != nil {
		prev = cur.Pos
		if serial != cur.Tid {
			data, err = t.resolve(ctx, oid, serial, cur, data)
			if err != nil {
				return t.s.opErr("store", xid, err)
			}
			t.resolved = append(t.resolved, oid)
		}
	}
	t.appendRecord(oid, prev, data, 0)
	return nil
}

// resolve runs conflict resolution for a store of data based on serial
// when the committed revision is cur.
func (t *txn) resolve(ctx context.Context, oid zodb.Oid, serial zodb.Tid, cur *DataHeader, data []byte) ([]byte, error) {
	conflict := &zodb.ConflictError{Oid: oid, CommittedSerial: cur.Tid, ReadSerial: serial}
	if t.s.resolver == nil || serial == 0 {
		return nil, conflict
	}
	t.s.mu.RLock()
	old, err := t.loadSerial(oid, serial)
	t.s.mu.RUnlock()
	if err != nil {
		conflict.Msg = fmt.Sprintf("cannot load the revision read: %v", err)
		return nil, conflict
	}
	committed, err := t.loadRecord(cur)
	if err != nil {
		return nil, err
	}
	if committed == nil {
		conflict.Msg = "object was deleted"
		return nil, conflict
	}
	merged, err := t.s.resolver(ctx, oid, old, committed, data)
	if err != nil || len(merged) == 0 {
		if err != nil {
			conflict.Msg = err.Error()
		}
		return nil, conflict
	}
	return merged, nil
}

func (t *txn) Delete(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	leave, err := t.enter("delete", txnActive)
	if err != nil {
		return err
	}
	defer leave()
	xid := zodb.Xid{Oid: oid, At: serial}
	cur, err := t.committed(oid)
	if err != nil {
		return t.s.opErr("delete", xid, err)
	}
	if cur == nil {
		return t.s.opErr("delete", xid, &zodb.NoObjectError{Oid: oid})
	}
	if cur.Tid != serial {
		return t.s.opErr("delete", xid, &zodb.ConflictError{Oid: oid, CommittedSerial: cur.Tid, ReadSerial: serial})
	}
	t.appendRecord(oid, cur.Pos, nil, 0)
	return nil
}

// CheckCurrentSerial checks at once that oid is at serial: the commit lock,
// held until the transaction ends, keeps it so.
func (t *txn) CheckCurrentSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	leave, err := t.enter("checkCurrentSerial", txnActive)
	if err != nil {
		return err
	}
	defer leave()
	xid := zodb.Xid{Oid: oid, At: serial}
	cur, err := t.committed(oid)
	if err != nil {
		return t.s.opErr("checkCurrentSerial", xid, err)
	}
	var committed zodb.Tid
	if cur != nil {
		committed = cur.Tid
	}
	if committed != serial {
		return t.s.opErr("checkCurrentSerial", xid, &zodb.ReadConflictError{Oid: oid, CommittedSerial: committed, ReadSerial: serial})
	}
	return nil
}

func (t *txn) Restore(ctx context.Context, oid zodb.Oid, data []byte, dataTid zodb.Tid) error {
	leave, err := t.enter("restore", txnActive)
	if err != nil {
		return err
	}
	defer leave()
	xid := zodb.Xid{Oid: oid, At: dataTid}
	if data != nil && len(data) == 0 {
		return t.s.opErr("restore", xid, errors.New("empty data"))
	}
	s := t.s
	s.mu.RLock()
	var back int64
	if dataTid != 0 {
		if tpos, err := s.lookupTxn(dataTid); err != nil {
			s.mu.RUnlock()
			return s.opErr("restore", xid, err)
		} else if tpos != 0 {
			back, err = s.findData(tpos, oid, data)
			if err != nil {
				s.mu.RUnlock()
				return s.opErr("restore", xid, err)
			}
		}
	}
	prev, _ := s.index.Get(oid)
	s.mu.RUnlock()
	if back != 0 {
		data = nil
	}
	t.appendRecord(oid, prev, data, back)
	return nil
}

// lookupTxn returns the position of transaction tid, 0 if there is none.
// Call with opMu and s.mu held.
func (s *FileStorage) lookupTxn(tid zodb.Tid) (int64, error) {
	if s.txnPos == nil {
		m := map[zodb.Tid]int64{}
		end := s.index.TopPos
		for pos := int64(FileHeaderSize); pos < end; {
			th, err := ReadTxnHeader(s.file, pos, end, 0)
			if err != nil {
				return 0, err
			}
			m[th.Tid] = pos
			pos = th.NextPos()
		}
		s.txnPos = m
	}
	return s.txnPos[tid], nil
}

// errTxnNotFound is returned by findTxn.
var errTxnNotFound = errors.New("transaction not found")

// findTxn searches the committed file backwards for transaction tid and
// returns its position; with stopAtPack the search ends at the first
// packed transaction. Call with s.mu held.
func (s *FileStorage) findTxn(tid zodb.Tid, stopAtPack bool) (int64, error) {
	return findTxn(s.file, s.index.TopPos, tid, stopAtPack)
}

func findTxn(r io.ReaderAt, end int64, tid zodb.Tid, stopAtPack bool) (int64, error) {
	pos := end
	for pos > FileHeaderSize {
		h, err := ReadTxnHeaderBefore(r, pos, end, 0)
		if err != nil {
			return 0, err
		}
		if h.Tid == tid {
			return h.Pos, nil
		}
		if stopAtPack && h.Status == zodb.TxnPacked {
			break
		}
		pos = h.Pos
	}
	return 0, errTxnNotFound
}

// findData looks in the transaction at tpos for a record of oid holding
// data (as FileStorage's restore does to write a backpointer instead of the
// data): it returns the record's position when it has the same data or is
// itself a backpointer, else 0.
func (s *FileStorage) findData(tpos int64, oid zodb.Oid, data []byte) (int64, error) {
	return findData(s.file, tpos, s.index.TopPos, oid, data)
}

func findData(r io.ReaderAt, tpos, end int64, oid zodb.Oid, data []byte) (int64, error) {
	th, err := ReadTxnHeader(r, tpos, end, 0)
	if err != nil {
		return 0, err
	}
	for pos := th.DataPos(); pos < th.DataEnd(); {
		dh, err := ReadDataHeader(r, pos, th.DataEnd())
		if err != nil {
			return 0, err
		}
		if dh.Oid == oid {
			if dh.DataLen == 0 {
				return pos, nil
			}
			if dh.DataLen != int64(len(data)) {
				return 0, nil
			}
			d, err := ReadData(r, dh)
			if err != nil {
				return 0, err
			}
			if !bytes.Equal(d, data) {
				return 0, nil
			}
			return pos, nil
		}
		pos += dh.RecLen()
	}
	return 0, nil
}

func (t *txn) Vote(ctx context.Context) ([]zodb.Oid, error) {
	leave, err := t.enter("vote", txnActive)
	if err != nil {
		return nil, err
	}
	defer leave()
	s := t.s
	tlen := t.thl + int64(len(t.buf))
	rec := make([]byte, 0, tlen+8)
	rec = appendTxnHeader(rec, t.tid, tlen, zodb.TxnInprogress, t.meta.User, t.meta.Description, t.meta.Extension)
	rec = append(rec, t.buf...)
	rec = binary.BigEndian.AppendUint64(rec, uint64(tlen))
	if t.tpos+int64(len(rec)) > maxPos {
		return nil, s.opErr("vote", nil, errors.New("file would grow beyond the maximum FileStorage size"))
	}
	_, err = s.file.WriteAt(rec, t.tpos)
	if err == nil {
		err = s.sync()
	}
	if err != nil {
		s.file.Truncate(t.tpos)
		return nil, s.opErr("vote", nil, err)
	}
	t.state = txnVoted
	return t.resolved, nil
}

func (t *txn) Finish(ctx context.Context) (zodb.Tid, error) {
	leave, err := t.enter("finish", txnVoted)
	if err != nil {
		return 0, err
	}
	defer leave()
	s := t.s
	_, err = s.file.WriteAt([]byte{byte(t.status)}, t.tpos+16)
	if err == nil {
		err = s.sync()
	}
	if err != nil {
		// The transaction is not committed: cut it off so that the file
		// stays consistent.
		s.file.Truncate(t.tpos)
		t.state = txnDone
		s.cur = nil
		<-s.commitSem
		return 0, s.opErr("finish", nil, err)
	}
	end := t.tpos + t.thl + int64(len(t.buf)) + 8
	s.mu.Lock()
	for oid, pos := range t.tindex {
		s.index.Set(oid, pos)
	}
	s.index.TopPos = end
	s.mu.Unlock()
	if s.txnPos != nil {
		s.txnPos[t.tid] = t.tpos
	}

	if s.watchq != nil {
		ev := &zodb.CommitEvent{Tid: t.tid, Changed: t.changed}
		select {
		case s.watchq <- ev:
		case <-s.down:
		}
	}
	s.mu.Lock()
	s.lastTid = t.tid
	s.mu.Unlock()
	t.state = txnDone
	s.cur = nil
	<-s.commitSem
	return t.tid, nil
}

func (t *txn) Abort(ctx context.Context) error {
	s := t.s
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.cur != t || t.state == txnDone {
		return nil
	}
	var err error
	if t.state == txnVoted {
		if err = s.file.Truncate(t.tpos); err == nil {
			err = s.sync()
		}
	}
	t.state = txnDone
	s.cur = nil
	<-s.commitSem
	if err != nil {
		return s.opErr("abort", nil, err)
	}
	return nil
}
