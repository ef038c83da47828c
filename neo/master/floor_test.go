package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// After a failure, the cluster does not restart by itself from a storage's
// partition table older than the one the master had: S1, lost first, missed
// commits that only S2 holds, while its own table still calls it up to date.
func TestRecoveryNotFromOlderTable(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	storages, admin := h.startNewCluster(2)
	ptid := h.c.pt.PTid
	h.step(EvLinkDown{Link: storages[0]}) // S1 lost: its cells OUT_OF_DATE at ptid+1
	h.step(EvLinkDown{Link: storages[1]}) // S2 lost: operation stops
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v, want RECOVERING", h.c.ClusterState())
	}
	S1, S2 := proto.NewNodeID(proto.Storage, 1), proto.NewNodeID(proto.Storage, 2)
	var stale [][]proto.CellInfo
	for p := 0; p < 4; p++ {
		stale = append(stale, []proto.CellInfo{{NID: S1, State: proto.CellUpToDate}, {NID: S2, State: proto.CellUpToDate}})
	}
	s1 := h.connect(storageRI(S1, h.newAddr()))
	h.answerAsk(s1, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(ptid), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	h.answerAsk(s1, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(ptid), NumReplicas: 1, Rows: stale})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v: started from S1's stale table (ptid %d, the master had %d)", h.c.ClusterState(), ptid, ptid+1)
	}
	// S2 comes back with the newest table: the cluster starts.
	var rows [][]proto.CellInfo
	for p := 0; p < 4; p++ {
		rows = append(rows, []proto.CellInfo{{NID: S1, State: proto.CellOutOfDate}, {NID: S2, State: proto.CellUpToDate}})
	}
	s2 := h.connect(storageRI(S2, h.newAddr()))
	h.answerAsk(s2, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(ptid + 1), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	h.answerAsk(s2, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(ptid + 1), NumReplicas: 1, Rows: rows})
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING once the newest table is back", h.c.ClusterState())
	}
	_ = admin
}

// The operator may still start from what is there (neoctl start).
func TestRecoveryOlderTableOperatorStart(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	storages, admin := h.startNewCluster(2)
	ptid := h.c.pt.PTid
	h.step(EvLinkDown{Link: storages[0]})
	h.step(EvLinkDown{Link: storages[1]})
	S1, S2 := proto.NewNodeID(proto.Storage, 1), proto.NewNodeID(proto.Storage, 2)
	var stale [][]proto.CellInfo
	for p := 0; p < 4; p++ {
		stale = append(stale, []proto.CellInfo{{NID: S1, State: proto.CellUpToDate}, {NID: S2, State: proto.CellUpToDate}})
	}
	s1 := h.connect(storageRI(S1, h.newAddr()))
	h.answerAsk(s1, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(ptid), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	h.answerAsk(s1, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(ptid), NumReplicas: 1, Rows: stale})
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v, want RECOVERING", h.c.ClusterState())
	}
	h.take(admin)
	h.request(admin, 5, &proto.SetClusterState{State: proto.ClusterVerifying})
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v after neoctl start, want VERIFYING", h.c.ClusterState())
	}
}
