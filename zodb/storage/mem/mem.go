// Package mem is an in-memory ZODB storage: the driver of the "mem" URL
// scheme, with the full semantics of a storage (MVCC loads, history,
// iteration, two-phase commit with conflict resolution, undo, pack with
// garbage collection and commit events), and nothing kept on disk. It plays
// the role of ZODB's MappingStorage and is the reference driver for tests.
//
// URLs:
//
//	mem://       every Open creates a new, empty, independent storage,
//	             gone when it is closed.
//	mem://name   a storage shared within the process: every Open of the
//	             same name returns a new handle of one storage, and a
//	             commit through one handle is reported to the watchers of
//	             all of them. A named storage lives until the process
//	             exits, so it can be closed and opened again with its data.
//
// Import the package for its side effect to register the scheme:
//
//	import _ "github.com/neozodb/neo/zodb/storage/mem"
package mem

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"sort"
	"sync"

	"github.com/neozodb/neo/zodb"
)

func init() {
	zodb.RegisterDriver("mem", OpenDriver)
}

var (
	namedMu sync.Mutex
	named   = map[string]*database{}
)

// OpenDriver opens the storage named by u (see the package documentation).
// It is the opener registered for the "mem" scheme; it is exported so that
// drivers wrapping this one can be built in tests.
func OpenDriver(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
	if opt == nil {
		opt = &zodb.DriverOptions{}
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	name := u.Host + u.Path
	if u.Opaque != "" {
		name = u.Opaque
	}
	var db *database
	if name == "" {
		if opt.NoCreate {
			return nil, 0, fmt.Errorf("mem: a new storage always starts empty: no existing storage to open")
		}
		db = newDatabase()
	} else {
		namedMu.Lock()
		db = named[name]
		if db == nil {
			if opt.NoCreate {
				namedMu.Unlock()
				return nil, 0, fmt.Errorf("mem: no storage named %q", name)
			}
			db = newDatabase()
			named[name] = db
		}
		namedMu.Unlock()
	}

	d := &Driver{
		db:       db,
		url:      u.String(),
		readOnly: opt.ReadOnly,
		watchq:   opt.Watchq,
		resolver: opt.Resolver,
		closed:   make(chan struct{}),
	}
	db.mu.Lock()
	// Events are queued for every transaction installed after this point;
	// the newest installed one may not be reported by LastTid yet, but it
	// is already part of what this handle sees.
	d.at0 = db.last
	db.handles[d] = struct{}{}
	db.mu.Unlock()
	return d, d.at0, nil
}

// database is one storage, shared by its handles.
type database struct {
	// commitLock is held by the transaction being committed, from Begin
	// to Finish or Abort: a buffered channel of size 1 so that waiting
	// for it can be cancelled.
	commitLock chan struct{}

	mu      sync.RWMutex
	txns    []*txnRecord            // committed transactions, in tid order
	objs    map[zodb.Oid][]revision // revisions of every object, oldest first
	last    zodb.Tid                // tid of the newest installed transaction
	head    zodb.Tid                // newest tid whose events were queued (LastTid)
	oidMax  zodb.Oid                // highest oid allocated or stored
	handles map[*Driver]struct{}    // open handles, to send events to
	cur     *txn                    // transaction holding commitLock
	undoIdx map[zodb.Tid]*txnRecord // committed transactions by tid
}

func newDatabase() *database {
	return &database{
		commitLock: make(chan struct{}, 1),
		objs:       map[zodb.Oid][]revision{},
		handles:    map[*Driver]struct{}{},
		undoIdx:    map[zodb.Tid]*txnRecord{},
	}
}

// revision is one revision of an object.
type revision struct {
	serial  zodb.Tid
	data    []byte   // nil: the object is deleted (or its creation undone)
	dataTid zodb.Tid // revision whose data this one reuses (undo, restore), or 0
}

// txnRecord is one committed transaction. Records are never modified once
// installed; pack replaces them with new ones.
type txnRecord struct {
	info zodb.TxnInfo
	recs []zodb.DataInfo
	size int64 // size the transaction would take in a FileStorage
}

func recordSize(info *zodb.TxnInfo, recs []zodb.DataInfo) int64 {
	// FileStorage layout: 23-byte header, metadata, 42-byte record
	// headers, data or an 8-byte backpointer, 8-byte length trailer.
	n := int64(23 + len(info.User) + len(info.Description) + len(info.Extension) + 8)
	for _, r := range recs {
		n += 42
		if r.DataTid != 0 || r.Data == nil {
			n += 8
		} else {
			n += int64(len(r.Data))
		}
	}
	return n
}

// Driver is a handle of a memory storage.
type Driver struct {
	db       *database
	url      string
	readOnly bool
	watchq   chan<- zodb.Event
	resolver zodb.ConflictResolver
	at0      zodb.Tid

	closeOnce sync.Once
	closed    chan struct{}
}

var (
	_ zodb.IStorageDriver = (*Driver)(nil)
	_ zodb.IUndoer        = (*Driver)(nil)
	_ zodb.IPacker        = (*Driver)(nil)
)

func (d *Driver) opErr(op string, args any, err error) error {
	return &zodb.OpError{URL: d.url, Op: op, Args: args, Err: err}
}

// check returns ErrClosed after Close, or the context's error.
func (d *Driver) check(ctx context.Context) error {
	select {
	case <-d.closed:
		return zodb.ErrClosed
	default:
	}
	return ctx.Err()
}

// URL returns the URL the storage was opened with.
func (d *Driver) URL() string { return d.url }

// Close closes this handle. A transaction begun through it and not
// finished is aborted.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		close(d.closed)
		db := d.db
		db.mu.Lock()
		delete(db.handles, d)
		cur := db.cur
		db.mu.Unlock()
		if cur != nil && cur.d == d {
			cur.abort()
		}
	})
	return nil
}

