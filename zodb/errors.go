package zodb

import (
	"errors"
	"fmt"
)

// Errors returned by storages. Drivers wrap them in *OpError, so test with
// errors.Is / errors.As.

// NoObjectError is ZODB's POSKeyError: the storage has no such object at all.
type NoObjectError struct {
	Oid Oid
}

func (e *NoObjectError) Error() string { return fmt.Sprintf("%v: no such object", e.Oid) }

// NoDataError tells that the object exists, but has no data at the revision
// asked for: it was not yet created (DeletedAt == 0), or it was deleted (or
// its creation undone) by transaction DeletedAt.
type NoDataError struct {
	Oid       Oid
	DeletedAt Tid
}

func (e *NoDataError) Error() string {
	if e.DeletedAt == 0 {
		return fmt.Sprintf("%v: object not yet created", e.Oid)
	}
	return fmt.Sprintf("%v: object deleted at %v", e.Oid, e.DeletedAt)
}

// ConflictError is a write conflict: a transaction stored Oid based on
// revision ReadSerial, but the committed revision is CommittedSerial.
// Like ZODB's ConflictError it is transient: the transaction may be retried.
type ConflictError struct {
	Oid             Oid
	CommittedSerial Tid
	ReadSerial      Tid
	Msg             string // optional detail (e.g. why resolution failed)
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("database conflict error (oid %v, serial this txn started with %v, serial currently committed %v)",
		e.Oid, e.ReadSerial, e.CommittedSerial)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// ReadConflictError tells that an object the transaction read (and asked to
// stay current with CheckCurrentSerial) was changed by another transaction.
type ReadConflictError struct {
	Oid             Oid
	CommittedSerial Tid
	ReadSerial      Tid
}

// Transient tells that the transaction may succeed if retried.
func (e *ConflictError) Transient() bool { return true }

// Transient tells that the transaction may succeed if retried.
func (e *ReadConflictError) Transient() bool { return true }

func (e *ReadConflictError) Error() string {
	return fmt.Sprintf("database read conflict error (oid %v, serial read %v, serial currently committed %v)",
		e.Oid, e.ReadSerial, e.CommittedSerial)
}

// UndoError tells why a transaction cannot be undone.
type UndoError struct {
	Oid    Oid // InvalidOid when not about one object
	Reason string
}

func (e *UndoError) Error() string {
	if e.Oid == InvalidOid {
		return "undo: " + e.Reason
	}
	return fmt.Sprintf("undo: %v: %s", e.Oid, e.Reason)
}

// TransactionError reports a misuse of the two-phase commit protocol: a
// store outside of a transaction, a vote twice, a call after abort, ...
// (ZODB's StorageTransactionError).
type TransactionError struct {
	Msg string
}

func (e *TransactionError) Error() string { return "transaction error: " + e.Msg }

var (
	// ErrReadOnly is returned for a write to a storage opened read-only.
	ErrReadOnly = errors.New("storage is read-only")
	// ErrUnsupported is returned for an operation the driver does not have.
	ErrUnsupported = errors.New("operation not supported by this storage")
	// ErrClosed is returned by a storage that was closed.
	ErrClosed = errors.New("storage closed")
)

// OpError wraps the error of a storage operation with where it happened.
type OpError struct {
	URL  string // storage
	Op   string // operation, e.g. "load"
	Args any    // its arguments, e.g. an Xid; may be nil
	Err  error
}

func (e *OpError) Error() string {
	s := e.URL + ": " + e.Op
	if e.Args != nil {
		s += fmt.Sprintf(" %v", e.Args)
	}
	return s + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }
