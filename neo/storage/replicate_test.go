package storage

import (
	"context"
	"crypto/sha1"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestReplication makes S2 catch up with S1: two real storage nodes, the
// fake master telling S2 its cells are OUT_OF_DATE and S1's UP_TO_DATE.
// A transaction pending when S2 starts replicating is stored on S2
// without lock and raises the replication target when it finishes.
func TestReplication(t *testing.T) {
	ctx := timeout(t)
	t.Cleanup(func(n int) func() { return func() { fetchCount = n } }(fetchCount))
	fetchCount = 32
	fm := newFakeMaster(t)
	n1 := startNode(t, fm, dbPath(t, "s1.db"), proto.NoNode)
	ml1 := operational(ctx, t, fm, s1, n1, []proto.NodeInfo{
		storageEntry(s1, n1.s.Addr(), proto.NodeRunning, 1), clientEntry(c1, 2)},
		np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})
	c := dialClient(ctx, t, n1.s.Addr(), c1, 2)

	// history on S1: several transactions, revisions and a deletion,
	// several replication chunks per partition
	tid := zodb.Tid(0x1000)
	last := map[zodb.Oid]zodb.Tid{}
	for i := 0; i < 20; i++ {
		data := map[zodb.Oid]string{}
		for j := 0; j < 30; j++ {
			oid := zodb.Oid(1 + (i*7+j)%80)
			data[oid] = fmt.Sprintf("object %d rev %d", oid, i)
		}
		ttid := tid + np // final tid ≡ ttid (mod np), as the master chooses it
		tid += 2 * np
		commit(ctx, t, c, ml1, ttid, tid, last, data)
		for oid := range data {
			last[oid] = tid
		}
	}
	// a deletion (record without data)
	tid += 2 * np
	c.ask(ctx, &proto.AskStoreObject{Oid: 1, Serial: last[1], DataSerial: zodb.InvalidTid, TTid: tid - np})
	c.ask(ctx, &proto.AskStoreTransaction{TTid: tid - np, Oids: []zodb.Oid{1}})
	lockAndUnlock(ctx, t, ml1, tid-np, tid)
	last[1] = tid
	lastTid := tid

	// S2 joins with OUT_OF_DATE cells
	n2 := startNode(t, fm, dbPath(t, "s2.db"), proto.NoNode)
	ml2 := fm.accept(ctx, s2)
	ml1.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{
		storageEntry(s2, n2.s.Addr(), proto.NodeRunning, 3)}})
	var changes []proto.CellChange
	for p := uint32(0); p < np; p++ {
		changes = append(changes, proto.CellChange{Partition: p, NID: s2, State: proto.CellOutOfDate})
	}
	ml1.notify(ctx, &proto.NotifyPartitionChanges{PTid: 2, Changes: changes})
	ml2.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{
		storageEntry(s2, n2.s.Addr(), proto.NodeRunning, 3),
		storageEntry(s1, n1.s.Addr(), proto.NodeRunning, 1), clientEntry(c1, 2)}})
	ml2.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(2)),
		Rows: ptRows(np, proto.CellInfo{NID: s1, State: proto.CellUpToDate}, proto.CellInfo{NID: s2, State: proto.CellOutOfDate})})
	ml2.notify(ctx, &proto.StartOperation{})
	expect[*proto.NotifyReady](ctx, t, ml2)
	ask, askReq := expect[*proto.AskUnfinishedTransactions](ctx, t, ml2)
	if !slices.Equal(ask.Partitions, []uint32{0, 1, 2, 3}) {
		t.Fatalf("AskUnfinishedTransactions %v", ask.Partitions)
	}

	// a transaction in progress: written to both, without lock on S2
	cs2 := dialClient(ctx, t, n2.s.Addr(), c1, 2)
	const pendTTid, pendTid = zodb.Tid(0x9000), zodb.Tid(0x9004)
	c.storeOK(ctx, pendTTid, 2, last[2], "pending")
	if a := cs2.ask(ctx, storeReq(pendTTid, 2, last[2], "pending")).(*proto.AnswerStoreObject); a.Conflict != 0 {
		t.Fatalf("store on a replicating storage: %s, want lockless (0)", a.Conflict)
	}
	if err := askReq.Reply(ctx, &proto.AnswerUnfinishedTransactions{MaxTid: lastTid, TTids: []zodb.Tid{pendTTid}}); err != nil {
		t.Fatal(err)
	}
	c.ask(ctx, &proto.AskStoreTransaction{TTid: pendTTid, Oids: []zodb.Oid{2}})
	cs2.ask(ctx, &proto.AskStoreTransaction{TTid: pendTTid, Oids: []zodb.Oid{2}})
	lockAndUnlock(ctx, t, ml1, pendTTid, pendTid)
	lockAndUnlock(ctx, t, ml2, pendTTid, pendTid)
	ml2.notify(ctx, &proto.NotifyTransactionFinished{TTid: pendTTid, MaxTid: pendTid})
	last[2] = pendTid

	done := map[uint32]zodb.Tid{}
	for len(done) < np {
		m, _ := expect[*proto.NotifyReplicationDone](ctx, t, ml2)
		done[m.Partition] = m.Tid
	}
	for p, tid := range done {
		if tid != pendTid {
			t.Fatalf("partition %d replicated up to %s, want %s", p, tid, pendTid)
		}
	}

	// the master makes S2's cells readable; both have the same data
	var upd []proto.CellChange
	for p := uint32(0); p < np; p++ {
		upd = append(upd, proto.CellChange{Partition: p, NID: s2, State: proto.CellUpToDate})
	}
	ml1.notify(ctx, &proto.NotifyPartitionChanges{PTid: 3, Changes: upd})
	ml2.notify(ctx, &proto.NotifyPartitionChanges{PTid: 3, Changes: upd})
	syncLink(ctx, t, ml2.link)
	compareStorages(ctx, t, c, cs2, last)
}

