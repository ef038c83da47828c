// Package storage is the NEO storage node: it keeps a part of the cluster's
// data (the cells the partition table gives it) in a backend database and
// serves it to clients and other storage nodes, following the primary
// master's orders, wire-compatible with NEO/py's storage (protocol 5).
//
// A node is made by New (which binds its listener, so that Addr is known
// at once) and runs with Run, which connects to the primary master and
// serves until its context ends or the master tells it to stop.
//
// # Parts
//
//   - master.go: finding the primary master (NotPrimaryMaster
//     redirections), identification (the node id and the cluster name are
//     kept in the backend's config table), and the master's orders:
//     recovery, verification, start and stop of operation, partition table
//     changes (ptid old+1), node list, the lock and unlock steps of commits.
//   - serve.go: links accepted from clients and other storages, their
//     identification (peers must be known from the master with the same
//     id_timestamp; a peer newer than the last node list waits for it) and
//     their requests: loads, stores, votes, iteration, undo, final tids,
//     and the source side of replication.
//   - txn.go: the transaction manager: write locks of stores in progress,
//     read locks between lock and unlock, delayed stores retried in ttid
//     order, deadlock notification and relock, lockless stores during
//     replication.
//   - replicate.go: catching up OUT_OF_DATE cells from other storages,
//     chunk by chunk, with persistent progress; NotifyReplicationDone.
//   - check.go: replica checks, as source and as checker.
//   - pack.go: approved pack orders, done in the background.
//
// # Concurrency
//
// Node state (partition table, nodes, transactions, replication progress) is
// guarded by one mutex, as NEO/py handles every packet under its database
// lock. Each link has one goroutine receiving its packets in order. Packets
// to send while the mutex is held go to an outbox, handed once it is released
// to the writer goroutine of each link, which sends them in order (a peer that
// does not read holds up its own link only). Loads only take a read lock of their own (viewMu) for
// a short check and read the backend without the node mutex, which is held
// during durable writes.
//
// # Not implemented
//
// Backup clusters (Replicate orders from the master, replication from an
// upstream cluster, checks against an upstream cluster), --new-nid, the
// option to keep data of discarded partitions, topology (devpath is sent
// empty), and the "already connected" rule for two links with one peer.
package storage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// Config is the configuration of a storage node.
type Config struct {
	Cluster string          // cluster name (required)
	Bind    string          // listen address host:port; port 0: ephemeral, the real address is announced
	Masters []string        // addresses of the cluster's masters
	NodeID  proto.NodeID    // proto.NoNode: the one stored in the backend, or chosen by the master
	Backend backend.Backend // opened (and closed after Run) by the caller
	TLS     *tls.Config     // nil: plain TCP
	Net     neonet.Network  // nil: TCP
	Logger  *slog.Logger    // nil: slog.Default()
}

// Storage is a storage node.
type Storage struct {
	cfg    Config
	db     backend.Backend
	ln     *neonet.Listener
	addr   proto.Address // announced listening address
	dialer *neonet.Dialer
	logger *slog.Logger

	// linkWG counts the goroutines serving links (accepted or dialed).
	linkWG sync.WaitGroup

	mu sync.Mutex
	// viewMu guards, besides mu, what loads check without mu (which is
	// held during durable writes): nid, pt, operational, tm and
	// tm.loadLock are changed with both held.
	viewMu sync.RWMutex
	log    *slog.Logger // with the node name once known
	nid    proto.NodeID
	pt     *pt.Table // nil: no partition table yet

	masters      []string // known master addresses
	master       *neonet.Link
	nodes        map[proto.NodeID]*nodeInfo
	nodesTime    float64       // timestamp of the last NotifyNodeInformation
	nodesSeen    bool          // a NotifyNodeInformation was processed since identification
	nodesChanged chan struct{} // closed (and replaced) on every NotifyNodeInformation
	ownIDTime    proto.Opt[float64]

	clusterState proto.ClusterState
	operational  bool
	// backupTid is the tid up to which a backup cluster's data is
	// complete (InvalidTid: not a backup): clients are served read-only,
	// capped at it.
	backupTid    zodb.Tid
	lastPackID   zodb.Tid
	packReported zodb.Tid // last NotifyPackCompleted sent

	links map[*neonet.Link]*peer // links with peers (not the master)
	peers map[proto.NodeID]*peerConn
	tm    *txnManager
	repl  *replicator

	// outbox holds packets decided under mu, sent by flush in order.
	outbox  []outPacket
	sendMu  sync.Mutex // guards writers
	writers map[*neonet.Link]*linkWriter
	sendWG  sync.WaitGroup // writers
	runCtx  context.Context
}

