package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// A new cluster waits in RECOVERING for neoctl start, then makes the
// partition table out of the pending storages, verifies and runs.
func TestNewClusterStart(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	admin := h.connect(h.adminRI())
	h.take(admin)
	// Nothing to start with.
	h.request(admin, 1, &proto.SetClusterState{State: proto.ClusterVerifying})
	wantError(t, h.take(admin)[0], proto.Denied, "Cannot exit recovery without any storage node")
	h.request(admin, 2, &proto.SetClusterState{State: proto.ClusterRunning})
	wantError(t, h.take(admin)[0], proto.Denied, "Invalid state requested")

	s1 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	s2 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	// Not while a storage is being asked.
	h.request(admin, 3, &proto.SetClusterState{State: proto.ClusterVerifying})
	if e := errorOf(t, h.mustFind(admin, &proto.Error{})); e.Code != proto.Denied {
		t.Fatalf("start while recovering storages: %v", e)
	}
	h.take(admin)
	for _, l := range []LinkID{s1, s2} {
		h.answerAsk(l, &proto.AskRecovery{}, &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
		h.take(l)
	}
	// Without neoctl start (and no autostart), nothing happens.
	h.step(EvTick{})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("cluster started by itself")
	}
	h.take(admin)
	h.request(admin, 4, &proto.SetClusterState{State: proto.ClusterVerifying})
	acts := h.take(admin)
	wantError(t, acts[0], proto.Ack, "Cluster state changed")
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING", h.c.ClusterState())
	}
	// The admin was told the storages run, the new PT, the new state.
	var gotPT *proto.SendPartitionTable
	for _, a := range acts[1:] {
		if m, ok := msgOf(a).(*proto.SendPartitionTable); ok {
			gotPT = m
		}
	}
	if gotPT == nil || !gotPT.PTid.Ok || gotPT.PTid.V != 1 || gotPT.NumReplicas != 1 {
		t.Fatalf("admin got PT %+v, want ptid 1, 1 replica", gotPT)
	}
	for p, row := range gotPT.Rows {
		if len(row) != 2 {
			t.Fatalf("partition %d: %v, want 2 cells", p, row)
		}
		for _, c := range row {
			if c.State != proto.CellUpToDate {
				t.Fatalf("partition %d: %v, want UP_TO_DATE cells", p, row)
			}
		}
	}
	for _, l := range []LinkID{s1, s2} {
		acts := h.expect(l, &proto.NotifyNodeInformation{}, &proto.NotifyClusterInformation{}, &proto.SendPartitionTable{}, &proto.AskLockedTransactions{})
		if st := msgOf(acts[1]).(*proto.NotifyClusterInformation).State; st != proto.ClusterVerifying {
			t.Fatalf("notified %v", st)
		}
		h.pending[l] = acts[3:]
	}
	for _, l := range []LinkID{s1, s2} {
		h.answerAsk(l, &proto.AskLockedTransactions{}, &proto.AnswerLockedTransactions{})
	}
	for _, l := range []LinkID{s1, s2} {
		h.answerAsk(l, &proto.AskLastIDs{}, &proto.AnswerLastIDs{LastTid: zodb.InvalidTid, LastOid: zodb.InvalidOid, FirstTid: zodb.TidMax})
	}
	for _, l := range []LinkID{s1, s2} {
		a := h.mustFind(l, &proto.AskPackOrders{})
		if m := msgOf(a).(*proto.AskPackOrders); m.MinPackID != 0 {
			t.Fatalf("AskPackOrders(%v), want ZERO_TID", m.MinPackID)
		}
		h.answerAsk(l, &proto.AskPackOrders{}, &proto.AnswerPackOrders{Orders: []proto.PackOrder{}})
	}
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v, want RUNNING", h.c.ClusterState())
	}
	for _, l := range []LinkID{s1, s2} {
		acts := h.expect(l, &proto.NotifyClusterInformation{}, &proto.StartOperation{})
		if msgOf(acts[1]).(*proto.StartOperation).Backup {
			t.Fatalf("StartOperation(backup=true)")
		}
	}
	// Transactions wait until the storages are ready.
	cl := h.connect(clientRI())
	h.take(cl)
	h.request(cl, 9, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
	if acts := h.take(cl); len(acts) != 0 {
		t.Fatalf("begin answered before storages are ready: %v", acts)
	}
	h.request(s1, 1, &proto.NotifyReady{})
	if acts := h.take(cl); len(acts) != 0 {
		t.Fatalf("begin answered before all storages are ready: %v", acts)
	}
	h.request(s2, 1, &proto.NotifyReady{})
	acts = h.expect(cl, &proto.AnswerBeginTransaction{})
	if acts[0].(ActReply).MsgID != 9 {
		t.Fatalf("delayed answer with msg id %d, want 9", acts[0].(ActReply).MsgID)
	}
}

func TestAutostart(t *testing.T) {
	h := newHarness(t, 4, 0, 2)
	s1 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	h.answerAsk(s1, &proto.AskRecovery{}, &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("started with 1 storage, autostart=2")
	}
	s2 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("started before the storage answered AskRecovery")
	}
	h.answerAsk(s2, &proto.AskRecovery{}, &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING", h.c.ClusterState())
	}
}

