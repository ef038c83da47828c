package fs1

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Undo undoes transaction undoTid in this transaction, as FileStorage's
// transactional undo: every record of undoTid is reverted by a record
// pointing back to the data of its previous revision (a zero backpointer when
// the record created the object). When the object changed since, the undo is
// still possible if the current revision has the same data, or if the
// conflict resolver merges the change; otherwise it fails with *UndoError
// (one per object, joined).
func (t *txn) Undo(ctx context.Context, undoTid zodb.Tid) ([]zodb.Oid, error) {
	leave, err := t.enter("undo", txnActive)
	if err != nil {
		return nil, err
	}
	defer leave()
	s := t.s
	type rec struct {
		oid  zodb.Oid
		prev int64
		data []byte
		back int64
	}
	var recs []rec
	var failed []zodb.Oid
	failures := map[zodb.Oid]error{}
	err = func() error {
		s.mu.RLock()
		defer s.mu.RUnlock()
		tpos, err := s.findTxn(undoTid, true)
		if errors.Is(err, errTxnNotFound) {
			return &zodb.UndoError{Oid: zodb.InvalidOid, Reason: fmt.Sprintf("invalid transaction id %v", undoTid)}
		}
		if err != nil {
			return err
		}
		th, err := ReadTxnHeader(s.file, tpos, s.index.TopPos, 0)
		if err != nil {
			return err
		}
		if th.Status != zodb.TxnComplete {
			return &zodb.UndoError{Oid: zodb.InvalidOid, Reason: "non-undoable transaction"}
		}
		for pos := th.DataPos(); pos < th.DataEnd(); {
			dh, err := ReadDataHeader(s.file, pos, th.DataEnd())
			if err != nil {
				return err
			}
			delete(failures, dh.Oid) // a later record of the same object may succeed
			data, back, err := t.undoRecord(ctx, dh)
			if err != nil {
				var ue *zodb.UndoError
				if !errors.As(err, &ue) {
					return err
				}
				if _, ok := failures[dh.Oid]; !ok {
					failed = append(failed, dh.Oid)
				}
				failures[dh.Oid] = err
			} else {
				ipos, _ := s.index.Get(dh.Oid)
				recs = append(recs, rec{dh.Oid, ipos, data, back})
			}
			pos += dh.RecLen()
		}
		return nil
	}()
	if err == nil && len(failures) > 0 {
		var errs []error
		for _, oid := range failed {
			if e, ok := failures[oid]; ok {
				errs = append(errs, e)
			}
		}
		err = errors.Join(errs...)
	}
	if err != nil {
		return nil, s.opErr("undo", undoTid, err)
	}
	var oids []zodb.Oid
	seen := map[zodb.Oid]bool{}
	for _, r := range recs {
		t.appendRecord(r.oid, r.prev, r.data, r.back)
		if !seen[r.oid] {
			seen[r.oid] = true
			oids = append(oids, r.oid)
		}
	}
	return oids, nil
}

