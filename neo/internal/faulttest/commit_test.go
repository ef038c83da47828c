package faulttest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestStorageLostInCommit loses S1 of two replicas in each phase of a
// commit. As in NEO/py, S2 still holds every partition readable, so the
// commit goes on without S1 and is acknowledged; S1 becomes DOWN with its
// cells OUT_OF_DATE, and once back it catches up, UP_TO_DATE, with the
// same data as S2.
func TestStorageLostInCommit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to string
		code     uint16
		nth      int
	}{
		// After some stores reached S1, before its vote.
		{"BeforeVote", "C1", "S1", proto.CodeAskStoreObject, 2},
		// S1 voted; the master is about to ask it to lock.
		{"AfterVoteBeforeLock", "M1", "S1", proto.CodeAskLockInformation, 1},
		// S1 locked the transaction durably; its answer is lost.
		{"LockAnswerLost", "S1", "M1", proto.CodeAnswerInformationLocked, 1},
		// S1 locked the transaction (durably); the master is about to
		// tell it to unlock: the client may already have its answer.
		{"DuringFinish", "M1", "S1", proto.CodeNotifyUnlockInformation, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := start(t, opts{storages: 2, replicas: 1})
			cl := c.client("C1")
			w := newWorkload(t, cl, 4)
			w.commitN(t, cl, 3)

			stopReader := w.reader(t, c.client("R1"))
			trig := c.strike(tc.from, tc.to, tc.code, tc.nth, "S1")
			res := make(chan error, 1)
			go func() {
				_, err := w.commit(context.Background(), cl)
				res <- err
			}()
			waitFired(t, trig, "the packet")
			c.kill(c.storages[0])
			if err := <-res; err != nil {
				t.Errorf("commit with S1 lost %s: %v (NEO/py commits on S2)", tc.name, err)
			}
			c.waitOutdated("S1")
			w.commitN(t, cl, 2) // S1 misses these
			c.restartStorage(0)
			c.waitRunning()
			c.waitUpToDate()
			w.commitN(t, cl, 1)
			t.Logf("%d consistent snapshots read meanwhile", stopReader())
			w.verify(t, c)
			compareDatabases(t, c)
		})
	}
}

// TestStorageLostReplicating loses S1 while it catches up (its cells
// OUT_OF_DATE, fetching from S2) with commits going on; then S1 comes
// back again and finishes catching up.
func TestStorageLostReplicating(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	w.commitN(t, cl, 20)

	// Commits go on in the background.
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	var errs []error
	var n int
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if _, err := w.commit(ctx, cl); err != nil && ctx.Err() == nil {
				errs = append(errs, err)
			}
			n++
		}
	}()
	stopReader := w.reader(t, c.client("R1"))
	trig := c.strike("S1", "S2", proto.CodeAskFetchObjects, 1, "S1")
	c.restartStorage(0)
	waitFired(t, trig, "S1 fetching objects from S2")
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	c.restartStorage(0)
	c.waitRunning()
	c.waitUpToDate()
	stop()
	<-done
	for _, err := range errs {
		t.Errorf("background commit: %v", err)
	}
	t.Logf("%d background commits, %d consistent snapshots read meanwhile", n, stopReader())
	w.commitN(t, cl, 1)
	w.verify(t, c)
	compareDatabases(t, c)
}

var _ zodb.Tid

// TestStoragesLostInTurn loses S1, commits on S2 alone, then loses S2 too:
// the partition table is no longer operational and the cluster goes back
// to RECOVERING, S2's cells kept readable as the last copies (§6.10). S1
// comes back first: its own copy of the partition table is older (it
// missed the change that made its cells OUT_OF_DATE) and shows them
// UP_TO_DATE. Starting with S1 alone would serve a database without the
// commits acknowledged while it was away; the cluster must wait for S2,
// whose table is newer, then run with S1 catching up.
func TestStoragesLostInTurn(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	w.commitN(t, cl, 3) // on S2 alone
	c.kill(c.storages[1])
	s := c.waitFor("RECOVERING", func(s *state) bool { return s.cluster == proto.ClusterRecovering })
	t.Logf("both lost: %v", s)
	cl.Close()

	leftEarly := c.watchRecoveryOrder(t)
	s1pt := c.net.OnPacket("S1", "M1", proto.CodeAnswerPartitionTable, func(faultnet.Packet) bool { return true })
	c.restartStorage(0)
	waitFired(t, s1pt, "S1's AnswerPartitionTable")
	c.waitFor("S1 known to the admin", func(s *state) bool {
		return s.nodes["S1"] == proto.NodePending || s.cluster != proto.ClusterRecovering
	})
	c.restartStorage(1)
	c.waitRunning()
	if leftEarly() {
		t.Errorf("the cluster left recovery with S1 alone, whose stale table shows its cells UP_TO_DATE: the commits made without it are not served")
	}
	s = c.waitUpToDate()
	t.Logf("S2 back: %v", s)
	w.verify(t, c)
	cl = c.client("C2")
	if _, err := w.commitRetry(t.Context(), cl); err != nil {
		t.Error(err)
	}
	w.verify(t, c)
	compareDatabases(t, c)
}

