// Package transaction coordinates the commit of changes made in several
// data managers (for ZODB: the connections of one or more databases) as
// one atomic transaction, with ZODB's two-phase commit protocol: either
// every data manager commits, or none does.
//
// A transaction travels in a context:
//
//	txn, ctx := transaction.New(ctx)
//	conn, err := db.Open(ctx) // the connection joins txn
//	... change objects ...
//	err = txn.Commit(ctx)
//
// Commit runs the before-commit hooks, then, over the joined data managers
// sorted by SortKey: TPCBegin on all, Commit on all, TPCVote on all,
// TPCFinish on all. A failure before every vote succeeded aborts all of
// them (TPCAbort on those that began, Abort on the others) and Commit
// returns the error. Retry runs a function in new transactions until it
// commits, retrying on transient errors (conflicts).
package transaction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
)

// DataManager is a participant of a transaction.
type DataManager interface {
	// SortKey orders data managers in a commit; it must be unique and
	// stable (ZODB uses the storage's sortKey).
	SortKey() string
	// Abort discards the changes when the transaction is aborted
	// outside of a commit.
	Abort(ctx context.Context, txn *Transaction) error
	// TPCBegin starts the two-phase commit.
	TPCBegin(ctx context.Context, txn *Transaction) error
	// Commit hands the changes to the storage.
	Commit(ctx context.Context, txn *Transaction) error
	// TPCVote makes sure the changes can be committed: after a
	// successful vote, TPCFinish must not fail for reasons of data.
	TPCVote(ctx context.Context, txn *Transaction) error
	// TPCFinish makes the changes permanent.
	TPCFinish(ctx context.Context, txn *Transaction) error
	// TPCAbort discards the changes after TPCBegin.
	TPCAbort(ctx context.Context, txn *Transaction) error
}

// Synchronizer may be implemented by a data manager to learn when the
// transaction is over (committed or aborted), e.g. to release resources.
type Synchronizer interface {
	AfterCompletion(txn *Transaction)
}

// Status is where a transaction is in its life.
type Status int

const (
	Active     Status = iota // changes may be made
	Committing               // Commit is running
	Committed                // committed
	Aborted                  // aborted, or its commit failed
)

func (s Status) String() string {
	switch s {
	case Active:
		return "active"
	case Committing:
		return "committing"
	case Committed:
		return "committed"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// ExtensionItem is one item of a transaction's extension metadata.
type ExtensionItem struct {
	Key   string
	Value any
}

// Transaction is one unit of atomic change.
type Transaction struct {
	mu          sync.Mutex
	status      Status
	dms         []DataManager
	beforeHooks []func(ctx context.Context, txn *Transaction) error
	afterHooks  []func(ctx context.Context, txn *Transaction, ok bool)
	user        string
	description string
	extension   []ExtensionItem
	savepoints  int // how many savepoints can be rolled back to
}

type ctxKey struct{}

// New creates a transaction and returns it with a context that carries it.
func New(ctx context.Context) (*Transaction, context.Context) {
	txn := &Transaction{}
	return txn, context.WithValue(ctx, ctxKey{}, txn)
}

// Current returns the transaction ctx carries, or nil.
func Current(ctx context.Context) *Transaction {
	txn, _ := ctx.Value(ctxKey{}).(*Transaction)
	return txn
}

// Status returns the transaction's status.
func (t *Transaction) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

// Join adds a data manager to the transaction. Joining twice is a no-op.
func (t *Transaction) Join(dm DataManager) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status != Active {
		return fmt.Errorf("transaction: join: transaction is %v", t.status)
	}
	for _, d := range t.dms {
		if d == dm {
			return nil
		}
	}
	t.dms = append(t.dms, dm)
	return nil
}

// SetUser sets the user recorded with the transaction; ZODB joins path
// and user with a space ("/ erin").
func (t *Transaction) SetUser(user, path string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.user = path + " " + user
}

// User returns the user recorded with the transaction.
func (t *Transaction) User() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.user
}

// Note appends a line to the transaction's description.
func (t *Transaction) Note(text string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.description != "" {
		t.description += "\n"
	}
	t.description += text
}

// Description returns the transaction's description.
func (t *Transaction) Description() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.description
}

// SetExtension sets an item of the extension metadata (kept in the order
// items were first set).
func (t *Transaction) SetExtension(key string, value any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.extension {
		if t.extension[i].Key == key {
			t.extension[i].Value = value
			return
		}
	}
	t.extension = append(t.extension, ExtensionItem{key, value})
}

// Extension returns the extension metadata.
func (t *Transaction) Extension() []ExtensionItem {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]ExtensionItem(nil), t.extension...)
}

// AddBeforeCommitHook registers f to run at the start of Commit, before
// the two-phase commit; an error from it aborts the transaction.
func (t *Transaction) AddBeforeCommitHook(f func(ctx context.Context, txn *Transaction) error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.beforeHooks = append(t.beforeHooks, f)
}

