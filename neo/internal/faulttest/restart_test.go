package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// allNodes returns every node: master, storages, admin.
func (c *tcluster) allNodes() []*tnode {
	return append(append([]*tnode{c.master}, c.storages...), c.admin)
}

// restartAll starts every node again on its database and address: the
// master first, then the admin, and once the admin reports the cluster
// RECOVERING, the storages.
func (c *tcluster) restartAll() {
	c.t.Helper()
	for _, n := range c.allNodes() {
		if n.running() {
			c.t.Fatalf("%s still running", n.name)
		}
	}
	c.must(c.startMaster())
	c.must(c.startAdmin())
	c.waitFor("RECOVERING", func(s *state) bool { return s.cluster == proto.ClusterRecovering })
	for i := range c.storages {
		c.must(c.startStorage(i))
	}
}

// watchClusterStates records the cluster states the master announces.
func (c *tcluster) watchClusterStates() (stop func() []proto.ClusterState) {
	var mu sync.Mutex
	var states []proto.ClusterState
	trig := c.net.OnPacket("M1", faultnet.Any, proto.CodeNotifyClusterInformation, func(p faultnet.Packet) bool {
		m, err := p.Decode()
		if err == nil {
			mu.Lock()
			st := m.(*proto.NotifyClusterInformation).State
			if len(states) == 0 || states[len(states)-1] != st {
				states = append(states, st)
			}
			mu.Unlock()
		}
		return false
	})
	return func() []proto.ClusterState {
		trig.Stop()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(states)
	}
}

// TestStopRestart stops the cluster as neoctl does (set cluster
// STOPPING): every node's Run returns. Started again on the same
// databases, the cluster goes RECOVERING → VERIFYING → RUNNING with
// exactly the committed state.
func TestStopRestart(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 5)
	cl.Close()

	c.stopCluster()
	if t.Failed() {
		t.FailNow()
	}

	states := c.watchClusterStates()
	c.restartAll()
	c.waitRunning()
	c.waitUpToDate()
	got := states()
	t.Logf("cluster states announced after the restart: %v", got)
	if i := slices.Index(got, proto.ClusterVerifying); i < 0 || !slices.Contains(got[i:], proto.ClusterRunning) || slices.Contains(got, proto.ClusterStopping) {
		t.Errorf("cluster states after the restart: %v, want RECOVERING, VERIFYING, RUNNING", got)
	}
	cl = c.client("C2")
	head, err := cl.LastTid(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	acked := w.ackedTids()
	if last := acked[len(acked)-1]; head != last {
		t.Errorf("last tid after the restart %v, last committed %v", head, last)
	}
	h := w.verify(t, c)
	if len(h) != len(acked) {
		t.Errorf("%d transactions after the restart, %d committed", len(h), len(acked))
	}
	w.commitN(t, cl, 1)
	compareDatabases(t, c)
}

// crashPoints are the packets at which TestCrashRestart kills every node.
var crashPoints = []struct {
	from, to string
	code     uint16
}{
	{"C1", "S1", proto.CodeAskStoreObject},
	{"C1", "S2", proto.CodeAskStoreTransaction},
	{"C1", "S1", proto.CodeAskStoreTransaction},
	{"C1", "M1", proto.CodeAskFinishTransaction},
	{"M1", "S1", proto.CodeAskLockInformation},
	{"M1", "S2", proto.CodeAskLockInformation},
	{"S1", "M1", proto.CodeAnswerInformationLocked},
	{"S2", "M1", proto.CodeAnswerInformationLocked},
	{"M1", "C1", proto.CodeAnswerTransactionFinished},
	{"M1", "S1", proto.CodeNotifyUnlockInformation},
	{"M1", "S2", proto.CodeNotifyUnlockInformation},
}

// replicationPoints are the packets at which TestCrashRestart kills
// every node while S1 catches up.
var replicationPoints = []struct {
	from, to string
	code     uint16
}{
	{"S1", faultnet.Any, proto.CodeAskFetchTransactions},
	{"S1", faultnet.Any, proto.CodeAskFetchObjects},
	{faultnet.Any, "S1", proto.CodeAddObject},
	{faultnet.Any, "S1", proto.CodeAnswerFetchObjects},
	{"S1", "M1", proto.CodeNotifyReplicationDone},
}