// watchRecoveryOrder records when the master tells S1 the cluster is
// VERIFYING and when S2 answers the master's AskRecovery; leftEarly tells
// whether the cluster left recovery before S2 answered (until the end of
// the test).
func (c *tcluster) watchRecoveryOrder(t *testing.T) (leftEarly func() bool) {
	var seq, verifyingAt, s2At atomic.Int32
	verifying := c.net.OnPacket("M1", "S1", proto.CodeNotifyClusterInformation, func(p faultnet.Packet) bool {
		if m, err := p.Decode(); err != nil || m.(*proto.NotifyClusterInformation).State != proto.ClusterVerifying {
			return false
		}
		verifyingAt.Store(seq.Add(1))
		return true
	})
	t.Cleanup(verifying.Stop)
	s2answer := c.net.OnPacket("S2", "M1", proto.CodeAnswerRecovery, func(faultnet.Packet) bool {
		s2At.Store(seq.Add(1))
		return true
	})
	t.Cleanup(s2answer.Stop)
	return func() bool {
		v, w := verifyingAt.Load(), s2At.Load()
		return v != 0 && (w == 0 || v < w)
	}
}

// TestSourceLostReplicating loses S2 while S1 fetches from it (S1's cells
// OUT_OF_DATE, S2 the only readable copy): the cluster goes back to
// RECOVERING and must not start with S1 alone; once S2 is back, S1
// finishes catching up.
func TestSourceLostReplicating(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	w.commitN(t, cl, 5)
	cl.Close()

	trig := c.strike("S1", "S2", proto.CodeAskFetchObjects, 1, "S2")
	c.restartStorage(0)
	waitFired(t, trig, "S1 fetching objects from S2")
	c.kill(c.storages[1])
	c.waitFor("RECOVERING", func(s *state) bool { return s.cluster == proto.ClusterRecovering })
	// S1 is connected and pending; the cluster must wait for S2: it may
	// leave recovery only after S2 answered it.
	leftEarly := c.watchRecoveryOrder(t)
	c.waitFor("S1 PENDING", func(s *state) bool {
		return s.nodes["S1"] == proto.NodePending || s.cluster != proto.ClusterRecovering
	})
	c.restartStorage(1)
	c.waitRunning()
	if leftEarly() {
		t.Errorf("the cluster left recovery with S1 alone, out of date")
	}
	c.waitUpToDate()
	cl = c.client("C2")
	if _, err := w.commitRetry(t.Context(), cl); err != nil {
		t.Error(err)
	}
	w.verify(t, c)
	compareDatabases(t, c)
}

// restartReplicating restarts S1, out of date, and holds it in
// replication: what S2 sends it is blackholed (until Heal("S2", "S1")), so
// stores to S1 are taken without lock.
func (c *tcluster) restartReplicating(t *testing.T) {
	t.Helper()
	hold := c.net.OnPacket("S1", "S2", proto.CodeAskFetchTransactions, func(faultnet.Packet) bool {
		c.net.Blackhole("S2", "S1")
		return true
	})
	c.restartStorage(0)
	waitFired(t, hold, "S1 replicating")
	c.waitFor("S1 RUNNING, replicating", func(s *state) bool { return s.nodes["S1"] == proto.NodeRunning })
}

// TestStorageLostLockless holds S1 in replication (what S2 sends it is
// blackholed) so that a commit stores on S1 without locks (its cells
// OUT_OF_DATE, answers ZERO_TID), then loses S1 at that commit's vote.
// The commit is acknowledged from S2's locks; S1, back, catches up.
func TestStorageLostLockless(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	w.commitN(t, cl, 2)

	stopReader := w.reader(t, c.client("R1"))
	c.restartReplicating(t)
	var lockless, locked atomic.Int32
	answers := c.net.OnPacket("S1", "C1", proto.CodeAnswerStoreObject, func(p faultnet.Packet) bool {
		if m, err := p.Decode(); err == nil {
			if m.(*proto.AnswerStoreObject).Conflict == 0 {
				lockless.Add(1)
			} else {
				locked.Add(1)
			}
		}
		return false
	})
	trig := c.strike("C1", "S1", proto.CodeAskStoreTransaction, 1, "S1")
	res := make(chan error, 1)
	go func() {
		_, err := w.commit(context.Background(), cl)
		res <- err
	}()
	waitFired(t, trig, "the vote of a lockless commit on S1")
	answers.Stop()
	if lockless.Load() == 0 || locked.Load() != 0 {
		t.Errorf("S1 answered %d stores without lock and %d otherwise, want all without lock", lockless.Load(), locked.Load())
	}
	c.kill(c.storages[0])
	c.net.Heal("S2", "S1")
	if err := <-res; err != nil {
		t.Errorf("commit with S1 (lockless) lost at vote: %v", err)
	}
	c.waitOutdated("S1")
	c.restartStorage(0)
	c.waitRunning()
	c.waitUpToDate()
	w.commitN(t, cl, 1)
	t.Logf("%d consistent snapshots read meanwhile", stopReader())
	w.verify(t, c)
	compareDatabases(t, c)
}

