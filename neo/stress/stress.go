// Package stress runs a NEO cluster in the calling process under faults and
// checks that no acknowledged commit is lost and that the histories its
// clients record are serializable (package histcheck).
//
// Run starts masters, storages (SQLite databases in a temporary directory
// it removes), an admin node and clients, with the node packages themselves
// (master.New, storage.New, admin.New, client.New), all over one
// faultnet.Network, so that the links between any two nodes can be cut or
// blackholed. Each client goroutine has its own client node and, until the
// faults end, increments counters and appends its own tokens to lists
// (read at the client's last tid, then Store, Vote, Finish: conflicts are
// normal outcomes, an error at Finish an unknown one), and reads them, half
// of the reads checked current by a vote with CheckCurrentSerial.
//
// A fault loop driven by a math/rand generator seeded with Options.Seed (the
// schedule of faults is reproducible from the seed; their timing against the
// clients' operations is not) does, per cycle:
//
//   - kill a storage (its links cut at once so it can send nothing more, its
//     Run stopped, its database left with only what it had committed, as
//     SIGKILL leaves it) and, once the admin node reports it gone, restart
//     it on the same database; half of the time the next faults come while
//     it still replicates what it missed;
//   - cut or blackhole (both ways or one way) the links of one or two random
//     pairs of nodes: master↔storage, client↔storage, client↔master,
//     storage↔storage, master↔master; hold the fault for a while, heal it;
//   - with several masters, kill the primary master, wait until another one
//     took over, restart it;
//
// waiting after each fault until the cluster is RUNNING again with every
// running storage RUNNING (and, but for the case above, every cell
// UP_TO_DATE), as the admin node reports it (by state, never a fixed time). At the end every fault is
// healed, the final state (values and every revision) is read with a fresh
// client, the history is checked against it (histcheck.Check), and each
// storage is read alone (the client's links to the others cut) to check that
// every replica holds every revision.
//
// The command `neo stress` maps its flags one to one to Options: --cycles,
// --seed, --clients, --storages, --replicas, --masters, --partitions.
package stress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/internal/histcheck"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// Options describe a stress run. Zero values take the defaults.
type Options struct {
	Cycles     int   // fault cycles; default 3
	Seed       int64 // seed of the fault schedule and of the clients' choices
	Clients    int   // client goroutines, each with its own client node; default 3
	Storages   int   // storage nodes; default 2
	Replicas   int   // extra copies of each partition (0 is allowed)
	Masters    int   // master nodes; default 1
	Partitions int   // partitions of the table; default 4
	// Log receives the progress of the run (faults, waits, the check's
	// findings); nil: none.
	Log io.Writer
}

// Result is what a run did and found.
type Result struct {
	Cycles    int // fault cycles completed
	Faults    int // faults injected
	Acked     int // commits acknowledged to the clients
	Lost      int // acknowledged commits missing from the final state
	Anomalies int // other anomalies found by the history check
	// Details describe each lost commit and anomaly, and why the run
	// stopped early if it did.
	Details []string
}

// String returns "cycles=N faults=K acked=A lost=L anomalies=X".
func (r Result) String() string {
	return fmt.Sprintf("cycles=%d faults=%d acked=%d lost=%d anomalies=%d", r.Cycles, r.Faults, r.Acked, r.Lost, r.Anomalies)
}

func (opt *Options) setDefaults() {
	if opt.Cycles <= 0 {
		opt.Cycles = 3
	}
	if opt.Clients <= 0 {
		opt.Clients = 3
	}
	if opt.Storages <= 0 {
		opt.Storages = 2
	}
	if opt.Masters <= 0 {
		opt.Masters = 1
	}
	if opt.Partitions <= 0 {
		opt.Partitions = 4
	}
}

// Timeouts of the waits for the cluster, by state.
const (
	startTimeout   = 60 * time.Second // cluster RUNNING with every cell UP_TO_DATE
	recoverTimeout = 60 * time.Second // the same after a fault is removed
	noticeTimeout  = 30 * time.Second // the admin reports a killed node gone
)

// runner is one Run.
type runner struct {
	opt  Options
	rng  *rand.Rand // the fault schedule
	c    *cluster
	mon  *monitor
	rec  *recorder
	logs *ring
	res  Result
	objs []zodb.Oid
	kind map[zodb.Oid]histcheck.ObjKind

	lost  map[int]bool // operations found lost
	hooks hooks
}

