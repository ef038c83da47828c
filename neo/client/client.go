// Package client is the NEO client: a ZODB storage driver that talks to a
// NEO cluster (NEO/py's protocol version 5) and registers itself for
// "neo://" URLs.
//
//	neo://<cluster>@<master>[,<master>...][?ca=<file>&cert=<file>&key=<file>]
//
// opens the cluster named <cluster> through any of its masters (host:port;
// IPv6 hosts in brackets); with ca, cert and key the links use TLS, as
// NEO/py's ca/cert/key options. Other query options: read_only=true,
// compress=false, read_timeout=<duration> (see Config.ReadTimeout).
//
// How the parts fit:
//
//   - The master session (master.go) finds the primary master (following
//     NotPrimaryMaster), identifies as a client, follows the node list and
//     the partition table, learns the last tid, and turns the master's
//     InvalidateObjects into commit events in tid order. When the master
//     goes away it reconnects, catching up the events of the transactions
//     committed meanwhile.
//   - Storage links (storage.go) are opened on demand, to RUNNING storages
//     only, and identify with the id the master gave; reads go to a readable
//     cell of the partition, in random order, storages that failed lately
//     last, and move on to the next cell when one fails.
//   - Reads (load.go): Load (loadBefore, with the next serial; checksum
//     checked, zlib data inflated), History, Iterate, UndoLog.
//   - Commits (txn.go): the two-phase commit of NEO, stores sent to every cell
//     of the object's partition and answered asynchronously, conflict
//     resolution, deadlock avoidance (NotifyDeadlock → AskRelockObject), vote
//     to every storage involved (FailedVote for those lost), finish at the
//     master (AskFinalTID when its answer is lost), undo (undo.go).
//
// Limits: the client keeps no object cache (every Load asks a storage);
// History reports the size of the data as stored (compressed, by default);
// a transaction's status (TxnMeta.Status) cannot be recorded, since NEO's
// AskStoreTransaction has no field for it; Pack is not offered (NEO packs
// through pack orders, which do not have ZODB's semantics).
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

func init() {
	zodb.RegisterDriver("neo", openURL)
}

// Config is what a client is opened with.
type Config struct {
	Cluster  string         // cluster name (required)
	Masters  []string       // master addresses, host:port (at least one)
	TLS      *tls.Config    // nil: plain TCP
	Net      neonet.Network // nil: TCP
	Logger   *slog.Logger   // nil: slog.Default()
	ReadOnly bool           // identify as a read-only client

	// NoCompress sends object data as it is; by default it is
	// zlib-compressed when that makes it smaller, as NEO/py does.
	NoCompress bool

	// ReadTimeout bounds the wait for one storage's answer to a read
	// (and for the link to it): past it, the storage counts as failed and
	// the next readable cell is asked, so that a storage that stopped
	// answering without closing its links (a network partition) does not
	// hold reads. 0: DefaultReadTimeout; negative: no bound.
	ReadTimeout time.Duration
}

// DefaultReadTimeout is the ReadTimeout of a zero Config.
const DefaultReadTimeout = 30 * time.Second