// TestLocklessUnchecked: S1 replicates (held), so C1's store of an object
// is locked and checked on S2 only, and taken without check on S1. C1's
// link to S2 then closes (S2 forgets C1's transaction and its lock) and C2
// commits the object meanwhile. Once S1 is up to date, C1 votes: no cell
// that did not fail checked its write (S1's check after replication found
// C2's commit and dropped C1's store silently), so the vote must fail, as
// with NEO/py's client ("not fully write-locked"), rather than commit on S1
// a transaction without the object.
func TestLocklessUnchecked(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	ctx := t.Context()
	c1, c2 := c.client("C1"), c.client("C2")
	oids, err := c1.NewOids(ctx, 1)
	c.must(err)
	oid := oids[0]
	commitOne := func(cl *client.Client, serial zodb.Tid, data string) (zodb.Tid, error) {
		txn, err := cl.Begin(ctx, zodb.TxnMeta{})
		if err != nil {
			return 0, err
		}
		defer txn.Abort(ctx)
		if err := txn.Store(ctx, oid, serial, []byte(data)); err != nil {
			return 0, err
		}
		if _, err := txn.Vote(ctx); err != nil {
			return 0, err
		}
		return txn.Finish(ctx)
	}
	s0, err := commitOne(c1, 0, "v0")
	c.must(err)
	c.kill(c.storages[0])
	c.waitOutdated("S1")
	c.restartReplicating(t)

	// C1's store: answered by S1 without lock and by S2 with its lock.
	answered := map[string]chan struct{}{"S1": make(chan struct{}), "S2": make(chan struct{})}
	for name, ch := range answered {
		trig := c.net.OnPacket(name, "C1", proto.CodeAnswerStoreObject, func(p faultnet.Packet) bool {
			m, err := p.Decode()
			if err == nil && (name == "S1") == (m.(*proto.AnswerStoreObject).Conflict == 0) {
				close(ch)
				return true
			}
			return false
		})
		defer trig.Stop()
	}
	txn, err := c1.Begin(ctx, zodb.TxnMeta{})
	c.must(err)
	defer txn.Abort(ctx)
	c.must(txn.Store(ctx, oid, s0, []byte("v1 by C1")))
	for name, ch := range answered {
		select {
		case <-ch:
		case <-time.After(waitTimeout):
			t.Fatalf("C1's store not answered by %s as expected (S1 without lock, S2 locked)", name)
		}
	}
	// C2 commits the object once S2 forgot C1's transaction with the link.
	c.cutBoth("C1", "S2")
	s2, err := commitOne(c2, s0, "v2 by C2")
	if err != nil {
		t.Fatalf("C2's commit: %v", err)
	}
	c.net.Heal("S2", "S1")
	c.waitUpToDate()

	_, verr := txn.Vote(ctx)
	var tid zodb.Tid
	if verr == nil {
		tid, verr = txn.Finish(ctx)
	}
	if verr == nil {
		t.Errorf("C1's commit on a write only S1 took, unchecked, was acknowledged at %v", tid)
	} else {
		t.Logf("C1's commit refused: %v", verr)
	}
	data, serial, _, err := c2.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
	if err != nil || serial != s2 && (verr != nil || serial != tid) {
		t.Errorf("load: %q at %v, %v; C2 committed at %v", data, serial, err, s2)
	}
}

// TestStorageLostConcurrent loses S1 at a store (chosen at random,
// seeded) while two clients commit the same objects (conflicts, waits for
// locks, deadlock avoidance), several rounds; S1 comes back each time.
// Commits may conflict and be retried, but none fails otherwise.
func TestStorageLostConcurrent(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	rounds := 3
	if *soak {
		rounds = 20
	}
	c := start(t, opts{storages: 2, replicas: 1})
	w := newWorkload(t, c.client("C0"), 4)
	for round := range rounds {
		clients := []*client.Client{c.client(fmt.Sprintf("C1.%d", round)), c.client(fmt.Sprintf("C2.%d", round))}
		nth := 1 + rng.IntN(30)
		trig := c.strike(faultnet.Any, "S1", proto.CodeAskStoreObject, nth, "S1")
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		errs := make([][]error, len(clients))
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if _, err := w.commitRetry(ctx, cl); err != nil && ctx.Err() == nil {
						errs[i] = append(errs[i], err)
					}
				}
			}()
		}
		waitFired(t, trig, fmt.Sprintf("store #%d to S1", nth))
		c.kill(c.storages[0])
		c.waitOutdated("S1")
		w.waitAcked(t, 2)
		c.restartStorage(0)
		c.waitRunning()
		c.waitUpToDate()
		w.waitAcked(t, 2)
		cancel()
		wg.Wait()
		for i, v := range errs {
			for _, err := range v {
				var conflict *zodb.ConflictError
				if !errors.As(err, &conflict) {
					t.Errorf("round %d: client %d: %v", round, i+1, err)
				}
			}
		}
		for _, cl := range clients {
			cl.Close()
		}
		if t.Failed() {
			break
		}
	}
	w.verify(t, c)
	compareDatabases(t, c)
}
