package master

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func (h *harness) begin(cl LinkID, msgID uint32) zodb.Tid {
	h.t.Helper()
	h.request(cl, msgID, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
	a := h.mustFind(cl, &proto.AnswerBeginTransaction{})
	h.dropAction(cl, a)
	return msgOf(a).(*proto.AnswerBeginTransaction).TTid
}

// lockAsked returns the AskLockInformation pending on l, if any.
func (h *harness) lockAsked(l LinkID) (*proto.AskLockInformation, bool) {
	a, ok := h.find(l, &proto.AskLockInformation{})
	if !ok {
		return nil, false
	}
	return msgOf(a).(*proto.AskLockInformation), true
}

func TestCommit(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, _ := h.startNewCluster(2)
	c1 := h.connect(clientRI())
	c2 := h.connect(clientRI())
	h.take(c1)
	h.take(c2)
	for _, l := range storages {
		h.take(l)
	}

	h.request(c1, 1, &proto.AskNewOIDs{NumOids: 3})
	oids := msgOf(h.expect(c1, &proto.AnswerNewOIDs{})[0]).(*proto.AnswerNewOIDs).Oids
	if len(oids) != 3 || oids[0] != 1 || oids[2] != 3 {
		t.Fatalf("new oids %v, want 1 2 3", oids)
	}
	ttid := h.begin(c1, 2)
	// oid 1 is in partition 1; with 2 storages and np 4, S1 has 0 and 2,
	// S2 has 1 and 3 (NEO/py's layout).
	h.request(c1, 3, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{1}, Deleted: []uint32{}, Checked: []uint32{}})
	if len(h.pending[c1]) != 0 {
		t.Fatalf("answered before the storages locked: %v", h.pending[c1])
	}
	np := h.c.pt.NP()
	var tid zodb.Tid
	involved := 0
	for _, l := range storages {
		if m, ok := h.lockAsked(l); ok {
			involved++
			if m.TTid != ttid || m.Pack {
				t.Fatalf("AskLockInformation %+v", m)
			}
			tid = m.Tid
		}
	}
	// Involved: the cells of partition(oid 1) and of partition(ttid).
	want := map[int]bool{1: true, int(uint64(ttid) % uint64(np)): true}
	wantNodes := map[proto.NodeID]bool{}
	for p := range want {
		for _, cell := range h.c.pt.Row(p) {
			wantNodes[cell.NID] = true
		}
	}
	if involved != len(wantNodes) {
		t.Fatalf("%d storages asked to lock, want %d", involved, len(wantNodes))
	}
	if tid <= ttid || uint64(tid)%uint64(np) != uint64(ttid)%uint64(np) {
		t.Fatalf("tid %v for ttid %v: want greater and ≡ mod %d", tid, ttid, np)
	}
	// AskFinalTID while locking: answered at commit.
	h.request(c2, 8, &proto.AskFinalTID{TTid: ttid})
	if len(h.pending[c2]) != 0 {
		t.Fatalf("AskFinalTID answered before commit")
	}
	// An abort now is refused.
	for i, l := range storages {
		if _, ok := h.lockAsked(l); ok {
			h.answerAsk(l, &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
			if i == 0 && involved == 2 && len(h.pending[c1]) != 0 {
				t.Fatalf("answered before all storages locked")
			}
		}
	}
	acts := h.expect(c1, &proto.AnswerTransactionFinished{})
	if r := acts[0].(ActReply); r.MsgID != 3 || *r.Msg.(*proto.AnswerTransactionFinished) != (proto.AnswerTransactionFinished{TTid: ttid, Tid: tid}) {
		t.Fatalf("got %+v", r)
	}
	acts = h.expect(c2, &proto.InvalidateObjects{}, &proto.AnswerFinalTID{})
	if m := msgOf(acts[0]).(*proto.InvalidateObjects); m.Tid != tid || len(m.Oids) != 1 || m.Oids[0] != 1 {
		t.Fatalf("invalidation %+v", m)
	}
	if r := acts[1].(ActReply); r.MsgID != 8 || r.Msg.(*proto.AnswerFinalTID).Tid != tid {
		t.Fatalf("AnswerFinalTID %+v", r)
	}
	for _, l := range storages {
		for _, a := range h.take(l) {
			if m, ok := msgOf(a).(*proto.NotifyUnlockInformation); !ok || m.TTid != ttid {
				t.Fatalf("storage got %s", actionName(a))
			}
		}
	}
	// Committed: AskFinalTID says "ask the storages"; a future ttid is
	// unknown.
	h.request(c2, 9, &proto.AskFinalTID{TTid: ttid})
	if m := msgOf(h.take(c2)[0]).(*proto.AnswerFinalTID); m.Tid != zodb.TidMax {
		t.Fatalf("AskFinalTID of a committed ttid: %v", m.Tid)
	}
	h.request(c2, 10, &proto.AskFinalTID{TTid: tid + 1000})
	if m := msgOf(h.take(c2)[0]).(*proto.AnswerFinalTID); m.Tid != zodb.InvalidTid {
		t.Fatalf("AskFinalTID of an unknown ttid: %v", m.Tid)
	}
	h.request(c2, 11, &proto.AskLastTransaction{})
	if m := msgOf(h.take(c2)[0]).(*proto.AnswerLastTransaction); m.Tid != tid {
		t.Fatalf("last transaction %v, want %v", m.Tid, tid)
	}
	// The oid counter follows committed oids.
	ttid = h.begin(c1, 12)
	h.request(c1, 13, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{500}})
	h.request(c1, 14, &proto.AbortTransaction{TTid: ttid})
	wantError(t, h.mustFind(c1, &proto.Error{}), proto.ProtocolError, "commit already requested for ttid "+ttid.String())
	h.request(c2, 1, &proto.AskNewOIDs{NumOids: 1})
	if got := msgOf(h.take(c2)[0]).(*proto.AnswerNewOIDs).Oids[0]; got != 501 {
		t.Fatalf("next oid %v, want 501", got)
	}
}

