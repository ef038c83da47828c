package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// adminAsk sends an admin request and returns the answer.
func (h *harness) adminAsk(admin LinkID, m proto.Msg) proto.Msg {
	h.t.Helper()
	h.take(admin)
	h.request(admin, 77, m)
	for _, a := range h.pending[admin] {
		if r, ok := a.(ActReply); ok && r.MsgID == 77 {
			h.dropAction(admin, a)
			return r.Msg
		}
	}
	h.t.Fatalf("%T not answered", m)
	return nil
}

func (h *harness) wantAdmin(admin LinkID, m proto.Msg, code proto.ErrorCode, msg string) {
	h.t.Helper()
	e, ok := h.adminAsk(admin, m).(*proto.Error)
	if !ok || e.Code != code || e.Message != msg {
		h.t.Fatalf("%T%+v: got %+v, want Error(%v, %q)", m, m, e, code, msg)
	}
}

// ptChanges returns the NotifyPartitionChanges queued for l, in order.
func (h *harness) ptChanges(l LinkID) []*proto.NotifyPartitionChanges {
	var v []*proto.NotifyPartitionChanges
	for _, a := range h.pending[l] {
		if m, ok := msgOf(a).(*proto.NotifyPartitionChanges); ok {
			v = append(v, m)
		}
	}
	return v
}

func TestAdminStateChecks(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	admin := h.connect(h.adminRI())
	for _, tc := range []struct {
		m   proto.Msg
		msg string
	}{
		{&proto.AddPendingNodes{NIDs: []proto.NodeID{1}}, "addPendingNodes RPC can not be used in RECOVERING state"},
		{&proto.TweakPartitionTable{}, "tweakPartitionTable RPC can not be used in RECOVERING state"},
		{&proto.SetNumReplicas{NumReplicas: 1}, "setNumReplicas RPC can not be used in RECOVERING state"},
		{&proto.Truncate{Tid: 1}, "truncate RPC can not be used in RECOVERING state"},
		{&proto.SetClusterState{State: proto.ClusterStartingBackup}, "Can not switch to this state"},
		{&proto.SetClusterState{State: proto.ClusterBackingUp}, "Invalid state requested"},
		{&proto.SetNodeState{NID: proto.NewNodeID(proto.Storage, 5), State: proto.NodeDown}, "unknown node"},
		{&proto.SetNodeState{NID: h.c.NodeID(), State: proto.NodeDown}, "can not kill primary master node"},
		{&proto.SetNodeState{NID: h.c.NodeID(), State: proto.NodeRunning}, "can not switch node to RUNNING state"},
		{&proto.Repair{NIDs: []proto.NodeID{proto.NewNodeID(proto.Storage, 5)}}, "invalid storage node S5"},
	} {
		h.wantAdmin(admin, tc.m, proto.Denied, tc.msg)
	}
	// Always allowed.
	if m := h.adminAsk(admin, &proto.AskClusterState{}).(*proto.AnswerClusterState); m.State != proto.Some(proto.ClusterRecovering) {
		t.Fatalf("cluster state %v", m.State)
	}
	if m := h.adminAsk(admin, &proto.AskRecovery{}).(*proto.AnswerRecovery); m.PTid.Ok || m.BackupTid != zodb.InvalidTid || m.TruncateTid != zodb.InvalidTid {
		t.Fatalf("AskRecovery %+v", m)
	}
	if m := h.adminAsk(admin, &proto.AskNodeList{}).(*proto.AnswerNodeList); len(m.Nodes) != 2 {
		t.Fatalf("node list %+v, want the master and the admin", m.Nodes)
	}
	if m := h.adminAsk(admin, &proto.AskPartitionList{MinOffset: 1, MaxOffset: 0}).(*proto.AnswerPartitionList); len(m.Rows) != 3 {
		t.Fatalf("partition list %+v, want 3 rows", m)
	}
}

// A storage joining a running cluster waits PENDING until neoctl add; a
// tweak gives it OUT_OF_DATE cells, replication makes them UP_TO_DATE and
// drops the FEEDING ones. Every change has ptid+1.
func TestAddTweakReplicate(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, admin := h.startNewCluster(1)
	s1 := storages[0]
	S1 := h.nidOf(s1)
	ptid := h.c.pt.PTid
	checkPtid := func(l LinkID) {
		t.Helper()
		for _, m := range h.ptChanges(l) {
			ptid++
			if m.PTid != ptid {
				t.Fatalf("NotifyPartitionChanges ptid %d, want %d", m.PTid, ptid)
			}
		}
	}

	s2 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	S2 := h.nidOf(s2)
	acts := h.expect(s2, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{}, &proto.SendPartitionTable{})
	if st := msgOf(acts[1]).(*proto.NotifyNodeInformation).Nodes[0].State; st != proto.NodePending {
		t.Fatalf("new storage %v, want PENDING", st)
	}
	// Tweak with a pending node changes nothing.
	if m := h.adminAsk(admin, &proto.TweakPartitionTable{}).(*proto.AnswerTweakPartitionTable); m.Changed {
		t.Fatalf("tweak with only pending new nodes changed the table")
	}
	h.wantAdmin(admin, &proto.AddPendingNodes{NIDs: []proto.NodeID{S2}}, proto.Ack, "Nodes added: "+S2.String())
	h.wantAdmin(admin, &proto.AddPendingNodes{NIDs: []proto.NodeID{S2}}, proto.Ack, "No node added")
	h.mustFind(s2, &proto.StartOperation{})
	h.take(s2)
	h.request(s2, 1, &proto.NotifyReady{})

	// Dry run: the answer shows the result, nothing is broadcast.
	h.take(s1)
	dry := h.adminAsk(admin, &proto.TweakPartitionTable{DryRun: true}).(*proto.AnswerTweakPartitionTable)
	if !dry.Changed || len(h.ptChanges(s1)) != 0 || h.c.pt.PTid != ptid {
		t.Fatalf("dry run: changed=%v, broadcast %d", dry.Changed, len(h.ptChanges(s1)))
	}
	real := h.adminAsk(admin, &proto.TweakPartitionTable{}).(*proto.AnswerTweakPartitionTable)
	if !real.Changed || len(real.Rows) != 4 {
		t.Fatalf("tweak %+v", real)
	}
	for p := range real.Rows {
		if len(real.Rows[p]) != len(dry.Rows[p]) {
			t.Fatalf("partition %d: tweak %v, dry run %v", p, real.Rows[p], dry.Rows[p])
		}
	}
	checkPtid(s1)
	h.take(s1)
	// S2 got OUT_OF_DATE cells; S1's moving cells are FEEDING.
	var mine []uint32
	for p, row := range real.Rows {
		for _, c := range row {
			if c.NID == S2 {
				if c.State != proto.CellOutOfDate {
					t.Fatalf("partition %d: new cell %v", p, c)
				}
				mine = append(mine, uint32(p))
			}
		}
	}
	if len(mine) != 2 {
		t.Fatalf("S2 got partitions %v, want 2", mine)
	}
	// Replication done before AskUnfinishedTransactions: ignored.
	h.request(s2, 2, &proto.NotifyReplicationDone{Partition: mine[0], Tid: 0})
	if len(h.ptChanges(s1)) != 0 {
		t.Fatalf("late notification acted upon")
	}
	h.request(s2, 3, &proto.AskUnfinishedTransactions{Partitions: mine})
	h.request(s2, 4, &proto.NotifyReplicationDone{Partition: mine[0], Tid: 0})
	ch := h.ptChanges(s1)
	checkPtid(s1)
	if len(ch) != 1 || len(ch[0].Changes) != 2 ||
		ch[0].Changes[0] != (proto.CellChange{Partition: mine[0], NID: S2, State: proto.CellUpToDate}) ||
		ch[0].Changes[1] != (proto.CellChange{Partition: mine[0], NID: S1, State: proto.CellDiscarded}) {
		t.Fatalf("replication done: %+v", ch)
	}
	h.take(s1)
	// A partition S2 has no cell of.
	other := uint32(0)
	for other == mine[0] || other == mine[1] {
		other++
	}
	h.request(s2, 5, &proto.NotifyReplicationDone{Partition: other, Tid: 0})
	wantError(t, h.mustFind(s2, &proto.Error{}), proto.ProtocolError, "Non-assigned partition")

	// SetNumReplicas broadcasts an empty change list with ptid+1.
	h.wantAdmin(admin, &proto.SetNumReplicas{NumReplicas: 1}, proto.Ack, "")
	ch = h.ptChanges(s1)
	checkPtid(s1)
	if len(ch) != 1 || len(ch[0].Changes) != 0 || ch[0].NumReplicas != 1 {
		t.Fatalf("set replicas: %+v", ch)
	}
}

