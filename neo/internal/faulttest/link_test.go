package faulttest

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestLinkClientStorage cuts C1 from S1. Reads go on with S2. A commit
// cannot store on S1: the client reports it with FailedVote, the master
// accepts (S2 holds every partition) and disconnects S1 at finish, which
// outdates S1's cells; S1 reconnects to the master and catches up.
func TestLinkClientStorage(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	s := c.waitRunning()
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)

	outdated := c.watchOutdated(s.nids["S1"])
	defer outdated.Stop()
	failedVote := c.net.OnPacket("C1", "M1", proto.CodeFailedVote, func(p faultnet.Packet) bool {
		m, err := p.Decode()
		if err != nil {
			return false
		}
		fv := m.(*proto.FailedVote)
		return len(fv.Failed) == 1 && fv.Failed[0] == s.nids["S1"]
	})
	defer failedVote.Stop()
	c.cutBoth("C1", "S1")

	ctx := t.Context()
	head, err := cl.LastTid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, oid := range w.oids {
		if _, _, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: head}); err != nil {
			t.Errorf("load %v with S1 cut from the client: %v", oid, err)
		}
	}
	if _, err := w.commit(ctx, cl); err != nil {
		t.Errorf("commit with S1 cut from the client: %v (NEO/py: FailedVote, committed on S2)", err)
	}
	select {
	case <-failedVote.Fired():
	default:
		t.Errorf("no FailedVote(S1) from the client")
	}
	waitFired(t, outdated, "S1's cells OUT_OF_DATE")
	c.waitRunning()
	c.waitUpToDate()
	w.commitN(t, cl, 2)
	c.healBoth("C1", "S1")
	w.verify(t, c)
	compareDatabases(t, c)
}

// TestLinkMasterStorage cuts S1 from the master: S1 is DOWN, its cells
// OUT_OF_DATE, commits go on with S2; healed, S1 comes back and catches up.
func TestLinkMasterStorage(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 2)

	c.cutBoth("M1", "S1")
	c.waitOutdated("S1")
	if _, err := w.commitRetry(t.Context(), cl); err != nil {
		t.Errorf("commit with S1 cut from the master: %v", err)
	}
	w.commitN(t, cl, 2)
	c.healBoth("M1", "S1")
	c.waitRunning()
	c.waitUpToDate()
	w.commitN(t, cl, 1)
	w.verify(t, c)
	compareDatabases(t, c)
}

// TestLinkClientMaster cuts C1 from the master during a finish: before the
// master gets AskFinishTransaction (the transaction is aborted: the
// client reports an error) and when its answer comes back (the transaction
// is committed: the client, reconnected, learns its tid with AskFinalTID,
// or reports an error). Either way the outcome the client reports is the
// cluster's, and another client can write the objects.
func TestLinkClientMaster(t *testing.T) {
	for _, tc := range []struct {
		name      string
		from, to  string
		code      uint16
		committed bool
	}{
		{"FinishLost", "C1", "M1", proto.CodeAskFinishTransaction, false},
		{"AnswerLost", "M1", "C1", proto.CodeAnswerTransactionFinished, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := start(t, opts{storages: 2, replicas: 1})
			cl1 := c.client("C1")
			cl2 := c.client("C2")
			w := newWorkload(t, cl1, 4)
			w.commitN(t, cl1, 2)

			trig := c.net.OnPacket(tc.from, tc.to, tc.code, func(faultnet.Packet) bool {
				c.cutBoth("C1", "M1")
				return true
			})
			x, err := w.begin(t.Context(), cl1)
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
			waitFired(t, trig, "the packet")
			c.healBoth("C1", "M1")
			var finishErr error
			select {
			case finishErr = <-res:
			case <-time.After(waitTimeout):
				t.Fatalf("finish did not return %v after the link was healed", waitTimeout)
			}
			t.Logf("finish: %v %v", tid, finishErr)
			if !tc.committed && finishErr == nil {
				t.Errorf("finish lost on its way: the client reports %v committed", tid)
			}
			w.mu.Lock()
			w.stale = true
			w.mu.Unlock()
			if _, err := w.commitRetry(t.Context(), cl2); err != nil {
				t.Errorf("C2 commit: %v", err)
			}
			h := w.verify(t, c)
			got, ok := h.tidOf(x.seq)
			switch {
			case ok != tc.committed:
				t.Errorf("txn %d committed: %v (%v), want %v", x.seq, ok, got, tc.committed)
			case finishErr == nil && got != tid:
				t.Errorf("txn %d committed as %v, the client reported %v", x.seq, got, tid)
			}
			compareDatabases(t, c)
		})
	}
}

