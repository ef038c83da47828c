package zodb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"sync"
	"weak"

	"github.com/neozodb/neo/transaction"
)

// Connection is a view of a database at one tid (its snapshot: every load
// is at that tid, so it never sees part of a transaction), with a live
// cache of the objects loaded through it, and the data manager of the
// changes made to them in the current transaction.
//
// A connection is bound to the transaction it was opened for and goes back
// to its DB's pool when that transaction ends; objects taken from it must
// not be used after that. It is used from one goroutine at a time.
type Connection struct {
	db         *DB
	at         Tid
	historical bool // opened by OpenAt: read-only, not pooled
	txn        *transaction.Transaction
	// group holds the connections of the multi-database opened in the
	// same transaction, by database name.
	group map[string]*Connection

	// mu guards cache (also changed by the garbage collector's cleanups)
	// and pending (filled by the DB's watch loop).
	mu      sync.Mutex
	cache   map[Oid]weak.Pointer[Persistent]
	pending []Event

	// objects to store at commit: changed ones and new ones, in the
	// order they were registered.
	changed   []IPersistent
	isChanged map[Oid]bool
	added     map[Oid]IPersistent
	// objects whose state the commit depends on (ReadCurrent)
	readCurrent map[Oid]Tid

	// two-phase commit
	stxn     ITxn
	resolved []Oid
	ownTid   Tid // the last transaction committed through this connection
}

func newConnection(db *DB) *Connection {
	return &Connection{
		db:          db,
		cache:       map[Oid]weak.Pointer[Persistent]{},
		isChanged:   map[Oid]bool{},
		added:       map[Oid]IPersistent{},
		readCurrent: map[Oid]Tid{},
	}
}

// ReadCurrent requires obj to be unchanged (still at the revision this
// transaction read) when the transaction commits, even if the
// transaction does not change it, else the commit fails with a
// ReadConflictError (ZODB's readCurrent). obj must be loaded.
func (c *Connection) ReadCurrent(obj IPersistent) error {
	p := obj.persistentBase()
	if p.jar != c {
		return fmt.Errorf("%s: read current: object is not of this connection", c.db.name)
	}
	if p.state == Ghost {
		return fmt.Errorf("%s: read current %v: object is a ghost", c.db.name, p.oid)
	}
	if p.serial != 0 {
		c.readCurrent[p.oid] = p.serial
	}
	return nil
}

// CacheMinimize turns every loaded, unchanged object of the cache into a
// ghost, freeing its state (ZODB's cacheMinimize).
func (c *Connection) CacheMinimize() {
	c.mu.Lock()
	var objs []*Persistent
	for _, wp := range c.cache {
		if p := wp.Value(); p != nil {
			objs = append(objs, p)
		}
	}
	c.mu.Unlock()
	for _, p := range objs {
		p.PDeactivate()
	}
}

// At returns the tid of the connection's snapshot.
func (c *Connection) At() Tid { return c.at }

// DB returns the connection's database.
func (c *Connection) DB() *DB { return c.db }

// queue records an event for the next sync (called by the DB with db.mu).
func (c *Connection) queue(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) >= maxPending {
		// An idle connection must not keep all history: the events
		// are replaced by "drop everything" until the last one.
		var upTo Tid
		for _, e := range c.pending {
			switch e := e.(type) {
			case *CommitEvent:
				upTo = max(upTo, e.Tid)
			case *flushEvent:
				upTo = max(upTo, e.upTo)
			}
		}
		c.pending = append(c.pending[:0], &flushEvent{upTo: upTo})
	}
	c.pending = append(c.pending, ev)
}

// maxPending is how many events an idle connection keeps.
const maxPending = 1024

// flushEvent tells a connection to drop its whole cache when it moves to
// a snapshot; it stands for the events up to upTo, so it is applied again
// at every move until the snapshot reaches upTo.
type flushEvent struct{ upTo Tid }

func (*flushEvent) event() {}

