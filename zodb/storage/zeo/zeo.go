// Package zeo is a client of ZEO, the ZODB storage server: a zodb storage
// driver that speaks the ZEO 5 protocol (as ZEO 5 and 6 servers do) in
// either of its encodings, pickle ("Z5") or msgpack ("M5"), whichever the
// server announces.
//
// Importing the package registers the "zeo" URL scheme with zodb.Open:
//
//	zeo://host:port[?storage=NAME][&client_label=TEXT]   TCP
//	zeo:///path/to/socket[?storage=NAME]                  Unix socket (no host)
//
// NAME is the name of the storage on the server; it defaults to "1", the
// name runzeo gives the storage of its configuration.
//
// How the parts fit: conn.go holds one connection (handshake, framing,
// calls matched to replies by message id, one-way calls, heartbeats);
// pickle.go and msgpack.go are the two encodings of messages; errors.go
// rebuilds Go errors from the server's error replies. Storage (this file)
// owns the current connection, reconnects when it drops and verifies what
// it missed meanwhile, and turns the server's invalidations into
// zodb.CommitEvents; txn.go is the two-phase commit; iter.go the
// transaction iterator.
//
// Differences from the Python client worth knowing:
//
//   - There is no client cache: every Load goes to the server.
//   - zodb names transactions by tid; ZEO's undo ids for FileStorage are
//     the base64 of the tid (undoLog's "id"). UndoLog decodes them and
//     ITxn.Undo encodes them back, so this works with storages whose undo
//     ids are such tids (FileStorage, as served by runzeo). The objects an
//     undo changes are known only when the server votes: Undo returns no
//     oids, Vote returns them (with the oids whose conflicts were resolved).
//   - The server reports a deleted object as POSKeyError, so Load returns
//     *zodb.NoObjectError for it, not *zodb.NoDataError.
//   - LastTid is answered locally, as ZEO's client does: the last tid
//     whose commit event was handed to Watchq.
//   - One transaction at a time per Storage (ZEO allows one per
//     connection): Begin waits while another transaction is open.
//   - Pack packs at the time of packTid (rounded up to what a float time
//     can say) and always collects garbage, as ZEO's server does.
//   - UndoLog's filter is applied on the client, to the entries
//     undoLog(first, last) returned.
//   - Blobs (zodb.IBlobLoader, zodb.IBlobTxn; blob.go) are sent and
//     received over the connection, as without a shared blob directory;
//     there is no client blob cache (ZEO's blob_dir): LoadBlob downloads
//     the blob every time, into memory or, when large, a temporary file.
package zeo

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/neozodb/neo/zodb"
)

func init() {
	zodb.RegisterDriver("zeo", open)
}

// Options beyond the URL.
var (
	// heartbeatInterval is how often an idle connection is kept alive.
	heartbeatInterval = 60 * time.Second
	// reconnectDelay is the delay between failed connection attempts
	// after the first, immediate one (it doubles up to reconnectDelayMax).
	reconnectDelay    = 250 * time.Millisecond
	reconnectDelayMax = 2 * time.Second
)

// Storage is a ZEO client storage. It implements zodb.IStorageDriver,
// zodb.IUndoer, zodb.IPacker and zodb.IBlobLoader; its transactions
// implement zodb.IBlobTxn.
type Storage struct {
	url         string
	network     string // "tcp" or "unix"
	addr        string
	storageName string
	label       string
	readOnly    bool
	resolver    zodb.ConflictResolver
	watchq      chan<- zodb.Event
	log         *slog.Logger

	mu        sync.Mutex
	cur       *conn         // nil while disconnected
	connected chan struct{} // closed while cur != nil
	known     zodb.Tid      // last tid whose event was queued for delivery
	head      zodb.Tid      // last tid whose event was delivered
	headMoved chan struct{} // closed and replaced when head moves
	events    []queuedEvent // waiting for delivery, in order
	evReady   chan struct{} // signalled when events were added (cap 1)
	oidPool   []zodb.Oid
	nextTxnID int64
	iterGC    []int64       // server iterator ids to drop after the next commit
	info      *dict         // last get_info / info
	txnSlot   chan struct{} // holds a token while a transaction is open
	at0       zodb.Tid      // the server's last tid when opened

	closed      chan struct{}
	closedCtx   context.Context // done once closed
	closeCancel context.CancelFunc
	closeOnce   sync.Once
	wg          sync.WaitGroup // connection manager, event delivery, readers, heartbeats
}