// TestLinkAdminMaster cuts the admin from the master: the admin stops
// answering for the cluster; S1 is killed meanwhile; healed, the admin
// reconnects and reports the cluster as it is now (S1 DOWN, its cells
// OUT_OF_DATE), and neoctl works through it.
func TestLinkAdminMaster(t *testing.T) {
	c := start(t, opts{storages: 2, replicas: 1})
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 1)

	c.cutBoth("A1", "M1")
	// The admin, without its master, does not answer for the cluster.
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	for {
		d := neonet.Dialer{Net: c.net.Endpoint("T")}
		link, err := d.Dial(ctx, c.admin.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.askState(ctx, link)
		link.Close()
		if err != nil {
			t.Logf("admin without master: %v", err)
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the admin still answers for the cluster %v after being cut from the master", waitTimeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.kill(c.storages[0])
	w.commitN(t, cl, 1)
	c.healBoth("A1", "M1")
	c.waitOutdated("S1")
	out, err := c.ctl("print", "node")
	if err != nil {
		t.Errorf("neoctl print node: %v", err)
	}
	t.Logf("neoctl print node:\n%s", out)
	if !regexp.MustCompile(`(?m)^S1 +\| STORAGE +\|.*\| DOWN `).MatchString(out) {
		t.Errorf("neoctl print node through the reconnected admin does not show S1 DOWN")
	}
	c.restartStorage(0)
	c.waitRunning()
	c.waitUpToDate()
	w.verify(t, c)
	compareDatabases(t, c)
}

// TestLinkBlackhole holds the bytes of a link in the middle of a commit
// (nothing is lost, as TCP retransmits; NEO has no applicative keep-alive,
// so nobody gives up on the link meanwhile): the commit waits, the cluster
// still serves reads, and once the link is healed the commit completes on
// every replica. (Reads of the objects of a transaction that a storage
// locked wait for its unlock, as in NEO/py: the reads during the blackhole
// are of other objects.)
func TestLinkBlackhole(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to string
		code     uint16
	}{
		{"ClientToS1Store", "C1", "S1", proto.CodeAskStoreObject},
		{"MasterToS1Lock", "M1", "S1", proto.CodeAskLockInformation},
		{"S1ToMasterLocked", "S1", "M1", proto.CodeAnswerInformationLocked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := start(t, opts{storages: 2, replicas: 1})
			cl := c.client("C1")
			cl2 := c.client("C2")
			w := newWorkload(t, cl, 4)
			w.commitN(t, cl, 2)
			other := newWorkload(t, cl, 4)
			otherTid, err := other.commit(t.Context(), cl)
			if err != nil {
				t.Fatal(err)
			}
			trig := c.net.OnPacket(tc.from, tc.to, tc.code, func(faultnet.Packet) bool {
				c.net.Blackhole(tc.from, tc.to)
				return true
			})
			res := make(chan error, 1)
			go func() {
				_, err := w.commit(context.Background(), cl)
				res <- err
			}()
			waitFired(t, trig, "the packet")
			// Reads go on meanwhile, from another client, once its view
			// includes the other objects (C2 learns of C1's commits by the
			// master's invalidations, which may still be on their way).
			ctx := t.Context()
			head := waitHead(t, cl2, otherTid)
			for _, oid := range other.oids {
				if _, _, _, err := cl2.Load(ctx, zodb.Xid{Oid: oid, At: head}); err != nil {
					t.Errorf("load %v during the blackhole: %v", oid, err)
				}
			}
			c.net.Heal(tc.from, tc.to)
			select {
			case err := <-res:
				if err != nil {
					t.Errorf("commit across a healed blackhole: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("commit not done %v after the blackhole was healed", waitTimeout)
			}
			c.waitRunning()
			c.waitUpToDate()
			w.commitN(t, cl, 1)
			w.verify(t, c)
			compareDatabases(t, c)
		})
	}
}
