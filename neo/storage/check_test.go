package storage

import (
	"fmt"
	"slices"
	"testing"
	"time"

	sqliteconn "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestCheckReplicas: S2, ordered to check partitions against S1, reports
// only the partition where its records differ.
func TestCheckReplicas(t *testing.T) {
	ctx := timeout(t)
	n2, ml2, ref, tid := checkSetup(t)
	// S2 loses a record of partition 1
	if err := n2.db.DeleteObject(ctx, 5, tid-2*np); err != nil {
		t.Fatal(err)
	}
	if err := n2.db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint32{0, 1} {
		ml2.notify(ctx, &proto.CheckPartition{Partition: p, Source: proto.CheckSource{Addr: proto.Some(ref)}, MinTid: 0, MaxTid: tid})
	}
	m, _ := expect[*proto.NotifyPartitionCorrupted](ctx, t, ml2)
	if m.Partition != 1 || !slices.Equal(m.NIDs, []proto.NodeID{s2}) {
		t.Fatalf("NotifyPartitionCorrupted %+v, want partition 1, [S2]", m)
	}
}

// TestCheckAlteredData: data changed in S2's database by another process,
// its checksum left as it was, is found by S2's check of that partition.
func TestCheckAlteredData(t *testing.T) {
	ctx := timeout(t)
	n2, ml2, ref, tid := checkSetup(t)
	conn, err := sqliteconn.OpenConn(n2.path, sqliteconn.OpenReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetBusyTimeout(10 * time.Second)
	// one data row of oid 5's latest revision (partition 1)
	err = sqlitex.Execute(conn, "UPDATE data SET value = ?1 WHERE id = (SELECT data_id FROM obj WHERE oid = 5 AND tid = ?2)",
		&sqlitex.ExecOptions{Args: []any{[]byte("DATA"), int64(tid - 2*np)}})
	if err == nil && conn.Changes() != 1 {
		err = fmt.Errorf("%d rows changed", conn.Changes())
	}
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint32{0, 1} {
		ml2.notify(ctx, &proto.CheckPartition{Partition: p, Source: proto.CheckSource{Addr: proto.Some(ref)}, MinTid: 0, MaxTid: tid})
	}
	m, _ := expect[*proto.NotifyPartitionCorrupted](ctx, t, ml2)
	if m.Partition != 1 || !slices.Equal(m.NIDs, []proto.NodeID{s2}) {
		t.Fatalf("NotifyPartitionCorrupted %+v, want partition 1, [S2]", m)
	}
}

// checkSetup runs S1 and S2 with the same 5 transactions of 8 objects and
// returns S2, its master link, S1's address and the last tid.
func checkSetup(t *testing.T) (*node, *masterLink, proto.Address, zodb.Tid) {
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
	ref, _ := parseAddress(n1.s.Addr())
	return n2, ml2, ref, tid
}