// Transactions commit in tid order even when locks come out of order.
func TestCommitOrder(t *testing.T) {
	h := newHarness(t, 1, 0, 0)
	storages, _ := h.startNewCluster(1)
	s := storages[0]
	c1 := h.connect(clientRI())
	h.take(c1)
	h.take(s)
	t1 := h.begin(c1, 1)
	t2 := h.begin(c1, 2)
	h.request(c1, 3, &proto.AskFinishTransaction{TTid: t1, Oids: []zodb.Oid{1}})
	a1 := h.mustFind(s, &proto.AskLockInformation{}).(ActAsk)
	h.dropAction(s, a1)
	h.request(c1, 4, &proto.AskFinishTransaction{TTid: t2, Oids: []zodb.Oid{2}})
	a2 := h.mustFind(s, &proto.AskLockInformation{}).(ActAsk)
	h.dropAction(s, a2)
	tid1, tid2 := a1.Msg.(*proto.AskLockInformation).Tid, a2.Msg.(*proto.AskLockInformation).Tid
	if tid1 >= tid2 {
		t.Fatalf("tids %v %v not increasing", tid1, tid2)
	}
	h.step(EvAnswer{Link: s, Tag: a2.Tag, Msg: &proto.AnswerInformationLocked{TTid: t2}})
	if len(h.pending[c1]) != 0 {
		t.Fatalf("second transaction committed before the first")
	}
	h.step(EvAnswer{Link: s, Tag: a1.Tag, Msg: &proto.AnswerInformationLocked{TTid: t1}})
	acts := h.expect(c1, &proto.AnswerTransactionFinished{}, &proto.AnswerTransactionFinished{})
	if acts[0].(ActReply).MsgID != 3 || acts[1].(ActReply).MsgID != 4 {
		t.Fatalf("commit order: %+v", acts)
	}
}