// hooks let tests break what a run checks.
type hooks struct {
	// tamper, if not nil, changes the history or the final state before
	// the check.
	tamper func(*histcheck.History, histcheck.Final)
	// wrapBackend, if not nil, wraps each storage's backend.
	wrapBackend func(stor string, b backend.Backend) backend.Backend
	// underLoad, if not nil, is called once the clients run, before the
	// first fault; the faults wait for it.
	underLoad func(ctx context.Context) error
}

func (r *runner) logf(format string, args ...any) {
	if r.opt.Log != nil {
		fmt.Fprintf(r.opt.Log, "stress: "+format+"\n", args...)
	}
}

// Run runs a stress test as opt describes. It returns an error when the
// cluster lost a commit, showed an anomaly, or could not be brought back to
// an operational state; the Result tells what was done until then.
func Run(ctx context.Context, opt Options) (Result, error) {
	return run(ctx, opt, hooks{})
}

func run(ctx context.Context, opt Options, hk hooks) (res Result, err error) {
	opt.setDefaults()
	if opt.Replicas < 0 || opt.Replicas >= opt.Storages {
		return Result{}, fmt.Errorf("stress: %d replicas need at least %d storages, have %d", opt.Replicas, opt.Replicas+1, opt.Storages)
	}
	r := &runner{opt: opt, rng: rand.New(rand.NewSource(opt.Seed)), logs: newRing(5000), hooks: hk}
	began := time.Now()
	r.logf("seed %d: %d cycles, %d clients, %d masters, %d storages, %d replicas, %d partitions",
		opt.Seed, opt.Cycles, opt.Clients, opt.Masters, opt.Storages, opt.Replicas, opt.Partitions)
	defer func() {
		if r.res.Acked == 0 && r.rec != nil {
			// The check did not run: count the acknowledged commits
			// recorded.
			r.rec.mu.Lock()
			for _, op := range r.rec.h.Ops {
				if op.Kind != histcheck.Read && op.Outcome == histcheck.OK {
					r.res.Acked++
				}
			}
			r.rec.mu.Unlock()
		}
		if err != nil {
			r.res.Details = append(r.res.Details, err.Error())
			r.dumpLogs()
		}
		res = r.res
		r.logf("%s in %v", res, time.Since(began).Round(time.Millisecond))
	}()

	dir, err := os.MkdirTemp("", "neo-stress-")
	if err != nil {
		return Result{}, fmt.Errorf("stress: %w", err)
	}
	defer os.RemoveAll(dir)

	r.c = &cluster{
		name:     "stress",
		replicas: opt.Replicas,
		net:      faultnet.New(nil),
		logger:   slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		logf:     r.logf,

		wrapBackend: hk.wrapBackend,
	}
	if err := r.c.setup(dir, opt); err != nil {
		return Result{}, fmt.Errorf("stress: %w", err)
	}
	defer func() {
		for _, e := range r.c.stopAll() {
			r.logf("stopping: %v", e)
		}
	}()
	r.mon = &monitor{c: r.c}
	defer r.mon.close()
	if err := r.start(ctx); err != nil {
		return Result{}, fmt.Errorf("stress: %w", err)
	}
	if err := r.createObjects(ctx); err != nil {
		return Result{}, fmt.Errorf("stress: %w", err)
	}

	ferr := r.faultsUnderLoad(ctx)
	if ferr != nil {
		// The history is checked all the same: what it shows helps to
		// understand the failure.
		r.logf("fault loop stopped: %v", ferr)
	}

	r.c.net.HealAll()
	st, err := r.mon.wait(ctx, recoverTimeout, "all faults healed: cluster RUNNING, every cell UP_TO_DATE", r.c.healthy)
	if err != nil {
		return r.res, fmt.Errorf("stress: seed %d: %w", opt.Seed, errors.Join(ferr, err))
	}
	r.logf("healed: %v", st)
	final, rerr := r.readFinal(ctx)
	if rerr != nil {
		return r.res, fmt.Errorf("stress: seed %d: final state: %w", opt.Seed, errors.Join(ferr, rerr))
	}
	if r.hooks.tamper != nil {
		r.hooks.tamper(&r.rec.h, final)
	}
	r.check(final)
	if err := r.checkReplicas(ctx, final); err != nil {
		ferr = errors.Join(ferr, err)
	}
	switch {
	case ferr != nil:
		return r.res, fmt.Errorf("stress: seed %d: %w", opt.Seed, ferr)
	case r.res.Lost > 0 || r.res.Anomalies > 0:
		return r.res, fmt.Errorf("stress: seed %d: %s", opt.Seed, r.res)
	}
	return r.res, nil
}