// AddAfterCommitHook registers f to run at the end of Commit, with ok
// telling whether the transaction committed.
func (t *Transaction) AddAfterCommitHook(f func(ctx context.Context, txn *Transaction, ok bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.afterHooks = append(t.afterHooks, f)
}

// start moves an active transaction to status s and returns its data
// managers, sorted.
func (t *Transaction) start(s Status) ([]DataManager, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status != Active {
		return nil, fmt.Errorf("transaction is %v", t.status)
	}
	t.status = s
	dms := append([]DataManager(nil), t.dms...)
	sort.SliceStable(dms, func(i, j int) bool { return dms[i].SortKey() < dms[j].SortKey() })
	return dms, nil
}

func (t *Transaction) end(s Status, dms []DataManager) {
	t.mu.Lock()
	t.status = s
	t.mu.Unlock()
	for _, dm := range dms {
		if sy, ok := dm.(Synchronizer); ok {
			sy.AfterCompletion(t)
		}
	}
}

// Abort discards the changes of every data manager.
func (t *Transaction) Abort(ctx context.Context) error {
	dms, err := t.start(Aborted)
	if err != nil {
		return fmt.Errorf("transaction: abort: %w", err)
	}
	var errs []error
	for _, dm := range dms {
		if err := dm.Abort(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dm.SortKey(), err))
		}
	}
	t.end(Aborted, dms)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("transaction: abort: %w", err)
	}
	return nil
}

// Commit commits the changes of every data manager, or of none. On
// failure the transaction is aborted and the error is returned.
func (t *Transaction) Commit(ctx context.Context) (err error) {
	t.mu.Lock()
	hooks := t.beforeHooks
	t.mu.Unlock()
	for _, h := range hooks {
		if err := h(ctx, t); err != nil {
			_ = t.Abort(ctx)
			t.runAfterHooks(ctx, false)
			return fmt.Errorf("transaction: before-commit hook: %w", err)
		}
	}
	dms, err := t.start(Committing)
	if err != nil {
		return fmt.Errorf("transaction: commit: %w", err)
	}
	err = t.commit2PC(ctx, dms)
	if err != nil {
		t.end(Aborted, dms)
	} else {
		t.end(Committed, dms)
	}
	t.runAfterHooks(ctx, err == nil)
	return err
}

func (t *Transaction) runAfterHooks(ctx context.Context, ok bool) {
	t.mu.Lock()
	hooks := t.afterHooks
	t.mu.Unlock()
	for _, h := range hooks {
		h(ctx, t, ok)
	}
}

func (t *Transaction) commit2PC(ctx context.Context, dms []DataManager) error {
	begun := 0
	fail := func(phase string, dm DataManager, err error) error {
		// Those that began the two-phase commit get TPCAbort, the
		// others Abort: nothing of this transaction remains anywhere.
		for i, d := range dms {
			var aerr error
			if i < begun {
				aerr = d.TPCAbort(ctx, t)
			} else {
				aerr = d.Abort(ctx, t)
			}
			if aerr != nil {
				slog.Error("transaction: abort after failed commit", "dm", d.SortKey(), "err", aerr)
			}
		}
		return fmt.Errorf("transaction: %s %s: %w", phase, dm.SortKey(), err)
	}
	for _, dm := range dms {
		if err := dm.TPCBegin(ctx, t); err != nil {
			return fail("tpc_begin", dm, err)
		}
		begun++
	}
	for _, dm := range dms {
		if err := dm.Commit(ctx, t); err != nil {
			return fail("commit", dm, err)
		}
	}
	for _, dm := range dms {
		if err := dm.TPCVote(ctx, t); err != nil {
			return fail("tpc_vote", dm, err)
		}
	}
	// Every data manager voted yes: finishing cannot be refused any
	// more. An error now means a data manager could not make durable
	// what it promised; the others are finished all the same (ZODB
	// raises it as a "heuristic" error).
	var errs []error
	for _, dm := range dms {
		if err := dm.TPCFinish(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dm.SortKey(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &HeuristicError{Err: err}
	}
	return nil
}

// HeuristicError is returned by Commit when a data manager failed to
// finish after every data manager voted: the transaction may be committed
// in some of them and not in others.
type HeuristicError struct{ Err error }

func (e *HeuristicError) Error() string {
	return "transaction: finish failed after a successful vote: " + e.Err.Error()
}
func (e *HeuristicError) Unwrap() error { return e.Err }

// IsTransient tells whether err (or an error it wraps) is transient: a
// transaction failing with it may succeed if run again (ZODB's
// TransientError, e.g. conflicts). Such errors have a method
// Transient() bool returning true.
func IsTransient(err error) bool {
	var t interface{ Transient() bool }
	return errors.As(err, &t) && t.Transient()
}

// Retry runs f in a new transaction and commits it, up to attempts times
// while f or the commit fails with a transient error. If f fails, the
// transaction is aborted. It returns the last error.
func Retry(ctx context.Context, attempts int, f func(ctx context.Context, txn *Transaction) error) error {
	var err error
	for i := 0; i < max(attempts, 1); i++ {
		if cerr := ctx.Err(); cerr != nil {
			if err == nil {
				err = cerr
			}
			return err
		}
		txn, tctx := New(ctx)
		err = f(tctx, txn)
		if err != nil {
			if txn.Status() == Active {
				if aerr := txn.Abort(tctx); aerr != nil {
					return errors.Join(err, aerr)
				}
			}
		} else {
			err = txn.Commit(tctx)
		}
		if err == nil || !IsTransient(err) {
			return err
		}
	}
	return err
}