// nodeInfo is what the master told about a node.
type nodeInfo struct {
	typ    proto.NodeType
	addr   proto.Opt[proto.Address]
	nid    proto.NodeID
	state  proto.NodeState
	idTime proto.Opt[float64]
}

type outPacket struct {
	link  *neonet.Link
	req   *neonet.Request // non-nil: an answer to it
	msg   proto.Msg
	abort bool // answer, then close the link
	// barrier, if not nil, is closed when the packets before it are sent
	barrier chan struct{}
}

// New checks cfg and binds the listener.
func New(ctx context.Context, cfg Config) (*Storage, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("storage: cluster name is required")
	}
	if len(cfg.Masters) == 0 {
		return nil, errors.New("storage: no master address")
	}
	if cfg.Backend == nil {
		return nil, errors.New("storage: no backend")
	}
	if t, ok := cfg.NodeID.Type(); cfg.NodeID != proto.NoNode && (!ok || t != proto.Storage) {
		return nil, fmt.Errorf("storage: node id %s is not a storage id", cfg.NodeID)
	}
	bind := cfg.Bind
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	lc := neonet.ListenConfig{TLS: cfg.TLS, Net: cfg.Net}
	ln, err := lc.Listen(ctx, bind)
	if err != nil {
		return nil, fmt.Errorf("storage: listen %s: %w", bind, err)
	}
	addr, err := parseAddress(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("storage: listen %s: %w", bind, err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Storage{
		cfg:          cfg,
		db:           cfg.Backend,
		ln:           ln,
		addr:         addr,
		dialer:       &neonet.Dialer{TLS: cfg.TLS, Net: cfg.Net, ConnectLimit: neonet.ConnectLimit},
		logger:       logger,
		log:          logger.With("node", "S?"),
		masters:      append([]string(nil), cfg.Masters...),
		nodes:        map[proto.NodeID]*nodeInfo{},
		nodesChanged: make(chan struct{}),
		links:        map[*neonet.Link]*peer{},
		peers:        map[proto.NodeID]*peerConn{},
		writers:      map[*neonet.Link]*linkWriter{},
		backupTid:    zodb.InvalidTid,
	}
	return s, nil
}

// Addr returns the real listen address.
func (s *Storage) Addr() string { return s.ln.Addr().String() }

// errShutdown tells that the master ordered the node to stop.
var errShutdown = errors.New("shutdown ordered by the master")

// Run serves until ctx ends or the master tells the node to stop (nil), or
// until it fails. It closes everything it opened, but not the backend.
func (s *Storage) Run(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	defer func() {
		cancel()
		s.ln.Close()
		s.closePeerLinks()
		s.linkWG.Wait()
		s.sendWG.Wait() // their links are all closed by now
		if cerr := s.db.Commit(context.Background()); cerr != nil && err == nil {
			err = fmt.Errorf("storage: final commit: %w", cerr)
		}
	}()
	if err := s.loadState(ctx); err != nil {
		return err
	}
	s.linkWG.Add(1)
	go func() {
		defer s.linkWG.Done()
		s.acceptLoop(ctx)
	}()
	for {
		link, pending, in, stopRecv, err := s.connectPrimary(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = s.masterSession(ctx, link, pending, in)
		link.Close()
		stopRecv()
		s.leaveOperation("master link down")
		s.mu.Lock()
		s.master = nil
		s.mu.Unlock()
		if errors.Is(err, errShutdown) || ctx.Err() != nil {
			if err != nil && !errors.Is(err, errShutdown) && ctx.Err() == nil {
				return err
			}
			return nil
		}
		s.logf(slog.LevelWarn, "primary master lost", "err", err)
	}
}

// loadState reads the node id, the cluster name and the partition table
// from the backend.
func (s *Storage) loadState(ctx context.Context) error {
	name, ok, err := s.db.Config(ctx, backend.KeyName)
	if err != nil {
		return fmt.Errorf("storage: read cluster name: %w", err)
	}
	if !ok {
		if err := s.db.SetConfig(ctx, backend.KeyName, s.cfg.Cluster, true); err != nil {
			return fmt.Errorf("storage: record cluster name: %w", err)
		}
		if err := s.db.Commit(ctx); err != nil {
			return fmt.Errorf("storage: record cluster name: %w", err)
		}
	} else if name != s.cfg.Cluster {
		return fmt.Errorf("storage: database of cluster %q, not %q: %w", name, s.cfg.Cluster, backend.ErrClusterName)
	}
	nid := s.cfg.NodeID
	if v, ok, err := s.db.Config(ctx, backend.KeyNID); err != nil {
		return fmt.Errorf("storage: read node id: %w", err)
	} else if ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return fmt.Errorf("storage: config nid %q: %w", v, err)
		}
		nid = proto.NodeID(n)
	}
	t, err := s.loadPT(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.viewMu.Lock()
	s.nid = nid
	s.pt = t
	s.viewMu.Unlock()
	if nid != proto.NoNode {
		s.log = s.logger.With("node", nid.String())
	}
	s.mu.Unlock()
	return nil
}

// loadPT reads the stored partition table (nil if none).
func (s *Storage) loadPT(ctx context.Context) (*pt.Table, error) {
	np := s.db.NP()
	if np == 0 {
		return nil, nil
	}
	cells, err := s.db.PartitionTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage: read partition table: %w", err)
	}
	var ptid proto.PTid
	if v, ok, err := s.db.Config(ctx, backend.KeyPTid); err != nil {
		return nil, fmt.Errorf("storage: read ptid: %w", err)
	} else if ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("storage: config ptid %q: %w", v, err)
		}
		ptid = proto.PTid(n)
	}
	replicas := 0
	if v, ok, err := s.db.Config(ctx, backend.KeyReplicas); err != nil {
		return nil, fmt.Errorf("storage: read replicas: %w", err)
	} else if ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("storage: config replicas %q: %w", v, err)
		}
		replicas = n
	}
	rows := make([][]proto.CellInfo, np)
	for _, c := range cells {
		if int(c.Partition) >= np {
			return nil, fmt.Errorf("storage: stored cell of partition %d beyond %d partitions", c.Partition, np)
		}
		rows[c.Partition] = append(rows[c.Partition], proto.CellInfo{NID: c.NID, State: c.State})
	}
	return pt.FromRows(ptid, uint32(replicas), rows), nil
}