// sync moves the connection to snapshot at: every cached object changed
// by a transaction in (c.at, at] becomes a ghost.
func (c *Connection) sync(at Tid) {
	c.mu.Lock()
	var inval []Oid
	flush := false
	keep := c.pending[:0]
	for _, ev := range c.pending {
		switch e := ev.(type) {
		case *CommitEvent:
			if e.Tid > at {
				keep = append(keep, ev)
				continue
			}
			if e.Tid != c.ownTid {
				inval = append(inval, e.Changed...)
			}
		case *EventError:
			flush = true
		case *flushEvent:
			flush = true
			if e.upTo > at {
				keep = append(keep, ev)
			}
		}
	}
	c.pending = keep
	var objs []*Persistent
	if flush {
		for oid, wp := range c.cache {
			if p := wp.Value(); p != nil {
				objs = append(objs, p)
			} else {
				delete(c.cache, oid)
			}
		}
	} else {
		for _, oid := range inval {
			if p := c.cache[oid].Value(); p != nil {
				objs = append(objs, p)
			}
		}
	}
	c.mu.Unlock()
	for _, p := range objs {
		if p.state != Ghost {
			p.ghostify()
		}
	}
	c.at = at
}

// cacheGet returns the live object oid, or nil.
func (c *Connection) cacheGet(oid Oid) IPersistent {
	c.mu.Lock()
	wp, ok := c.cache[oid]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	if p := wp.Value(); p != nil {
		return p.self
	}
	return nil
}

// cacheAdd makes obj the live object of its oid.
func (c *Connection) cacheAdd(obj IPersistent) {
	p := obj.persistentBase()
	oid := p.oid
	wp := weak.Make(p)
	c.mu.Lock()
	c.cache[oid] = wp
	c.mu.Unlock()
	base := (*byte)(reflect.ValueOf(obj).UnsafePointer())
	runtime.AddCleanup(base, c.forget, cacheEntry{oid, wp})
}

type cacheEntry struct {
	oid Oid
	wp  weak.Pointer[Persistent]
}

// forget drops a cache entry whose object was garbage collected.
func (c *Connection) forget(e cacheEntry) {
	c.mu.Lock()
	if c.cache[e.oid] == e.wp {
		delete(c.cache, e.oid)
	}
	c.mu.Unlock()
}

// CacheLen returns how many objects the live cache holds (objects no
// longer referenced leave it when the garbage collector frees them).
func (c *Connection) CacheLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cache)
}

// Root returns the root object (oid 0).
func (c *Connection) Root(ctx context.Context) (IPersistent, error) {
	return c.Get(ctx, 0)
}