type queuedEvent struct {
	ev  zodb.Event
	tid zodb.Tid // head after it is delivered
}

var (
	_ zodb.IStorageDriver = (*Storage)(nil)
	_ zodb.IUndoer        = (*Storage)(nil)
	_ zodb.IPacker        = (*Storage)(nil)
	_ zodb.IBlobLoader    = (*Storage)(nil)
)

// parseURL reads a zeo:// URL.
func parseURL(u *url.URL) (network, addr, storageName, label string, err error) {
	q := u.Query()
	storageName = "1"
	if v, ok := q["storage"]; ok && len(v) > 0 {
		storageName = v[0]
	}
	label = q.Get("client_label")
	for k := range q {
		if k == "blob_dir" || k == "shared_blob_dir" {
			return "", "", "", "", fmt.Errorf("zeo: URL option %q: this client keeps no blob directory (LoadBlob downloads blobs from the server)", k)
		}
		if k != "storage" && k != "client_label" {
			return "", "", "", "", fmt.Errorf("zeo: unknown URL option %q", k)
		}
	}
	switch {
	case u.Host != "":
		if u.Path != "" && u.Path != "/" {
			return "", "", "", "", fmt.Errorf("zeo: URL %q: a TCP address has no path", u.String())
		}
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return "", "", "", "", fmt.Errorf("zeo: URL %q: %w", u.String(), err)
		}
		return "tcp", u.Host, storageName, label, nil
	case u.Path != "":
		return "unix", u.Path, storageName, label, nil
	}
	return "", "", "", "", fmt.Errorf("zeo: URL %q: no address", u.String())
}

func open(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
	network, addr, name, label, err := parseURL(u)
	if err != nil {
		return nil, 0, err
	}
	s := &Storage{
		url:         u.String(),
		network:     network,
		addr:        addr,
		storageName: name,
		label:       label,
		readOnly:    opt.ReadOnly,
		resolver:    opt.Resolver,
		watchq:      opt.Watchq,
		log:         discardLogger,
		connected:   make(chan struct{}),
		headMoved:   make(chan struct{}),
		evReady:     make(chan struct{}, 1),
		closed:      make(chan struct{}),
		txnSlot:     make(chan struct{}, 1),
	}
	s.closedCtx, s.closeCancel = context.WithCancel(context.Background())
	c, err := s.connect(ctx, true)
	if err != nil {
		s.closeCancel()
		s.wg.Wait()
		return nil, 0, fmt.Errorf("zeo: open %s: %w", s.url, err)
	}
	s.mu.Lock()
	at0 := s.at0
	s.mu.Unlock()
	s.wg.Add(2)
	go s.deliverEvents()
	go s.manageConnection(c)
	return s, at0, nil
}

// URL returns the URL the storage was opened with.
func (s *Storage) URL() string { return s.url }

// Close closes the connection and stops reconnecting. Outstanding calls
// fail with zodb.ErrClosed.
func (s *Storage) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.closeCancel()
		s.mu.Lock()
		c := s.cur
		s.mu.Unlock()
		if c != nil {
			c.shutdown(zodb.ErrClosed)
		}
		s.wg.Wait()
	})
	return nil
}

func (s *Storage) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// dial opens the network connection and does the handshake.
func (s *Storage) dial(ctx context.Context) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, s.network, s.addr)
	if err != nil {
		return nil, err
	}
	fr := &frameReader{r: nc}
	cd, err := handshake(ctx, nc, fr)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return newConn(s, nc, cd), nil
}

