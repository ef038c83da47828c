package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/admin"
	"github.com/neozodb/neo/neo/config"
	"github.com/neozodb/neo/neo/master"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
)

// simpleArgs is the command line of neo simple.
type simpleArgs struct {
	cluster    string
	bind       string // the master's address; the other nodes use its host
	adminBind  string // the admin's address ("": port 0 on bind's host)
	data       string // directory of the databases; "" for a temporary one
	partitions int
	replicas   int
	masters    int
	storages   []string
	ca         string
	cert       string
	key        string
	log        logFlags
}

const simpleUsage = `[--cluster NAME] [--bind HOST:PORT] [--admin HOST:PORT] [--data DIR] [--partitions N] [--replicas N] [--masters N] [STORAGE...]

Runs a whole NEO cluster in this process: a master (or --masters N), one storage node per
STORAGE name (database DIR/STORAGE.sqlite; default: one storage named
"storage"), and an admin node. A new cluster starts by itself once every
storage is there. Once the cluster is RUNNING it prints its URL,
neo://NAME@HOST:PORT, as the only line on standard output (logs go to
standard error), and serves until SIGINT or SIGTERM, when it stops the
cluster (STOPPING) and exits; also when the cluster is stopped otherwise
(neoctl -a ADMIN set cluster STOPPING).
`