// Client is a connection to a NEO cluster. It implements
// zodb.IStorageDriver and zodb.IUndoer; its methods may be called from any
// goroutine.
type Client struct {
	cfg      Config
	url      string
	log      *slog.Logger
	dialer   *neonet.Dialer
	watchq   chan<- zodb.Event
	resolver zodb.ConflictResolver

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the master session and storage link goroutines
	closed atomic.Bool

	mu         sync.Mutex
	master     *neonet.Link  // nil when not connected to the primary
	ready      chan struct{} // closed while the master session is ready
	masterErr  error         // why the last session ended
	nid        proto.NodeID  // given by the master
	idTime     proto.Opt[float64]
	nniTime    float64
	nodes      map[proto.NodeID]*nodeInfo
	pt         *pt.Table     // nil until the first SendPartitionTable
	changed    chan struct{} // closed and replaced when the PT or nodes change
	storages   map[proto.NodeID]*storageLink
	failedAt   map[proto.NodeID]time.Time
	gotPT      chan struct{} // closed by the session when it has a PT
	sessionNum int

	// Commit events: evMu orders them; lastTid is the tid of the last one
	// given to the watch channel (LastTid never runs ahead of it).
	evMu         sync.Mutex
	lastTid      atomic.Uint64
	sessionReady bool        // the master session knows the last tid
	finishing    bool        // a commit of this client is finishing
	held         []ownCommit // invalidations held back (see invalidate)

	oidMu sync.Mutex
	oids  []zodb.Oid // allocated by the master, not yet handed out

	commitSem chan struct{}       // one transaction at a time per client
	cur       atomic.Pointer[txn] // the transaction under way

	readSeed uint64 // random: this client's preferences among readable cells (readRank)
}

type nodeInfo struct {
	typ    proto.NodeType
	addr   string
	state  proto.NodeState
	idTime proto.Opt[float64]
}

type ownCommit struct {
	tid     zodb.Tid
	changed []zodb.Oid
}

// New connects to the cluster: it returns once the client is identified by
// the primary master and knows the partition table and the last tid.
// opt may be nil.
func New(ctx context.Context, cfg Config, opt *zodb.DriverOptions) (*Client, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("neo: client: no cluster name")
	}
	if len(cfg.Masters) == 0 {
		return nil, errors.New("neo: client: no master address")
	}
	if opt == nil {
		opt = &zodb.DriverOptions{}
	}
	if opt.ReadOnly {
		cfg.ReadOnly = true
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	// Records name the node: a logger given in cfg already does.
	logger := cfg.Logger
	if logger == nil {
		logger = opt.Logger
		if logger == nil {
			logger = slog.Default()
		}
		logger = logger.With("node", "client")
	}
	c := &Client{
		cfg:       cfg,
		url:       "neo://" + cfg.Cluster + "@" + strings.Join(cfg.Masters, ","),
		log:       logger,
		dialer:    &neonet.Dialer{TLS: cfg.TLS, ConnectLimit: neonet.ConnectLimit, Net: cfg.Net},
		watchq:    opt.Watchq,
		resolver:  opt.Resolver,
		ready:     make(chan struct{}),
		nodes:     map[proto.NodeID]*nodeInfo{},
		changed:   make(chan struct{}),
		storages:  map[proto.NodeID]*storageLink{},
		failedAt:  map[proto.NodeID]time.Time{},
		gotPT:     make(chan struct{}),
		commitSem: make(chan struct{}, 1),
		readSeed:  rand.Uint64(),
	}
	c.lastTid.Store(uint64(zodb.InvalidTid)) // unknown until the first session
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runMaster()
	}()
	if err := c.waitReady(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("neo: client of %s: %w", c.url, err)
	}
	return c, nil
}

// openURL is the zodb driver opener.
func openURL(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
	cfg, err := ParseURL(u)
	if err != nil {
		return nil, 0, err
	}
	if opt != nil && opt.Logger != nil {
		cfg.Logger = opt.Logger
	}
	c, err := New(ctx, cfg, opt)
	if err != nil {
		return nil, 0, err
	}
	c.url = u.String()
	return c, c.head(), nil
}