// compareStorages checks that two storages serve the same transactions and
// object records.
func compareStorages(ctx context.Context, t *testing.T, a, b *client, last map[zodb.Oid]zodb.Tid) {
	t.Helper()
	ta := a.ask(ctx, &proto.AskTIDs{First: 0, Last: 1000, Partition: 0xffffffff}).(*proto.AnswerTIDs)
	tb := b.ask(ctx, &proto.AskTIDs{First: 0, Last: 1000, Partition: 0xffffffff}).(*proto.AnswerTIDs)
	if !slices.Equal(ta.Tids, tb.Tids) || len(ta.Tids) == 0 {
		t.Fatalf("tids differ:\n%v\n%v", ta.Tids, tb.Tids)
	}
	for _, tid := range ta.Tids {
		ia := a.ask(ctx, &proto.AskTransactionInformation{Tid: tid})
		ib := b.ask(ctx, &proto.AskTransactionInformation{Tid: tid})
		if !reflect.DeepEqual(ia, ib) {
			t.Fatalf("transaction %s differs:\n%+v\n%+v", tid, ia, ib)
		}
	}
	records := 0
	for oid := range last {
		ha := a.ask(ctx, &proto.AskObjectHistory{Oid: oid, First: 0, Last: 1000}).(*proto.AnswerObjectHistory)
		hb := b.ask(ctx, &proto.AskObjectHistory{Oid: oid, First: 0, Last: 1000}).(*proto.AnswerObjectHistory)
		if !reflect.DeepEqual(ha, hb) {
			t.Fatalf("history of %s differs:\n%+v\n%+v", oid, ha, hb)
		}
		if ha.History[0].Serial != last[oid] {
			t.Fatalf("latest revision of %s is %s, want %s", oid, ha.History[0].Serial, last[oid])
		}
		for _, h := range ha.History {
			oa := a.ask(ctx, &proto.AskObject{Oid: oid, At: h.Serial, Before: zodb.InvalidTid})
			ob := b.ask(ctx, &proto.AskObject{Oid: oid, At: h.Serial, Before: zodb.InvalidTid})
			if !reflect.DeepEqual(oa, ob) {
				t.Fatalf("object %s@%s differs:\n%+v\n%+v", oid, h.Serial, oa, ob)
			}
			records++
		}
	}
	if records < 500 {
		t.Fatalf("only %d records compared", records)
	}
}