// connect makes a connection usable: handshake, register, verification of
// what was missed since the last connection, get_info, client label. On
// success the connection is the current one.
func (s *Storage) connect(ctx context.Context, first bool) (*conn, error) {
	// Close must be able to stop a connection attempt.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closedCtx, cancel)
	defer stop()

	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c.readLoop()
	}()
	fail := func(err error) (*conn, error) {
		c.shutdown(err)
		return nil, err
	}

	var readOnlyArg any = int64(0) // what ZEO's client sends by default
	if s.readOnly {
		readOnlyArg = true
	}
	r, err := c.call(ctx, "register", tuple{s.storageName, readOnlyArg}, nil)
	if err != nil {
		return fail(fmt.Errorf("register %q: %w", s.storageName, err))
	}
	serverTid, err := tidArg(r)
	if err != nil {
		return fail(fmt.Errorf("register %q: %w", s.storageName, err))
	}

	if first {
		s.mu.Lock()
		s.known, s.head, s.at0 = serverTid, serverTid, serverTid
		s.mu.Unlock()
	} else if err := s.verify(ctx, c, serverTid); err != nil {
		return fail(err)
	}

	r, err = c.call(ctx, "get_info", tuple{}, nil)
	if err != nil {
		return fail(fmt.Errorf("get_info: %w", err))
	}
	info, _ := r.(*dict)
	if s.label != "" {
		if err := c.async("set_client_label", tuple{s.label}); err != nil {
			return fail(err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed() {
		c.shutdown(zodb.ErrClosed)
		return nil, zodb.ErrClosed
	}
	if c.isDown() {
		return nil, c.disconnectedErr()
	}
	s.info = info
	// Invalidations that came during verification, past what it covered.
	for _, ev := range c.held {
		s.enqueueLocked(ev, ev.Tid)
	}
	c.held, c.holding = nil, false
	s.cur = c
	close(s.connected)
	return c, nil
}

// verify brings the event stream up to the server's last tid after a
// reconnection, as ZEO's cache verification does: nothing when we are up
// to date, the changes from getInvalidations when the server still knows
// them, a full invalidation (*zodb.EventError) when it does not, and a
// refusal when the server is behind us.
//
// Invalidations arriving meanwhile are queued by serverCall, which drops
// those at or below the tid verified here.
func (s *Storage) verify(ctx context.Context, c *conn, serverTid zodb.Tid) error {
	s.mu.Lock()
	known := s.known
	s.mu.Unlock()
	switch {
	case serverTid == known:
		return nil
	case serverTid < known:
		return fmt.Errorf("server's last transaction %v is before ours %v: refusing a server that went back in time", serverTid, known)
	}
	r, err := c.call(ctx, "getInvalidations", tuple{known.Bytes()}, nil)
	if err != nil {
		return fmt.Errorf("getInvalidations(%v): %w", known, err)
	}
	if r == nil {
		s.enqueue(&zodb.EventError{Err: fmt.Errorf("zeo %s: reconnected; the server no longer knows what changed after %v (its last transaction is %v)", s.addr, known, serverTid)}, serverTid)
		return nil
	}
	t, ok := items(r)
	if !ok || len(t) != 2 {
		return fmt.Errorf("getInvalidations(%v): bad reply %.200s", known, formatValue(r))
	}
	last, err := tidArg(t[0])
	if err != nil {
		return fmt.Errorf("getInvalidations(%v): %w", known, err)
	}
	oids, err := oidList(t[1])
	if err != nil {
		return fmt.Errorf("getInvalidations(%v): %w", known, err)
	}
	s.enqueue(&zodb.CommitEvent{Tid: max(last, serverTid), Changed: oids}, max(last, serverTid))
	return nil
}

// enqueue queues an event for delivery, unless its tid is not after the
// last one queued.
func (s *Storage) enqueue(ev zodb.Event, tid zodb.Tid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueueLocked(ev, tid)
}

func (s *Storage) enqueueLocked(ev zodb.Event, tid zodb.Tid) {
	if tid <= s.known {
		return
	}
	s.known = tid
	s.events = append(s.events, queuedEvent{ev, tid})
	select {
	case s.evReady <- struct{}{}:
	default:
	}
}

// deliverEvents owns the sending of events to Watchq, in order; head
// moves only after an event was handed over.
func (s *Storage) deliverEvents() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if len(s.events) == 0 {
			s.mu.Unlock()
			select {
			case <-s.evReady:
				continue
			case <-s.closed:
				return
			}
		}
		qe := s.events[0]
		s.events = s.events[1:]
		s.mu.Unlock()
		if s.watchq != nil {
			select {
			case s.watchq <- qe.ev:
			case <-s.closed:
				return
			}
		}
		s.mu.Lock()
		if qe.tid > s.head {
			s.head = qe.tid
			close(s.headMoved)
			s.headMoved = make(chan struct{})
		}
		s.mu.Unlock()
	}
}