// An existing cluster restarts by itself once storages with readable cells
// for every partition are back, with the newest partition table.
func TestExistingClusterRestart(t *testing.T) {
	h := newHarness(t, 12, 0, 0)
	S1, S2 := proto.NewNodeID(proto.Storage, 1), proto.NewNodeID(proto.Storage, 2)
	rows := [][]proto.CellInfo{
		{{NID: S1, State: proto.CellUpToDate}},
		{{NID: S2, State: proto.CellUpToDate}},
		{{NID: S1, State: proto.CellUpToDate}, {NID: S2, State: proto.CellOutOfDate}},
	}
	// In the old table S2 holds the only copy of partition 1: S1 alone
	// cannot start with it.
	old := [][]proto.CellInfo{{{NID: S1, State: proto.CellUpToDate}}, {{NID: S2, State: proto.CellUpToDate}}, {{NID: S1, State: proto.CellUpToDate}}}
	admin := h.connect(h.adminRI())
	h.take(admin)

	s1 := h.connect(storageRI(S1, h.newAddr()))
	h.answerAsk(s1, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(proto.PTid(4)), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	h.answerAsk(s1, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(proto.PTid(4)), Rows: old})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("started with an outdated partition table")
	}
	s2 := h.connect(storageRI(S2, h.newAddr()))
	h.answerAsk(s2, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(proto.PTid(7)), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("started before the newest partition table was read")
	}
	h.take(admin)
	h.answerAsk(s2, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(proto.PTid(7)), Rows: rows})
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING", h.c.ClusterState())
	}
	if h.c.pt.PTid != 7 || h.c.pt.NP() != 3 {
		t.Fatalf("PT ptid %d np %d, want the storage's (7, 3)", h.c.pt.PTid, h.c.pt.NP())
	}
	// The admin got the loaded table.
	a := h.mustFind(admin, &proto.SendPartitionTable{})
	if m := msgOf(a).(*proto.SendPartitionTable); m.PTid.V != 7 || len(m.Rows) != 3 {
		t.Fatalf("admin got %+v", m)
	}
	// A voted transaction locked on S1 (and voted on S2) is validated on
	// both; a transaction only voted on S2 is asked to S1.
	h.answerAsk(s1, &proto.AskLockedTransactions{}, &proto.AnswerLockedTransactions{Transactions: []proto.LockedTransaction{{TTid: 0x100, Tid: 0x103}}})
	h.answerAsk(s2, &proto.AskLockedTransactions{}, &proto.AnswerLockedTransactions{Transactions: []proto.LockedTransaction{{TTid: 0x100, Tid: zodb.InvalidTid}, {TTid: 0x200, Tid: zodb.InvalidTid}}})
	// ttid 0x200 is in partition 0x200%3 = 2: S1 has it readable and did
	// not vote it.
	a = h.mustFind(s1, &proto.AskFinalTID{})
	if m := msgOf(a).(*proto.AskFinalTID); m.TTid != 0x200 {
		t.Fatalf("AskFinalTID(%v), want 0x200", m.TTid)
	}
	h.answerAsk(s1, &proto.AskFinalTID{}, &proto.AnswerFinalTID{Tid: 0x205})
	for l, want := range map[LinkID][]proto.ValidateTransaction{
		s1: {{TTid: 0x100, Tid: 0x103}},
		s2: {{TTid: 0x100, Tid: 0x103}, {TTid: 0x200, Tid: 0x205}},
	} {
		var got []proto.ValidateTransaction
		for _, a := range h.pending[l] {
			if m, ok := msgOf(a).(*proto.ValidateTransaction); ok {
				got = append(got, *m)
			}
		}
		if len(got) != len(want) || got[0] != want[0] || len(want) > 1 && got[1] != want[1] {
			t.Fatalf("link %d validated %v, want %v", l, got, want)
		}
	}
	h.answerAsk(s1, &proto.AskLastIDs{}, &proto.AnswerLastIDs{LastTid: 0x205, LastOid: 9, FirstTid: 0x10})
	h.answerAsk(s2, &proto.AskLastIDs{}, &proto.AnswerLastIDs{LastTid: 0x203, LastOid: 12, FirstTid: 0x20})
	h.answerAsk(s1, &proto.AskPackOrders{}, &proto.AnswerPackOrders{})
	h.answerAsk(s2, &proto.AskPackOrders{}, &proto.AnswerPackOrders{})
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v, want RUNNING", h.c.ClusterState())
	}
	if h.c.lastTid != 0x205 || h.c.tm.lastOid != 12 || h.c.tm.firstTid != 0x10 {
		t.Fatalf("last tid %v, last oid %v, first tid %v", h.c.lastTid, h.c.tm.lastOid, h.c.tm.firstTid)
	}
	h.take(admin)
	h.request(admin, 3, &proto.AskLastIDs{})
	wantAns := &proto.AnswerLastIDs{LastTid: 0x205, LastOid: 12, FirstTid: 0x10}
	if got := msgOf(h.take(admin)[0]).(*proto.AnswerLastIDs); *got != *wantAns {
		t.Fatalf("AskLastIDs: %+v, want %+v", got, wantAns)
	}
}

