// Package cluster runs a whole NEO cluster inside a test process: masters,
// storages (SQLite databases in the test's temporary directory), an admin
// and clients, on loopback, all over one faultnet.Network so that tests can
// delay, blackhole or cut the links between any two nodes.
//
//	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
//	stor := c.Open(t, "C1", nil) // a *zodb.Storage through neo/client
//	c.Net.Cut("C1", "S1")        // the client can no longer reach S1
//	c.KillStorage(0)
//
// Start returns once the cluster is RUNNING with every storage RUNNING, as
// the admin node reports it (by state: the harness polls the admin, it
// never waits a fixed time); WaitRunning and WaitUpToDate wait again after
// faults. Storages and the master can be killed (their links cut first,
// then their node stopped) and restarted on their database and address.
// With Options.Masters > 1 the masters know each other's addresses (free
// loopback ports picked before they start) and elect a primary: Primary,
// WaitPrimary and MasterStatus tell which one it is; KillMaster and
// RestartMaster (on the same address) take any master.
// Clients come from Client (a *client.Client) or Open (a *zodb.Storage,
// through the "neotest://" URLs of TestURL, so that zodb.Open reaches the
// cluster over its faultnet). Everything started is stopped when the test
// ends (Cleanup), through the cluster's STOPPING state first; Close may also
// be called earlier, and Stop checks that every node ends by STOPPING.
//
// Node names, which are also their faultnet endpoints: M1..Mn for masters,
// S1..Sn for storages, A1 for the admin, and whatever name a test gives its
// clients (C1, C2, ...).
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/admin"
	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/master"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/zodb"
)

// Options describe the cluster to start. Zero values take the defaults.
type Options struct {
	Name       string // cluster name; default "test"
	Masters    int    // default 1; with more, they elect a primary (each knows all the others' addresses)
	Storages   int    // default 1
	Partitions int    // default 4
	Replicas   int    // extra copies of each partition; default 0
	NoAdmin    bool   // do not start the admin node (then Start waits through a client)
	// TLS, if not nil, is the configuration of every node's links
	// (see neonet.TLSConfig); clients opened by Client and Open use it too.
	TLS *tls.Config
	// Autostart is the master's: the cluster starts by itself once this
	// many storages wait; default Storages, negative: never (neoctl start).
	Autostart int
	// NoWait makes Start return once the nodes are started, without
	// waiting for RUNNING (tests of recovery; see WaitState).
	NoWait bool
	// StartTimeout bounds the wait for RUNNING; default 60 s.
	StartTimeout time.Duration
	// LogLevel of the nodes' logs, written to the test log; default
	// slog.LevelWarn, or $NEO_TEST_LOG (debug, info, warn, error).
	LogLevel *slog.Level
}

// Cluster is a running test cluster.
type Cluster struct {
	t    testing.TB
	Name string
	Net  *faultnet.Network // the network every node uses
	TLS  *tls.Config       // nil: plain TCP

	masters  []*node
	storages []*node
	admin    *node
	logger   *slog.Logger
	logOn    *atomic.Bool
	key      string // registry key of the neotest:// driver

	opt    Options
	mu     sync.Mutex
	closed bool

	// nodeMu guards the fields of nodes that a restart changes (done,
	// cancel, m) for MasterStatus, which may run in other goroutines.
	nodeMu sync.Mutex
}

// node is one running master, storage or admin.
type node struct {
	name   string
	addr   string
	dbPath string // storages
	db     *sqlite.DB
	cancel context.CancelFunc
	done   chan struct{}  // closed when Run returned
	err    error          // Run's result, once done
	m      *master.Master // masters: the node of the last start
}

