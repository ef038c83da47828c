package zodb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/neozodb/neo/transaction"
)

// The application layer: objects, connections, transactions.
//
//	db, _ := zodb.NewDB(stor, nil)          // stor from zodb.Open
//	txn, ctx := transaction.New(ctx)
//	conn, _ := db.Open(ctx)                 // a snapshot, joined to txn
//	root, _ := conn.Root(ctx)               // *PersistentMapping
//	... obj.PActivate(ctx); obj.PModify() ...
//	err := txn.Commit(ctx)                  // two-phase commit
//
// Objects (app_persistent.go) hold their state as Go fields; their
// records are pickled by the codec of app_pickle.go into the Python values
// of app_pyvalue.go. A Connection (app_conn.go) loads every object at its
// snapshot tid and keeps the loaded objects in a cache of weak pointers;
// the DB feeds it the storage's commit events, which it applies when it
// moves to a newer snapshot. Conflict resolution by class is in
// app_resolve.go.

// DB is a database: a storage plus a pool of connections that see it
// through MVCC snapshots and keep live caches of its objects.
//
// DB follows the storage's commit events (Storage.AddWatch) and queues, to
// every connection, the oids changed by each transaction; a connection
// applies them when it moves to a newer snapshot, at the start of a
// transaction.
type DB struct {
	stor      *Storage
	name      string
	databases map[string]*DB // the multi-database this one is part of
	poolSize  int

	watchq   chan Event
	down     chan struct{}
	loopDone chan struct{}

	mu       sync.Mutex
	head     Tid           // events up to head were queued to the connections
	headMove chan struct{} // closed when head moves
	conns    map[*Connection]struct{}
	pool     []*Connection // idle connections, most recently used last
	rootOK   bool
	closed   bool
	watchErr error
}

// DBOptions tune NewDB.
type DBOptions struct {
	// Name is the database's name in a multi-database ("unnamed" if
	// empty, as in ZODB).
	Name string
	// Databases, if not nil, is the multi-database this database joins:
	// a map shared by its databases, by name. Objects of one may refer to
	// objects of another (cross-database references).
	Databases map[string]*DB
	// PoolSize is how many idle connections are kept (7 if 0).
	PoolSize int
}

// NewDB makes a database of stor. The DB does not own stor: close the DB,
// then the storage.
func NewDB(stor *Storage, opt *DBOptions) (*DB, error) {
	if opt == nil {
		opt = &DBOptions{}
	}
	db := &DB{
		stor:      stor,
		name:      opt.Name,
		databases: opt.Databases,
		poolSize:  opt.PoolSize,
		watchq:    make(chan Event),
		down:      make(chan struct{}),
		loopDone:  make(chan struct{}),
		headMove:  make(chan struct{}),
		conns:     map[*Connection]struct{}{},
	}
	if db.name == "" {
		db.name = "unnamed"
	}
	if db.poolSize == 0 {
		db.poolSize = 7
	}
	if db.databases == nil {
		db.databases = map[string]*DB{}
	}
	if _, dup := db.databases[db.name]; dup {
		return nil, fmt.Errorf("zodb: database %q is already in the multi-database", db.name)
	}
	db.databases[db.name] = db
	db.head = stor.AddWatch(db.watchq)
	go db.watchLoop()
	return db, nil
}

// Name returns the database's name.
func (db *DB) Name() string { return db.name }

// Storage returns the database's storage.
func (db *DB) Storage() *Storage { return db.stor }

// Close stops following the storage. Connections must not be used after.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	close(db.headMove) // wake those waiting in Open
	db.headMove = make(chan struct{})
	db.mu.Unlock()
	db.stor.DelWatch(db.watchq)
	close(db.down)
	<-db.loopDone
	return nil
}

// watchLoop owns the reading of the storage's commit events until Close.
func (db *DB) watchLoop() {
	defer close(db.loopDone)
	for {
		var ev Event
		select {
		case <-db.down:
			return
		case ev = <-db.watchq:
		}
		db.mu.Lock()
		switch e := ev.(type) {
		case *CommitEvent:
			if e.Tid <= db.head {
				break
			}
			for c := range db.conns {
				c.queue(e)
			}
			db.head = e.Tid
			close(db.headMove)
			db.headMove = make(chan struct{})
		case *EventError:
			// The storage cannot tell what changed: every cached
			// object may be stale.
			db.watchErr = e
			for c := range db.conns {
				c.queue(e)
			}
		}
		db.mu.Unlock()
	}
}