// A storage missing at restart gets its cells outdated; a cluster whose
// partition table is not operational any more goes back to RECOVERING.
func TestStorageLostOutdatesAndStops(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	storages, admin := h.startNewCluster(2)
	ptid := h.c.pt.PTid
	cl := h.connect(clientRI())
	h.take(cl)
	h.take(storages[1])
	h.step(EvLinkDown{Link: storages[0]})
	// S1 down: its cells OUT_OF_DATE, ptid+1, to the client, S2, admin.
	for _, l := range []LinkID{cl, storages[1], admin} {
		a := h.mustFind(l, &proto.NotifyPartitionChanges{})
		m := msgOf(a).(*proto.NotifyPartitionChanges)
		if m.PTid != ptid+1 || len(m.Changes) != 4 {
			t.Fatalf("link %d: %+v, want ptid %d and 4 changes", l, m, ptid+1)
		}
		for _, ch := range m.Changes {
			if ch.State != proto.CellOutOfDate || ch.NID != proto.NewNodeID(proto.Storage, 1) {
				t.Fatalf("change %+v", ch)
			}
		}
	}
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v, want RUNNING", h.c.ClusterState())
	}
	h.take(cl)
	h.take(storages[1])
	// S2 down: nothing readable left; S2's cells are kept readable (it
	// had the last copies) and operation stops.
	h.step(EvLinkDown{Link: storages[1]})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v, want RECOVERING", h.c.ClusterState())
	}
	acts := h.take(cl)
	if len(acts) < 2 || actionName(acts[len(acts)-1]) != "close" {
		t.Fatalf("client: %v, want StopOperation and close", acts)
	}
	if _, ok := h.find(cl, &proto.StopOperation{}); ok {
		t.Fatalf("unexpected")
	}
	found := false
	for _, a := range acts {
		if _, ok := msgOf(a).(*proto.StopOperation); ok {
			found = true
		}
	}
	if !found {
		t.Fatalf("client not told StopOperation: %v", acts)
	}
	if !h.c.startupAllowed {
		t.Fatalf("startup not allowed after a failure")
	}
	// S1 and S2 come back: the cluster restarts by itself.
	s1 := h.connect(storageRI(proto.NewNodeID(proto.Storage, 1), h.newAddr()))
	s2 := h.connect(storageRI(proto.NewNodeID(proto.Storage, 2), h.newAddr()))
	rows := [][]proto.CellInfo{}
	for p := 0; p < 4; p++ {
		rows = append(rows, []proto.CellInfo{{NID: proto.NewNodeID(proto.Storage, 1), State: proto.CellOutOfDate}, {NID: proto.NewNodeID(proto.Storage, 2), State: proto.CellUpToDate}})
	}
	h.answerAsk(s1, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(ptid + 1), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	h.answerAsk(s2, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(ptid + 1), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	h.answerAsk(s1, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(ptid + 1), NumReplicas: 1, Rows: rows})
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING", h.c.ClusterState())
	}
}

func TestShutdownWaitsForTransactions(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, admin := h.startNewCluster(1)
	cl := h.connect(clientRI())
	h.take(cl)
	h.request(cl, 1, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
	ttid := msgOf(h.expect(cl, &proto.AnswerBeginTransaction{})[0]).(*proto.AnswerBeginTransaction).TTid
	h.request(admin, 2, &proto.SetClusterState{State: proto.ClusterStopping})
	wantError(t, h.mustFind(admin, &proto.Error{}), proto.Ack, "Cluster state changed")
	if h.c.ClusterState() != proto.ClusterStopping {
		t.Fatalf("state %v", h.c.ClusterState())
	}
	if len(h.global) != 0 {
		t.Fatalf("stopped with a pending transaction")
	}
	h.expect(cl, &proto.NotifyClusterInformation{})
	// No new transaction.
	cl2 := h.connect(clientRI())
	wantError(t, h.take(cl2)[0], proto.NotReady, "Retry Later")
	h.take(storages[0])
	h.request(cl, 3, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{1}})
	h.answerAsk(storages[0], &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
	h.expect(cl, &proto.AnswerTransactionFinished{}, ActClose{})
	acts := h.expect(storages[0], &proto.NotifyUnlockInformation{}, &proto.NotifyNodeInformation{}, ActClose{})
	nni := msgOf(acts[1]).(*proto.NotifyNodeInformation)
	if len(nni.Nodes) != 1 || nni.Nodes[0].State != proto.NodeDown || nni.Nodes[0].NID != h.nidOf(storages[0]) || nni.Nodes[0].IDTime.Ok {
		t.Fatalf("storage told %+v, want its own entry DOWN", nni.Nodes)
	}
	if len(h.global) != 2 {
		t.Fatalf("global actions %v, want stop listening and exit", h.global)
	}
	if _, ok := h.global[1].(ActExit); !ok {
		t.Fatalf("no exit: %v", h.global)
	}
}