// A storage failing its vote: the master lets the commit go on without it
// if the cluster stays operational, and disconnects it at finish.
func TestFailedVote(t *testing.T) {
	h := newHarness(t, 2, 1, 0)
	storages, _ := h.startNewCluster(2)
	s1, s2 := storages[0], storages[1]
	S2 := h.nidOf(s2)
	cl := h.connect(clientRI())
	h.take(cl)
	h.take(s1)
	h.take(s2)
	ptid := h.c.pt.PTid

	ttid := h.begin(cl, 1)
	h.request(cl, 2, &proto.FailedVote{TTid: ttid, Failed: []proto.NodeID{S2}})
	wantError(t, h.take(cl)[0], proto.Ack, "")
	h.request(cl, 3, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{0, 1}})
	// S2's link is closed, its cells outdated before locking (ptid+1),
	// and only S1 locks.
	acts := h.take(s2)
	if len(acts) == 0 || actionName(acts[0]) != "close" {
		t.Fatalf("failed storage: %v, want its link closed", acts)
	}
	m := msgOf(h.mustFind(s1, &proto.NotifyPartitionChanges{})).(*proto.NotifyPartitionChanges)
	if m.PTid != ptid+1 || len(m.Changes) != 2 || m.Changes[0].NID != S2 || m.Changes[0].State != proto.CellOutOfDate {
		t.Fatalf("changes %+v", m)
	}
	if _, ok := h.lockAsked(s2); ok {
		t.Fatalf("failed storage asked to lock")
	}
	h.answerAsk(s1, &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
	h.expect(cl, &proto.NotifyNodeInformation{}, &proto.NotifyPartitionChanges{}, &proto.AnswerTransactionFinished{})
	h.step(EvLinkDown{Link: s2})
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v", h.c.ClusterState())
	}

	// Now S1 is the only readable storage: a failure of S1 cannot be
	// accepted.
	ttid = h.begin(cl, 4)
	h.request(cl, 5, &proto.FailedVote{TTid: ttid, Failed: []proto.NodeID{h.nidOf(s1)}})
	wantError(t, h.take(cl)[0], proto.IncompleteTransaction, "")
	// Failures of storages that were not ready at begin are ignored.
	h.request(cl, 6, &proto.FailedVote{TTid: ttid, Failed: []proto.NodeID{proto.NewNodeID(proto.Storage, 9)}})
	wantError(t, h.take(cl)[0], proto.Ack, "")
	// Unknown ttid.
	h.request(cl, 7, &proto.FailedVote{TTid: 1, Failed: nil})
	wantError(t, h.take(cl)[0], proto.ProtocolError, "unknown ttid 0000000000000001")
}

// A storage lost while the master waits for its lock: the commit goes on.
func TestStorageLostDuringLock(t *testing.T) {
	h := newHarness(t, 2, 1, 0)
	storages, _ := h.startNewCluster(2)
	cl := h.connect(clientRI())
	h.take(cl)
	ttid := h.begin(cl, 1)
	h.request(cl, 2, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{0}})
	h.answerAsk(storages[0], &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
	h.step(EvLinkDown{Link: storages[1]})
	h.mustFind(cl, &proto.AnswerTransactionFinished{})
}

// The client leaving aborts its transactions not being finished.
func TestClientLostAborts(t *testing.T) {
	h := newHarness(t, 2, 0, 0)
	storages, _ := h.startNewCluster(1)
	s := storages[0]
	cl := h.connect(clientRI())
	h.take(cl)
	ttid := h.begin(cl, 1)
	// The storage asks the unfinished transactions (replication).
	h.take(s)
	h.request(s, 4, &proto.AskUnfinishedTransactions{Partitions: []uint32{}})
	m := msgOf(h.take(s)[0]).(*proto.AnswerUnfinishedTransactions)
	if len(m.TTids) != 1 || m.TTids[0] != ttid {
		t.Fatalf("unfinished %+v", m)
	}
	h.step(EvLinkDown{Link: cl})
	acts := h.expect(s, &proto.AbortTransaction{}, &proto.NotifyNodeInformation{})
	if a := msgOf(acts[0]).(*proto.AbortTransaction); a.TTid != ttid || len(a.NIDs) != 0 {
		t.Fatalf("abort %+v", a)
	}
	if h.c.tm.hasPending() {
		t.Fatalf("transaction still pending")
	}
}