// TestReplicationReusesAcceptedLink: like NEO/py, which refuses a second
// link with a node, the node replicates over a link the source opened to
// it. The source here is a fake one at an address nobody listens on.
func TestReplicationReusesAcceptedLink(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n := startNode(t, fm, dbPath(t, "s1.db"), proto.NoNode)
	ml := fm.accept(ctx, s1)
	ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1),
		storageEntry(s2, "127.0.0.1:1", proto.NodeRunning, 2), clientEntry(c1, 3)}})
	ml.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)),
		Rows: ptRows(np, proto.CellInfo{NID: s2, State: proto.CellUpToDate}, proto.CellInfo{NID: s1, State: proto.CellOutOfDate})})
	ml.notify(ctx, &proto.StartOperation{})
	expect[*proto.NotifyReady](ctx, t, ml)
	_, askReq := expect[*proto.AskUnfinishedTransactions](ctx, t, ml)

	// the source connects first, as for its own replication or check
	src, err := neonet.Dial(ctx, n.s.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	srcAddr, _ := parseAddress("127.0.0.1:1")
	if _, err := src.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Storage, NID: s2, Address: proto.Some(srcAddr),
		ClusterName: cluster, IDTimestamp: proto.Some(2.0), Extra: proto.Dict{}}); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			for {
				r, err := src.Recv(ctx)
				if err != nil {
					return nil
				}
				switch m := r.Msg.(type) {
				case *proto.AskFetchTransactions:
					if m.Partition == 0 {
						if err := src.Send(ctx, r.MsgID, &proto.AddTransaction{Tid: 0x104, User: []byte("u"), TTid: 0x100, Oids: []zodb.Oid{4}}); err != nil {
							return err
						}
					}
					if err := r.Reply(ctx, &proto.AnswerFetchTransactions{NextTid: zodb.InvalidTid, CompletedPack: zodb.InvalidTid}); err != nil {
						return err
					}
				case *proto.AskFetchObjects:
					if m.Partition == 0 {
						if err := src.Send(ctx, r.MsgID, &proto.AddObject{Oid: 4, Serial: 0x104, Checksum: sha1.Sum([]byte("four")),
							Data: []byte("four"), DataSerial: zodb.InvalidTid}); err != nil {
							return err
						}
					}
					if err := r.Reply(ctx, &proto.AnswerFetchObjects{NextTid: zodb.InvalidTid, NextOid: zodb.InvalidOid}); err != nil {
						return err
					}
				default:
					return fmt.Errorf("unexpected %T", r.Msg)
				}
			}
		}()
	}()
	if err := askReq.Reply(ctx, &proto.AnswerUnfinishedTransactions{MaxTid: 0x104}); err != nil {
		t.Fatal(err)
	}
	for done := 0; done < np; done++ {
		m, _ := expect[*proto.NotifyReplicationDone](ctx, t, ml)
		if m.Tid != 0x104 {
			t.Fatalf("%+v", m)
		}
	}
	var upd []proto.CellChange
	for p := uint32(0); p < np; p++ {
		upd = append(upd, proto.CellChange{Partition: p, NID: s1, State: proto.CellUpToDate})
	}
	ml.notify(ctx, &proto.NotifyPartitionChanges{PTid: 2, Changes: upd})
	c := dialClient(ctx, t, n.s.Addr(), c1, 3)
	checkObject(t, load(ctx, t, c, 4, zodb.InvalidTid, zodb.InvalidTid), 0x104, zodb.InvalidTid, "four")
	info := c.ask(ctx, &proto.AskTransactionInformation{Tid: 0x104}).(*proto.AnswerTransactionInformation)
	if string(info.User) != "u" {
		t.Fatalf("%+v", info)
	}
	src.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestReplicationDoneWaitsForSharedLockless: an oid stored without lock