// crash modes
const (
	crashAll         = iota // every node killed during commits
	crashMaster             // the master alone killed during commits
	crashReplicating        // every node killed while S1 catches up
)

var crashModeNames = []string{"kill all", "kill the master", "kill all while S1 replicates"}

// TestCrashRestart kills, at a packet chosen at random (seeded) while
// two clients commit, either every node at once, or the master alone, or
// every node while S1 catches up after an absence; then starts what was
// killed again on the same databases; several rounds. Every acknowledged
// commit is there; a transaction that a storage locked (it answered
// AnswerInformationLocked) is committed, by verification if need be, under
// the tid the master gave it; others are there whole or not at all; the
// replicas end equal.
func TestCrashRestart(t *testing.T) {
	testCrashRestart(t, opts{storages: 2, replicas: 1}, 6)
}

// TestCrashRestart3 is TestCrashRestart with three copies of everything.
func TestCrashRestart3(t *testing.T) {
	testCrashRestart(t, opts{storages: 3, replicas: 2}, 3)
}

func testCrashRestart(t *testing.T, o opts, rounds int) {
	if *soak {
		rounds *= 7
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	c := start(t, o)
	cl := c.client("C0")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	cl.Close()
	for round := range rounds {
		mode := round % 3
		if *soak {
			mode = rng.IntN(3)
		}
		cp := crashPoints[rng.IntN(len(crashPoints))]
		nth := 1 + rng.IntN(8)
		if mode == crashReplicating {
			cp = replicationPoints[rng.IntN(len(replicationPoints))]
			nth = 1
		}
		info, _ := proto.Info(cp.code)
		t.Logf("round %d: %s at %s → %s %s #%d", round, crashModeNames[mode], cp.from, cp.to, info.Name, nth)
		crashRound(t, c, w, round, mode, cp.from, cp.to, cp.code, nth)
		if t.Failed() {
			break
		}
	}
	w.verify(t, c)
	compareDatabases(t, c)
}

func crashRound(t *testing.T, c *tcluster, w *workload, round, mode int, from, to string, code uint16, nth int) {
	// Locks the storages made durable: ttid → tid.
	var mu sync.Mutex
	lockTid := map[zodb.Tid]zodb.Tid{}
	locked := map[zodb.Tid]bool{}
	askLock := c.net.OnPacket("M1", faultnet.Any, proto.CodeAskLockInformation, func(p faultnet.Packet) bool {
		if m, err := p.Decode(); err == nil {
			mu.Lock()
			lockTid[m.(*proto.AskLockInformation).TTid] = m.(*proto.AskLockInformation).Tid
			mu.Unlock()
		}
		return false
	})
	answerLock := c.net.OnPacket(faultnet.Any, "M1", proto.CodeAnswerInformationLocked, func(p faultnet.Packet) bool {
		if m, err := p.Decode(); err == nil {
			mu.Lock()
			locked[m.(*proto.AnswerInformationLocked).TTid] = true
			mu.Unlock()
		}
		return false
	})
	// C1 commits, and another client beside it.
	clients := []*client.Client{c.client("C1"), c.client(fmt.Sprintf("C2.%d", round))}
	var all []string
	for _, n := range c.allNodes() {
		all = append(all, n.name)
	}
	if mode == crashMaster {
		all = []string{"M1"}
	}
	seen := 0
	crash := c.net.OnPacket(from, to, code, func(faultnet.Packet) bool {
		seen++
		if seen < nth {
			return false
		}
		for _, n := range all {
			c.net.Isolate(n)
		}
		return true
	})

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var wg sync.WaitGroup
	var restarted atomic.Bool // the master was started again
	lastErr := make([]error, len(clients))
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for ctx.Err() == nil {
				_, err := w.commitRetry(ctx, cl)
				lastErr[i] = err
				select {
				case <-crash.Fired():
					// After the master alone was killed, the client
					// goes on until it committed through the new one.
					if mode != crashMaster || err == nil && restarted.Load() {
						return
					}
				default:
				}
			}
		}()
	}
	if mode == crashReplicating {
		// S1 misses commits, then comes back and catches up.
		c.kill(c.storages[0])
		c.waitOutdated("S1")
		w.waitAcked(t, 3)
		c.restartStorage(0)
	}
	waitFired(t, crash, "the crash point")
	if mode == crashMaster {
		c.stop(c.master)
		c.net.HealAll()
		c.must(c.startMaster())
		restarted.Store(true)
	} else {
		for _, n := range c.allNodes() {
			c.stop(n)
		}
	}
	if mode != crashMaster {
		cancel()
	}
	wg.Wait()
	if mode == crashMaster {
		for i, err := range lastErr {
			if err != nil {
				t.Errorf("round %d: client %d never committed through the restarted master: %v", round, i+1, err)
			}
		}
	}
	askLock.Stop()
	answerLock.Stop()
	c.net.HealAll()
	w.mu.Lock()
	w.stale = true
	w.mu.Unlock()

	if mode != crashMaster {
		// Every other round, the restarted cluster is killed again in
		// verification, before or after the replay of locked
		// transactions, and restarted once more.
		if round%2 == 1 {
			point := proto.CodeAskLockedTransactions
			if round%4 == 3 {
				point = proto.CodeAskLastIDs
			}
			again := c.net.OnPacket("M1", faultnet.Any, point, func(faultnet.Packet) bool {
				for _, n := range all {
					c.net.Isolate(n)
				}
				return true
			})
			c.restartAll()
			info, _ := proto.Info(point)
			waitFired(t, again, "verification ("+info.Name+")")
			for _, n := range c.allNodes() {
				c.stop(n)
			}
			c.net.HealAll()
			t.Logf("round %d: killed again at %s", round, info.Name)
		}
		c.restartAll()
	}
	c.waitRunning()
	c.waitUpToDate()
	h := w.verify(t, c)
	committed := map[zodb.Tid]bool{}
	for tid := range h {
		committed[tid] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for ttid := range locked {
		tid, ok := lockTid[ttid]
		if !ok {
			t.Errorf("locked transaction %v: no AskLockInformation seen", ttid)
			continue
		}
		if !committed[tid] {
			t.Errorf("round %d: transaction %v, locked on a storage as %v, is not committed after the restart", round, ttid, tid)
		}
	}
	t.Logf("round %d: %d transactions, %d locked on a storage at the crash", round, len(h), len(locked))
}