// waitHead waits until the events up to tid were queued.
func (db *DB) waitHead(ctx context.Context, tid Tid) error {
	for {
		db.mu.Lock()
		head, move, closed := db.head, db.headMove, db.closed
		db.mu.Unlock()
		if closed {
			return fmt.Errorf("database %s: closed", db.name)
		}
		if head >= tid {
			return nil
		}
		select {
		case <-move:
		case <-ctx.Done():
			return fmt.Errorf("database %s: waiting for the commit events up to %v: %w", db.name, tid, ctx.Err())
		}
	}
}

// Open returns a connection that sees the database as of now (the last
// committed transaction) and joins the transaction ctx carries; it goes
// back to the pool when the transaction ends.
func (db *DB) Open(ctx context.Context) (*Connection, error) {
	txn := transaction.Current(ctx)
	if txn == nil {
		return nil, fmt.Errorf("database %s: open: no transaction in the context (see transaction.New)", db.name)
	}
	return db.open(ctx, txn, nil)
}

// OpenAt returns a read-only connection that sees the database as it was
// at tid at (a historical connection), in the transaction ctx carries. It
// is not pooled; changes to its objects cannot be committed.
func (db *DB) OpenAt(ctx context.Context, at Tid) (*Connection, error) {
	txn := transaction.Current(ctx)
	if txn == nil {
		return nil, fmt.Errorf("database %s: open at %v: no transaction in the context (see transaction.New)", db.name, at)
	}
	conn := newConnection(db)
	conn.at, conn.historical = at, true
	conn.group = map[string]*Connection{db.name: conn}
	conn.txn = txn
	if err := txn.Join(conn); err != nil {
		return nil, fmt.Errorf("database %s: open at %v: %w", db.name, at, err)
	}
	return conn, nil
}

func (db *DB) open(ctx context.Context, txn *transaction.Transaction, group map[string]*Connection) (*Connection, error) {
	if err := db.ensureRoot(ctx); err != nil {
		return nil, err
	}
	at, err := db.stor.LastTid(ctx)
	if err != nil {
		return nil, fmt.Errorf("database %s: open: %w", db.name, err)
	}
	// Events up to at must be queued before the snapshot is taken, so
	// that a reused connection drops everything changed up to at.
	if err := db.waitHead(ctx, at); err != nil {
		return nil, err
	}
	db.mu.Lock()
	// The snapshot is the head: a new connection receives the events
	// after it only.
	at = db.head
	var conn *Connection
	if n := len(db.pool); n > 0 {
		conn = db.pool[n-1]
		db.pool = db.pool[:n-1]
	} else {
		conn = newConnection(db)
		db.conns[conn] = struct{}{}
	}
	db.mu.Unlock()

	conn.sync(at)
	if group == nil {
		group = map[string]*Connection{}
	}
	group[db.name] = conn
	conn.group = group
	conn.txn = txn
	if err := txn.Join(conn); err != nil {
		conn.txn = nil
		db.release(conn)
		return nil, fmt.Errorf("database %s: open: %w", db.name, err)
	}
	return conn, nil
}

// release puts an idle connection back in the pool.
func (db *DB) release(conn *Connection) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed || len(db.pool) >= db.poolSize {
		delete(db.conns, conn)
		return
	}
	db.pool = append(db.pool, conn)
}

// rootRecord is the record ZODB writes for a new database's root: an
// empty PersistentMapping.
var rootRecord = []byte("\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s.")

// ensureRoot creates the root object (oid 0) if the storage has none, in
// a transaction described "initial database creation", as ZODB does.
func (db *DB) ensureRoot(ctx context.Context) error {
	db.mu.Lock()
	ok := db.rootOK
	db.mu.Unlock()
	if ok {
		return nil
	}
	_, _, _, err := db.stor.Load(ctx, Xid{Oid: 0, At: TidMax})
	var noObj *NoObjectError
	switch {
	case err == nil:
	case errors.As(err, &noObj):
		txn, err := db.stor.Begin(ctx, TxnMeta{Description: []byte("initial database creation")})
		if errors.Is(err, ErrReadOnly) {
			break // a read-only empty database has no root
		}
		if err != nil {
			return fmt.Errorf("database %s: create root: %w", db.name, err)
		}
		err = txn.Store(ctx, 0, 0, rootRecord)
		if err == nil {
			_, err = txn.Vote(ctx)
		}
		if err == nil {
			_, err = txn.Finish(ctx)
		}
		if err != nil {
			_ = txn.Abort(ctx)
			var conflict *ConflictError
			if !errors.As(err, &conflict) { // else created by someone else meanwhile
				return fmt.Errorf("database %s: create root: %w", db.name, err)
			}
		}
	case errors.Is(err, ErrReadOnly):
		return nil
	default:
		return fmt.Errorf("database %s: load root: %w", db.name, err)
	}
	db.mu.Lock()
	db.rootOK = true
	db.mu.Unlock()
	return nil
}