// ParseURL returns the configuration a neo:// URL describes.
func ParseURL(u *url.URL) (Config, error) {
	var cfg Config
	if u.Scheme != "neo" {
		return cfg, fmt.Errorf("neo: %s: not a neo:// URL", u.Redacted())
	}
	if u.User == nil || u.User.Username() == "" {
		return cfg, fmt.Errorf("neo: %s: no cluster name (neo://name@host:port)", u.Redacted())
	}
	cfg.Cluster = u.User.Username()
	for _, a := range strings.Split(u.Host, ",") {
		if a == "" {
			continue
		}
		cfg.Masters = append(cfg.Masters, a)
	}
	if len(cfg.Masters) == 0 {
		return cfg, fmt.Errorf("neo: %s: no master address", u.Redacted())
	}
	q := u.Query()
	ca, cert, key := q.Get("ca"), q.Get("cert"), q.Get("key")
	if ca != "" || cert != "" || key != "" {
		if ca == "" || cert == "" || key == "" {
			return cfg, fmt.Errorf("neo: %s: TLS needs all of ca, cert and key", u.Redacted())
		}
		tc, err := neonet.LoadTLSConfig(ca, cert, key)
		if err != nil {
			return cfg, fmt.Errorf("neo: %s: %w", u.Redacted(), err)
		}
		cfg.TLS = tc
	}
	if v := q.Get("read_timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return cfg, fmt.Errorf("neo: %s: option read_timeout=%q: %w", u.Redacted(), v, err)
		}
		cfg.ReadTimeout = d
	}
	for name, ptr := range map[string]*bool{"read_only": &cfg.ReadOnly, "compress": nil} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("neo: %s: option %s=%q: not a boolean", u.Redacted(), name, v)
		}
		if ptr != nil {
			*ptr = b
		} else {
			cfg.NoCompress = !b
		}
	}
	return cfg, nil
}

// URL returns the address the client was opened with.
func (c *Client) URL() string { return c.url }

// NodeID returns the id the master gave the client (NoNode before).
func (c *Client) NodeID() proto.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nid
}

// Close disconnects from the cluster. A transaction under way is aborted.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.cancel()
	c.mu.Lock()
	if c.master != nil {
		c.master.Close()
	}
	for _, s := range c.storages {
		s.close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// opError wraps err as the zodb core wants it.
func (c *Client) opError(op string, args any, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() && !errors.Is(err, zodb.ErrClosed) {
		err = fmt.Errorf("%w (%v)", zodb.ErrClosed, err)
	}
	return &zodb.OpError{URL: c.url, Op: op, Args: args, Err: err}
}

// alive fails with ErrClosed after Close.
func (c *Client) alive() error {
	if c.closed.Load() {
		return zodb.ErrClosed
	}
	return nil
}

// head returns the last tid whose event was given to the watchers.
func (c *Client) head() zodb.Tid {
	t := zodb.Tid(c.lastTid.Load())
	if t == zodb.InvalidTid {
		return 0
	}
	return t
}

// LastTid returns the tid of the last transaction the client knows is
// committed: the last one whose event was given to the watch channel.
func (c *Client) LastTid(ctx context.Context) (zodb.Tid, error) {
	if err := c.alive(); err != nil {
		return 0, c.opError("lastTid", nil, err)
	}
	return c.head(), nil
}

// NewOids allocates n new object ids, taken from batches the master gives.
func (c *Client) NewOids(ctx context.Context, n int) ([]zodb.Oid, error) {
	if err := c.alive(); err != nil {
		return nil, c.opError("newOids", n, err)
	}
	if c.cfg.ReadOnly {
		return nil, c.opError("newOids", n, zodb.ErrReadOnly)
	}
	c.oidMu.Lock()
	defer c.oidMu.Unlock()
	for len(c.oids) < n {
		want := max(n-len(c.oids), 100)
		m, err := c.askMaster(ctx, &proto.AskNewOIDs{NumOids: uint32(want)})
		if err != nil {
			return nil, c.opError("newOids", n, err)
		}
		a, ok := m.(*proto.AnswerNewOIDs)
		if !ok || len(a.Oids) == 0 {
			return nil, c.opError("newOids", n, fmt.Errorf("master answered %T with no oid", m))
		}
		c.oids = append(c.oids, a.Oids...)
	}
	v := append([]zodb.Oid(nil), c.oids[:n]...)
	c.oids = c.oids[n:]
	return v, nil
}
