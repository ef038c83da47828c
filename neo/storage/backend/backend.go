// Package backend defines what a storage node needs from its database: the
// Backend interface, the records it exchanges, and the encodings shared by
// every implementation that keeps NEO/py's schema (version 4).
//
// A storage node owns one Backend. Reads (Load, History, TIDs...) answer
// client and replication requests; the commit path is
//
//	StoreData (per AskStoreObject) → Vote (tobj/ttrans, durable)
//	→ Lock (final tid into ttrans, durable) → Unlock (move to obj/trans)
//
// with Abort dropping a transaction at any point before Unlock. Unlock may
// defer the database commit (NEO/py defers it by up to one second): a crash
// then leaves the transaction locked in ttrans/tobj and the master replays
// it during verification. Commit forces pending work to disk.
//
// Oids and tids are zodb.Oid and zodb.Tid. Partitions are numbered as in the
// partition table: partition(x) = x mod NP, where NP is the number of rows
// of the stored partition table (see package pt).
//
// Implementations: package sqlite (embedded default).
package backend

import (
	"context"
	"errors"
	"fmt"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// SchemaVersion is the NEO/py database schema version implemented here.
const SchemaVersion = 4

// Keys of the config table.
const (
	KeyVersion     = "version"      // schema version, decimal
	KeyName        = "name"         // cluster name
	KeyNID         = "nid"          // node id, decimal (signed)
	KeyPTid        = "ptid"         // last applied partition table id, decimal
	KeyReplicas    = "replicas"     // number of replicas, decimal
	KeyBackupTid   = "backup_tid"   // 16 lowercase hex digits, in backup mode
	KeyTruncateTid = "truncate_tid" // 16 lowercase hex digits, truncation pending
)

// Errors a Backend returns; test with errors.Is.
var (
	// ErrOidDoesNotExist: the oid has no revision at all (OID_DOES_NOT_EXIST).
	ErrOidDoesNotExist = errors.New("oid does not exist")
	// ErrOidNotFound: the oid exists, but not at the asked bound (OID_NOT_FOUND).
	ErrOidNotFound = errors.New("oid not found")
	// ErrTidNotFound: no such transaction (TID_NOT_FOUND).
	ErrTidNotFound = errors.New("tid not found")
	// ErrUndoData: the revision an undo refers to does not exist
	// (UNDO_PACK_ERROR when the partition is readable).
	ErrUndoData = errors.New("undo: referenced revision does not exist (packed?)")
	// ErrClusterName: the database belongs to another cluster.
	ErrClusterName = errors.New("database belongs to another cluster")
	// ErrSchemaVersion: the database has another schema version.
	ErrSchemaVersion = errors.New("unsupported database schema version")
	// ErrUnknownTransaction: no temporary transaction with this ttid.
	ErrUnknownTransaction = errors.New("unknown transaction")
)

// NoData is the data id of a record without data (deletion, undone
// creation): obj.data_id NULL.
const NoData int64 = -1

// Object is one object record as served by AskObject and AddObject.
type Object struct {
	Oid        zodb.Oid
	Serial     zodb.Tid
	NextSerial zodb.Tid // zodb.InvalidTid: Serial is the latest revision
	HasData    bool     // false: a record without data (Checksum zero, Data empty)
	// Compression is 0 (raw) or 1 (zlib) as stored; data is never recompressed.
	Compression uint8
	Checksum    proto.Checksum // SHA-1 of Data as stored
	Data        []byte         // owned by the caller
	DataSerial  zodb.Tid       // undo back-pointer (obj.value_tid); zodb.InvalidTid when none
}

// TObject is one object of a transaction being committed.
type TObject struct {
	Oid        zodb.Oid
	DataID     int64    // from StoreData, or NoData
	DataSerial zodb.Tid // undo back-pointer; zodb.InvalidTid when none
}

// PackOrder is a pack order carried by a transaction (pack table).
type PackOrder struct {
	Approved proto.Opt[bool] // nil: not signed yet
	Partial  bool
	Oids     []zodb.Oid // partial packs only
	PackTid  zodb.Tid
}

// PackOrderID is a pack order with its id (the tid of its transaction).
type PackOrderID struct {
	ID zodb.Tid
	PackOrder
}

// TxnMeta is the metadata of a transaction (trans / ttrans row).
type TxnMeta struct {
	Tid         zodb.Tid // final tid (0 in ttrans until locked)
	TTid        zodb.Tid
	User        []byte
	Description []byte
	Extension   []byte // pickled extension dict, empty if none
	Packed      bool
	Oids        []zodb.Oid
	Pack        *PackOrder // nil: no pack order
}

// HistoryEntry is one revision in an object's history.
type HistoryEntry struct {
	Serial zodb.Tid
	Size   int // length of the stored (possibly compressed) data; 0 without data
}

// Cell is one row of the stored partition table.
type Cell struct {
	Partition uint32
	NID       proto.NodeID
	State     proto.CellState
	// Replicated is, for the node's own OUT_OF_DATE cells, the tid up to
	// which the partition is complete (0 for a new cell).
	Replicated zodb.Tid
	// Pack is the last completed pack id of the node's own cells; HasPack
	// is false for other nodes' cells (pt.pack NULL).
	Pack    zodb.Tid
	HasPack bool
}

// Undo is the answer for one oid of AskObjectUndoSerial.
type Undo struct {
	Current   zodb.Tid // latest revision visible to the undoing transaction
	UndoTo    zodb.Tid // revision holding the data before the undone one; zodb.InvalidTid: creation undone
	IsCurrent bool     // Current's data is the data written by the undone transaction
}

// Backend is a storage node's database. Its methods are safe for concurrent
// use; the implementation serialises them as needed. Every method taking a
// context gives up when it is done, with its error.
type Backend interface {
	// Close commits pending work and closes the database.
	Close() error
	// Commit makes everything done so far durable.
	Commit(ctx context.Context) error

	// Config returns the value of a config key and whether it is set.
	Config(ctx context.Context, key string) (string, bool, error)
	// SetConfig sets (ok) or deletes (!ok) a config key.
	SetConfig(ctx context.Context, key, value string, ok bool) error

	// PartitionTable returns the stored cells, ordered by partition then nid.
	PartitionTable(ctx context.Context) ([]Cell, error)
	// ChangePartitionTable applies cell changes (reset: the cells replace
	// the whole table) and records ptid and replicas. Cells of the node's
	// own id get pack ids: 0 for readable new cells, lastPackID for new
	// OUT_OF_DATE ones.
	ChangePartitionTable(ctx context.Context, ptid proto.PTid, replicas int, changes []proto.CellChange, reset bool, lastPackID zodb.Tid) error
	// SetReplicated records the replication progress of an own
	// OUT_OF_DATE cell (ignored for other cells).
	SetReplicated(ctx context.Context, partition uint32, tid zodb.Tid) error
	// NP returns the number of partitions of the stored table (0: none).
	NP() int

	// LastIDs returns, for a partition, the greatest tid (of trans and obj)
	// and the greatest oid; ok false if the partition is empty.
	LastIDs(ctx context.Context, partition uint32) (lastTid zodb.Tid, lastOid zodb.Oid, ok bool, err error)
	// FirstTid returns the smallest committed tid of a partition, or
	// zodb.TidMax when none.
	FirstTid(ctx context.Context, partition uint32) (zodb.Tid, error)

	// Load returns a revision of oid into o: exactly at (at valid), the
	// latest < before (before valid), else the latest. Pass zodb.InvalidTid
	// for unused bounds. o.Data re-uses its capacity.
	Load(ctx context.Context, oid zodb.Oid, at, before zodb.Tid, o *Object) error
	// LastSerial returns the latest committed serial of oid (ok false: none).
	LastSerial(ctx context.Context, oid zodb.Oid) (zodb.Tid, bool, error)

	// StoreData stores object data for a transaction and returns its data
	// id, held for transaction ttid until ReleaseData, Unlock or Abort. With
	// dataSerial valid, the
	// data of (oid, dataSerial) is re-used (ErrUndoData if that revision
	// does not exist). Empty data with a zero checksum returns NoData.
	StoreData(ctx context.Context, ttid zodb.Tid, oid zodb.Oid, checksum proto.Checksum, data []byte, compression uint8, dataSerial zodb.Tid) (int64, error)
	// ReleaseData drops the hold of StoreData on data ids (e.g. a store
	// cancelled before the vote) and deletes data no record refers to.
	ReleaseData(ctx context.Context, ids []int64) error
	// Vote writes the transaction's objects to tobj and, if meta is not
	// nil, its metadata to ttrans (and pack order), then commits.
	Vote(ctx context.Context, ttid zodb.Tid, objs []TObject, meta *TxnMeta) error
	// Lock records the final tid of a voted transaction (and approves its
	// pack order if packApproved), then commits.
	Lock(ctx context.Context, ttid, tid zodb.Tid, packApproved bool) error
	// Unlock moves a locked transaction to trans/obj under its final tid.
	// The commit may be deferred by up to a second.
	Unlock(ctx context.Context, ttid, tid zodb.Tid) error
	// Abort forgets a transaction that is not unlocked.
	Abort(ctx context.Context, ttid zodb.Tid) error
	// Unfinished returns the transactions left in ttrans/tobj: ttid → final
	// tid for locked ones, zodb.InvalidTid for voted ones.
	Unfinished(ctx context.Context) (map[zodb.Tid]zodb.Tid, error)
	// DropUnfinished deletes every temporary transaction and its data.
	DropUnfinished(ctx context.Context) error
	// FinalTid returns the committed tid of the transaction begun as ttid.
	FinalTid(ctx context.Context, ttid zodb.Tid) (zodb.Tid, bool, error)

	// Transaction returns committed metadata of tid (ErrTidNotFound);
	// with temp, a locked transaction in ttrans is found too.
	Transaction(ctx context.Context, tid zodb.Tid, temp bool) (*TxnMeta, error)
	// History returns revisions of oid, newest first, skipping offset,
	// at most length (ErrOidNotFound if none).
	History(ctx context.Context, oid zodb.Oid, offset, length int) ([]HistoryEntry, error)
	// TIDs returns committed tids of the given partitions, newest first,
	// skipping offset, at most length.
	TIDs(ctx context.Context, offset, length int, partitions []uint32) ([]zodb.Tid, error)
	// TIDsFrom returns tids of a partition in [min, max], ascending, at
	// most length (length < 0: no limit).
	TIDsFrom(ctx context.Context, partition uint32, min, max zodb.Tid, length int) ([]zodb.Tid, error)
	// ObjectsFrom returns the records (oid @ serial) of a partition from
	// position (minTid, minOid) up to maxTid, ordered by serial then oid,
	// at most length.
	ObjectsFrom(ctx context.Context, partition uint32, minTid, maxTid zodb.Tid, minOid zodb.Oid, length int) ([]zodb.Xid, error)
	// OIDsFrom answers AskOIDsFrom: oids ≥ minOid of a partition whose
	// latest revision ≤ tid has data, examining at most length oids; next
	// is the oid to continue from (ok false: end).
	OIDsFrom(ctx context.Context, partition uint32, length int, minOid zodb.Oid, tid zodb.Tid) (oids []zodb.Oid, next zodb.Oid, ok bool, err error)
	// UndoInfo answers AskObjectUndoSerial for one oid: found false when
	// undoTid did not write oid. current is the serial of the undoing
	// transaction's own pending store (zodb.InvalidTid if none); ltid the
	// exclusive snapshot bound. ErrOidNotFound: not undoable from ltid.
	UndoInfo(ctx context.Context, oid zodb.Oid, ltid, undoTid, current zodb.Tid) (u Undo, found bool, err error)

	// CheckTIDRange computes AnswerCheckTIDRange.
	CheckTIDRange(ctx context.Context, partition uint32, length int, min, max zodb.Tid) (count int, digest proto.Checksum, last zodb.Tid, err error)
	// CheckSerialRange computes AnswerCheckSerialRange.
	CheckSerialRange(ctx context.Context, partition uint32, length int, minTid, maxTid zodb.Tid, minOid zodb.Oid) (*proto.AnswerCheckSerialRange, error)

	// StoreTransaction writes committed metadata (replication).
	StoreTransaction(ctx context.Context, meta *TxnMeta) error
	// StoreObject writes a committed record (replication); in a
	// deduplicating database an identical data row is re-used.
	StoreObject(ctx context.Context, o *Object) error
	// DeleteTransaction deletes committed metadata of tid (replication).
	DeleteTransaction(ctx context.Context, tid zodb.Tid) error
	// DeleteObject deletes a committed record (replication).
	DeleteObject(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error
	// PackOrders returns the committed pack orders with id ≥ min whose
	// transaction is in one of the given partitions, by id.
	PackOrders(ctx context.Context, min zodb.Tid, partitions []uint32) ([]PackOrderID, error)
	// SignPackOrders marks orders approved or rejected and returns the ids
	// of the orders that exist.
	SignPackOrders(ctx context.Context, approved, rejected []zodb.Tid) ([]zodb.Tid, error)
	// SetPartitionPacked records the last completed pack id of an own cell.
	SetPartitionPacked(ctx context.Context, partition uint32, id zodb.Tid) error
	// Pack packs a partition at packTid: for every oid (all oids ≥ minOid
	// of the partition, at most limit of them, when oids is nil; else the
	// listed oids), the revisions older than its latest revision ≤ packTid
	// are deleted, and that one too if it has no data; unreferenced data is
	// deleted. With oids nil and limit oids examined, next is the oid to
	// continue from (more true).
	Pack(ctx context.Context, partition uint32, packTid zodb.Tid, oids []zodb.Oid, minOid zodb.Oid, limit int) (next zodb.Oid, more bool, err error)

	// DropPartitions deletes everything of the given partitions.
	DropPartitions(ctx context.Context, partitions []uint32) error
	// Truncate deletes, in the node's own partitions, everything committed
	// after tid, caps replication progress and clears truncate_tid.
	Truncate(ctx context.Context, tid zodb.Tid) error
}

// EncodePTTid returns the pt.tid value of a cell: the negated state, or the
// replication progress for the node's own OUT_OF_DATE cells.
func EncodePTTid(own bool, state proto.CellState, replicated zodb.Tid) int64 {
	if own && state == proto.CellOutOfDate {
		return int64(replicated)
	}
	return -int64(state)
}

// DecodePTTid is the inverse of EncodePTTid: state = max(0, -tid).
func DecodePTTid(tid int64) (state proto.CellState, replicated zodb.Tid, err error) {
	if tid >= 0 {
		return proto.CellOutOfDate, zodb.Tid(tid), nil
	}
	if tid < -int64(proto.CellCorrupted) {
		return 0, 0, fmt.Errorf("pt.tid %d: not a cell state", tid)
	}
	return proto.CellState(-tid), 0, nil
}

// DataIDRange returns the range [lo, hi) of data ids of a partition.
func DataIDRange(partition uint32) (lo, hi int64) {
	return int64(partition) << 48, int64(partition+1) << 48
}
