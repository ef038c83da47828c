package transaction

import (
	"context"
	"errors"
	"fmt"
)

// Savepointer is implemented by data managers that support savepoints.
type Savepointer interface {
	// Savepoint records the data manager's changes so far.
	Savepoint(ctx context.Context, txn *Transaction) (DataManagerSavepoint, error)
}

// DataManagerSavepoint brings a data manager back to a savepoint.
type DataManagerSavepoint interface {
	Rollback(ctx context.Context) error
}

// Savepoint is a point in a transaction that its changes can be brought
// back to, without aborting the transaction.
type Savepoint struct {
	txn   *Transaction
	seq   int // position among the transaction's savepoints
	dms   []DataManager
	saved []DataManagerSavepoint
}

// Savepoint records the changes of every data manager so far. Every data
// manager must implement Savepointer.
func (t *Transaction) Savepoint(ctx context.Context) (*Savepoint, error) {
	t.mu.Lock()
	if t.status != Active {
		t.mu.Unlock()
		return nil, fmt.Errorf("transaction: savepoint: transaction is %v", t.status)
	}
	dms := append([]DataManager(nil), t.dms...)
	t.savepoints++
	seq := t.savepoints
	t.mu.Unlock()
	sp := &Savepoint{txn: t, seq: seq, dms: dms}
	for _, dm := range dms {
		s, ok := dm.(Savepointer)
		if !ok {
			return nil, fmt.Errorf("transaction: savepoint: %s does not support savepoints", dm.SortKey())
		}
		dsp, err := s.Savepoint(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("transaction: savepoint: %s: %w", dm.SortKey(), err)
		}
		sp.saved = append(sp.saved, dsp)
	}
	return sp, nil
}

// Rollback discards the changes made since the savepoint; data managers
// that joined after it are aborted. Savepoints taken after this one can no
// longer be rolled back to.
func (sp *Savepoint) Rollback(ctx context.Context) error {
	t := sp.txn
	t.mu.Lock()
	if t.status != Active {
		t.mu.Unlock()
		return fmt.Errorf("transaction: rollback: transaction is %v", t.status)
	}
	if sp.seq > t.savepoints {
		t.mu.Unlock()
		return errors.New("transaction: rollback: savepoint no longer valid (an earlier one was rolled back to)")
	}
	t.savepoints = sp.seq
	var later []DataManager
	for _, dm := range t.dms {
		found := false
		for _, d := range sp.dms {
			if d == dm {
				found = true
				break
			}
		}
		if !found {
			later = append(later, dm)
		}
	}
	t.mu.Unlock()
	var errs []error
	for i, s := range sp.saved {
		if err := s.Rollback(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sp.dms[i].SortKey(), err))
		}
	}
	for _, dm := range later {
		if err := dm.Abort(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dm.SortKey(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("transaction: rollback: %w", err)
	}
	return nil
}