func TestSetNodeState(t *testing.T) {
	h := newHarness(t, 2, 1, 0)
	storages, admin := h.startNewCluster(2)
	S1, S2 := h.nidOf(storages[0]), h.nidOf(storages[1])
	h.wantAdmin(admin, &proto.SetNodeState{NID: S1, State: proto.NodeUnknown}, proto.Denied, "a running node must be stopped before removal")
	h.wantAdmin(admin, &proto.SetNodeState{NID: S1, State: proto.NodePending}, proto.Denied, "can not switch node to PENDING state")
	// Kill S1: it is told DOWN, its link closed, its cells outdated.
	h.take(storages[0])
	h.take(storages[1])
	h.wantAdmin(admin, &proto.SetNodeState{NID: S1, State: proto.NodeDown}, proto.Ack, "state changed")
	acts := h.take(storages[0])
	if len(acts) != 2 || actionName(acts[1]) != "close" {
		t.Fatalf("killed storage: %v", acts)
	}
	if m := msgOf(acts[0]).(*proto.NotifyNodeInformation); m.Nodes[0].NID != S1 || m.Nodes[0].State != proto.NodeDown {
		t.Fatalf("killed storage told %+v", m.Nodes)
	}
	ch := h.ptChanges(storages[1])
	if len(ch) != 1 || len(ch[0].Changes) != 2 || ch[0].Changes[0].State != proto.CellOutOfDate {
		t.Fatalf("changes %+v", ch)
	}
	h.step(EvLinkDown{Link: storages[0]})
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v", h.c.ClusterState())
	}
	h.wantAdmin(admin, &proto.SetNodeState{NID: S1, State: proto.NodeDown}, proto.Ack, "node already in DOWN state")
	// S2 has the only readable copies now.
	h.take(storages[1])
	h.wantAdmin(admin, &proto.SetNodeState{NID: S1, State: proto.NodeUnknown}, proto.Ack, "node permanently removed")
	ch = h.ptChanges(storages[1])
	if len(ch) != 1 || len(ch[0].Changes) != 2 || ch[0].Changes[0].State != proto.CellDiscarded {
		t.Fatalf("drop: %+v", ch)
	}
	if h.c.nodeByID(S1) != nil {
		t.Fatalf("dropped node still known")
	}
	h.take(storages[1])
	h.step(EvLinkDown{Link: storages[1]})
	_ = S2
}

func TestTruncateChecks(t *testing.T) {
	h := newHarness(t, 2, 0, 0)
	storages, admin := h.startNewCluster(1)
	cl := h.connect(clientRI())
	h.take(cl)
	var first zodb.Tid
	for i := uint32(0); i < 2; i++ {
		ttid := h.begin(cl, 2*i)
		h.request(cl, 2*i+1, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{1}})
		h.answerAsk(storages[0], &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
		if i == 0 {
			first = h.c.lastTid
		}
	}
	last := h.c.lastTid
	h.wantAdmin(admin, &proto.Truncate{Tid: last}, proto.Denied, "Truncating after last transaction does nothing")
	h.wantAdmin(admin, &proto.Truncate{Tid: 1}, proto.Denied, "Truncating before first transaction is probably not what you intended to do")
	h.take(storages[0])
	h.wantAdmin(admin, &proto.Truncate{Tid: first}, proto.Ack, "")
	// Operation stops; the storage is told to truncate, then asked to
	// recover.
	acts := h.expect(storages[0], &proto.StopOperation{}, &proto.Truncate{}, &proto.NotifyNodeInformation{}, &proto.NotifyClusterInformation{}, &proto.AskRecovery{})
	if m := msgOf(acts[1]).(*proto.Truncate); m.Tid != first {
		t.Fatalf("truncate at %v", m.Tid)
	}
	if h.c.ClusterState() != proto.ClusterRecovering || h.c.startupAllowed {
		t.Fatalf("state %v, startup allowed %v", h.c.ClusterState(), h.c.startupAllowed)
	}
}