// TestRestartOutdatedStorage stops the cluster while S1 is out of date
// (it missed commits while it was down), then starts every node again:
// recovery adopts S2's newer partition table, S1's cells are OUT_OF_DATE,
// and S1 must fetch what it missed before it is UP_TO_DATE.
func TestRestartOutdatedStorage(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	w.commitN(t, cl, 3) // S1 misses these
	cl.Close()
	c.stopCluster()

	c.restartAll()
	s := c.waitRunning()
	t.Logf("restarted: %v", s)
	c.waitUpToDate()
	w.verify(t, c)
	compareDatabases(t, c)
}

// TestStopDuringCommit asks the cluster to stop while a transaction is
// voted: as NEO/py, the master waits for it to finish (new transactions
// are held), the client's finish commits it, then every node stops; the
// restarted cluster has it.
func TestStopDuringCommit(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	ctx := t.Context()
	x, err := w.begin(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := c.ctl("set", "cluster", "STOPPING"); err != nil {
		t.Fatalf("set cluster STOPPING: %v %s", err, out)
	}
	c.waitFor("STOPPING", func(s *state) bool { return s.cluster == proto.ClusterStopping })
	fctx, cancel := context.WithTimeout(ctx, waitTimeout)
	tid, err := x.finishOnly(fctx)
	cancel()
	if err != nil {
		t.Errorf("finish of a transaction voted before STOPPING: %v (NEO/py waits for it)", err)
	}
	deadline := time.After(waitTimeout)
	for _, n := range c.allNodes() {
		select {
		case <-n.done:
			if n.err != nil {
				t.Errorf("%s: Run after STOPPING: %v", n.name, n.err)
			}
		case <-deadline:
			t.Fatalf("%s still running %v after STOPPING and the last finish", n.name, waitTimeout)
		}
	}
	cl.Close()
	c.restartAll()
	c.waitRunning()
	c.waitUpToDate()
	h := w.verify(t, c)
	if got, ok := h.tidOf(x.seq); err == nil && (!ok || got != tid) {
		t.Errorf("txn %d finished as %v during STOPPING: after the restart %v %v", x.seq, tid, got, ok)
	}
	compareDatabases(t, c)
}
