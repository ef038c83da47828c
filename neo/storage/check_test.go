package storage

import (
	"slices"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestCheckReplicas: S2, ordered to check partitions against S1, reports
// only the partition where its records differ.
func TestCheckReplicas(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n1 := startNode(t, fm, dbPath(t, "s1.db"), proto.NoNode)
	ml1 := fm.accept(ctx, s1)
	n2 := startNode(t, fm, dbPath(t, "s2.db"), proto.NoNode)
	ml2 := fm.accept(ctx, s2)
	all := []proto.NodeInfo{
		storageEntry(s1, n1.s.Addr(), proto.NodeRunning, 1),
		storageEntry(s2, n2.s.Addr(), proto.NodeRunning, 2), clientEntry(c1, 3)}
	rows := ptRows(np, proto.CellInfo{NID: s1, State: proto.CellUpToDate}, proto.CellInfo{NID: s2, State: proto.CellUpToDate})
	for _, ml := range []*masterLink{ml1, ml2} {
		ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: all})
		ml.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)), Rows: rows})
		ml.notify(ctx, &proto.StartOperation{})
		expect[*proto.NotifyReady](ctx, t, ml)
	}
	ca := dialClient(ctx, t, n1.s.Addr(), c1, 3)
	cb := dialClient(ctx, t, n2.s.Addr(), c1, 3)
	tid := zodb.Tid(0x1000)
	for i := 0; i < 5; i++ {
		ttid := tid + np
		tid += 2 * np
		var oids []zodb.Oid
		for oid := zodb.Oid(0); oid < 8; oid++ {
			var serial zodb.Tid
			if i > 0 {
				serial = tid - 2*np
			}
			ca.storeOK(ctx, ttid, oid, serial, "data")
			cb.storeOK(ctx, ttid, oid, serial, "data")
			oids = append(oids, oid)
		}
		ca.ask(ctx, &proto.AskStoreTransaction{TTid: ttid, Oids: oids})
		cb.ask(ctx, &proto.AskStoreTransaction{TTid: ttid, Oids: oids})
		ml1.ask(ctx, &proto.AskLockInformation{TTid: ttid, Tid: tid})
		ml2.ask(ctx, &proto.AskLockInformation{TTid: ttid, Tid: tid})
		ml1.notify(ctx, &proto.NotifyUnlockInformation{TTid: ttid})
		ml2.notify(ctx, &proto.NotifyUnlockInformation{TTid: ttid})
	}
	syncLink(ctx, t, ml2.link)
	// S2 loses a record of partition 1
	if err := n2.db.DeleteObject(ctx, 5, tid-2*np); err != nil {
		t.Fatal(err)
	}
	if err := n2.db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ref, _ := parseAddress(n1.s.Addr())
	for _, p := range []uint32{0, 1} {
		ml2.notify(ctx, &proto.CheckPartition{Partition: p, Source: proto.CheckSource{Addr: proto.Some(ref)}, MinTid: 0, MaxTid: tid})
	}
	m, _ := expect[*proto.NotifyPartitionCorrupted](ctx, t, ml2)
	if m.Partition != 1 || !slices.Equal(m.NIDs, []proto.NodeID{s2}) {
		t.Fatalf("NotifyPartitionCorrupted %+v, want partition 1, [S2]", m)
	}
}
