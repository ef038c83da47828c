package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// floorCluster starts a cluster of S1 and S2 (replicas 1), loses S1 (its
// cells OUT_OF_DATE at ptid+1), commits one transaction, whose lock S2
// answers if locked, and loses S2: operation stops. It returns the ptid
// of the table S1 last had, and the admin link.
func floorCluster(t *testing.T, h *harness, locked bool) (ptid proto.PTid, admin LinkID) {
	t.Helper()
	storages, admin := h.startNewCluster(2)
	ptid = h.c.pt.PTid
	h.step(EvLinkDown{Link: storages[0]}) // S1 lost: its cells OUT_OF_DATE at ptid+1
	cl := h.connect(clientRI())
	h.take(cl)
	ttid := h.begin(cl, 1)
	h.request(cl, 2, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{1}, Deleted: []uint32{}, Checked: []uint32{}})
	if _, ok := h.lockAsked(storages[1]); !ok {
		t.Fatal("S2 not asked to lock")
	}
	if locked {
		h.answerAsk(storages[1], &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
		h.expect(cl, &proto.AnswerTransactionFinished{})
	}
	h.step(EvLinkDown{Link: storages[1]}) // S2 lost: operation stops
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v, want RECOVERING", h.c.ClusterState())
	}
	return ptid, admin
}

// recoverWith connects storage nid, which has the table ptid with rows.
func (h *harness) recoverWith(nid proto.NodeID, ptid proto.PTid, rows [][]proto.CellInfo) {
	l := h.connect(storageRI(nid, h.newAddr()))
	h.answerAsk(l, &proto.AskRecovery{}, &proto.AnswerRecovery{PTid: proto.Some(ptid), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	if _, ok := h.find(l, &proto.AskPartitionTable{}); ok {
		h.answerAsk(l, &proto.AskPartitionTable{}, &proto.AnswerPartitionTable{PTid: proto.Some(ptid), NumReplicas: 1, Rows: rows})
	}
}

func floorRows(s1, s2 proto.CellState) [][]proto.CellInfo {
	S1, S2 := proto.NewNodeID(proto.Storage, 1), proto.NewNodeID(proto.Storage, 2)
	var rows [][]proto.CellInfo
	for p := 0; p < 4; p++ {
		rows = append(rows, []proto.CellInfo{{NID: S1, State: s1}, {NID: S2, State: s2}})
	}
	return rows
}

// After a failure, the cluster does not restart by itself from a storage's
// partition table older than the one a transaction was locked under: S1,
// lost first, missed the commit only S2 holds, while its own table still
// calls it up to date.
func TestRecoveryNotFromOlderTable(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	ptid, _ := floorCluster(t, h, true)
	h.recoverWith(proto.NewNodeID(proto.Storage, 1), ptid, floorRows(proto.CellUpToDate, proto.CellUpToDate))
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v: started from S1's stale table (ptid %d, S2 locked a commit at %d)", h.c.ClusterState(), ptid, ptid+1)
	}
	// S2 comes back with the newest table: the cluster starts.
	h.recoverWith(proto.NewNodeID(proto.Storage, 2), ptid+1, floorRows(proto.CellOutOfDate, proto.CellUpToDate))
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING once the newest table is back", h.c.ClusterState())
	}
}

// A table no storage locked anything under may be lost with the storages
// it was sent to: here S2 was lost before it answered the lock (so before
// it stored that table). S1 comes back with the table of before its loss,
// and the cluster starts from it by itself: S1 missed no commit.
func TestRecoveryFromOlderTableWithoutLock(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	ptid, _ := floorCluster(t, h, false)
	h.recoverWith(proto.NewNodeID(proto.Storage, 1), ptid, floorRows(proto.CellUpToDate, proto.CellUpToDate))
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v, want VERIFYING from the table of ptid %d", h.c.ClusterState(), ptid)
	}
}

// The operator may still start from what is there (neoctl start).
func TestRecoveryOlderTableOperatorStart(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	ptid, admin := floorCluster(t, h, true)
	h.recoverWith(proto.NewNodeID(proto.Storage, 1), ptid, floorRows(proto.CellUpToDate, proto.CellUpToDate))
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v, want RECOVERING", h.c.ClusterState())
	}
	h.take(admin)
	h.request(admin, 5, &proto.SetClusterState{State: proto.ClusterVerifying})
	if h.c.ClusterState() != proto.ClusterVerifying {
		t.Fatalf("state %v after neoctl start, want VERIFYING", h.c.ClusterState())
	}
}
