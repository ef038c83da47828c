package faulttest

import (
	"context"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// lockWait bounds how long another client may wait for the locks of a
// lost client's transaction.
const lockWait = 15 * time.Second

// TestClientLostAfterVote loses the committing client after its vote,
// before it asks to finish. As NEO/py, the master forgets the client and
// aborts its transaction; the storages drop it and release its write
// locks, so another client writes the same objects at once; the lost
// client's finish fails; the transaction is nowhere.
func TestClientLostAfterVote(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl1 := c.client("C1")
	cl2 := c.client("C2")
	w := newWorkload(t, cl1, 4)
	w.commitN(t, cl1, 2)

	ctx := t.Context()
	x, err := w.begin(ctx, cl1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Vote(ctx); err != nil {
		t.Fatalf("vote: %v", err)
	}
	c.net.Isolate("C1")

	// The objects are locked by C1's voted transaction until the master
	// tells the storages that C1 is gone.
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	_, err = w.commitRetry(wctx, cl2)
	cancel()
	if err != nil {
		t.Fatalf("C2 writing the objects of the lost client's transaction: %v", err)
	}

	c.net.Heal("C1", faultnet.Any)
	c.net.Heal(faultnet.Any, "C1")
	fctx, cancel := context.WithTimeout(ctx, waitTimeout)
	tid, err := x.finishOnly(fctx)
	cancel()
	if err == nil {
		t.Errorf("finish of the lost client's transaction returned %v, want an error (NEO/py aborts it)", tid)
	} else {
		t.Logf("lost client's finish: %v", err)
	}
	w.commitN(t, cl2, 1)
	h := w.verify(t, c)
	if tid, ok := h.tidOf(x.seq); ok {
		t.Errorf("the lost client's aborted transaction (txn %d) is committed as %v", x.seq, tid)
	}
	compareDatabases(t, c)
}

// TestClientLostInFinish loses the committing client once the master got
// its AskFinishTransaction (the master is about to ask the storages to
// lock). As NEO/py, the orphaned transaction still completes: it is on
// every replica, the locks are released for another client, and the
// client, back, learns the outcome (AskFinalTID) or reports an error.
func TestClientLostInFinish(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl1 := c.client("C1")
	cl2 := c.client("C2")
	w := newWorkload(t, cl1, 4)
	w.commitN(t, cl1, 2)

	ctx := t.Context()
	var final zodb.Tid
	trig := c.net.OnPacket("M1", faultnet.Any, proto.CodeAskLockInformation, func(p faultnet.Packet) bool {
		if m, err := p.Decode(); err == nil {
			final = m.(*proto.AskLockInformation).Tid
		}
		c.net.Isolate("C1")
		return true
	})
	x, err := w.begin(ctx, cl1)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	var tid zodb.Tid
	go func() {
		var err error
		tid, err = x.finish(context.Background())
		res <- err
	}()
	waitFired(t, trig, "AskLockInformation")

	// The orphaned transaction may be committed: C2 reads the serials.
	w.mu.Lock()
	w.stale = true
	w.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	_, err = w.commitRetry(wctx, cl2)
	cancel()
	if err != nil {
		t.Fatalf("C2 writing after the lost client's finish: %v", err)
	}
	c.net.Heal("C1", faultnet.Any)
	c.net.Heal(faultnet.Any, "C1")
	select {
	case err := <-res:
		if err != nil {
			t.Logf("lost client's finish: %v", err)
		} else if tid != final {
			t.Errorf("lost client's finish returned %v, the master locked it as %v", tid, final)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("the lost client's finish did not return %v after it could reach the cluster again", waitTimeout)
	}
	w.commitN(t, cl2, 1)
	h := w.verify(t, c)
	if got, ok := h.tidOf(x.seq); !ok {
		t.Errorf("the orphaned transaction (txn %d, locked as %v) is not committed (NEO/py completes it)", x.seq, final)
	} else if got != final {
		t.Errorf("the orphaned transaction (txn %d) is committed as %v, locked as %v", x.seq, got, final)
	}
	compareDatabases(t, c)
}

// TestClientClosedAfterVote closes the committing client after its vote:
// its transaction is aborted, the locks are released for another client.
func TestClientClosedAfterVote(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl1 := c.client("C1")
	cl2 := c.client("C2")
	w := newWorkload(t, cl1, 4)
	w.commitN(t, cl1, 2)

	ctx := t.Context()
	x, err := w.begin(ctx, cl1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Vote(ctx); err != nil {
		t.Fatalf("vote: %v", err)
	}
	if err := cl1.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	_, err = w.commitRetry(wctx, cl2)
	cancel()
	if err != nil {
		t.Fatalf("C2 writing the objects of the closed client's transaction: %v", err)
	}
	h := w.verify(t, c)
	if tid, ok := h.tidOf(x.seq); ok {
		t.Errorf("the closed client's transaction (txn %d) is committed as %v", x.seq, tid)
	}
	compareDatabases(t, c)
}