// start starts every node and waits until the cluster is RUNNING with
// every cell UP_TO_DATE.
func (r *runner) start(ctx context.Context) error {
	for _, n := range r.c.masters {
		if err := r.c.startNode(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range r.c.stors {
		if err := r.c.startNode(ctx, n); err != nil {
			return err
		}
	}
	if err := r.c.startNode(ctx, r.c.admin); err != nil {
		return err
	}
	st, err := r.mon.wait(ctx, startTimeout, "start: cluster RUNNING, every cell UP_TO_DATE", r.c.healthy)
	if err == nil {
		var names []string
		for _, n := range append(append([]*node{}, r.c.masters...), r.c.stors...) {
			names = append(names, n.name+"="+n.addr)
		}
		r.logf("started: %s; %v", strings.Join(names, " "), st)
	}
	return err
}

// newClient opens a client node named name.
func (r *runner) newClient(ctx context.Context, name string) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cl, err := client.New(ctx, client.Config{
		Cluster: r.c.name,
		Masters: r.c.masterAddrs(),
		Net:     r.c.net.Endpoint(name),
		Logger:  r.c.logger.With("endpoint", name),
	}, &zodb.DriverOptions{Logger: r.c.logger.With("endpoint", name)})
	if err != nil {
		return nil, fmt.Errorf("client %s: %w", name, err)
	}
	return cl, nil
}

// createObjects creates the counters and lists in one transaction; the
// history starts at its tid.
func (r *runner) createObjects(ctx context.Context) error {
	cl, err := r.newClient(ctx, "C0")
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	oids, err := cl.NewOids(ctx, numCounters+numLists)
	if err != nil {
		return fmt.Errorf("creating objects: %w", err)
	}
	r.kind = map[zodb.Oid]histcheck.ObjKind{}
	txn, err := cl.Begin(ctx, zodb.TxnMeta{Description: []byte("stress objects")})
	if err != nil {
		return fmt.Errorf("creating objects: %w", err)
	}
	for i, oid := range oids {
		k := histcheck.Counter
		if i >= numCounters {
			k = histcheck.List
		}
		r.kind[oid] = k
		r.objs = append(r.objs, oid)
		if err := txn.Store(ctx, oid, 0, encode(k, histcheck.Value{})); err != nil {
			abortTxn(txn)
			return fmt.Errorf("creating objects: %w", err)
		}
	}
	if _, err := txn.Vote(ctx); err != nil {
		abortTxn(txn)
		return fmt.Errorf("creating objects: %w", err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		return fmt.Errorf("creating objects: %w", err)
	}
	r.rec = &recorder{start: time.Now(), h: histcheck.History{Objects: r.kind, Start: tid}}
	r.logf("objects %v created at %v", oids, tid)
	return nil
}

// faultsUnderLoad runs the clients while the fault cycles run.
func (r *runner) faultsUnderLoad(ctx context.Context) error {
	var workers []*worker
	var clients []*client.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for i := range r.opt.Clients {
		name := fmt.Sprintf("C%d", i+1)
		cl, err := r.newClient(ctx, name)
		if err != nil {
			return err
		}
		clients = append(clients, cl)
		workers = append(workers, &worker{
			name: name, stor: cl, rec: r.rec, objs: r.objs, kind: r.kind,
			rng: rand.New(rand.NewSource(r.opt.Seed*1000 + int64(i))),
		})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx, stop)
		}()
	}
	var err error
	if r.hooks.underLoad != nil {
		err = r.hooks.underLoad(ctx)
	}
	for n := 1; n <= r.opt.Cycles && err == nil; n++ {
		if err = r.cycle(ctx, n); err != nil {
			err = fmt.Errorf("cycle %d: %w", n, err)
			break
		}
		r.res.Cycles = n
	}
	close(stop)
	wg.Wait()
	return err
}

