package zodb

import (
	"context"
	"fmt"
	"io"
)

// Blobs (ZODB's IBlobStorage): a blob is a byte stream of any size kept
// beside an object revision. The object record (the pickle of a
// ZODB.blob.Blob, or of a subclass) is stored as usual; the blob's content
// is attached to that same revision, oid@serial, and never changes
// afterwards: a new content means a new revision of the object.
//
// Both interfaces are optional, as IUndoer and IPacker are: test a driver
// for IBlobLoader, and a transaction (the ITxn its Begin returned) for
// IBlobTxn. A driver implementing one implements the other.

// IBlobTxn is implemented by the transactions of storages that keep blobs.
type IBlobTxn interface {
	// StoreBlob is Store (same serial semantics, same conflict
	// handling) for a blob object: data is its object record and blob
	// the blob's content, read to EOF before StoreBlob returns. The
	// storage does not keep blob after StoreBlob returns, and does not
	// close it.
	//
	// The content becomes visible with the transaction: LoadBlob finds it
	// at the transaction's tid after Finish. If the transaction aborts,
	// the content is discarded. An error reading blob fails the
	// transaction: only Abort is then allowed.
	StoreBlob(ctx context.Context, oid Oid, serial Tid, data []byte, blob io.Reader) error
}

// IBlobLoader is implemented by drivers that keep blobs.
type IBlobLoader interface {
	// LoadBlob returns the content of the blob stored with revision
	// serial of oid (serial is the exact tid of that revision, as Load
	// returns it, not an "at" bound). The caller must close the reader.
	// The content stays readable after the storage changes or closes:
	// a driver that gets it from elsewhere buffers it first.
	//
	// Errors: *NoBlobError when the storage has no blob for oid@serial
	// (ZODB's POSKeyError "No blob file": the revision does not exist, is
	// not a blob, or was packed away).
	LoadBlob(ctx context.Context, oid Oid, serial Tid) (io.ReadCloser, error)
}

// NoBlobError tells that the storage has no blob content for revision
// Serial of Oid.
type NoBlobError struct {
	Oid    Oid
	Serial Tid
}

func (e *NoBlobError) Error() string {
	return fmt.Sprintf("%v@%v: no blob", e.Oid, e.Serial)
}
