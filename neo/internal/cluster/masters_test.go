package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestMastersStop: with several masters, "neoctl set cluster STOPPING"
// stops every node, the secondary masters included, and no master takes
// over as primary.
func TestMastersStop(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d masters", n), func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Masters: n, Storages: 2, Replicas: 1})
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			p, err := c.WaitPrimary(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stor := c.Open(t, "C1", nil)
			oid, err := stor.NewOid(ctx)
			if err != nil {
				t.Fatal(err)
			}
			commit(t, stor, oid, 0, "x")
			t.Logf("primary %s", c.MasterName(p))
			sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
			defer scancel()
			if err := c.Stop(sctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// committer commits new objects through stor until ctx ends, and records
// the commits acknowledged (Finish returned a tid). Failures (the primary
// master lost, outcome unknown) are retried with new objects.
type committer struct {
	mu    sync.Mutex
	acked map[zodb.Oid]ackedCommit
	fails int
}

type ackedCommit struct {
	tid  zodb.Tid
	data string
}

func (cm *committer) count() int {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return len(cm.acked)
}

func (cm *committer) run(ctx context.Context, stor *zodb.Storage, name string) {
	for i := 0; ctx.Err() == nil; i++ {
		data := fmt.Sprintf("%s-%d", name, i)
		oid, tid, err := tryCommit(ctx, stor, data)
		cm.mu.Lock()
		if err != nil {
			cm.fails++
		} else {
			cm.acked[oid] = ackedCommit{tid, data}
		}
		cm.mu.Unlock()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func tryCommit(ctx context.Context, stor *zodb.Storage, data string) (zodb.Oid, zodb.Tid, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	oid, err := stor.NewOid(ctx)
	if err != nil {
		return 0, 0, err
	}
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		return 0, 0, err
	}
	if err := txn.Store(ctx, oid, 0, []byte(data)); err != nil {
		abort(ctx, txn)
		return 0, 0, err
	}
	if _, err := txn.Vote(ctx); err != nil {
		abort(ctx, txn)
		return 0, 0, err
	}
	tid, err := txn.Finish(ctx)
	return oid, tid, err
}

// abort aborts txn even when ctx ended, for the master and the storages to
// forget it.
func abort(ctx context.Context, txn zodb.ITxn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	txn.Abort(ctx)
}

// waitCommits waits until cm acknowledged n more commits than it had.
func (cm *committer) waitCommits(ctx context.Context, t *testing.T, n int, what string) {
	t.Helper()
	want := cm.count() + n
	for cm.count() < want {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %d commits acknowledged, want %d: %v", what, cm.count(), want, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// check loads every acknowledged commit through a new client.
func (cm *committer) check(ctx context.Context, t *testing.T, stor *zodb.Storage) {
	t.Helper()
	cm.mu.Lock()
	defer cm.mu.Unlock()
	for oid, a := range cm.acked {
		data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
		if err != nil || string(data) != a.data || serial != a.tid {
			t.Errorf("acknowledged commit of %v at %v (%q) lost: %q at %v, %v", oid, a.tid, a.data, data, serial, err)
		}
	}
}

// watchPrimaries records, until ctx ends, the times two masters were
// RUNNING as primary at once (both could accept commits).
func watchPrimaries(ctx context.Context, c *cluster.Cluster, bad *atomic.Int64, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		n := 0
		for i := range c.Masters() {
			if st := c.MasterStatus(i); st.Primary && st.State == proto.ClusterRunning {
				n++
			}
		}
		if n > 1 {
			bad.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// TestMastersFailover: the primary master is lost while clients commit
// (killed, isolated from every node, or cut from the other masters only);
// the commits go on, with another master as primary when the old one is
// gone; acknowledged commits are all readable; never two masters RUNNING
// as primaries; once the fault is over, a single primary; at the end every
// node stops through STOPPING.
func TestMastersFailover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		masters int
		fault   string
	}{
		{"kill of 2", 2, "kill"},
		{"kill of 3", 3, "kill"},
		{"isolate", 3, "isolate"},
		{"masters cut", 3, "cut masters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Masters: tc.masters, Storages: 2, Replicas: 1})
			ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
			defer cancel()
			p, err := c.WaitPrimary(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var bad atomic.Int64
			var wg sync.WaitGroup
			wctx, wcancel := context.WithCancel(ctx)
			wg.Add(1)
			go watchPrimaries(wctx, c, &bad, &wg)
			cm := &committer{acked: map[zodb.Oid]ackedCommit{}}
			var stors []*zodb.Storage
			for _, name := range []string{"C1", "C2"} {
				stor := c.Open(t, name, nil)
				stors = append(stors, stor)
				wg.Add(1)
				go func() {
					defer wg.Done()
					cm.run(wctx, stor, name)
				}()
			}
			defer func() {
				wcancel()
				wg.Wait()
			}()
			cm.waitCommits(ctx, t, 10, "before the fault")

			old := c.MasterName(p)
			switch tc.fault {
			case "kill":
				c.KillMaster(p)
			case "isolate":
				c.Net.Isolate(old)
			case "cut masters":
				for i := range c.Masters() {
					if i != p {
						c.Net.Cut(old, c.MasterName(i))
						c.Net.Cut(c.MasterName(i), old)
					}
				}
			}
			switch tc.fault {
			case "cut masters":
				// The old primary keeps its storages and goes on (as
				// NEO/py); a secondary may play the primary role
				// meanwhile, but stays RECOVERING without storages.
				for other := -1; other < 0; {
					for i := range c.Masters() {
						if st := c.MasterStatus(i); i != p && st.Primary {
							other = i
						}
					}
					select {
					case <-ctx.Done():
						t.Fatalf("no secondary gave up on the old primary %s", old)
					case <-time.After(10 * time.Millisecond):
					}
				}
				cm.waitCommits(ctx, t, 20, "masters cut")
				if st := c.MasterStatus(p); !st.Primary || st.State != proto.ClusterRunning {
					t.Errorf("old primary %s: %+v", old, st)
				}
			default:
				np, err := c.WaitPrimary(ctx)
				for err == nil && np == p {
					// The isolated master still plays the primary role
					// (RECOVERING, without storages) until it is healed.
					time.Sleep(10 * time.Millisecond)
					np = c.Primary()
					if np < 0 {
						np = p
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := c.WaitRunning(ctx); err != nil {
					t.Fatalf("after the loss of %s: %v", old, err)
				}
				cm.waitCommits(ctx, t, 20, "after the loss of the primary "+old)
				if tc.fault == "isolate" {
					if st := c.MasterStatus(p); st.State == proto.ClusterRunning {
						t.Errorf("isolated old primary %s still RUNNING: %+v", old, st)
					}
				}
			}

			// The fault ends: the old master comes back (restarted, or
			// healed) and a single primary remains.
			switch tc.fault {
			case "kill":
				if err := c.RestartMaster(p); err != nil {
					t.Fatal(err)
				}
			default:
				c.Net.HealAll()
			}
			np, err := c.WaitPrimary(ctx)
			if err != nil {
				t.Fatalf("after the fault: %v", err)
			}
			if tc.fault == "cut masters" && np != p {
				t.Errorf("after the cut, %s is primary, not %s which kept the storages", c.MasterName(np), old)
			}
			cm.waitCommits(ctx, t, 10, "after the fault")
			wcancel()
			wg.Wait()
			if n := bad.Load(); n > 0 {
				t.Errorf("two masters RUNNING as primary (%d samples)", n)
			}
			check := c.Open(t, "check", nil)
			cm.check(ctx, t, check)
			t.Logf("%d commits acknowledged, %d failed", cm.count(), cm.fails)
			// A transaction begun when the committers were told to end
			// would hold the STOPPING primary until its client goes.
			for _, stor := range append(stors, check) {
				stor.Close()
			}
			sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
			defer scancel()
			if err := c.Stop(sctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