// waitHead waits until the events up to tid were delivered.
func (s *Storage) waitHead(ctx context.Context, tid zodb.Tid) error {
	for {
		s.mu.Lock()
		if s.head >= tid {
			s.mu.Unlock()
			return nil
		}
		ch := s.headMoved
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return zodb.ErrClosed
		}
	}
}

// manageConnection owns the connection: when it drops it reconnects, at
// once and then with growing delays, until Close.
func (s *Storage) manageConnection(c *conn) {
	defer s.wg.Done()
	var hbDone chan struct{}
	startHeartbeat := func(c *conn) {
		hbDone = make(chan struct{})
		done := hbDone
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(done)
			t := time.NewTicker(heartbeatInterval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					if c.heartbeat() != nil {
						return
					}
				case <-c.down:
					return
				}
			}
		}()
	}
	startHeartbeat(c)
	for {
		select {
		case <-c.down:
		case <-s.closed:
			c.shutdown(zodb.ErrClosed)
			<-c.readerDone
			return
		}
		<-c.readerDone
		<-hbDone
		s.log.Info("zeo: disconnected", "addr", s.addr, "err", c.err)

		delay := time.Duration(0)
		for {
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-s.closed:
					t.Stop()
					return
				}
			}
			nc, err := s.connect(context.Background(), false)
			if err == nil {
				c = nc
				break
			}
			if s.isClosed() {
				return
			}
			s.log.Warn("zeo: reconnect failed", "addr", s.addr, "err", err)
			if delay == 0 {
				delay = reconnectDelay
			} else {
				delay = min(2*delay, reconnectDelayMax)
			}
		}
		startHeartbeat(c)
	}
}

// conn returns the current connection, waiting for one while ctx allows.
// The connection may go down at any time; calls on it then fail with
// *DisconnectedError.
func (s *Storage) conn(ctx context.Context) (*conn, error) {
	for {
		s.mu.Lock()
		c, ch := s.cur, s.connected
		s.mu.Unlock()
		if c != nil {
			return c, nil
		}
		select {
		case <-ch:
		case <-s.closed:
			return nil, zodb.ErrClosed
		case <-ctx.Done():
			return nil, &DisconnectedError{Addr: s.addr, Err: ctx.Err()}
		}
	}
}

// dropConn forgets c as the current connection.
func (s *Storage) dropConn(c *conn) {
	s.mu.Lock()
	if s.cur == c {
		s.cur = nil
		s.connected = make(chan struct{})
	}
	s.mu.Unlock()
}

// callWith makes a synchronous call on the current connection.
func (s *Storage) call(ctx context.Context, method string, args ...any) (any, error) {
	if s.isClosed() {
		return nil, zodb.ErrClosed
	}
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, method, tuple(args), nil)
}

// serverCall handles a one-way call from the server.
func (s *Storage) serverCall(c *conn, m *msg) error {
	args, _ := m.args.(tuple)
	switch m.method {
	case "invalidateTransaction":
		if len(args) != 2 {
			return fmt.Errorf("invalidateTransaction: bad arguments %.200s", formatValue(m.args))
		}
		tid, err := tidArg(args[0])
		if err != nil {
			return fmt.Errorf("invalidateTransaction: %w", err)
		}
		oids, err := oidList(args[1])
		if err != nil {
			return fmt.Errorf("invalidateTransaction: %w", err)
		}
		ev := &zodb.CommitEvent{Tid: tid, Changed: oids}
		s.mu.Lock()
		if c.holding {
			c.held = append(c.held, ev)
		} else {
			s.enqueueLocked(ev, tid)
		}
		s.mu.Unlock()
	case "info":
		if len(args) == 1 {
			if d, ok := args[0].(*dict); ok {
				s.mu.Lock()
				s.info = d
				s.mu.Unlock()
			}
		}
	case "receiveBlobStart", "receiveBlobChunk", "receiveBlobStop":
		return c.blobMessage(m)
	default:
		s.log.Warn("zeo: unknown call from the server", "addr", s.addr, "method", m.method)
	}
	return nil
}