// Get returns the object oid, loaded, from the cache or from the storage.
func (c *Connection) Get(ctx context.Context, oid Oid) (IPersistent, error) {
	if obj := c.cacheGet(oid); obj != nil {
		if err := obj.PActivate(ctx); err != nil {
			return nil, err
		}
		return obj, nil
	}
	data, serial, err := c.loadRecord(ctx, oid)
	if err != nil {
		return nil, err
	}
	d := c.newDecoder(ctx, data)
	desc, err := d.decode()
	if err != nil {
		return nil, fmt.Errorf("%s: load %v: class pickle: %w", c.db.name, Xid{oid, c.at}, err)
	}
	class, _, _, err := classDescForm(desc)
	if err != nil {
		return nil, fmt.Errorf("%s: load %v: %w", c.db.name, Xid{oid, c.at}, err)
	}
	// Decoding the state may have brought the object in already (a
	// reference to itself).
	obj := c.cacheGet(oid)
	if obj == nil {
		obj = newObject(class)
		p := obj.persistentBase()
		p.jar, p.oid = c, oid
		c.cacheAdd(obj)
	}
	if obj.PState() == Ghost {
		if err := c.setState(ctx, obj, d, desc, serial); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// ghost returns the live object oid, or a new ghost of class pyClass.
func (c *Connection) ghost(oid Oid, pyClass string, oidBytes PyBytes) IPersistent {
	if obj := c.cacheGet(oid); obj != nil {
		return obj
	}
	obj := newObject(pyClass)
	p := obj.persistentBase()
	p.jar, p.oid, p.oidBytes = c, oid, oidBytes
	c.cacheAdd(obj)
	return obj
}

func (c *Connection) loadRecord(ctx context.Context, oid Oid) ([]byte, Tid, error) {
	xid := Xid{Oid: oid, At: c.at}
	data, serial, _, err := c.db.stor.Load(ctx, xid)
	if err != nil {
		var nodata *NoDataError
		if errors.As(err, &nodata) && nodata.DeletedAt == 0 {
			// ZODB: the snapshot has no data for an object it
			// refers to (removed by a concurrent pack).
			return nil, 0, fmt.Errorf("%s: load %v: %w", c.db.name, xid, &ReadConflictError{Oid: oid})
		}
		return nil, 0, fmt.Errorf("%s: load %v: %w", c.db.name, xid, err)
	}
	return data, serial, nil
}

// load activates a ghost.
func (c *Connection) load(ctx context.Context, p *Persistent) error {
	data, serial, err := c.loadRecord(ctx, p.oid)
	if err != nil {
		return err
	}
	d := c.newDecoder(ctx, data)
	desc, err := d.decode()
	if err != nil {
		return fmt.Errorf("%s: load %v: class pickle: %w", c.db.name, Xid{p.oid, c.at}, err)
	}
	return c.setState(ctx, p.self, d, desc, serial)
}

// setState decodes the state pickle into obj.
func (c *Connection) setState(ctx context.Context, obj IPersistent, d *pickleDecoder, desc any, serial Tid) error {
	p := obj.persistentBase()
	xid := Xid{p.oid, c.at}
	state, err := d.decode()
	if err != nil {
		return fmt.Errorf("%s: load %v: state pickle: %w", c.db.name, xid, err)
	}
	class, args, hasArgs, err := classDescForm(desc)
	if err != nil {
		return fmt.Errorf("%s: load %v: %w", c.db.name, xid, err)
	}
	switch o := obj.(type) {
	case *Broken:
		o.Class, o.ClassDesc, o.State = splitGlobal(class), desc, state
	default:
		if na, ok := obj.(PyNewArgs); ok && hasArgs {
			if err := na.PySetNewArgs(args); err != nil {
				p.ghostify() // back to the zero value PySetState expects
				return fmt.Errorf("%s: load %v: %s: newargs: %w", c.db.name, xid, class, err)
			}
		}
		if err := obj.(PyStateful).PySetState(state); err != nil {
			p.ghostify()
			return fmt.Errorf("%s: load %v: %s: %w", c.db.name, xid, class, err)
		}
	}
	p.serial = serial
	p.state = UpToDate
	return nil
}

func (c *Connection) newDecoder(ctx context.Context, data []byte) *pickleDecoder {
	return newPickleDecoder(data, func(pid any) (any, error) { return c.persistentLoad(ctx, pid) })
}

// persistentLoad turns a persistent reference into an object.
func (c *Connection) persistentLoad(ctx context.Context, pid any) (any, error) {
	ref, err := parseRef(pid)
	if err != nil {
		return nil, err
	}
	oidBytes := refOidBytes(pid)
	switch ref.Kind {
	case RefOidClass:
		return c.ghost(ref.Oid, ref.Class, oidBytes), nil
	case RefOid:
		return c.Get(ctx, ref.Oid)
	case RefWeak, RefWeakOld:
		return &WeakRef{oid: ref.Oid, oidBytes: oidBytes, database: ref.Database, jar: c, legacy: ref.Kind == RefWeakOld}, nil
	case RefMulti, RefMultiOid:
		other, err := c.GetConnection(ctx, ref.Database)
		if err != nil {
			return nil, err
		}
		if ref.Kind == RefMulti {
			return other.ghost(ref.Oid, ref.Class, oidBytes), nil
		}
		return other.Get(ctx, ref.Oid)
	}
	return nil, fmt.Errorf("invalid persistent reference %s", PyRepr(pid))
}

// refOidBytes returns the oid object of a reference as decoded.
func refOidBytes(pid any) PyBytes {
	switch p := pid.(type) {
	case PyBytes:
		return p
	case PyTuple:
		if b, ok := p[0].(PyBytes); ok {
			return b
		}
	case *PyList:
		if len(p.Items) == 2 {
			if t, ok := p.Items[1].(PyTuple); ok {
				for _, x := range t {
					if b, ok := x.(PyBytes); ok && len(b) == 8 {
						return b
					}
				}
			}
		} else if len(p.Items) == 1 {
			if b, ok := p.Items[0].(PyBytes); ok {
				return b
			}
		}
	}
	return ""
}

// GetConnection returns the connection of database name of the same
// multi-database, in the same transaction (opening it if needed).
func (c *Connection) GetConnection(ctx context.Context, name string) (*Connection, error) {
	if conn := c.group[name]; conn != nil {
		return conn, nil
	}
	db := c.db.databases[name]
	if db == nil {
		return nil, fmt.Errorf("%s: no database %q in the multi-database", c.db.name, name)
	}
	if c.txn == nil {
		return nil, fmt.Errorf("%s: connection is not in a transaction", c.db.name)
	}
	return db.open(ctx, c.txn, c.group)
}

// Add adds a new object to the connection: it gets an oid and is stored
// at commit. Objects reachable from stored ones are added implicitly.
func (c *Connection) Add(ctx context.Context, obj IPersistent) error {
	p := obj.persistentBase()
	if p.jar == c {
		return nil
	}
	if p.jar != nil {
		return fmt.Errorf("%s: add: object %v already belongs to database %s", c.db.name, p.oid, p.jar.db.name)
	}
	if _, err := classDescription(obj); err != nil {
		return fmt.Errorf("%s: add: %w", c.db.name, err)
	}
	if c.txn == nil {
		return fmt.Errorf("%s: add: connection is not in a transaction", c.db.name)
	}
	oid, err := c.db.stor.NewOid(ctx)
	if err != nil {
		return fmt.Errorf("%s: add: %w", c.db.name, err)
	}
	p.self = obj
	p.jar, p.oid, p.serial, p.oidBytes = c, oid, 0, ""
	p.state = Changed
	c.added[oid] = obj
	c.cacheAdd(obj)
	c.registerChanged(obj)
	return nil
}

func (c *Connection) registerChanged(obj IPersistent) {
	oid := obj.persistentBase().oid
	if c.isChanged[oid] {
		return
	}
	c.isChanged[oid] = true
	c.changed = append(c.changed, obj)
}

// WeakRef is a persistent weak reference (persistent.wref.WeakRef): it
// refers to an object without keeping it from being garbage collected by
// pack.
type WeakRef struct {
	oid      Oid
	oidBytes PyBytes
	database string // "" for the database of jar
	jar      *Connection
	legacy   bool // read in the old form [oid], written back so
}

// NewWeakRef returns a weak reference to obj, which must be in a
// connection.
func NewWeakRef(obj IPersistent) (*WeakRef, error) {
	p := obj.persistentBase()
	if p.jar == nil {
		return nil, errors.New("weak reference to an object that is not in a connection")
	}
	return &WeakRef{oid: p.oid, oidBytes: p.pyOid(), jar: p.jar}, nil
}

// Oid returns the oid of the object referred to.
func (w *WeakRef) Oid() Oid { return w.oid }

// Get returns the object referred to, or nil if it no longer exists.
func (w *WeakRef) Get(ctx context.Context) (IPersistent, error) {
	conn := w.jar
	if w.database != "" && w.database != conn.db.name {
		var err error
		if conn, err = conn.GetConnection(ctx, w.database); err != nil {
			return nil, err
		}
	}
	obj, err := conn.Get(ctx, w.oid)
	var noobj *NoObjectError
	var nodata *NoDataError
	if errors.As(err, &noobj) || errors.As(err, &nodata) {
		return nil, nil
	}
	return obj, err
}

func (p *Persistent) pyOid() PyBytes {
	if p.oidBytes == "" {
		p.oidBytes = PyBytes(p.oid.Bytes())
	}
	return p.oidBytes
}

// persistentID returns the reference to write for v in a state stored
// through c.
func (c *Connection) persistentID(ctx context.Context, v any) (any, bool, error) {
	switch x := v.(type) {
	case *WeakRef:
		db := x.database
		if db == "" {
			db = x.jar.db.name
		}
		if odb := c.db.databases[db]; odb != nil {
			db = odb.name // the name string shared by every reference
		}
		oidb := x.oidBytes
		if oidb == "" {
			oidb = PyBytes(x.oid.Bytes())
		}
		if db == c.db.name {
			if x.legacy {
				return &PyList{Items: []any{oidb}}, true, nil
			}
			return &PyList{Items: []any{"w", PyTuple{oidb}}}, true, nil
		}
		return &PyList{Items: []any{"w", PyTuple{oidb, db}}}, true, nil
	case IPersistent:
		p := x.persistentBase()
		if p.jar == nil {
			if err := c.Add(ctx, x); err != nil {
				return nil, false, err
			}
		}
		var class PyGlobal
		newArgs := false
		if b, ok := x.(*Broken); ok {
			class = b.Class
			_, _, newArgs, _ = classDescForm(b.ClassDesc)
		} else {
			ci := p.class
			if ci == nil {
				ci = lookupGoType(reflect.TypeOf(x))
			}
			if ci == nil {
				return nil, false, fmt.Errorf("type %T is not registered as a persistent class", x)
			}
			class, newArgs = ci.name, ci.newArgs
		}
		if p.jar == c {
			if newArgs {
				return p.pyOid(), true, nil
			}
			return PyTuple{p.pyOid(), class}, true, nil
		}
		if c.group[p.jar.db.name] != p.jar {
			return nil, false, fmt.Errorf("reference to object %v of database %s, which is not in this transaction's multi-database", p.oid, p.jar.db.name)
		}
		if newArgs {
			return &PyList{Items: []any{"n", PyTuple{p.jar.db.name, p.pyOid()}}}, true, nil
		}
		return &PyList{Items: []any{"m", PyTuple{p.jar.db.name, p.pyOid(), class}}}, true, nil
	}
	return nil, false, nil
}

// encodeObject pickles obj as the record to store.
func (c *Connection) encodeObject(ctx context.Context, obj IPersistent) ([]byte, error) {
	desc, err := classDescription(obj)
	if err != nil {
		return nil, err
	}
	st, ok := obj.(PyStateful)
	if !ok {
		return nil, fmt.Errorf("%T does not implement PyStateful", obj)
	}
	e := newPickleEncoder(func(v any) (any, bool, error) { return c.persistentID(ctx, v) })
	if err := e.encode(desc); err != nil {
		return nil, fmt.Errorf("class pickle: %w", err)
	}
	if err := e.encode(st.PyGetState()); err != nil {
		return nil, fmt.Errorf("state pickle: %w", err)
	}
	return e.buf, nil
}

// ---- transaction.DataManager ----

// SortKey orders the connections of a multi-database commit.
func (c *Connection) SortKey() string { return c.db.stor.URL() + "#" + c.db.name }

// Abort discards the changes of the transaction.
func (c *Connection) Abort(ctx context.Context, txn *transaction.Transaction) error {
	for _, obj := range c.changed {
		p := obj.persistentBase()
		if _, isNew := c.added[p.oid]; isNew {
			c.mu.Lock()
			delete(c.cache, p.oid)
			c.mu.Unlock()
			p.jar, p.oid, p.serial, p.oidBytes = nil, 0, 0, ""
			p.state = UpToDate
			continue
		}
		if p.state == Changed {
			p.ghostify()
		}
	}
	for _, oid := range c.resolved {
		if obj := c.cacheGet(oid); obj != nil {
			obj.PInvalidate()
		}
	}
	c.resetChanges()
	return nil
}

func (c *Connection) resetChanges() {
	c.changed = nil
	clear(c.isChanged)
	clear(c.added)
	clear(c.readCurrent)
	c.resolved = nil
	c.stxn = nil
}

// TPCBegin starts the storage's two-phase commit if there is something to
// store.
func (c *Connection) TPCBegin(ctx context.Context, txn *transaction.Transaction) error {
	if len(c.changed) == 0 && len(c.readCurrent) == 0 {
		return nil
	}
	if c.historical {
		return fmt.Errorf("%s: connection at %v is historical: read-only", c.db.name, c.at)
	}
	meta := TxnMeta{User: []byte(txn.User()), Description: []byte(txn.Description())}
	if ext := txn.Extension(); len(ext) > 0 {
		d := NewPyDict()
		for _, it := range ext {
			d.Set(it.Key, it.Value)
		}
		e := newPickleEncoder(nil)
		if err := e.encode(d); err != nil {
			return fmt.Errorf("%s: transaction extension: %w", c.db.name, err)
		}
		meta.Extension = e.buf
	}
	stxn, err := c.db.stor.Begin(ctx, meta)
	if err != nil {
		return fmt.Errorf("%s: %w", c.db.name, err)
	}
	c.stxn = stxn
	return nil
}

// Commit stores the changed and new objects.
func (c *Connection) Commit(ctx context.Context, txn *transaction.Transaction) error {
	if c.stxn == nil {
		return nil
	}
	// Storing may add objects (new ones reachable from stored ones):
	// c.changed grows while it is walked.
	for i := 0; i < len(c.changed); i++ {
		obj := c.changed[i]
		p := obj.persistentBase()
		if p.state != Changed {
			continue // invalidated meanwhile
		}
		data, err := c.encodeObject(ctx, obj)
		if err != nil {
			return fmt.Errorf("%s: store %v (%s): %w", c.db.name, p.oid, p.className(), err)
		}
		if err := c.stxn.Store(ctx, p.oid, p.serial, data); err != nil {
			return fmt.Errorf("%s: %w", c.db.name, err)
		}
	}
	for oid, serial := range c.readCurrent {
		if c.isChanged[oid] {
			continue // stored: checked by Store
		}
		if err := c.stxn.CheckCurrentSerial(ctx, oid, serial); err != nil {
			return fmt.Errorf("%s: %w", c.db.name, err)
		}
	}
	return nil
}

// TPCVote asks the storage to vote.
func (c *Connection) TPCVote(ctx context.Context, txn *transaction.Transaction) error {
	if c.stxn == nil {
		return nil
	}
	resolved, err := c.stxn.Vote(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", c.db.name, err)
	}
	c.resolved = resolved
	return nil
}

// TPCFinish commits in the storage; the stored objects take the new tid
// as their serial.
func (c *Connection) TPCFinish(ctx context.Context, txn *transaction.Transaction) error {
	if c.stxn == nil {
		return nil
	}
	tid, err := c.stxn.Finish(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", c.db.name, err)
	}
	c.ownTid = tid
	for _, obj := range c.changed {
		p := obj.persistentBase()
		if p.state == Changed {
			p.serial = tid
			p.state = UpToDate
		}
	}
	// Resolved objects hold what this transaction wanted, not what the
	// storage merged: reload them.
	for _, oid := range c.resolved {
		if obj := c.cacheGet(oid); obj != nil {
			obj.PInvalidate()
		}
	}
	c.resetChanges()
	return nil
}

// TPCAbort aborts the storage's two-phase commit and discards the changes.
func (c *Connection) TPCAbort(ctx context.Context, txn *transaction.Transaction) error {
	var err error
	if c.stxn != nil {
		err = c.stxn.Abort(ctx)
	}
	if aerr := c.Abort(ctx, txn); aerr != nil && err == nil {
		err = aerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.db.name, err)
	}
	return nil
}

// AfterCompletion puts the connection back in its DB's pool.
func (c *Connection) AfterCompletion(txn *transaction.Transaction) {
	c.txn = nil
	c.group = nil
	if !c.historical {
		c.db.release(c)
	}
}

// connSavepoint is the state of a connection's changes at a savepoint:
// the record of every changed object.
type connSavepoint struct {
	c       *Connection
	records map[Oid][]byte
	changed []IPersistent
	added   map[Oid]IPersistent
}

// Savepoint records the changed objects' states (transaction.Savepointer).
func (c *Connection) Savepoint(ctx context.Context, txn *transaction.Transaction) (transaction.DataManagerSavepoint, error) {
	sp := &connSavepoint{c: c, records: map[Oid][]byte{}, added: map[Oid]IPersistent{}}
	// Encoding may add new objects reachable from changed ones: c.changed
	// grows while it is walked.
	for i := 0; i < len(c.changed); i++ {
		obj := c.changed[i]
		p := obj.persistentBase()
		if p.state != Changed {
			continue
		}
		data, err := c.encodeObject(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("%s: savepoint %v (%s): %w", c.db.name, p.oid, p.className(), err)
		}
		sp.records[p.oid] = data
	}
	sp.changed = append(sp.changed, c.changed...)
	maps.Copy(sp.added, c.added)
	return sp, nil
}

// Rollback brings the changed objects back to their state at the
// savepoint: objects changed after it are reloaded, objects added after
// it leave the connection.
func (sp *connSavepoint) Rollback(ctx context.Context) error {
	c := sp.c
	for _, obj := range c.changed {
		p := obj.persistentBase()
		if _, saved := sp.records[p.oid]; saved {
			continue
		}
		if _, isNew := c.added[p.oid]; isNew {
			if _, wasNew := sp.added[p.oid]; !wasNew {
				c.mu.Lock()
				delete(c.cache, p.oid)
				c.mu.Unlock()
				p.jar, p.oid, p.serial, p.oidBytes = nil, 0, 0, ""
				p.state = UpToDate
				continue
			}
		}
		if p.state == Changed {
			p.ghostify()
		}
	}
	c.changed = append([]IPersistent(nil), sp.changed...)
	clear(c.isChanged)
	clear(c.added)
	maps.Copy(c.added, sp.added)
	for _, obj := range c.changed {
		p := obj.persistentBase()
		c.isChanged[p.oid] = true
		data, saved := sp.records[p.oid]
		if !saved {
			continue
		}
		serial := p.serial
		if p.state != Ghost {
			p.ghostify()
		}
		d := c.newDecoder(ctx, data)
		desc, err := d.decode()
		if err == nil {
			err = c.setState(ctx, obj, d, desc, serial)
		}
		if err != nil {
			return fmt.Errorf("%s: rollback %v: %w", c.db.name, p.oid, err)
		}
		p.state = Changed
	}
	return nil
}
