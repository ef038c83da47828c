package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// Undo undoes transaction undoTid: for every object it changed, the
// storages tell the revision to go back to (AskObjectUndoSerial); objects
// changed since are merged by the conflict resolver, if any.
func (t *txn) Undo(ctx context.Context, undoTid zodb.Tid) ([]zodb.Oid, error) {
	t.mu.Lock()
	err := t.checkActiveLocked("undo")
	t.mu.Unlock()
	if err != nil {
		return nil, t.opError("undo", undoTid, err)
	}
	oids, err := t.undo(ctx, undoTid)
	return oids, t.opError("undo", undoTid, err)
}

func (t *txn) undo(ctx context.Context, undoTid zodb.Tid) ([]zodb.Oid, error) {
	c := t.c
	info, err := c.txnInformation(ctx, undoTid)
	if err != nil {
		if pe := peerError(err); pe != nil && pe.Code == proto.TidNotFound {
			return nil, &zodb.UndoError{Oid: zodb.InvalidOid, Reason: fmt.Sprintf("transaction %v not found", undoTid)}
		}
		return nil, err
	}
	if info.Packed {
		return nil, &zodb.UndoError{Oid: zodb.InvalidOid, Reason: "transaction packed"}
	}
	byPartition := map[int][]zodb.Oid{}
	for _, oid := range info.Oids {
		p, err := c.partition(uint64(oid))
		if err != nil {
			return nil, err
		}
		byPartition[p] = append(byPartition[p], oid)
	}
	snapshot := c.head() + 1
	var serials []proto.UndoSerial
	for p, oids := range byPartition {
		m, err := c.read(ctx, p, &proto.AskObjectUndoSerial{TTid: t.ttid, LTid: snapshot, UndoneTid: undoTid, Oids: oids}, nil)
		if err != nil {
			if pe := peerError(err); pe != nil && pe.Code == proto.OidNotFound {
				return nil, &zodb.UndoError{Oid: zodb.InvalidOid, Reason: "non-undoable transaction"}
			}
			return nil, err
		}
		a, ok := m.(*proto.AnswerObjectUndoSerial)
		if !ok {
			return nil, fmt.Errorf("undo serials: unexpected answer %T", m)
		}
		serials = append(serials, a.Serials...)
	}
	var changed []zodb.Oid
	for _, us := range serials {
		oid := us.Oid
		c.log.Debug("undo serial", "ttid", t.ttid, "undone", undoTid, "oid", oid, "current", us.CurrentSerial, "undo_serial", us.UndoSerial, "is_current", us.IsCurrent, "snapshot", snapshot)
		if us.IsCurrent {
			if us.UndoSerial == zodb.InvalidTid {
				// Undoing the creation: a revision without data.
				err = t.store(ctx, "undo", oid, us.CurrentSerial, nil, objDelete, zodb.InvalidTid)
			} else {
				data, _, lerr := c.loadSerial(ctx, oid, us.UndoSerial)
				if lerr != nil {
					return nil, fmt.Errorf("oid %v: loading the revision to undo to: %w", oid, lerr)
				}
				kind := objStore
				if data == nil {
					kind = objDelete
				}
				err = t.store(ctx, "undo", oid, us.CurrentSerial, data, kind, us.UndoSerial)
				if err == nil && kind == objDelete {
					// A back-pointer to a revision without data is not
					// reported as a deletion.
					t.mu.Lock()
					t.objs[oid].kind = objStore
					t.mu.Unlock()
				}
			}
		} else {
			err = t.undoConflict(ctx, oid, undoTid, us)
		}
		if err != nil {
			return nil, err
		}
		changed = append(changed, oid)
	}
	if err := t.drain(ctx, 0); err != nil {
		return nil, err
	}
	return changed, nil
}

// undoConflict merges the undo of oid's change in undoTid with the changes
// made since.
func (t *txn) undoConflict(ctx context.Context, oid zodb.Oid, undoTid zodb.Tid, us proto.UndoSerial) error {
	c := t.c
	fail := func(reason string) error { return &zodb.UndoError{Oid: oid, Reason: reason} }
	if c.resolver == nil {
		return fail("some data were modified by a later transaction")
	}
	var current []byte
	if us.CurrentSerial == t.ttid {
		t.mu.Lock()
		if o := t.objs[oid]; o != nil {
			current = o.data
		}
		t.mu.Unlock()
	} else {
		d, _, err := c.loadSerial(ctx, oid, us.CurrentSerial)
		if err != nil {
			return fail(fmt.Sprintf("loading the current revision: %v", err))
		}
		current = d
	}
	var undoData []byte
	if us.UndoSerial != zodb.InvalidTid {
		d, _, err := c.loadSerial(ctx, oid, us.UndoSerial)
		if err != nil {
			return fail(fmt.Sprintf("loading the revision to undo to: %v", err))
		}
		undoData = d
	}
	old, _, err := c.loadSerial(ctx, oid, undoTid)
	if err != nil {
		var nd *zodb.NoDataError
		if !errors.As(err, &nd) {
			return fail(fmt.Sprintf("loading the undone revision: %v", err))
		}
	}
	if current == nil || undoData == nil {
		return fail("some data were modified by a later transaction")
	}
	merged, err := c.resolver(ctx, oid, old, current, undoData)
	if err != nil {
		return fail("some data were modified by a later transaction: " + err.Error())
	}
	return t.store(ctx, "undo", oid, us.CurrentSerial, merged, objStore, zodb.InvalidTid)
}
