package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
)

// A cell reported corrupted by a replica check becomes CORRUPTED while
// another readable copy remains; the last readable copy is left as it is.
func TestPartitionCorrupted(t *testing.T) {
	h := newHarness(t, 4, 1, 0)
	storages, admin := h.startNewCluster(2)
	S1, S2 := h.nidOf(storages[0]), h.nidOf(storages[1])
	ptid := h.c.pt.PTid
	h.take(storages[0])
	h.step(EvRecv{Link: storages[1], Msg: &proto.NotifyPartitionCorrupted{Partition: 1, NIDs: []proto.NodeID{S2}}})
	for _, l := range []LinkID{admin, storages[0], storages[1]} {
		m := msgOf(h.mustFind(l, &proto.NotifyPartitionChanges{})).(*proto.NotifyPartitionChanges)
		want := proto.CellChange{Partition: 1, NID: S2, State: proto.CellCorrupted}
		if m.PTid != ptid+1 || len(m.Changes) != 1 || m.Changes[0] != want {
			t.Fatalf("link %d: %+v, want ptid %d and %+v", l, m, ptid+1, want)
		}
		h.take(l)
	}
	if cells := h.c.pt.ReadableCells(1); len(cells) != 1 || cells[0].NID != S1 {
		t.Fatalf("readable cells of partition 1: %v, want S1's only", cells)
	}
	// S1 holds the last readable copy of partition 1: kept.
	h.step(EvRecv{Link: storages[0], Msg: &proto.NotifyPartitionCorrupted{Partition: 1, NIDs: []proto.NodeID{S1}}})
	if _, ok := h.find(admin, &proto.NotifyPartitionChanges{}); ok || h.c.pt.PTid != ptid+1 {
		t.Fatalf("the last readable copy was marked corrupted")
	}
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v, want RUNNING", h.c.ClusterState())
	}
}