// ---- reading ----

func tidArg(v any) (zodb.Tid, error) {
	b, ok := v.([]byte)
	if !ok {
		return 0, fmt.Errorf("expected an 8-byte tid, got %.100s", formatValue(v))
	}
	return zodb.TidFromBytes(b)
}

func oidArg(v any) (zodb.Oid, error) {
	b, ok := v.([]byte)
	if !ok {
		return 0, fmt.Errorf("expected an 8-byte oid, got %.100s", formatValue(v))
	}
	return zodb.OidFromBytes(b)
}

func oidList(v any) ([]zodb.Oid, error) {
	xs, ok := items(v)
	if !ok {
		return nil, fmt.Errorf("expected a list of oids, got %.100s", formatValue(v))
	}
	oids := make([]zodb.Oid, 0, len(xs))
	for _, x := range xs {
		oid, err := oidArg(x)
		if err != nil {
			return nil, err
		}
		oids = append(oids, oid)
	}
	return oids, nil
}

func optTid(v any) (zodb.Tid, error) {
	if v == nil {
		return 0, nil
	}
	return tidArg(v)
}

func (s *Storage) opErr(op string, args any, err error) error {
	if err == nil {
		return nil
	}
	return &zodb.OpError{URL: s.url, Op: op, Args: args, Err: err}
}

// Load loads the revision of xid.Oid current at xid.At:
// loadBefore(oid, At+1).
func (s *Storage) Load(ctx context.Context, xid zodb.Xid) ([]byte, zodb.Tid, zodb.Tid, error) {
	before := zodb.TidMax
	if xid.At < zodb.TidMax {
		before = xid.At + 1
	}
	data, serial, next, err := s.loadBefore(ctx, xid.Oid, before)
	return data, serial, next, s.opErr("load", xid, err)
}

func (s *Storage) loadBefore(ctx context.Context, oid zodb.Oid, before zodb.Tid) ([]byte, zodb.Tid, zodb.Tid, error) {
	r, err := s.call(ctx, "loadBefore", oid.Bytes(), before.Bytes())
	if err != nil {
		return nil, 0, 0, err
	}
	if r == nil {
		return nil, 0, 0, &zodb.NoDataError{Oid: oid}
	}
	t, ok := items(r)
	if !ok || len(t) != 3 {
		return nil, 0, 0, fmt.Errorf("loadBefore: bad reply %.200s", formatValue(r))
	}
	serial, err := tidArg(t[1])
	if err != nil {
		return nil, 0, 0, fmt.Errorf("loadBefore: %w", err)
	}
	next, err := optTid(t[2])
	if err != nil {
		return nil, 0, 0, fmt.Errorf("loadBefore: %w", err)
	}
	if t[0] == nil {
		return nil, 0, 0, &zodb.NoDataError{Oid: oid, DeletedAt: serial}
	}
	data, ok := t[0].([]byte)
	if !ok {
		return nil, 0, 0, fmt.Errorf("loadBefore: data is %.100s", formatValue(t[0]))
	}
	return data, serial, next, nil
}

// loadSerial loads exactly revision serial of oid.
func (s *Storage) loadSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) ([]byte, error) {
	r, err := s.call(ctx, "loadSerial", oid.Bytes(), serial.Bytes())
	if err != nil {
		return nil, err
	}
	data, ok := r.([]byte)
	if !ok {
		return nil, fmt.Errorf("loadSerial: bad reply %.100s", formatValue(r))
	}
	return data, nil
}