func (n *node) running() bool {
	if n == nil || n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

var (
	registryMu sync.Mutex
	registry   = map[string]*Cluster{}
	registered sync.Once
	keySeq     atomic.Int64
)

// Start starts a cluster and waits until it is RUNNING. It is stopped at
// the end of the test.
func Start(t testing.TB, opt Options) *Cluster {
	t.Helper()
	if opt.Name == "" {
		opt.Name = "test"
	}
	if opt.Masters <= 0 {
		opt.Masters = 1
	}
	if opt.Storages <= 0 {
		opt.Storages = 1
	}
	if opt.Partitions <= 0 {
		opt.Partitions = 4
	}
	switch {
	case opt.Autostart == 0:
		opt.Autostart = opt.Storages
	case opt.Autostart < 0:
		opt.Autostart = 0
	}
	if opt.StartTimeout <= 0 {
		opt.StartTimeout = 60 * time.Second
	}
	// The databases' directory goes away after the nodes stopped (cleanups
	// run last registered first).
	dir := t.TempDir()
	c := &Cluster{t: t, Name: opt.Name, Net: faultnet.New(nil), TLS: opt.TLS, logOn: &atomic.Bool{}}
	c.logOn.Store(true)
	c.logger = slog.New(&testHandler{t: t, on: c.logOn, level: logLevel(opt.LogLevel)})
	t.Cleanup(c.Close)
	registered.Do(func() { zodb.RegisterDriver("neotest", openTestURL) })
	c.key = fmt.Sprintf("c%d", keySeq.Add(1))
	registryMu.Lock()
	registry[c.key] = c
	registryMu.Unlock()

	ctx := context.Background()
	c.opt = opt
	// Masters first: their addresses are known before anyone dials. With
	// several masters, each needs the others' addresses before it starts:
	// free loopback ports are picked first.
	maddrs := []string{"127.0.0.1:0"}
	if opt.Masters > 1 {
		var err error
		if maddrs, err = freePorts(opt.Masters); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	for i := range opt.Masters {
		c.masters = append(c.masters, &node{name: fmt.Sprintf("M%d", i+1), addr: maddrs[i]})
	}
	for _, n := range c.masters {
		if err := c.startMaster(n); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	addrs := c.MasterAddrs()
	for i := range opt.Storages {
		n := &node{name: fmt.Sprintf("S%d", i+1), addr: "127.0.0.1:0", dbPath: filepath.Join(dir, fmt.Sprintf("s%d.sqlite", i+1))}
		c.storages = append(c.storages, n)
		if err := c.startStorage(n); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	if !opt.NoAdmin {
		name := "A1"
		a, err := admin.New(ctx, admin.Config{
			Cluster: opt.Name,
			Bind:    "127.0.0.1:0",
			Masters: addrs,
			TLS:     c.TLS,
			Net:     c.Net.Endpoint(name),
			Logger:  c.logger.With("node", name),
		})
		if err != nil {
			t.Fatalf("cluster: admin: %v", err)
		}
		c.admin = &node{name: name, addr: a.Addr()}
		c.run(c.admin, func(ctx context.Context) error { return a.Run(ctx) })
	}
	if opt.NoWait {
		return c
	}
	wctx, cancel := context.WithTimeout(ctx, opt.StartTimeout)
	defer cancel()
	if err := c.WaitRunning(wctx); err != nil {
		t.Fatalf("cluster: not running after %v: %v", opt.StartTimeout, err)
	}
	return c
}

func logLevel(l *slog.Level) slog.Level {
	if l != nil {
		return *l
	}
	var lv slog.Level = slog.LevelWarn
	if s := os.Getenv("NEO_TEST_LOG"); s != "" {
		if err := lv.UnmarshalText([]byte(s)); err != nil {
			lv = slog.LevelWarn
		}
	}
	return lv
}

// run starts a node's Run in a goroutine whose end is reported on n.done.
func (c *Cluster) run(n *node, f func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.nodeMu.Lock()
	n.cancel = cancel
	n.done = done
	c.nodeMu.Unlock()
	db := n.db
	go func() {
		err := f(ctx)
		if db != nil {
			if cerr := db.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("closing the database: %w", cerr)
			}
		}
		n.err = err
		close(done)
	}()
}

func (c *Cluster) startMaster(n *node) error {
	var masters []string // a single master is told no address: its own may still be port 0
	if len(c.masters) > 1 {
		masters = c.MasterAddrs()
	}
	m, err := master.New(context.Background(), master.Config{
		Cluster:    c.opt.Name,
		Bind:       n.addr,
		Masters:    masters,
		Partitions: c.opt.Partitions,
		Replicas:   c.opt.Replicas,
		Autostart:  c.opt.Autostart,
		TLS:        c.TLS,
		Net:        c.Net.Endpoint(n.name),
		Logger:     c.logger.With("node", n.name),
	})
	if err != nil {
		return fmt.Errorf("master %s: %w", n.name, err)
	}
	n.addr = m.Addr()
	c.nodeMu.Lock()
	n.m = m
	c.nodeMu.Unlock()
	c.run(n, func(ctx context.Context) error { return m.Run(ctx) })
	return nil
}

// freePorts picks n free loopback addresses.
func freePorts(n int) ([]string, error) {
	var addrs []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a master port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// Masters returns the number of masters.
func (c *Cluster) Masters() int { return len(c.masters) }

// MasterName returns the node (and endpoint) name of master i: "M<i+1>".
func (c *Cluster) MasterName(i int) string { return c.masters[i].name }

// MasterStatus returns the role and cluster state master i (0-based)
// reports; the zero Status (Running false) when it does not run.
func (c *Cluster) MasterStatus(i int) master.Status {
	n := c.masters[i]
	c.nodeMu.Lock()
	m, done := n.m, n.done
	c.nodeMu.Unlock()
	if m == nil || done == nil {
		return master.Status{}
	}
	select {
	case <-done:
		return master.Status{}
	default:
	}
	return m.Status()
}

// Primary returns the index of the master that plays the primary role and
// has left RECOVERING (the election is over), or else of the only master
// in the primary role; -1 when there is none or the election goes on.
func (c *Cluster) Primary() int {
	var electing []int
	for i := range c.masters {
		st := c.MasterStatus(i)
		if !st.Running || !st.Primary {
			continue
		}
		if st.State != proto.ClusterRecovering {
			return i
		}
		electing = append(electing, i)
	}
	if len(electing) == 1 {
		return electing[0]
	}
	return -1
}

// WaitPrimary waits until one master plays the primary role and every other
// running master is secondary, and returns its index.
func (c *Cluster) WaitPrimary(ctx context.Context) (int, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		primary, n := -1, 0
		for i := range c.masters {
			if st := c.MasterStatus(i); st.Running && st.Primary {
				primary = i
				n++
			}
		}
		if n == 1 {
			return primary, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			var states []string
			for i, m := range c.masters {
				states = append(states, fmt.Sprintf("%s %+v", m.name, c.MasterStatus(i)))
			}
			return -1, fmt.Errorf("cluster: no single primary master: %w (masters: %s)", ctx.Err(), strings.Join(states, ", "))
		}
	}
}

// KillMaster stops master i (0-based) at once, its links cut first.
func (c *Cluster) KillMaster(i int) {
	n := c.masters[i]
	c.Net.Isolate(n.name)
	c.stopNode(n)
	c.Net.Heal(n.name, faultnet.Any)
	c.Net.Heal(faultnet.Any, n.name)
}

// RestartMaster starts master i again on its address. Alone, it goes
// through recovery with the storages that reconnect; with other masters, it
// joins the election or the running primary as a secondary.
func (c *Cluster) RestartMaster(i int) error {
	n := c.masters[i]
	if n.running() {
		return fmt.Errorf("cluster: master %s is running", n.name)
	}
	return c.startMaster(n)
}

func (c *Cluster) startStorage(n *node) error {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, n.dbPath, sqlite.Options{Name: c.Name})
	if err != nil {
		return fmt.Errorf("storage %s: database: %w", n.name, err)
	}
	s, err := storage.New(ctx, storage.Config{
		Cluster: c.Name,
		Bind:    n.addr,
		Masters: c.MasterAddrs(),
		Backend: db,
		TLS:     c.TLS,
		Net:     c.Net.Endpoint(n.name),
		Logger:  c.logger.With("node", n.name),
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("storage %s: %w", n.name, err)
	}
	n.addr = s.Addr()
	n.db = db
	c.run(n, func(ctx context.Context) error { return s.Run(ctx) })
	return nil
}

// MasterAddrs returns the masters' addresses.
func (c *Cluster) MasterAddrs() []string {
	var v []string
	for _, m := range c.masters {
		v = append(v, m.addr)
	}
	return v
}

// AdminAddr returns the admin node's address ("" without admin).
func (c *Cluster) AdminAddr() string {
	if c.admin == nil {
		return ""
	}
	return c.admin.addr
}

// StorageAddr returns the address of storage i (0-based).
func (c *Cluster) StorageAddr(i int) string { return c.storages[i].addr }

// StorageName returns the node (and endpoint) name of storage i: "S<i+1>".
func (c *Cluster) StorageName(i int) string { return c.storages[i].name }

// URL returns the neo:// URL of the cluster (plain TCP, no faultnet).
func (c *Cluster) URL() string {
	return "neo://" + c.Name + "@" + strings.Join(c.MasterAddrs(), ",")
}

// TestURL returns a URL that zodb.Open opens as a client named name on
// the cluster's faultnet. query is added to it (e.g. "compress=false").
func (c *Cluster) TestURL(name, query string) string {
	u := "neotest://" + name + "@" + c.key
	if query != "" {
		u += "?" + query
	}
	return u
}

// openTestURL opens neotest://<client name>@<cluster key>?<neo:// options>.
func openTestURL(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
	registryMu.Lock()
	c := registry[u.Host]
	registryMu.Unlock()
	if c == nil || u.User == nil {
		return nil, 0, fmt.Errorf("cluster: %s: no such test cluster", u)
	}
	nu := &url.URL{Scheme: "neo", User: url.User(c.Name), Host: strings.Join(c.MasterAddrs(), ","), RawQuery: u.RawQuery}
	cfg, err := client.ParseURL(nu)
	if err != nil {
		return nil, 0, err
	}
	name := u.User.Username()
	if cfg.TLS == nil {
		cfg.TLS = c.TLS
	}
	cfg.Net = c.Net.Endpoint(name)
	cfg.Logger = c.logger.With("node", name)
	cl, err := client.New(ctx, cfg, opt)
	if err != nil {
		return nil, 0, err
	}
	at0, err := cl.LastTid(ctx)
	if err != nil {
		cl.Close()
		return nil, 0, err
	}
	return cl, at0, nil
}

// Client opens a neo/client Client named name on the cluster's faultnet;
// it is closed at the end of the test.
func (c *Cluster) Client(t testing.TB, name string, opt *zodb.DriverOptions) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.New(ctx, client.Config{
		Cluster: c.Name,
		Masters: c.MasterAddrs(),
		TLS:     c.TLS,
		Net:     c.Net.Endpoint(name),
		Logger:  c.logger.With("node", name),
	}, opt)
	if err != nil {
		t.Fatalf("cluster: client %s: %v", name, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Open opens the cluster with zodb.Open as a client named name on the
// cluster's faultnet; the storage is closed at the end of the test.
func (c *Cluster) Open(t testing.TB, name string, opt *zodb.OpenOptions) *zodb.Storage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stor, err := zodb.Open(ctx, c.TestURL(name, ""), opt)
	if err != nil {
		t.Fatalf("cluster: open client %s: %v", name, err)
	}
	t.Cleanup(func() { stor.Close() })
	return stor
}

// KillStorage stops storage i at once: its links are cut first, so it
// can send nothing more, then its node is stopped.
func (c *Cluster) KillStorage(i int) {
	n := c.storages[i]
	c.Net.Isolate(n.name)
	c.stopNode(n)
	c.Net.Heal(n.name, faultnet.Any)
	c.Net.Heal(faultnet.Any, n.name)
}

// StopStorage stops storage i (its Run returns), keeping its database.
func (c *Cluster) StopStorage(i int) {
	c.stopNode(c.storages[i])
}

// RestartStorage starts storage i again, on its database and address,
// after KillStorage or StopStorage.
func (c *Cluster) RestartStorage(i int) error {
	n := c.storages[i]
	if n.running() {
		return fmt.Errorf("cluster: storage %s is running", n.name)
	}
	n.db = nil
	return c.startStorage(n)
}

func (c *Cluster) stopNode(n *node) {
	if n == nil || n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	if n.err != nil {
		c.t.Logf("cluster: %s stopped: %v", n.name, n.err)
	}
}

// Close stops every node: storages, admin, then masters. It reports the
// nodes whose Run failed.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.Net.HealAll()
	c.stopCluster()
	var all []*node
	all = append(all, c.storages...)
	if c.admin != nil {
		all = append(all, c.admin)
	}
	all = append(all, c.masters...)
	for _, n := range all {
		if n.cancel == nil {
			continue
		}
		n.cancel()
	}
	for _, n := range all {
		if n.done == nil {
			continue
		}
		<-n.done
		if n.err != nil {
			c.t.Errorf("cluster: %s: %v", n.name, n.err)
		}
	}
	c.logOn.Store(false)
	registryMu.Lock()
	delete(registry, c.key)
	registryMu.Unlock()
}

// stopTimeout bounds the orderly shutdown of the cluster by Close.
const stopTimeout = 10 * time.Second

// stopCluster asks the cluster to stop as neoctl does ("set cluster
// STOPPING") and waits for the masters to end; Close then stops what is
// left.
func (c *Cluster) stopCluster() {
	if !c.admin.running() || !c.anyMasterRunning() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	var out strings.Builder
	if err := ctl.Run(ctx, c.admin.addr, c.TLS, []string{"set", "cluster", "STOPPING"}, &out); err != nil {
		c.t.Logf("cluster: set cluster STOPPING: %v %s", err, out.String())
		return
	}
	for _, m := range c.masters {
		select {
		case <-m.done:
		case <-ctx.Done():
			c.t.Logf("cluster: %s still running %v after STOPPING", m.name, stopTimeout)
			return
		}
	}
}

func (c *Cluster) anyMasterRunning() bool {
	for _, m := range c.masters {
		if m.running() {
			return true
		}
	}
	return false
}

// Stop stops the cluster as neoctl does ("set cluster STOPPING" through the
// admin) and waits until every node ended. It fails if the request fails,
// if a node still runs when ctx ends, or if a node's Run returned an error.
// Close, later, has nothing more to do than forget the cluster.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.admin == nil {
		return errors.New("cluster: Stop needs the admin node")
	}
	var out strings.Builder
	if err := ctl.Run(ctx, c.admin.addr, c.TLS, []string{"set", "cluster", "STOPPING"}, &out); err != nil {
		return fmt.Errorf("cluster: set cluster STOPPING: %w %s", err, out.String())
	}
	var errs []error
	for _, n := range c.all() {
		if n.done == nil {
			continue
		}
		select {
		case <-n.done:
			if n.err != nil {
				errs = append(errs, fmt.Errorf("cluster: %s: %w", n.name, n.err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("cluster: %s still runs after STOPPING: %w", n.name, ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) all() []*node {
	var all []*node
	all = append(all, c.storages...)
	if c.admin != nil {
		all = append(all, c.admin)
	}
	return append(all, c.masters...)
}

// WaitRunning waits until the cluster is RUNNING and every storage that
// runs is RUNNING in the master's node list.
func (c *Cluster) WaitRunning(ctx context.Context) error {
	if c.admin == nil {
		return c.waitByClient(ctx)
	}
	return c.WaitState(ctx, func(st proto.ClusterState, storages map[string]proto.NodeState) bool {
		if st != proto.ClusterRunning {
			return false
		}
		for _, n := range c.storages {
			if n.running() && storages[n.addr] != proto.NodeRunning {
				return false
			}
		}
		return true
	})
}

// waitByClient waits until a client can connect: the master accepts
// clients only when the cluster is RUNNING with an operational table.
func (c *Cluster) waitByClient(ctx context.Context) error {
	cl, err := client.New(ctx, client.Config{Cluster: c.Name, Masters: c.MasterAddrs(), TLS: c.TLS, Net: c.Net.Endpoint("harness"), Logger: c.logger.With("node", "harness")}, nil)
	if err != nil {
		return err
	}
	return cl.Close()
}

// pollInterval is how often WaitState asks the admin.
const pollInterval = 10 * time.Millisecond

// WaitState asks the admin for the cluster state and the storages' states
// (by address) until ok accepts them.
func (c *Cluster) WaitState(ctx context.Context, ok func(proto.ClusterState, map[string]proto.NodeState) bool) error {
	return c.poll(ctx, func(ctx context.Context, link *neonet.Link) (bool, error) {
		st, storages, err := askState(ctx, link)
		if err != nil {
			return false, err
		}
		if ok(st, storages) {
			return true, nil
		}
		return false, fmt.Errorf("cluster %v, storages %v", st, storages)
	})
}

// poll runs check on a link to the admin every pollInterval until it
// reports done.
func (c *Cluster) poll(ctx context.Context, check func(context.Context, *neonet.Link) (bool, error)) error {
	var link *neonet.Link
	defer func() {
		if link != nil {
			link.Close()
		}
	}()
	var lastErr error
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if link == nil || link.Err() != nil {
			if link != nil {
				link.Close()
			}
			link = nil
			d := neonet.Dialer{TLS: c.TLS, Net: c.Net.Endpoint("harness")}
			l, err := d.Dial(ctx, c.admin.addr)
			if err != nil {
				lastErr = err
			} else {
				link = l
			}
		}
		if link != nil {
			done, err := check(ctx, link)
			if done {
				return nil
			}
			lastErr = err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		}
	}
}

// WaitUpToDate waits until every cell of the partition table is
// UP_TO_DATE (replication finished), as the admin reports it.
func (c *Cluster) WaitUpToDate(ctx context.Context) error {
	if c.admin == nil {
		return errors.New("cluster: WaitUpToDate needs the admin node")
	}
	return c.poll(ctx, func(ctx context.Context, link *neonet.Link) (bool, error) {
		m, err := link.Ask(ctx, &proto.AskPartitionList{})
		if err != nil {
			return false, fmt.Errorf("partition list: %w", err)
		}
		a, ok := m.(*proto.AnswerPartitionList)
		if !ok {
			return false, fmt.Errorf("partition list: %#v", m)
		}
		for p, row := range a.Rows {
			for _, cell := range row {
				if cell.State != proto.CellUpToDate {
					return false, fmt.Errorf("partition %d: cell %v %v", p, cell.NID, cell.State)
				}
			}
		}
		return len(a.Rows) > 0, nil
	})
}

func askState(ctx context.Context, link *neonet.Link) (proto.ClusterState, map[string]proto.NodeState, error) {
	m, err := link.Ask(ctx, &proto.AskClusterState{})
	if err != nil {
		return 0, nil, fmt.Errorf("cluster state: %w", err)
	}
	a, ok := m.(*proto.AnswerClusterState)
	if !ok || !a.State.Ok {
		return 0, nil, fmt.Errorf("cluster state: %#v", m)
	}
	m, err = link.Ask(ctx, &proto.AskNodeList{NodeType: proto.Some(proto.Storage)})
	if err != nil {
		return 0, nil, fmt.Errorf("node list: %w", err)
	}
	nl, ok := m.(*proto.AnswerNodeList)
	if !ok {
		return 0, nil, fmt.Errorf("node list: %#v", m)
	}
	storages := map[string]proto.NodeState{}
	for _, n := range nl.Nodes {
		if n.Addr.Ok {
			storages[n.Addr.V.String()] = n.State
		}
	}
	return a.State.V, storages, nil
}

// testHandler writes log records to the test log while the cluster runs.
type testHandler struct {
	t     testing.TB
	on    *atomic.Bool
	level slog.Level
	attrs []slog.Attr
	group string
}

func (h *testHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	if !h.on.Load() {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteString(" ")
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.t.Log(b.String())
	return nil
}

func (h *testHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &h2
}

func (h *testHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.group = name
	return &h2
}
