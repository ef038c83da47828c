package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
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

// TestCrashRestart kills every node at once at a packet of the commit
// chosen at random (seeded), while two clients commit, then starts the
// cluster again on the same databases, several rounds. Every acknowledged
// commit is there; a transaction that a storage locked (it answered
// AnswerInformationLocked) is committed, by verification if need be, under
// the tid the master gave it; others are there whole or not at all.
func TestCrashRestart(t *testing.T) {
	rounds := 3
	if *soak {
		rounds = 30
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C0")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	cl.Close()
	for round := range rounds {
		cp := crashPoints[rng.IntN(len(crashPoints))]
		nth := 1 + rng.IntN(8)
		info, _ := proto.Info(cp.code)
		t.Logf("round %d: kill all at %s → %s %s #%d", round, cp.from, cp.to, info.Name, nth)
		crashRound(t, c, w, round, cp.from, cp.to, cp.code, nth)
		if t.Failed() {
			break
		}
	}
	w.verify(t, c)
	compareDatabases(t, c)
}

func crashRound(t *testing.T, c *tcluster, w *workload, round int, from, to string, code uint16, nth int) {
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
	all := []string{"M1", "S1", "S2", "A1"}
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

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for ctx.Err() == nil {
				if _, err := w.commitRetry(ctx, cl); err != nil {
					select {
					case <-crash.Fired():
						return
					default:
					}
				}
			}
		}()
	}
	waitFired(t, crash, "the crash point")
	for _, n := range c.allNodes() {
		c.stop(n)
	}
	cancel()
	wg.Wait()
	askLock.Stop()
	answerLock.Stop()
	c.net.HealAll()
	w.mu.Lock()
	w.stale = true
	w.mu.Unlock()

	c.restartAll()
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