// Begin with an explicit tid (restore): only alone, and after the last tid.
func TestBeginWithTid(t *testing.T) {
	h := newHarness(t, 2, 0, 0)
	storages, _ := h.startNewCluster(1)
	cl := h.connect(clientRI())
	h.take(cl)
	want := zodb.TidFromTime(testEpoch.Add(-time.Hour))
	h.request(cl, 1, &proto.AskBeginTransaction{Tid: want})
	if got := msgOf(h.take(cl)[0]).(*proto.AnswerBeginTransaction).TTid; got != want {
		t.Fatalf("ttid %v, want %v", got, want)
	}
	h.request(cl, 2, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
	wantError(t, h.take(cl)[0], proto.ProtocolError, "There can't be concurrent transactions when a TID is specified for any of them.")
	_ = storages
}

func TestAddTID(t *testing.T) {
	base := zodb.TidFromTime(time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC))
	for _, tc := range []struct {
		n    int64
		want time.Time
	}{
		{1 << 32, time.Date(2024, 3, 1, 0, 0, 59, 0, time.UTC)},
		{-(1 << 32), time.Date(2024, 2, 29, 23, 58, 59, 0, time.UTC)},
		{60 << 32, time.Date(2024, 3, 1, 0, 59, 59, 0, time.UTC)},
	} {
		got := addTID(base, tc.n)
		want := zodb.TidFromTime(tc.want)
		if got != want {
			t.Errorf("addTID(%v, %d) = %v (%s), want %v (%s)", base, tc.n, got, got.TimeString(), want, want.TimeString())
		}
	}
	if got := addTID(base, 5); got != base+5 {
		t.Errorf("addTID(+5) = %v", got)
	}
	// Crossing the end of the low word carries into the next minute.
	mid := zodb.TidFromTime(time.Date(2024, 5, 6, 12, 30, 0, 0, time.UTC))
	tid := zodb.Tid(uint64(mid)&^0xffffffff | 0xfffffffe)
	if got := addTID(tid, 3); uint32(got) != 1 || got>>32 != tid>>32+1 {
		t.Errorf("addTID over the minute: %v", got)
	}
}

// Tids only grow, whatever the clock does, and final tids keep their ttid's
// partition.
func TestTidMonotonic(t *testing.T) {
	for _, np := range []int{1, 3, 12} {
		h := newHarness(t, np, 0, 0)
		storages, _ := h.startNewCluster(1)
		s := storages[0]
		cl := h.connect(clientRI())
		h.take(cl)
		rng := rand.New(rand.NewPCG(1, uint64(np)))
		var last zodb.Tid
		for i := 0; i < 200; i++ {
			// The clock jumps back and forth.
			switch rng.IntN(3) {
			case 0:
				h.now = h.now.Add(-time.Duration(rng.IntN(5000)) * time.Millisecond)
			case 1:
				h.now = h.now.Add(time.Duration(rng.IntN(100)) * time.Microsecond)
			}
			ttid := h.begin(cl, uint32(2*i))
			if ttid <= last {
				t.Fatalf("np %d: ttid %v after %v", np, ttid, last)
			}
			h.take(s)
			h.request(cl, uint32(2*i+1), &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{zodb.Oid(i)}})
			m, ok := h.lockAsked(s)
			if !ok {
				t.Fatalf("no lock asked")
			}
			if m.Tid < ttid || uint64(m.Tid)%uint64(np) != uint64(ttid)%uint64(np) {
				t.Fatalf("np %d: tid %v for ttid %v", np, m.Tid, ttid)
			}
			h.answerAsk(s, &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
			h.take(cl)
			last = m.Tid
		}
	}
}

// A failed vote that would not leave the cluster operational together with
// the failures of other pending transactions waits for them.
func TestFailedVoteDelayed(t *testing.T) {
	h := newHarness(t, 2, 1, 0)
	storages, _ := h.startNewCluster(2)
	S1, S2 := h.nidOf(storages[0]), h.nidOf(storages[1])
	c1 := h.connect(clientRI())
	c2 := h.connect(clientRI())
	h.take(c1)
	h.take(c2)
	t1 := h.begin(c1, 1)
	t2 := h.begin(c2, 1)
	h.request(c1, 2, &proto.FailedVote{TTid: t1, Failed: []proto.NodeID{S2}})
	wantError(t, h.take(c1)[0], proto.Ack, "")
	h.request(c2, 2, &proto.FailedVote{TTid: t2, Failed: []proto.NodeID{S1}})
	if len(h.pending[c2]) != 0 {
		t.Fatalf("vote answered while the other transaction may still disconnect S2")
	}
	h.request(c1, 3, &proto.AbortTransaction{TTid: t1, NIDs: []proto.NodeID{}})
	acts := h.take(c2)
	if len(acts) != 1 || acts[0].(ActReply).MsgID != 2 {
		t.Fatalf("delayed vote: %v", acts)
	}
	wantError(t, acts[0], proto.Ack, "")
}