func parseSimple(e *env, args []string) (*simpleArgs, error) {
	lf, args, err := stripLogFlags(args)
	if err != nil {
		return nil, err
	}
	s := &simpleArgs{log: lf}
	fs := newFlagSet(e, simpleUsage)
	fs.StringVar(&s.cluster, "cluster", "neo", "cluster name")
	fs.StringVar(&s.bind, "bind", "127.0.0.1:0", "address of the (first) master; port 0 picks a free one")
	fs.StringVar(&s.adminBind, "admin", "", "address of the admin node, for neoctl -a (default: a free port on the host of --bind)")
	fs.StringVar(&s.data, "data", "", "directory of the storage databases (default: a temporary directory, removed at exit)")
	fs.IntVar(&s.partitions, "partitions", master.DefaultPartitions, "number of partitions")
	fs.IntVar(&s.replicas, "replicas", 0, "number of extra copies of each partition")
	fs.IntVar(&s.masters, "masters", 1, "number of master nodes (they elect a primary)")
	fs.StringVar(&s.ca, "ca", "", "TLS: certificate authority")
	fs.StringVar(&s.cert, "cert", "", "TLS: certificate of the nodes")
	fs.StringVar(&s.key, "key", "", "TLS: private key of the nodes")
	s.storages, err = parseInterspersed(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if s.cluster == "" {
		return nil, usagef("--cluster must not be empty")
	}
	if s.bind, err = config.ParseAddress(s.bind, 0); err != nil {
		return nil, usagef("--bind: %s", err)
	}
	if s.adminBind != "" {
		if s.adminBind, err = config.ParseAddress(s.adminBind, 0); err != nil {
			return nil, usagef("--admin: %s", err)
		}
	}
	if s.partitions <= 0 || s.replicas < 0 || s.masters <= 0 {
		return nil, usagef("--partitions and --masters must be positive, --replicas not negative")
	}
	if len(s.storages) == 0 {
		s.storages = []string{"storage"}
	}
	seen := map[string]bool{}
	for _, n := range s.storages {
		if n == "" || n == "." || n == ".." || strings.ContainsAny(n, `/\`) {
			return nil, usagef("bad storage name %q (it names the file STORAGE.sqlite)", n)
		}
		if seen[n] {
			return nil, usagef("storage %q given twice", n)
		}
		seen[n] = true
	}
	if s.replicas >= len(s.storages) {
		return nil, usagef("--replicas %d needs more than %d storages", s.replicas, len(s.storages))
	}
	return s, nil
}

// simpleCluster is a local cluster run by neo simple (and neo demo).
type simpleCluster struct {
	args      *simpleArgs
	tls       *tls.Config
	log       *slog.Logger
	masters   []*master.Master
	storages  []*storage.Storage
	dbs       []*sqlite.DB
	admin     *admin.Admin
	dataDir   string
	removeDir bool

	wg     sync.WaitGroup
	cancel context.CancelFunc
	errs   chan nodeEnd // one value per node when it stops
}

// nodeEnd is the end of a node of the cluster.
type nodeEnd struct {
	master bool
	err    error
}

// URL is the cluster's address for clients (with the TLS files of the
// nodes, which clients may share, when the cluster uses TLS).
func (c *simpleCluster) URL() string {
	var addrs []string
	for _, m := range c.masters {
		addrs = append(addrs, m.Addr())
	}
	u := "neo://" + c.args.cluster + "@" + strings.Join(addrs, ",")
	if c.tls != nil {
		q := url.Values{}
		for k, v := range map[string]string{"ca": c.args.ca, "cert": c.args.cert, "key": c.args.key} {
			if abs, err := filepath.Abs(expandUser(v)); err == nil {
				v = abs
			}
			q.Set(k, v)
		}
		u += "?" + q.Encode()
	}
	return u
}

// AdminAddr is the admin node's address (neoctl -a).
func (c *simpleCluster) AdminAddr() string { return c.admin.Addr() }

// startSimple creates the nodes and starts running them; stop must be
// called (even after an error of wait).
func startSimple(ctx context.Context, s *simpleArgs, log *slog.Logger) (_ *simpleCluster, err error) {
	c := &simpleCluster{args: s, log: log}
	if c.tls, err = loadTLS(s.ca, s.cert, s.key); err != nil {
		return nil, err
	}
	c.dataDir = s.data
	if c.dataDir == "" {
		if c.dataDir, err = os.MkdirTemp("", "neo-simple-"); err != nil {
			return nil, err
		}
		c.removeDir = true
	} else if err = os.MkdirAll(c.dataDir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.closeAll()
		}
	}()
	host, _, _ := net.SplitHostPort(s.bind)
	anyPort := net.JoinHostPort(host, "0")

	// Every master must know all masters' addresses: with more than one,
	// their ports are picked before they start.
	binds := []string{s.bind}
	var masterAddrs []string
	if s.masters > 1 {
		if binds, err = freeAddrs(s.bind, anyPort, s.masters); err != nil {
			return nil, err
		}
		masterAddrs = binds
	}
	for _, b := range binds {
		m, err := master.New(ctx, master.Config{
			Cluster:    s.cluster,
			Bind:       b,
			Masters:    masterAddrs,
			Partitions: s.partitions,
			Replicas:   s.replicas,
			Autostart:  len(s.storages),
			TLS:        c.tls,
			Logger:     log,
		})
		if err != nil {
			return nil, err
		}
		c.masters = append(c.masters, m)
	}
	masterAddrs = nil
	for _, m := range c.masters {
		masterAddrs = append(masterAddrs, m.Addr())
	}
	for _, name := range s.storages {
		path := filepath.Join(c.dataDir, name+".sqlite")
		db, err := sqlite.Open(ctx, path, sqlite.Options{Name: s.cluster})
		if err != nil {
			return nil, err
		}
		c.dbs = append(c.dbs, db)
		st, err := storage.New(ctx, storage.Config{
			Cluster: s.cluster,
			Bind:    anyPort,
			Masters: masterAddrs,
			Backend: db,
			TLS:     c.tls,
			Logger:  log.With("storage", name),
		})
		if err != nil {
			return nil, err
		}
		c.storages = append(c.storages, st)
	}
	adminBind := s.adminBind
	if adminBind == "" {
		adminBind = anyPort
	}
	c.admin, err = admin.New(ctx, admin.Config{
		Cluster: s.cluster,
		Bind:    adminBind,
		Masters: masterAddrs,
		TLS:     c.tls,
		Logger:  log,
	})
	if err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.errs = make(chan nodeEnd, len(c.masters)+len(c.storages)+1)
	run := func(name string, f func(context.Context) error) {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			err := f(runCtx)
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
			log.Info("node stopped", "which", name, "err", err)
			c.errs <- nodeEnd{master: strings.HasPrefix(name, "master"), err: err}
		}()
	}
	for i, m := range c.masters {
		run(fmt.Sprintf("master%d", i+1), m.Run)
	}
	for i, st := range c.storages {
		run("storage "+s.storages[i], st.Run)
	}
	run("admin", c.admin.Run)
	log.Info("cluster started", "cluster", s.cluster, "masters", masterAddrs, "admin", c.admin.Addr(), "data", c.dataDir)
	return c, nil
}

// freeAddrs returns n addresses on the host of bind: bind itself if its
// port is not 0, then ports free at the time.
func freeAddrs(bind, anyPort string, n int) ([]string, error) {
	var addrs []string
	if _, port, _ := net.SplitHostPort(bind); port != "0" {
		addrs = append(addrs, bind)
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for len(addrs) < n {
		l, err := net.Listen("tcp", anyPort)
		if err != nil {
			return nil, fmt.Errorf("pick a port for a master: %w", err)
		}
		ls = append(ls, l) // held until all are picked: n different ports
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// waitState polls the admin node until the cluster is in state want, a
// node fails, or ctx ends.
func (c *simpleCluster) waitState(ctx context.Context, want proto.ClusterState) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := ""
	lastLog := time.Now()
	for {
		st, err := clusterState(ctx, c.admin.Addr(), c.tls)
		if err == nil && st == want {
			return nil
		}
		now := ""
		if err != nil {
			now = err.Error()
		} else {
			now = st.String()
		}
		if now != last || time.Since(lastLog) > 10*time.Second {
			c.log.Info("waiting for the cluster", "want", want, "now", now)
			last, lastLog = now, time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case end := <-c.errs:
			c.errs <- end // for stop
			err := end.err
			if err == nil {
				err = errors.New("a node stopped")
			}
			return fmt.Errorf("cluster not %v: %w", want, err)
		case <-tick.C:
		}
	}
}

// clusterState asks an admin node for the cluster state (as neoctl does,
// without identification).
func clusterState(ctx context.Context, adminAddr string, tlsConf *tls.Config) (proto.ClusterState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := neonet.Dial(ctx, adminAddr, tlsConf)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	ans, err := l.Ask(ctx, &proto.AskClusterState{})
	if err != nil {
		return 0, err
	}
	a, ok := ans.(*proto.AnswerClusterState)
	if !ok {
		return 0, fmt.Errorf("admin %s: unexpected answer %T to AskClusterState", adminAddr, ans)
	}
	st, ok := a.State.Get()
	if !ok {
		return 0, fmt.Errorf("admin %s: cluster state not known yet", adminAddr)
	}
	return st, nil
}

// setClusterState asks the admin to change the cluster state.
func setClusterState(ctx context.Context, adminAddr string, tlsConf *tls.Config, st proto.ClusterState) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := neonet.Dial(ctx, adminAddr, tlsConf)
	if err != nil {
		return err
	}
	defer l.Close()
	_, err = l.Ask(ctx, &proto.SetClusterState{State: st})
	var pe *proto.Error
	if errors.As(err, &pe) && pe.Code == proto.Ack {
		return nil
	}
	if err == nil {
		return fmt.Errorf("admin %s: SetClusterState answered without Ack", adminAddr)
	}
	return err
}

// stop stops the cluster: STOPPING through the admin, then, if the nodes
// do not all end by themselves within grace, they are cancelled. Secondary
// masters do not end with the cluster (they would take over): once the
// storages and the admin ended, they are cancelled. stop returns the first
// error of a node.
func (c *simpleCluster) stop(grace time.Duration) error {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	cancelled := false
	cancelNodes := func(why string, running int) {
		if !cancelled {
			c.log.Info(why, "running", running)
			c.cancel()
			cancelled = true
			deadline.Reset(nodeStopGrace)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	err := setClusterState(ctx, c.admin.Addr(), c.tls, proto.ClusterStopping)
	cancel()
	mastersLeft, othersLeft := len(c.masters), len(c.storages)+1
	if err != nil {
		c.log.Warn("could not set the cluster STOPPING", "err", err)
		cancelNodes("stopping the nodes", mastersLeft+othersLeft)
	}
	var first error
	for mastersLeft+othersLeft > 0 {
		select {
		case end := <-c.errs:
			if end.err != nil && first == nil {
				first = end.err
			}
			if end.master {
				mastersLeft--
			} else {
				othersLeft--
			}
			if othersLeft == 0 && mastersLeft > 0 {
				cancelNodes("stopping the remaining masters", mastersLeft)
			}
		case <-deadline.C:
			if cancelled {
				return fmt.Errorf("%d nodes: %w within %v", mastersLeft+othersLeft, errNodeStuck, nodeStopGrace)
			}
			cancelNodes("nodes still running after STOPPING; stopping them", mastersLeft+othersLeft)
		}
	}
	c.cancel()
	c.wg.Wait()
	c.closeAll()
	return first
}

// closeAll closes the databases and removes a temporary data directory.
func (c *simpleCluster) closeAll() {
	for _, db := range c.dbs {
		if err := db.Close(); err != nil {
			c.log.Error("close database", "err", err)
		}
	}
	c.dbs = nil
	if c.removeDir {
		os.RemoveAll(c.dataDir)
	}
}

func runSimple(ctx context.Context, e *env, args []string) error {
	s, err := parseSimple(e, args)
	if err != nil {
		return err
	}
	log := newLogger(e.stderr, s.log.level)
	c, err := startSimple(ctx, s, log)
	if err != nil {
		return err
	}
	err = c.waitState(ctx, proto.ClusterRunning)
	if err == nil {
		fmt.Fprintln(e.stdout, c.URL())
		log.Info("cluster running", "url", c.URL(), "admin", c.AdminAddr())
		select {
		case <-ctx.Done():
		case end := <-c.errs:
			// A node ended: it failed, or the cluster was told to stop
			// (neoctl set cluster STOPPING): stop the others.
			if err = end.err; err == nil {
				log.Info("a node stopped by itself: stopping the cluster")
			}
			c.errs <- nodeEnd{master: end.master} // stop counts every node
		}
	}
	log.Info("stopping the cluster")
	serr := c.stop(15 * time.Second)
	if err == nil || errors.Is(err, context.Canceled) {
		err = serr
	}
	return err
}
