package zodb

import (
	"context"
	"log/slog"
)

// TxnStatus is the status byte of a transaction record.
type TxnStatus byte

const (
	TxnComplete   TxnStatus = ' ' // committed
	TxnPacked     TxnStatus = 'p' // committed, rewritten by pack
	TxnInprogress TxnStatus = 'c' // voted but not finished (never reported as committed)
	TxnUndone     TxnStatus = 'u' // legacy undone mark
)

// TxnInfo is the metadata of a committed transaction.
type TxnInfo struct {
	Tid         Tid
	Status      TxnStatus
	User        []byte
	Description []byte
	// Extension is the raw extension: empty, or a pickle of a dict (see
	// DecodeExtension). It is kept as bytes so that it survives copying
	// byte for byte.
	Extension []byte
}

// DataInfo is one object record of a transaction, as iteration yields it.
type DataInfo struct {
	Oid Oid
	Tid Tid // serial: the tid of the transaction holding this record
	// Data is the object record (class pickle + state pickle), or nil when
	// the record deletes the object (or undoes its creation).
	Data []byte
	// DataTid is, for a record that reuses the data of an older revision
	// (FileStorage backpointer, written by undo and restore), the tid of
	// that revision; 0 otherwise.
	DataTid Tid
}

// HistoryEntry is one revision of an object, as History returns it.
type HistoryEntry struct {
	TxnInfo
	Size int // length of the revision's data as stored
}

// UndoInfo describes a transaction that may be undone.
type UndoInfo struct {
	TxnInfo
	Size int64 // size of the transaction's record
}

// TxnMeta is what a committer gives at the start of a transaction.
type TxnMeta struct {
	User        []byte
	Description []byte
	Extension   []byte // raw extension (pickled dict or empty)

	// Tid, if not 0, is the tid to commit under, as copy and restore
	// tools do; the storage then does no ordering check of its own beyond
	// requiring it to be after its last tid. 0 lets the storage allocate
	// one at Vote/Finish.
	Tid Tid
	// Status, if not 0, is the status to record (e.g. TxnPacked when
	// restoring a packed transaction).
	Status TxnStatus
}

// CommitEvent is sent to watchers for every committed transaction, in tid
// order, including the transactions committed through the same storage.
type CommitEvent struct {
	Tid     Tid
	Changed []Oid // objects created, modified or deleted
}

// Event is what a watcher receives: *CommitEvent, or *EventError when the
// storage can no longer tell what changed (watchers must then drop all they
// cached, as ZODB's invalidateCache).
type Event interface{ event() }

func (*CommitEvent) event() {}
func (*EventError) event()  {}

// EventError reports that the event stream broke.
type EventError struct{ Err error }

func (e *EventError) Error() string { return "watch: " + e.Err.Error() }
func (e *EventError) Unwrap() error { return e.Err }

// Loader loads object revisions.
type Loader interface {
	// Load returns the revision of xid.Oid that was current at xid.At:
	// the newest one with serial ≤ xid.At. It returns the data, its serial,
	// and the serial of the next revision when the driver knows it (0 when
	// the revision is the current one or the driver does not know).
	//
	// Errors: *NoObjectError if the object never existed, *NoDataError if
	// at xid.At the object was not yet created or was deleted.
	Load(ctx context.Context, xid Xid) (data []byte, serial, nextSerial Tid, err error)
}

// ITxnIterator walks committed transactions in tid order.
type ITxnIterator interface {
	// NextTxn returns the next transaction and an iterator over its
	// records, or io.EOF at the end. The record iterator is valid until
	// the next call to NextTxn.
	NextTxn(ctx context.Context) (*TxnInfo, IDataIterator, error)
}

// IDataIterator walks the records of one transaction in stored order.
type IDataIterator interface {
	// NextData returns the next record or io.EOF at the end.
	NextData(ctx context.Context) (*DataInfo, error)
}

// IStorageDriver is what a storage driver implements (like
// database/sql/driver): the operations every storage has. Optional ones
// are in IUndoer and IPacker.
//
// Every method may be called from several goroutines at once.
type IStorageDriver interface {
	Loader

	// URL returns the address the storage was opened with.
	URL() string

	// Close releases the storage. Pending operations fail with ErrClosed.
	Close() error

	// LastTid returns the tid of the last committed transaction (0 if
	// none). It never goes backwards, and never reports a tid whose
	// CommitEvent was not yet queued to the watch channel.
	LastTid(ctx context.Context) (Tid, error)

	// NewOids allocates n new object ids.
	NewOids(ctx context.Context, n int) ([]Oid, error)

	// History returns up to size revisions of oid, newest first (all of
	// them when size ≤ 0).
	History(ctx context.Context, oid Oid, size int) ([]HistoryEntry, error)

	// Iterate returns an iterator over the transactions with
	// tidMin ≤ tid ≤ tidMax.
	Iterate(ctx context.Context, tidMin, tidMax Tid) ITxnIterator

	// Begin starts a two-phase commit. It may block while another
	// transaction holds the storage's commit lock.
	Begin(ctx context.Context, meta TxnMeta) (ITxn, error)
}