// LastTid returns the tid of the last transaction whose event was handed
// to Watchq (ZEO's client also answers it locally, from what the server
// told it). It does not wait for events a watcher has not taken yet.
func (s *Storage) LastTid(ctx context.Context) (zodb.Tid, error) {
	if s.isClosed() {
		return 0, s.opErr("lastTransaction", nil, zodb.ErrClosed)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head, nil
}

// NewOids allocates n oids, from batches the server hands out (new_oids()).
func (s *Storage) NewOids(ctx context.Context, n int) ([]zodb.Oid, error) {
	if s.isClosed() {
		return nil, s.opErr("new_oids", nil, zodb.ErrClosed)
	}
	if s.readOnly {
		return nil, s.opErr("new_oids", nil, zodb.ErrReadOnly)
	}
	var out []zodb.Oid
	for len(out) < n {
		s.mu.Lock()
		k := min(n-len(out), len(s.oidPool))
		out = append(out, s.oidPool[:k]...)
		s.oidPool = s.oidPool[k:]
		s.mu.Unlock()
		if len(out) == n {
			break
		}
		r, err := s.call(ctx, "new_oids")
		if err != nil {
			return nil, s.opErr("new_oids", nil, err)
		}
		oids, err := oidList(r)
		if err != nil || len(oids) == 0 {
			return nil, s.opErr("new_oids", nil, fmt.Errorf("bad reply %.200s", formatValue(r)))
		}
		slices.Sort(oids)
		s.mu.Lock()
		s.oidPool = append(s.oidPool, oids...)
		s.mu.Unlock()
	}
	return out, nil
}

// txnInfoFromDict fills TxnInfo from a history/undoLog dict; keys other
// than the known ones are the extension.
func txnInfoFromDict(d *dict, known ...string) (zodb.TxnInfo, error) {
	info := zodb.TxnInfo{Status: zodb.TxnComplete}
	ext := &dict{}
	for _, e := range d.items {
		k, _ := e.k.(string)
		switch {
		case k == "user_name":
			info.User = textOrBytes(e.v)
		case k == "description":
			info.Description = textOrBytes(e.v)
		case slices.Contains(known, k):
		default:
			ext.add(e.k, e.v)
		}
	}
	var err error
	info.Extension, err = encodeExtension(ext)
	return info, err
}

func textOrBytes(v any) []byte {
	switch v := v.(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	return nil
}

func intArg(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v), true
		}
	}
	return 0, false
}

// History returns up to size revisions of oid, newest first.
func (s *Storage) History(ctx context.Context, oid zodb.Oid, size int) ([]zodb.HistoryEntry, error) {
	r, err := s.call(ctx, "history", oid.Bytes(), int64(size))
	if err != nil {
		return nil, s.opErr("history", oid, err)
	}
	xs, ok := items(r)
	if !ok {
		return nil, s.opErr("history", oid, fmt.Errorf("bad reply %.200s", formatValue(r)))
	}
	var out []zodb.HistoryEntry
	for _, x := range xs {
		d, ok := x.(*dict)
		if !ok {
			return nil, s.opErr("history", oid, fmt.Errorf("bad entry %.200s", formatValue(x)))
		}
		info, err := txnInfoFromDict(d, "time", "tid", "size", "serial", "version")
		if err != nil {
			return nil, s.opErr("history", oid, err)
		}
		tv, _ := d.get("tid")
		if info.Tid, err = tidArg(tv); err != nil {
			return nil, s.opErr("history", oid, err)
		}
		sv, _ := d.get("size")
		n, _ := intArg(sv)
		out = append(out, zodb.HistoryEntry{TxnInfo: info, Size: int(n)})
	}
	return out, nil
}

// UndoLog lists undoable transactions, newest first (undoLog(first,
// last)). ZEO cannot pass a filter to the server: with a filter, the whole
// log is fetched, filtered here, and then cut to first/last.
func (s *Storage) UndoLog(ctx context.Context, first, last int, filter func(*zodb.UndoInfo) bool) ([]zodb.UndoInfo, error) {
	if filter == nil {
		r, err := s.call(ctx, "undoLog", int64(first), int64(last))
		if err != nil {
			return nil, s.opErr("undoLog", nil, err)
		}
		out, err := undoInfos(r)
		return out, s.opErr("undoLog", nil, err)
	}
	r, err := s.call(ctx, "undoLog", int64(0), int64(math.MaxInt32))
	if err != nil {
		return nil, s.opErr("undoLog", nil, err)
	}
	all, err := undoInfos(r)
	if err != nil {
		return nil, s.opErr("undoLog", nil, err)
	}
	all = slices.DeleteFunc(all, func(u zodb.UndoInfo) bool { return !filter(&u) })
	n := last - first
	if last < 0 {
		n = -last
	}
	first = min(max(first, 0), len(all))
	return all[first:min(first+max(n, 0), len(all))], nil
}

