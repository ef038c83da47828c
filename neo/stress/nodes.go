package stress

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	zsqlite "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/neozodb/neo/neo/admin"
	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/master"
	"github.com/neozodb/neo/neo/storage"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
)

// node is one master, storage or admin node run by Run.
type node struct {
	name   string
	addr   string
	dbPath string // storages
	start  func(ctx context.Context) (runFunc, error)

	killing atomic.Bool // stop is killing the node

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error // Run's result, then closed
}

type runFunc func(ctx context.Context) error

// running tells that the node's Run has not returned.
func (n *node) running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// cluster is the set of nodes of a run.
type cluster struct {
	name     string
	replicas int
	net      *faultnet.Network
	logger   *slog.Logger
	masters  []*node
	stors    []*node
	admin    *node
	logf     func(format string, args ...any)
	// wrapBackend, if not nil, wraps each storage's backend (tests:
	// a storage that loses writes).
	wrapBackend func(stor string, b backend.Backend) backend.Backend
}

// freeAddrs returns n loopback addresses with free ports: the masters must
// know each other's addresses before they start.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var v []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a master port: %w", err)
		}
		ls = append(ls, l)
		v = append(v, l.Addr().String())
	}
	return v, nil
}

func (c *cluster) masterAddrs() []string {
	var v []string
	for _, m := range c.masters {
		v = append(v, m.addr)
	}
	return v
}

// setup creates the nodes (not started).
func (c *cluster) setup(dir string, opt Options) error {
	addrs, err := freeAddrs(opt.Masters)
	if err != nil {
		return err
	}
	for i := range opt.Masters {
		n := &node{name: fmt.Sprintf("M%d", i+1), addr: addrs[i]}
		n.start = func(ctx context.Context) (runFunc, error) {
			m, err := master.New(ctx, master.Config{
				Cluster:    c.name,
				Bind:       n.addr,
				Masters:    addrs,
				Partitions: opt.Partitions,
				Replicas:   opt.Replicas,
				Autostart:  opt.Storages,
				Net:        c.net.Endpoint(n.name),
				Logger:     c.logger.With("endpoint", n.name),
			})
			if err != nil {
				return nil, err
			}
			return m.Run, nil
		}
		c.masters = append(c.masters, n)
	}
	for i := range opt.Storages {
		n := &node{name: fmt.Sprintf("S%d", i+1), addr: "127.0.0.1:0", dbPath: filepath.Join(dir, fmt.Sprintf("s%d.sqlite", i+1))}
		n.start = func(ctx context.Context) (runFunc, error) { return c.startStorage(ctx, n) }
		c.stors = append(c.stors, n)
	}
	a := &node{name: "A1", addr: "127.0.0.1:0"}
	a.start = func(ctx context.Context) (runFunc, error) {
		ad, err := admin.New(ctx, admin.Config{
			Cluster: c.name,
			Bind:    a.addr,
			Masters: addrs,
			Net:     c.net.Endpoint(a.name),
			Logger:  c.logger.With("endpoint", a.name),
		})
		if err != nil {
			return nil, err
		}
		a.addr = ad.Addr()
		return ad.Run, nil
	}
	c.admin = a
	return nil
}

// crashImage closes db as a killed process leaves it, for a backend that
// cannot do it itself: Close would commit the work whose commit is
// deferred (unlocked transactions, as NEO/py defers them too). The
// database's committed state is copied (VACUUM INTO, a consistent
// snapshot that leaves out what db has not committed), db is closed, and
// the copy takes the database's place.
func crashImage(path string, db *sqlite.DB) error {
	image := path + ".crash"
	os.Remove(image)
	conn, err := zsqlite.OpenConn(path, zsqlite.OpenReadOnly)
	if err != nil {
		db.Close()
		return fmt.Errorf("crash image of %s: %w", path, err)
	}
	conn.SetBusyTimeout(30 * time.Second)
	err = sqlitex.ExecuteTransient(conn, "VACUUM INTO '"+strings.ReplaceAll(image, "'", "''")+"'", nil)
	conn.Close()
	if cerr := db.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("crash image of %s: %w", path, err)
	}
	for _, suffix := range []string{"-journal", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
	if err := os.Rename(image, path); err != nil {
		return fmt.Errorf("crash image of %s: %w", path, err)
	}
	return nil
}

// crasher and crasherNoErr are backends that can be closed as a killed
// process leaves them: work not yet committed is lost.
type (
	crasher      interface{ Crash() error }
	crasherNoErr interface{ Crash() }
)

func (c *cluster) startStorage(ctx context.Context, n *node) (runFunc, error) {
	db, err := sqlite.Open(ctx, n.dbPath, sqlite.Options{Name: c.name})
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	var b backend.Backend = db
	if c.wrapBackend != nil {
		b = c.wrapBackend(n.name, db)
	}
	s, err := storage.New(ctx, storage.Config{
		Cluster: c.name,
		Bind:    n.addr,
		Masters: c.masterAddrs(),
		Backend: b,
		Net:     c.net.Endpoint(n.name),
		Logger:  c.logger.With("endpoint", n.name),
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	n.addr = s.Addr() // kept for restarts on the same address
	return func(ctx context.Context) error {
		err := s.Run(ctx)
		var cerr error
		if n.killing.Load() {
			// Killed: the database goes as a dead process leaves it.
			if cr, ok := any(db).(crasher); ok {
				cerr = cr.Crash()
			} else if cr, ok := any(db).(crasherNoErr); ok {
				cr.Crash()
			} else {
				cerr = crashImage(n.dbPath, db)
			}
		} else {
			cerr = db.Close()
		}
		if cerr != nil && err == nil {
			err = fmt.Errorf("closing the database: %w", cerr)
		}
		return err
	}, nil
}

// startNode starts n's Run in a goroutine whose end is reported on n.done.
func (c *cluster) startNode(ctx context.Context, n *node) error {
	run, err := n.start(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	n.mu.Lock()
	n.cancel = cancel
	n.done = done
	n.mu.Unlock()
	go func() {
		done <- run(rctx)
		close(done)
	}()
	return nil
}

// stop stops n's Run and waits for it. With kill, n's links are cut first,
// so that it can send nothing more, and its database is left as a killed
// process leaves it.
func (c *cluster) stop(n *node, kill bool) error {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.mu.Unlock()
	if cancel == nil {
		return nil
	}
	if kill {
		n.killing.Store(true)
		c.net.Isolate(n.name)
	}
	cancel()
	err := <-done
	if kill {
		c.net.Heal(n.name, faultnet.Any)
		c.net.Heal(faultnet.Any, n.name)
		n.killing.Store(false)
	}
	n.mu.Lock()
	n.cancel = nil
	n.mu.Unlock()
	return err
}

// stopAll stops every node: storages, admin, then masters.
func (c *cluster) stopAll() []error {
	all := append(append(append([]*node(nil), c.stors...), c.admin), c.masters...)
	var errs []error
	for _, n := range all {
		n.mu.Lock()
		if n.cancel != nil {
			n.cancel()
		}
		n.mu.Unlock()
	}
	for _, n := range all {
		if err := c.stop(n, false); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
		}
	}
	return errs
}