// by two transactions during the replication of its partition keeps that
// partition from being reported replicated until one of them is gone;
// then the other one holds a real write lock.
func TestReplicationDoneWaitsForSharedLockless(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n := startNode(t, fm, dbPath(t, "s1.db"), proto.NoNode)
	ml := fm.accept(ctx, s1)
	ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1),
		storageEntry(s2, "127.0.0.1:1", proto.NodeRunning, 2), clientEntry(c1, 3), clientEntry(c2, 4)}})
	ml.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)),
		Rows: ptRows(np, proto.CellInfo{NID: s2, State: proto.CellUpToDate}, proto.CellInfo{NID: s1, State: proto.CellOutOfDate})})
	ml.notify(ctx, &proto.StartOperation{})
	expect[*proto.NotifyReady](ctx, t, ml)
	_, askReq := expect[*proto.AskUnfinishedTransactions](ctx, t, ml)

	// two transactions store oid 4 (partition 0) without lock
	c := dialClient(ctx, t, n.s.Addr(), c1, 3)
	for _, ttid := range []zodb.Tid{0x300, 0x400} {
		if a := c.ask(ctx, storeReq(ttid, 4, 0x104, "mine")).(*proto.AnswerStoreObject); a.Conflict != 0 {
			t.Fatalf("store by %s while replicating: %s, want lockless (0)", ttid, a.Conflict)
		}
	}
	src := serveFakeSource(ctx, t, n.s.Addr())
	if err := askReq.Reply(ctx, &proto.AnswerUnfinishedTransactions{MaxTid: 0x104}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < np-1; i++ {
		m, _ := expect[*proto.NotifyReplicationDone](ctx, t, ml)
		if m.Partition == 0 {
			t.Fatal("partition 0 reported replicated while two transactions store oid 4 without lock")
		}
	}
	c.link.Notify(ctx, &proto.AbortTransaction{TTid: 0x400})
	if m, _ := expect[*proto.NotifyReplicationDone](ctx, t, ml); m.Partition != 0 || m.Tid != 0x104 {
		t.Fatalf("%+v", m)
	}
	// 0x300 holds the lock now: a younger store waits
	other := dialClient(ctx, t, n.s.Addr(), c2, 4)
	waiting := startAsk(ctx, t, other.link, storeReq(0x500, 4, 0x104, "theirs"))
	syncLink(ctx, t, other.link)
	if !waiting.pending() {
		t.Fatalf("store not delayed by the lock of the replicated partition: %#v", waiting.wait(ctx, t))
	}
	c.link.Notify(ctx, &proto.AbortTransaction{TTid: 0x300})
	if a := waiting.wait(ctx, t).(*proto.AnswerStoreObject); a.Conflict != zodb.InvalidTid {
		t.Fatalf("store after abort: %s", a.Conflict)
	}
	src.Close()
}

// serveFakeSource links with the node at addr as storage S2 and serves
// replication: one transaction 0x104 writing oid 4 in partition 0.
func serveFakeSource(ctx context.Context, t *testing.T, addr string) *neonet.Link {
	t.Helper()
	src, err := neonet.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	srcAddr, _ := parseAddress("127.0.0.1:1")
	if _, err := src.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Storage, NID: s2, Address: proto.Some(srcAddr),
		ClusterName: cluster, IDTimestamp: proto.Some(2.0), Extra: proto.Dict{}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { src.Close(); <-done })
	go func() {
		defer close(done)
		for {
			r, err := src.Recv(ctx)
			if err != nil {
				return
			}
			switch m := r.Msg.(type) {
			case *proto.AskFetchTransactions:
				if m.Partition == 0 {
					src.Send(ctx, r.MsgID, &proto.AddTransaction{Tid: 0x104, TTid: 0x100, Oids: []zodb.Oid{4}})
				}
				r.Reply(ctx, &proto.AnswerFetchTransactions{NextTid: zodb.InvalidTid, CompletedPack: zodb.InvalidTid})
			case *proto.AskFetchObjects:
				if m.Partition == 0 {
					src.Send(ctx, r.MsgID, &proto.AddObject{Oid: 4, Serial: 0x104, Checksum: sha1.Sum([]byte("four")),
						Data: []byte("four"), DataSerial: zodb.InvalidTid})
				}
				r.Reply(ctx, &proto.AnswerFetchObjects{NextTid: zodb.InvalidTid, NextOid: zodb.InvalidOid})
			}
		}
	}()
	return src
}