// undoInfo is the server's undoInfo(first, last, spec).
func (s *Storage) undoInfo(ctx context.Context, first, last int, spec *dict) ([]zodb.UndoInfo, error) {
	var sp any
	if spec != nil {
		sp = spec
	}
	r, err := s.call(ctx, "undoInfo", int64(first), int64(last), sp)
	if err != nil {
		return nil, s.opErr("undoInfo", nil, err)
	}
	out, err := undoInfos(r)
	return out, s.opErr("undoInfo", nil, err)
}

func undoInfos(r any) ([]zodb.UndoInfo, error) {
	xs, ok := items(r)
	if !ok {
		return nil, fmt.Errorf("bad reply %.200s", formatValue(r))
	}
	out := make([]zodb.UndoInfo, 0, len(xs))
	for _, x := range xs {
		d, ok := x.(*dict)
		if !ok {
			return nil, fmt.Errorf("bad entry %.200s", formatValue(x))
		}
		info, err := txnInfoFromDict(d, "id", "time", "size")
		if err != nil {
			return nil, err
		}
		idv, _ := d.get("id")
		if info.Tid, err = tidFromUndoID(idv); err != nil {
			return nil, err
		}
		sv, _ := d.get("size")
		n, _ := intArg(sv)
		out = append(out, zodb.UndoInfo{TxnInfo: info, Size: n})
	}
	return out, nil
}

// undoID is ZEO's undo id of a transaction: base64 of its tid (FileStorage).
func undoID(tid zodb.Tid) []byte {
	return []byte(base64.StdEncoding.EncodeToString(tid.Bytes()))
}

func tidFromUndoID(v any) (zodb.Tid, error) {
	b := textOrBytes(v)
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil || len(raw) != 8 {
		return 0, fmt.Errorf("undo id %q is not the base64 of a tid", b)
	}
	return zodb.TidFromBytes(raw)
}

// packTime converts a pack tid to the float Unix time ZEO's pack takes:
// the smallest float whose tid is not before packTid.
func packTime(packTid zodb.Tid) float64 {
	t := packTid.UnixTime()
	for i := 0; i < 64 && zodb.TidFromUnix(t) < packTid; i++ {
		t = math.Nextafter(t, math.Inf(1))
	}
	return t
}

// Pack packs the storage at packTid and waits for the pack to be done.
// ZEO's pack always collects garbage: gc=false is refused.
func (s *Storage) Pack(ctx context.Context, packTid zodb.Tid, gc bool) error {
	if !gc {
		return s.opErr("pack", packTid, fmt.Errorf("pack without garbage collection: %w", zodb.ErrUnsupported))
	}
	return s.opErr("pack", packTid, s.pack(ctx, packTime(packTid), true))
}

func (s *Storage) pack(ctx context.Context, t float64, wait bool) error {
	if s.readOnly {
		return zodb.ErrReadOnly
	}
	_, err := s.call(ctx, "pack", t, wait)
	return err
}

// ---- helpers for server calls without a zodb counterpart ----

func (s *Storage) ping(ctx context.Context) error {
	_, err := s.call(ctx, "ping")
	return err
}

func (s *Storage) heartbeat(ctx context.Context) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	return c.heartbeat()
}

// encodeExtension pickles an extension dict as TxnInfo.Extension holds it
// (empty for an empty dict).
func encodeExtension(d *dict) ([]byte, error) {
	if d == nil || len(d.items) == 0 {
		return nil, nil
	}
	return pickleCodec{}.encode(d)
}

// decodeExtension reads TxnMeta.Extension (a pickled dict, or empty).
func decodeExtension(b []byte) (*dict, error) {
	if len(b) == 0 {
		return &dict{}, nil
	}
	v, err := decodePickle(b)
	if err != nil {
		return nil, fmt.Errorf("extension: %w", err)
	}
	d, ok := v.(*dict)
	if !ok {
		return nil, fmt.Errorf("extension is not a dict: %.100s", formatValue(v))
	}
	return d, nil
}