// undoRecord computes the record that undoes dh: data, or a backpointer
// when data is nil (0 for "the object does not exist"). Call with s.mu held.
func (t *txn) undoRecord(ctx context.Context, dh *DataHeader) (data []byte, back int64, err error) {
	s := t.s
	oid := dh.Oid
	undoErr := func(reason string) error { return &zodb.UndoError{Oid: oid, Reason: reason} }
	tpos := t.tindex[oid]
	ipos, _ := s.index.Get(oid)
	tipos := tpos
	if tipos == 0 {
		tipos = ipos
	}
	canCopy := true
	var ctid zodb.Tid
	var cdata []byte
	if tipos != dh.Pos {
		// A later transaction (or this one) changed the object; it may
		// still point to the same data.
		var cdataptr int64
		if tpos != 0 {
			off := tpos - t.tpos - t.thl
			if off < 0 || off+DataHeaderSize+8 > int64(len(t.buf)) {
				return nil, 0, fmt.Errorf("undo: staged record of %v out of range", oid)
			}
			r := t.buf[off:]
			ctid = zodb.Tid(binary.BigEndian.Uint64(r[8:]))
			plen := int64(binary.BigEndian.Uint64(r[34:]))
			if plen > 0 {
				cdataptr = tpos
				cdata = r[DataHeaderSize : DataHeaderSize+plen]
			} else {
				cdataptr = int64(binary.BigEndian.Uint64(r[DataHeaderSize:]))
			}
		} else {
			ch, err := ReadDataHeader(s.file, ipos, s.index.TopPos)
			if err != nil {
				return nil, 0, err
			}
			if ch.Oid != oid {
				return nil, 0, undoErr("invalid undo transaction id")
			}
			ctid = ch.Tid
			if ch.DataLen > 0 {
				cdataptr = ipos
				if cdata, err = ReadData(s.file, ch); err != nil {
					return nil, 0, err
				}
			} else {
				cdataptr = ch.BackPos
			}
		}
		if cdataptr != dh.Pos {
			same := false
			if cdataptr != tipos {
				p1, err1 := s.dataPos(oid, dh.Pos)
				p2, err2 := s.dataPos(oid, cdataptr)
				if err1 != nil || err2 != nil {
					return nil, 0, undoErr("cannot find the data of the current or undone revision")
				}
				same = p1 == p2
			}
			if !same {
				if dh.PrevPos != 0 && tpos == 0 {
					canCopy = false // try conflict resolution
				} else {
					return nil, 0, undoErr("no previous record")
				}
			}
		}
	}
	if dh.PrevPos == 0 {
		return nil, 0, nil // undo of the creation
	}
	if canCopy {
		return nil, dh.PrevPos, nil
	}
	ph, err := ReadDataHeader(s.file, dh.PrevPos, dh.Pos)
	if err != nil {
		return nil, 0, err
	}
	bdata, _, err := LoadData(s.file, ph)
	if err != nil || bdata == nil {
		return nil, 0, undoErr("cannot load the revision to go back to")
	}
	if s.resolver != nil {
		old, err1 := t.loadSerial(oid, dh.Tid)
		committed := cdata
		var err2 error
		if committed == nil {
			committed, err2 = t.loadSerial(oid, ctid)
		}
		if err1 == nil && err2 == nil {
			merged, err := s.resolver(ctx, oid, old, committed, bdata)
			if err == nil && len(merged) > 0 {
				return merged, 0, nil
			}
		}
	}
	return nil, 0, undoErr("some data were modified by a later transaction")
}

// dataPos returns the position of the record holding the data reached from
// the record at pos (following backpointers); an error for a deletion.
func (s *FileStorage) dataPos(oid zodb.Oid, pos int64) (int64, error) {
	if pos == 0 {
		return 0, &zodb.NoDataError{Oid: oid}
	}
	dh, err := ReadDataHeader(s.file, pos, s.index.TopPos)
	if err != nil {
		return 0, err
	}
	if dh.Oid != oid {
		return 0, fmtErr(pos, nil, "record of %v where %v was expected", dh.Oid, oid)
	}
	p, err := dataPosOf(s.file, dh)
	if err != nil {
		return 0, err
	}
	if p == 0 {
		return 0, &zodb.NoDataError{Oid: oid}
	}
	return p, nil
}

// UndoLog returns the undoable transactions, newest first: those with status
// ' ', down to the first packed one. It skips the first `first` entries
// (counted after filter) and returns at most last-first, or -last when
// last < 0.
func (s *FileStorage) UndoLog(ctx context.Context, first, last int, filter func(*zodb.UndoInfo) bool) ([]zodb.UndoInfo, error) {
	if last < 0 {
		last = first - last
	}
	if err := s.rlock(); err != nil {
		return nil, s.opErr("undoLog", nil, err)
	}
	defer s.mu.RUnlock()
	var v []zodb.UndoInfo
	i := 0
	pos := s.index.TopPos
	for n := 0; i < last && pos > FileHeaderSize; n++ {
		if n%1024 == 1023 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		th, err := ReadTxnHeaderBefore(s.file, pos, s.index.TopPos, LoadMeta)
		if err != nil {
			return nil, s.opErr("undoLog", nil, err)
		}
		pos = th.Pos
		if th.Status == zodb.TxnPacked {
			break
		}
		if th.Status != zodb.TxnComplete {
			continue
		}
		u := zodb.UndoInfo{TxnInfo: *th.Info(), Size: th.Len}
		if filter == nil || filter(&u) {
			if i >= first {
				v = append(v, u)
			}
			i++
		}
	}
	return v, nil
}
