// Package fs1 is ZODB's FileStorage (Data.fs, format version 1) for Go:
// read and write, byte-compatible with what ZODB/py writes and reads.
//
// # The storage driver
//
// Importing the package registers the "file" scheme with zodb: a storage
// opens with zodb.Open("file:///path/Data.fs", ...) or with a plain path.
// Open does the same directly and returns a *FileStorage, which implements
// zodb.IStorageDriver, zodb.IUndoer and zodb.IPacker.
//
// On open the saved index (Data.fs.index) is used when it passes ZODB's
// sanity check (saved position ≥ 100, the last transaction before it and up
// to 5 of its records agree with the file); the records after its saved
// position are then scanned. Otherwise the whole file is scanned. An
// incomplete last transaction, or one left unfinished between vote and
// finish (status 'c'), is ignored by a read-only open and cut off by a
// read-write open, the cut bytes being saved to Data.fs.trN. Damage
// elsewhere makes Open fail with a *FormatError naming the offset.
//
// A read-write open takes Data.fs.lock (" <pid>\n", an exclusive fcntl
// lock, as zc.lockfile): a second writer fails, readers take no lock. It
// creates a missing file (just the magic "FS30") unless NoCreate. The index
// is saved on Close, after a scan, and after pack, with the bytes ZODB
// writes for the same content. A read-only open writes nothing.
//
// Reads (Load, History, Iterate, UndoLog) run concurrently with each other
// and with a commit; they see only finished transactions. Commits are
// serialised by a commit lock held from Begin to Finish or Abort. The data
// records of a transaction are staged in memory with their final positions;
// Vote writes the transaction with status 'c' and fsyncs, Finish writes its
// status byte and fsyncs, then updates the index, queues the CommitEvent to
// the watch channel, and only then lets LastTid report the new tid.
//
// The records written are those ZODB writes for the same calls: Store links
// the record to the committed revision (prev), Delete writes a record with
// no data and a zero backpointer, Undo writes backpointers to the revisions
// to go back to (conflict resolution through the resolver when the object
// changed since), Restore writes a backpointer when the transaction named
// by dataTid holds the same data. Copying any reference file transaction by
// transaction with Iterate and Restore gives the same bytes, except the
// prev fields that pack had zeroed.
//
// Pack follows ZODB's packer: transactions up to the pack tid keep only the
// revisions current at that time (and with gc only the objects reachable
// from the root, found with zodb.PickleRefs), get status 'p', their records
// prev = 0 and data inlined; later transactions are copied with backpointers
// re-targeted. The result is written to Data.fs.pack, the old file is kept
// as Data.fs.old. Commits wait while a pack runs. Packing the reference
// prepack.fs gives ZODB's packed.fs and packed-nogc.fs byte for byte.
//
// Where this driver deliberately differs from ZODB/py:
//   - LastTid after opening a file whose last transaction is unfinished is
//     the last finished one (ZODB reports the tid of the unfinished one).
//   - History with size ≤ 0 returns every revision.
//   - A pack holds the commit lock for its whole duration.
//   - Pack skips references to objects that do not exist (ZODB fails).
//   - Transactions with an invalid status byte are an error (ZODB logs).
//   - The records of a transaction being committed are staged in memory,
//     not in Data.fs.tmp; the index is saved on close and after pack, not
//     also every so many records.
//
// # Low-level access (for dump and repair tools)
//
// The file format is exposed directly:
//
//   - ReadFileHeader, OpenFile: the magic (FS30, or FS21 of ZODB on
//     Python 2, which is read and appended to in the same format).
//   - TxnHeader with ReadTxnHeader (at a position, LoadMeta for user,
//     description and extension, CheckTrailer for the redundant length) and
//     ReadTxnHeaderBefore (backwards, from the end of a transaction):
//     position, tid, tlen, status, metadata, DataPos of the first record,
//     NextPos.
//   - DataHeader with ReadDataHeader: oid, tid, prev, tloc (TxnPos), plen
//     (DataLen), backpointer (BackPos); LoadData gives the data at the end of
//     the backpointer chain and the tid of the first record pointed to
//     (what iteration reports as DataTid).
//   - Iter walks transactions and their records forward, exposing the
//     headers.
//   - Index, the oid → position map of Data.fs.index: LoadIndexFile,
//     DecodeIndex (also the protocol 1/2 pickles of Python-2 ZODB),
//     WriteTo/SaveFile (ZODB's exact bytes), BuildIndex (scan a file),
//     ScanIndex (scan from a position, as ZODB's read_index), VerifyIndex
//     (compare an index with the file).
package fs1