func (s *Storage) logf(level slog.Level, msg string, args ...any) {
	s.mu.Lock()
	l := s.log
	s.mu.Unlock()
	l.Log(context.Background(), level, msg, args...)
}

// send queues a packet; call with mu held, then flush after unlocking.
func (s *Storage) send(link *neonet.Link, m proto.Msg) {
	if link != nil {
		s.outbox = append(s.outbox, outPacket{link: link, msg: m})
	}
}

// answer queues the answer to r; call with mu held.
func (s *Storage) answer(r *neonet.Request, m proto.Msg) {
	s.outbox = append(s.outbox, outPacket{link: r.Link(), req: r, msg: m})
}

// answerAbort queues an answer after which the link is closed.
func (s *Storage) answerAbort(r *neonet.Request, m proto.Msg) {
	s.outbox = append(s.outbox, outPacket{link: r.Link(), req: r, msg: m, abort: true})
}

// unlock releases mu and sends what was queued.
func (s *Storage) unlock() {
	s.mu.Unlock()
	s.flush()
}

// flush hands the queued packets to the writers of their links, which
// send them in order; a peer that does not read holds up its own link only.
func (s *Storage) flush() {
	s.mu.Lock()
	out := s.outbox
	s.outbox = nil
	s.mu.Unlock()
	if len(out) == 0 {
		return
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for _, p := range out {
		s.writerOf(p.link).push(p)
	}
}

// flushed returns once what was queued for link so far is sent (or the
// link is down).
func (s *Storage) flushed(ctx context.Context, link *neonet.Link) {
	s.flush()
	done := make(chan struct{})
	s.sendMu.Lock()
	s.writerOf(link).push(outPacket{link: link, barrier: done})
	s.sendMu.Unlock()
	select {
	case <-done:
	case <-link.Done():
	case <-ctx.Done():
	}
}

// writerOf returns the writer of link, started if needed; sendMu held.
func (s *Storage) writerOf(link *neonet.Link) *linkWriter {
	w := s.writers[link]
	if w == nil {
		w = &linkWriter{link: link, wake: make(chan struct{}, 1)}
		s.writers[link] = w
		s.sendWG.Add(1)
		go func() {
			defer s.sendWG.Done()
			w.run(s)
			s.sendMu.Lock()
			delete(s.writers, link)
			s.sendMu.Unlock()
		}()
	}
	return w
}

// linkWriter sends the packets decided for one link, in order, until the
// link is down.
type linkWriter struct {
	link  *neonet.Link
	mu    sync.Mutex
	queue []outPacket
	wake  chan struct{}
}

func (w *linkWriter) push(p outPacket) {
	w.mu.Lock()
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *linkWriter) run(s *Storage) {
	ctx := s.runCtx
	for {
		select {
		case <-w.wake:
		case <-w.link.Done():
			w.mu.Lock()
			for _, p := range w.queue {
				if p.barrier != nil {
					close(p.barrier)
				}
			}
			w.queue = nil
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, p := range q {
			var err error
			switch {
			case p.barrier != nil:
				close(p.barrier)
			case p.req != nil && p.abort:
				err = p.req.Abort(ctx, p.msg)
			case p.req != nil:
				err = p.req.Reply(ctx, p.msg)
			default:
				err = p.link.Notify(ctx, p.msg)
			}
			if err != nil {
				s.logf(slog.LevelDebug, "send failed", "link", p.link.String(), "err", err)
			}
		}
	}
}

// closePeerLinks closes every link except the master's.
func (s *Storage) closePeerLinks() {
	s.mu.Lock()
	var links []*neonet.Link
	for l := range s.links {
		links = append(links, l)
	}
	s.mu.Unlock()
	for _, l := range links {
		l.Close()
	}
}

// ownCell returns the node's cell of partition p; call with mu held.
func (s *Storage) ownCell(p int) (pt.Cell, bool) {
	if s.pt == nil || p < 0 || p >= s.pt.NP() {
		return pt.Cell{}, false
	}
	return s.pt.Cell(p, s.nid)
}

// readable tells whether the node has partition p readable; mu held.
func (s *Storage) readable(p int) bool {
	c, ok := s.ownCell(p)
	return ok && c.Readable()
}

func (s *Storage) np() int {
	if s.pt == nil {
		return 0
	}
	return s.pt.NP()
}

// partitionOf returns the partition of an oid or tid; mu held.
func (s *Storage) partitionOf(x uint64) int {
	np := s.np()
	if np == 0 {
		return -1
	}
	return pt.Partition(x, np)
}

// parseAddress parses host:port into a proto.Address.
func parseAddress(s string) (proto.Address, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return proto.Address{}, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return proto.Address{}, fmt.Errorf("address %q: port: %w", s, err)
	}
	return proto.Address{Host: host, Port: uint16(n)}, nil
}

// wait waits for ch, ctx or d (0: no limit).
func wait(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	var tc <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-ch:
	case <-ctx.Done():
	case <-tc:
	}
}
