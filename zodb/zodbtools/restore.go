package zodbtools

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/neozodb/neo/zodb"
)

// Storage is what Restore and Commit need of a storage.
type Storage interface {
	zodb.Loader
	Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error)
}

// RestoreTxn re-creates txn in stor with its original tid, status and
// metadata. Data entries are restored as they are, "from <tid>" entries
// reuse the data of revision <tid> (the storage may reference it instead of
// copying), "delete" entries write a deletion. It returns the committed tid.
func RestoreTxn(ctx context.Context, stor Storage, txn *DumpTxn) (_ zodb.Tid, err error) {
	t, err := stor.Begin(ctx, zodb.TxnMeta{
		Tid:         txn.Tid,
		Status:      txn.Status,
		User:        txn.User,
		Description: txn.Description,
		Extension:   txn.Extension,
	})
	if err != nil {
		return 0, fmt.Errorf("restore txn %v: %w", txn.Tid, err)
	}
	defer func() {
		if err != nil {
			t.Abort(ctx)
			err = fmt.Errorf("restore txn %v: %w", txn.Tid, err)
		}
	}()
	for i := range txn.Objs {
		o := &txn.Objs[i]
		switch o.Kind {
		case ObjDelete:
			err = t.Restore(ctx, o.Oid, nil, 0)
		case ObjCopy:
			var data []byte
			data, err = loadExact(ctx, stor, o.Oid, o.CopyFrom)
			if err == nil {
				err = t.Restore(ctx, o.Oid, data, o.CopyFrom)
			}
		default:
			if o.HashOnly {
				return 0, fmt.Errorf("obj %v: %w", o.Oid, errHashOnly)
			}
			data := o.Data
			if data == nil {
				data = []byte{}
			}
			err = t.Restore(ctx, o.Oid, data, 0)
		}
		if err != nil {
			return 0, err
		}
	}
	if _, err = t.Vote(ctx); err != nil {
		return 0, err
	}
	return t.Finish(ctx)
}

// loadExact loads the data of the revision of oid written by tid.
func loadExact(ctx context.Context, stor zodb.Loader, oid zodb.Oid, tid zodb.Tid) ([]byte, error) {
	data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: tid})
	if err != nil {
		return nil, fmt.Errorf("copy of %v: %w", zodb.Xid{Oid: oid, At: tid}, err)
	}
	if serial != tid {
		return nil, fmt.Errorf("copy of %v: no revision written by %v (found %v)", oid, tid, serial)
	}
	return data, nil
}

// Restore reads a dump from r and restores every transaction in stor,
// calling restored (if not nil) after each one.
func Restore(ctx context.Context, stor Storage, r io.Reader, name string, restored func(zodb.Tid) error) error {
	zr := NewDumpReader(r, name)
	for {
		txn, err := zr.ReadTxn()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		tid, err := RestoreTxn(ctx, stor, txn)
		if err != nil {
			return err
		}
		if restored != nil {
			if err := restored(tid); err != nil {
				return err
			}
		}
	}
}

// Commit commits txn (its tid and status are ignored) as a new transaction
// based on the database view at `at`: each object is stored with the serial
// it had at `at`, so that a concurrent change is a conflict. "from <tid>"
// copies the data of that revision, "delete" deletes the object. It
// returns the new tid.
func Commit(ctx context.Context, stor Storage, at zodb.Tid, txn *DumpTxn) (_ zodb.Tid, err error) {
	t, err := stor.Begin(ctx, zodb.TxnMeta{
		User:        txn.User,
		Description: txn.Description,
		Extension:   txn.Extension,
	})
	if err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort(ctx)
			err = fmt.Errorf("commit: %w", err)
		}
	}()
	for i := range txn.Objs {
		o := &txn.Objs[i]
		var data []byte
		switch o.Kind {
		case ObjCopy:
			if data, err = loadExact(ctx, stor, o.Oid, o.CopyFrom); err != nil {
				return 0, err
			}
		case ObjData:
			if o.HashOnly {
				return 0, fmt.Errorf("obj %v: %w", o.Oid, errHashOnly)
			}
			data = o.Data
			if data == nil {
				data = []byte{}
			}
		}
		serial, err := serialAt(ctx, stor, o.Oid, at)
		if err != nil {
			return 0, err
		}
		if o.Kind == ObjDelete {
			err = t.Delete(ctx, o.Oid, serial)
		} else {
			err = t.Store(ctx, o.Oid, serial, data)
		}
		if err != nil {
			return 0, err
		}
	}
	if _, err = t.Vote(ctx); err != nil {
		return 0, err
	}
	return t.Finish(ctx)
}

// serialAt returns the serial of oid as of at, 0 if it did not exist.
func serialAt(ctx context.Context, stor zodb.Loader, oid zodb.Oid, at zodb.Tid) (zodb.Tid, error) {
	_, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: at})
	var noObj *zodb.NoObjectError
	var noData *zodb.NoDataError
	switch {
	case err == nil:
		return serial, nil
	case errors.As(err, &noObj):
		return 0, nil
	case errors.As(err, &noData):
		return noData.DeletedAt, nil
	}
	return 0, err
}