// LastTid returns the tid of the last committed transaction.
func (d *Driver) LastTid(ctx context.Context) (zodb.Tid, error) {
	if err := d.check(ctx); err != nil {
		return 0, d.opErr("lastTid", nil, err)
	}
	d.db.mu.RLock()
	head := d.db.head
	d.db.mu.RUnlock()
	return max(head, d.at0), nil
}

// Size returns the size the committed transactions would take in a
// FileStorage (ZODB's getSize()).
func (d *Driver) Size(ctx context.Context) (int64, error) {
	if err := d.check(ctx); err != nil {
		return 0, d.opErr("size", nil, err)
	}
	d.db.mu.RLock()
	defer d.db.mu.RUnlock()
	n := int64(4) // file magic
	for _, t := range d.db.txns {
		n += t.size
	}
	return n, nil
}

// NewOids allocates n new oids, following the highest oid allocated or
// stored so far (the first one of a new storage is 1: 0 is the root).
func (d *Driver) NewOids(ctx context.Context, n int) ([]zodb.Oid, error) {
	if err := d.check(ctx); err != nil {
		return nil, d.opErr("newOids", n, err)
	}
	if d.readOnly {
		return nil, d.opErr("newOids", n, zodb.ErrReadOnly)
	}
	if n < 0 {
		return nil, d.opErr("newOids", n, fmt.Errorf("negative count"))
	}
	v := make([]zodb.Oid, n)
	db := d.db
	db.mu.Lock()
	for i := range v {
		db.oidMax++
		v[i] = db.oidMax
	}
	db.mu.Unlock()
	return v, nil
}

// findRev returns the index in revs of the newest revision with serial ≤
// at, or -1.
func findRev(revs []revision, at zodb.Tid) int {
	return sort.Search(len(revs), func(i int) bool { return revs[i].serial > at }) - 1
}

// exactRev returns the index of the revision with serial tid, or -1.
func exactRev(revs []revision, tid zodb.Tid) int {
	i := findRev(revs, tid)
	if i >= 0 && revs[i].serial == tid {
		return i
	}
	return -1
}

// Load returns the revision of xid.Oid current at xid.At.
func (d *Driver) Load(ctx context.Context, xid zodb.Xid) ([]byte, zodb.Tid, zodb.Tid, error) {
	if err := d.check(ctx); err != nil {
		return nil, 0, 0, d.opErr("load", xid, err)
	}
	db := d.db
	db.mu.RLock()
	defer db.mu.RUnlock()
	revs, ok := db.objs[xid.Oid]
	if !ok {
		return nil, 0, 0, d.opErr("load", xid, &zodb.NoObjectError{Oid: xid.Oid})
	}
	i := findRev(revs, xid.At)
	if i < 0 {
		return nil, 0, 0, d.opErr("load", xid, &zodb.NoDataError{Oid: xid.Oid})
	}
	r := revs[i]
	if r.data == nil {
		return nil, 0, 0, d.opErr("load", xid, &zodb.NoDataError{Oid: xid.Oid, DeletedAt: r.serial})
	}
	var next zodb.Tid
	if i+1 < len(revs) {
		next = revs[i+1].serial
	}
	return append([]byte(nil), r.data...), r.serial, next, nil
}

