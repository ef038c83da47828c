// Package zodb is the ZODB API for Go: the object database of Zope, Plone and
// ERP5, as seen from Go programs.
//
// It has two layers.
//
// The storage layer: core types (Tid, Oid, Xid and the TimeStamp
// conversions of tids), the interfaces storage drivers implement
// (IStorageDriver with loads at a tid, history, iteration, commit events and
// two-phase commit through ITxn; the optional IUndoer and IPacker), typed
// errors (NoObjectError, NoDataError, ConflictError, ReadConflictError, ...),
// and Open, which opens a storage by URL with the driver registered for its
// scheme: "file" (FileStorage, also a plain path), "mem", "zeo", "neo". The
// split follows database/sql: drivers implement IStorageDriver, users get a
// *Storage, which adds the fan-out of commit events to watchers. Package
// zodb/wks imports the well-known drivers.
//
//	stor, err := zodb.Open(ctx, "data/Data.fs", nil)
//	data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: 0, At: head})
//
// The application layer (the app_*.go files): persistent objects and the
// registry of their classes, DB and Connection with MVCC snapshots and live
// caches, pickles of object records, conflict resolution by class. Commits
// go through package transaction. See DB for an example.
package zodb
