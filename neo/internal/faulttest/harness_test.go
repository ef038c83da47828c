package faulttest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

var soak = flag.Bool("faulttest.soak", false, "run the long randomized variants")

// waitTimeout bounds every wait for a state of the cluster.
const waitTimeout = 30 * time.Second

// tcluster is a cluster whose nodes the test starts, stops and restarts
// one by one, each on its own database and address.
type tcluster struct {
	t        *testing.T
	name     string
	net      *faultnet.Network
	log      *slog.Logger
	logOn    atomic.Bool
	opt      opts
	master   *tnode
	storages []*tnode
	admin    *tnode
}

type opts struct {
	storages   int
	replicas   int
	partitions int
}

// tnode is one node: its Run runs in a goroutine until stop.
type tnode struct {
	name   string
	addr   string
	dbPath string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (n *tnode) running() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// start starts a new cluster and waits until it is RUNNING with every cell
// UP_TO_DATE.
func start(t *testing.T, o opts) *tcluster {
	t.Helper()
	if o.partitions == 0 {
		o.partitions = 4
	}
	dir := t.TempDir()
	c := &tcluster{t: t, name: "fault", net: faultnet.New(nil), opt: o}
	c.logOn.Store(true)
	c.log = slog.New(&testHandler{t: t, on: &c.logOn, level: logLevel()})
	t.Cleanup(c.closeAll)
	c.master = &tnode{name: "M1", addr: "127.0.0.1:0"}
	c.must(c.startMaster())
	for i := range o.storages {
		c.storages = append(c.storages, &tnode{name: fmt.Sprintf("S%d", i+1), addr: "127.0.0.1:0", dbPath: filepath.Join(dir, fmt.Sprintf("s%d.sqlite", i+1))})
		c.must(c.startStorage(i))
	}
	c.admin = &tnode{name: "A1", addr: "127.0.0.1:0"}
	c.must(c.startAdmin())
	c.waitRunning()
	c.waitUpToDate()
	return c
}

func (c *tcluster) must(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

func logLevel() slog.Level {
	lv := slog.LevelWarn
	if s := os.Getenv("NEO_TEST_LOG"); s != "" {
		if err := lv.UnmarshalText([]byte(s)); err != nil {
			lv = slog.LevelWarn
		}
	}
	return lv
}

func (c *tcluster) run(n *tnode, f func(context.Context) error, cleanup func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done = make(chan struct{})
	go func() {
		err := f(ctx)
		if cleanup != nil {
			if cerr := cleanup(); cerr != nil && err == nil {
				err = cerr
			}
		}
		n.err = err
		close(n.done)
	}()
}

func (c *tcluster) startMaster() error {
	n := c.master
	m, err := master.New(context.Background(), master.Config{
		Cluster: c.name, Bind: n.addr, Partitions: c.opt.partitions, Replicas: c.opt.replicas,
		Autostart: c.opt.storages, Net: c.net.Endpoint(n.name), Logger: c.log.With("node", n.name),
	})
	if err != nil {
		return fmt.Errorf("master: %w", err)
	}
	n.addr = m.Addr()
	c.run(n, m.Run, nil)
	return nil
}

func (c *tcluster) startStorage(i int) error {
	n := c.storages[i]
	ctx := context.Background()
	db, err := sqlite.Open(ctx, n.dbPath, sqlite.Options{Name: c.name})
	if err != nil {
		return fmt.Errorf("%s: database: %w", n.name, err)
	}
	s, err := storage.New(ctx, storage.Config{
		Cluster: c.name, Bind: n.addr, Masters: []string{c.master.addr}, Backend: db,
		Net: c.net.Endpoint(n.name), Logger: c.log.With("node", n.name),
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("%s: %w", n.name, err)
	}
	n.addr = s.Addr()
	c.run(n, s.Run, db.Close)
	return nil
}

func (c *tcluster) startAdmin() error {
	n := c.admin
	a, err := admin.New(context.Background(), admin.Config{
		Cluster: c.name, Bind: n.addr, Masters: []string{c.master.addr},
		Net: c.net.Endpoint(n.name), Logger: c.log.With("node", n.name),
	})
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	n.addr = a.Addr()
	c.run(n, a.Run, nil)
	return nil
}

// stop stops a node (its Run returns) and reports its error.
func (c *tcluster) stop(n *tnode) {
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
	if n.err != nil {
		c.t.Logf("%s stopped: %v", n.name, n.err)
	}
}

// kill cuts a node's links first, so that it sends nothing more, then
// stops it; its links are healed for a restart.
func (c *tcluster) kill(n *tnode) {
	c.net.Isolate(n.name)
	c.stop(n)
	c.net.Heal(n.name, faultnet.Any)
	c.net.Heal(faultnet.Any, n.name)
}

func (c *tcluster) restartStorage(i int) {
	c.t.Helper()
	if c.storages[i].running() {
		c.t.Fatalf("%s is running", c.storages[i].name)
	}
	c.must(c.startStorage(i))
}

func (c *tcluster) closeAll() {
	c.stopAll()
	c.logOn.Store(false)
}

// stopAll stops every node that runs.
func (c *tcluster) stopAll() {
	c.net.HealAll()
	all := append(append([]*tnode{}, c.storages...), c.admin, c.master)
	for _, n := range all {
		if n != nil && n.cancel != nil {
			n.cancel()
		}
	}
	for _, n := range all {
		if n != nil && n.done != nil {
			<-n.done
		}
	}
}

// stopCluster stops the cluster as neoctl does, and waits until every
// node's Run returned.
func (c *tcluster) stopCluster() {
	c.t.Helper()
	defer c.stopAll()
	if out, err := c.ctl("set", "cluster", "STOPPING"); err != nil {
		c.t.Errorf("set cluster STOPPING: %v %s", err, out)
		return
	}
	deadline := time.After(waitTimeout)
	for _, n := range append(append([]*tnode{c.master}, c.storages...), c.admin) {
		if n.done == nil {
			continue
		}
		select {
		case <-n.done:
			if n.err != nil {
				c.t.Errorf("%s: Run after STOPPING: %v", n.name, n.err)
			}
		case <-deadline:
			c.t.Errorf("%s still running %v after STOPPING", n.name, waitTimeout)
			return
		}
	}
}

// client opens a client named name on the cluster's network.
func (c *tcluster) client(name string) *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cl, err := client.New(ctx, client.Config{
		Cluster: c.name, Masters: []string{c.master.addr}, Net: c.net.Endpoint(name),
		Logger: c.log.With("node", name), ReadTimeout: 5 * time.Second,
	}, nil)
	if err != nil {
		c.t.Fatalf("client %s: %v", name, err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// ctl runs one neoctl command against the admin.
func (c *tcluster) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out strings.Builder
	err := ctl.Run(ctx, c.admin.addr, nil, args, &out)
	return out.String(), err
}

// state is what the admin reports.
type state struct {
	cluster proto.ClusterState
	nodes   map[string]proto.NodeState // storage name → state
	nids    map[string]proto.NodeID    // storage name → node id
	rows    [][]proto.CellInfo
}

// cells returns the states of a storage's cells, by partition.
func (s *state) cells(name string) map[int]proto.CellState {
	m := map[int]proto.CellState{}
	nid, ok := s.nids[name]
	if !ok {
		return m
	}
	for p, row := range s.rows {
		for _, cell := range row {
			if cell.NID == nid {
				m[p] = cell.State
			}
		}
	}
	return m
}

func (s *state) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %v; nodes %v; pt", s.cluster, s.nodes)
	for p, row := range s.rows {
		fmt.Fprintf(&b, " %d:", p)
		for _, cell := range row {
			fmt.Fprintf(&b, "%v=%v,", cell.NID, cell.State)
		}
	}
	return b.String()
}

// askState asks the admin over link.
func (c *tcluster) askState(ctx context.Context, link *neonet.Link) (*state, error) {
	m, err := link.Ask(ctx, &proto.AskClusterState{})
	if err != nil {
		return nil, err
	}
	cs, ok := m.(*proto.AnswerClusterState)
	if !ok || !cs.State.Ok {
		return nil, fmt.Errorf("cluster state: %#v", m)
	}
	s := &state{cluster: cs.State.V, nodes: map[string]proto.NodeState{}, nids: map[string]proto.NodeID{}}
	m, err = link.Ask(ctx, &proto.AskNodeList{NodeType: proto.Some(proto.Storage)})
	if err != nil {
		return nil, err
	}
	nl, ok := m.(*proto.AnswerNodeList)
	if !ok {
		return nil, fmt.Errorf("node list: %#v", m)
	}
	byAddr := map[string]string{}
	for _, n := range c.storages {
		byAddr[n.addr] = n.name
	}
	for _, n := range nl.Nodes {
		if !n.Addr.Ok {
			continue
		}
		if name, ok := byAddr[n.Addr.V.String()]; ok {
			s.nodes[name] = n.State
			s.nids[name] = n.NID
		}
	}
	m, err = link.Ask(ctx, &proto.AskPartitionList{})
	if err != nil {
		return nil, err
	}
	pl, ok := m.(*proto.AnswerPartitionList)
	if !ok {
		// No partition table yet (recovery).
		return s, nil
	}
	s.rows = pl.Rows
	return s, nil
}

// waitFor polls the admin until ok accepts its state, and returns it.
func (c *tcluster) waitFor(what string, ok func(*state) bool) *state {
	c.t.Helper()
	s, err := c.waitForErr(waitTimeout, ok)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	return s
}

func (c *tcluster) waitForErr(timeout time.Duration, ok func(*state) bool) (*state, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var link *neonet.Link
	defer func() {
		if link != nil {
			link.Close()
		}
	}()
	var last error
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if link == nil || link.Err() != nil {
			if link != nil {
				link.Close()
				link = nil
			}
			d := neonet.Dialer{Net: c.net.Endpoint("T")}
			if l, err := d.Dial(ctx, c.admin.addr); err != nil {
				last = err
			} else {
				link = l
			}
		}
		if link != nil {
			s, err := c.askState(ctx, link)
			if err == nil && ok(s) {
				return s, nil
			}
			if err != nil {
				last = err
			} else {
				last = errors.New(s.String())
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; last: %v", ctx.Err(), last)
		}
	}
}

// waitRunning waits until the cluster is RUNNING with every running
// storage RUNNING.
func (c *tcluster) waitRunning() *state {
	c.t.Helper()
	return c.waitFor("RUNNING", func(s *state) bool {
		if s.cluster != proto.ClusterRunning {
			return false
		}
		for _, n := range c.storages {
			if n.running() && s.nodes[n.name] != proto.NodeRunning {
				return false
			}
		}
		return true
	})
}

// waitUpToDate waits until every cell is UP_TO_DATE and every storage
// has a cell in every partition it should.
func (c *tcluster) waitUpToDate() *state {
	c.t.Helper()
	return c.waitFor("every cell UP_TO_DATE", func(s *state) bool {
		if s.cluster != proto.ClusterRunning || len(s.rows) == 0 {
			return false
		}
		for _, row := range s.rows {
			if len(row) < c.opt.replicas+1 {
				return false
			}
			for _, cell := range row {
				if cell.State != proto.CellUpToDate {
					return false
				}
			}
		}
		return true
	})
}

// waitStorageOutdated waits until storage name is not RUNNING and all its
// cells are OUT_OF_DATE.
func (c *tcluster) waitOutdated(name string) *state {
	c.t.Helper()
	return c.waitFor(name+" DOWN with its cells OUT_OF_DATE", func(s *state) bool {
		if s.nodes[name] == proto.NodeRunning {
			return false
		}
		cells := s.cells(name)
		if len(cells) == 0 {
			return false
		}
		for _, st := range cells {
			if st != proto.CellOutOfDate {
				return false
			}
		}
		return true
	})
}

// testHandler writes log records to the test log while the cluster runs.
type testHandler struct {
	t     testing.TB
	on    *atomic.Bool
	level slog.Level
	attrs []slog.Attr
}

func (h *testHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	if !h.on.Load() {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
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

func (h *testHandler) WithGroup(string) slog.Handler { return h }

// strike isolates victim when the nth packet (1-based) of the given code
// is about to go from one endpoint to the other.
func (c *tcluster) strike(from, to string, code uint16, nth int, victim string) *faultnet.Trigger {
	seen := 0
	return c.net.OnPacket(from, to, code, func(faultnet.Packet) bool {
		seen++
		if seen < nth {
			return false
		}
		c.net.Isolate(victim)
		return true
	})
}

// waitFired waits for a trigger.
func waitFired(t *testing.T, trig *faultnet.Trigger, what string) {
	t.Helper()
	select {
	case <-trig.Fired():
	case <-time.After(waitTimeout):
		trig.Stop()
		t.Fatalf("%s never happened", what)
	}
}

// watchOutdated records whether the master told the admin that a cell of
// nid became OUT_OF_DATE.
func (c *tcluster) watchOutdated(nid proto.NodeID) *faultnet.Trigger {
	return c.net.OnPacket("M1", "A1", proto.CodeNotifyPartitionChanges, func(p faultnet.Packet) bool {
		m, err := p.Decode()
		if err != nil {
			return false
		}
		for _, ch := range m.(*proto.NotifyPartitionChanges).Changes {
			if ch.NID == nid && ch.State == proto.CellOutOfDate {
				return true
			}
		}
		return false
	})
}

// cutBoth cuts the link between two endpoints both ways; healBoth heals it.
func (c *tcluster) cutBoth(a, b string) {
	c.net.Cut(a, b)
	c.net.Cut(b, a)
}

func (c *tcluster) healBoth(a, b string) {
	c.net.Heal(a, b)
	c.net.Heal(b, a)
}

// waitHead waits until cl knows of the commit of tid (the master's
// invalidations reach each client in their own time) and returns the head
// it then sees.
func waitHead(t *testing.T, cl *client.Client, tid zodb.Tid) zodb.Tid {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		head, err := cl.LastTid(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if head >= tid {
			return head
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client's head is still %v, %v after the commit of %v", head, waitTimeout, tid)
		}
		time.Sleep(time.Millisecond)
	}
}