// ITxn is one transaction being committed (two-phase commit).
//
// The calls go: Store/Delete/CheckCurrentSerial/Restore/Undo any number of
// times, then Vote, then Finish; Abort may be called at any point before
// Finish returns (and after a failed call). A call out of this order
// returns *TransactionError. Store and CheckCurrentSerial may report their
// conflicts at once or only at Vote.
type ITxn interface {
	// Store writes a new revision of oid. serial is the serial the
	// transaction read the object at (0 for a new object). If it is not
	// the committed serial, the storage tries conflict resolution (see
	// ConflictResolver) and fails with *ConflictError if it cannot.
	// The storage does not keep data after Store returns: the caller may
	// reuse the buffer.
	Store(ctx context.Context, oid Oid, serial Tid, data []byte) error

	// Delete writes a revision of oid that deletes it (ZODB's
	// deleteObject); serial must be the current serial.
	Delete(ctx context.Context, oid Oid, serial Tid) error

	// CheckCurrentSerial requires that oid is still at serial when the
	// transaction commits, else the commit fails with *ReadConflictError.
	CheckCurrentSerial(ctx context.Context, oid Oid, serial Tid) error

	// Restore writes a revision without conflict checks, as copy and
	// restore tools do. data nil with dataTid 0 writes a deletion; if
	// dataTid is not 0, it names a revision of oid holding the same data,
	// which the storage may reference instead of writing data again.
	Restore(ctx context.Context, oid Oid, data []byte, dataTid Tid) error

	// Undo undoes transaction undoTid in this transaction and returns the
	// objects it changes. A driver that learns them only when voting (ZEO)
	// returns nil here and includes them in Vote's result. Storages without
	// undo return ErrUnsupported.
	Undo(ctx context.Context, undoTid Tid) ([]Oid, error)

	// Vote makes the transaction durable-pending: after Vote succeeds,
	// Finish cannot fail for reasons of data. It returns the oids whose
	// stored data differs from what the caller gave (conflicts the storage
	// resolved, and objects of an Undo that did not report them), which
	// the caller must reload.
	Vote(ctx context.Context) (resolved []Oid, err error)

	// Finish commits and returns the transaction's tid.
	Finish(ctx context.Context) (Tid, error)

	// Abort discards the transaction. It is a no-op after Finish or Abort.
	Abort(ctx context.Context) error
}

// IUndoer is implemented by drivers that can undo transactions.
type IUndoer interface {
	// UndoLog returns descriptions of undoable transactions, newest first,
	// skipping the first `first` ones and returning at most last-first
	// (or -last when last < 0). filter, if not nil, selects entries.
	UndoLog(ctx context.Context, first, last int, filter func(*UndoInfo) bool) ([]UndoInfo, error)
}

// IPacker is implemented by drivers that can pack.
type IPacker interface {
	// Pack removes revisions that are not current at packTid, and with gc
	// also every object not reachable from the root (oid 0) at packTid.
	// Transactions up to packTid that remain are reported with status
	// TxnPacked afterwards, and UndoLog does not go past them.
	Pack(ctx context.Context, packTid Tid, gc bool) error
}

// ConflictResolver merges concurrent changes of one object: given the state
// the transaction started from (old), the committed one and the one the
// transaction wants to store (new), all as object records, it returns the
// merged record or an error when the changes cannot be merged. Storages
// call it when a Store finds a stale serial (ZODB's _p_resolveConflict).
type ConflictResolver func(ctx context.Context, oid Oid, old, committed, new []byte) ([]byte, error)

// DriverOptions is what a driver is opened with.
type DriverOptions struct {
	ReadOnly bool
	// NoCreate makes Open fail when the storage does not exist, instead of
	// creating it (FileStorage: a new file).
	NoCreate bool
	// Watchq, if not nil, receives a CommitEvent for every transaction
	// committed after the tid Open returns (the head at open), in tid
	// order, or an EventError. The driver blocks on it: the receiver
	// must keep reading until Close.
	Watchq chan<- Event
	// Resolver, if not nil, is called on write conflicts.
	Resolver ConflictResolver
	// Logger, if not nil, receives the driver's warnings (damaged data
	// skipped, index rebuilt, ...); slog.Default() otherwise.
	Logger *slog.Logger
}