// cycle injects one cycle of faults, waiting after each until the cluster
// is healthy again.
func (r *runner) cycle(ctx context.Context, n int) error {
	c := r.c
	// A storage killed and restarted on its database.
	s := c.stors[r.rng.Intn(len(c.stors))]
	r.logf("cycle %d: kill %s", n, s.name)
	r.res.Faults++
	if err := c.stop(s, true); err != nil {
		r.logf("%s: Run after kill: %v", s.name, err)
	}
	if _, err := r.mon.wait(ctx, noticeTimeout, s.name+" killed: seen not RUNNING", func(st *clusterState) bool {
		ni, ok := st.nodeByAddr(s.addr)
		return !ok || ni.State != proto.NodeRunning
	}); err != nil {
		return err
	}
	if err := c.startNode(ctx, s); err != nil {
		return fmt.Errorf("restarting %s: %w", s.name, err)
	}
	// Half of the time, the next faults come while the restarted storage
	// still replicates what it missed.
	if r.rng.Intn(2) == 0 {
		if _, err := r.mon.wait(ctx, recoverTimeout, s.name+" restarted: cluster RUNNING, every cell UP_TO_DATE", c.healthy); err != nil {
			return err
		}
	} else {
		if _, err := r.mon.wait(ctx, recoverTimeout, s.name+" restarted: cluster RUNNING (replication may go on)", c.operational); err != nil {
			return err
		}
	}

	// Links cut or blackholed, then healed.
	pairs := r.linkPairs()
	k := 1 + r.rng.Intn(2)
	var faults []string
	for range k {
		p := pairs[r.rng.Intn(len(pairs))]
		a, b := p[0], p[1]
		if r.rng.Intn(2) == 0 {
			a, b = b, a
		}
		switch r.rng.Intn(3) {
		case 0:
			c.net.Cut(a, b)
			c.net.Cut(b, a)
			faults = append(faults, "cut "+a+"<->"+b)
		case 1:
			c.net.Blackhole(a, b)
			c.net.Blackhole(b, a)
			faults = append(faults, "blackhole "+a+"<->"+b)
		default:
			c.net.Blackhole(a, b)
			faults = append(faults, "blackhole "+a+"->"+b)
		}
		r.res.Faults++
	}
	hold := time.Duration(200+r.rng.Intn(800)) * time.Millisecond
	r.logf("cycle %d: %s for %v", n, strings.Join(faults, ", "), hold)
	t := time.NewTimer(hold)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	c.net.HealAll()
	if _, err := r.mon.wait(ctx, recoverTimeout, "links healed: cluster RUNNING, every cell UP_TO_DATE", c.healthy); err != nil {
		return err
	}

	if len(c.masters) > 1 {
		if err := r.killPrimary(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// linkPairs returns the pairs of nodes whose links may be broken:
// master↔storage, client↔storage, client↔master, storage↔storage and
// master↔master.
func (r *runner) linkPairs() [][2]string {
	var v [][2]string
	var ms, ss, cs []string
	for _, m := range r.c.masters {
		ms = append(ms, m.name)
	}
	for _, s := range r.c.stors {
		ss = append(ss, s.name)
	}
	for i := range r.opt.Clients {
		cs = append(cs, fmt.Sprintf("C%d", i+1))
	}
	for _, s := range ss {
		for _, m := range ms {
			v = append(v, [2]string{m, s})
		}
		for _, cl := range cs {
			v = append(v, [2]string{cl, s})
		}
	}
	for _, cl := range cs {
		for _, m := range ms {
			v = append(v, [2]string{cl, m})
		}
	}
	for i := range ss {
		for j := i + 1; j < len(ss); j++ {
			v = append(v, [2]string{ss[i], ss[j]})
		}
	}
	for i := range ms {
		for j := i + 1; j < len(ms); j++ {
			v = append(v, [2]string{ms[i], ms[j]})
		}
	}
	return v
}

// killPrimary kills the primary master, waits until another one took over,
// and restarts it.
func (r *runner) killPrimary(ctx context.Context, n int) error {
	c := r.c
	st, err := r.mon.wait(ctx, recoverTimeout, "primary master known", func(st *clusterState) bool { return st.primary != proto.NoNode })
	if err != nil {
		return err
	}
	var m *node
	for _, ni := range st.nodes {
		if ni.NID != st.primary || !ni.Addr.Ok {
			continue
		}
		for _, mn := range c.masters {
			if mn.addr == ni.Addr.V.String() {
				m = mn
			}
		}
	}
	if m == nil {
		return fmt.Errorf("primary master %v is none of ours: %v", st.primary, st)
	}
	r.logf("cycle %d: kill primary master %s (node id %v)", n, m.name, st.primary)
	r.res.Faults++
	if err := c.stop(m, true); err != nil {
		r.logf("%s: Run after kill: %v", m.name, err)
	}
	// The new primary may take the same node id: it is told by its
	// address.
	if _, err := r.mon.wait(ctx, recoverTimeout, m.name+" killed: another primary, cluster RUNNING", func(st *clusterState) bool {
		addr := st.primaryAddr()
		return addr != "" && addr != m.addr && c.operational(st)
	}); err != nil {
		return err
	}
	if err := c.startNode(ctx, m); err != nil {
		return fmt.Errorf("restarting %s: %w", m.name, err)
	}
	_, err = r.mon.wait(ctx, recoverTimeout, m.name+" restarted: cluster RUNNING, every cell UP_TO_DATE", c.healthy)
	return err
}