// History returns up to size revisions of oid, newest first; size ≤ 0
// returns all of them. Deletions are listed with size 0.
func (d *Driver) History(ctx context.Context, oid zodb.Oid, size int) ([]zodb.HistoryEntry, error) {
	if err := d.check(ctx); err != nil {
		return nil, d.opErr("history", oid, err)
	}
	db := d.db
	db.mu.RLock()
	defer db.mu.RUnlock()
	revs, ok := db.objs[oid]
	if !ok {
		return nil, d.opErr("history", oid, &zodb.NoObjectError{Oid: oid})
	}
	if size <= 0 || size > len(revs) {
		size = len(revs)
	}
	h := make([]zodb.HistoryEntry, 0, size)
	for i := len(revs) - 1; i >= 0 && len(h) < size; i-- {
		r := revs[i]
		t := db.undoIdx[r.serial]
		if t == nil {
			return nil, d.opErr("history", oid, fmt.Errorf("internal error: revision %v without transaction", r.serial))
		}
		h = append(h, zodb.HistoryEntry{TxnInfo: cloneInfo(t.info), Size: len(r.data)})
	}
	return h, nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func cloneInfo(info zodb.TxnInfo) zodb.TxnInfo {
	info.User = cloneBytes(info.User)
	info.Description = cloneBytes(info.Description)
	info.Extension = cloneBytes(info.Extension)
	return info
}

// Iterate returns an iterator over the transactions with tidMin ≤ tid ≤
// tidMax. It walks the transactions committed when it is created.
func (d *Driver) Iterate(ctx context.Context, tidMin, tidMax zodb.Tid) zodb.ITxnIterator {
	db := d.db
	db.mu.RLock()
	txns := db.txns
	db.mu.RUnlock()
	i := sort.Search(len(txns), func(i int) bool { return txns[i].info.Tid >= tidMin })
	j := sort.Search(len(txns), func(i int) bool { return txns[i].info.Tid > tidMax })
	if j < i {
		j = i
	}
	return &txnIter{d: d, txns: txns[i:j]}
}

type txnIter struct {
	d    *Driver
	txns []*txnRecord
}

func (it *txnIter) NextTxn(ctx context.Context) (*zodb.TxnInfo, zodb.IDataIterator, error) {
	if err := it.d.check(ctx); err != nil {
		return nil, nil, it.d.opErr("iterate", nil, err)
	}
	if len(it.txns) == 0 {
		return nil, nil, io.EOF
	}
	t := it.txns[0]
	it.txns = it.txns[1:]
	info := cloneInfo(t.info)
	return &info, &dataIter{d: it.d, recs: t.recs}, nil
}

type dataIter struct {
	d    *Driver
	recs []zodb.DataInfo
}

func (it *dataIter) NextData(ctx context.Context) (*zodb.DataInfo, error) {
	if err := it.d.check(ctx); err != nil {
		return nil, it.d.opErr("iterate", nil, err)
	}
	if len(it.recs) == 0 {
		return nil, io.EOF
	}
	r := it.recs[0]
	it.recs = it.recs[1:]
	r.Data = cloneBytes(r.Data)
	return &r, nil
}

// UndoLog lists the undoable transactions, newest first, stopping at the
// first packed one.
func (d *Driver) UndoLog(ctx context.Context, first, last int, filter func(*zodb.UndoInfo) bool) ([]zodb.UndoInfo, error) {
	if err := d.check(ctx); err != nil {
		return nil, d.opErr("undoLog", nil, err)
	}
	if last < 0 {
		last = first - last
	}
	db := d.db
	db.mu.RLock()
	txns := db.txns
	db.mu.RUnlock()
	var v []zodb.UndoInfo
	n := 0 // entries selected so far
	for i := len(txns) - 1; i >= 0 && n < last; i-- {
		t := txns[i]
		if t.info.Status == zodb.TxnPacked {
			break
		}
		if t.info.Status != zodb.TxnComplete {
			continue
		}
		u := zodb.UndoInfo{TxnInfo: cloneInfo(t.info), Size: t.size}
		if filter != nil && !filter(&u) {
			continue
		}
		if n >= first {
			v = append(v, u)
		}
		n++
	}
	return v, nil
}
