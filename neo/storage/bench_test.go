package storage

import (
	"context"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// BenchmarkLoad measures AskObject → AnswerObject over a loopback link:
// one client, one request at a time, 100 objects of 100 bytes (hot
// database pages).
func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	fm := newFakeMaster(b)
	n := startNode(b, fm, dbPath(b, "s1.db"), proto.NoNode)
	ml := operational(ctx, b, fm, s1, n, []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1), clientEntry(c1, 2)},
		np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})
	c := dialClient(ctx, b, n.s.Addr(), c1, 2)
	data := map[zodb.Oid]string{}
	for oid := zodb.Oid(0); oid < 100; oid++ {
		data[oid] = string(make([]byte, 100))
	}
	commit(ctx, b, c, ml, 0x100, 0x104, nil, data)
	req := &proto.AskObject{Oid: 0, At: zodb.InvalidTid, Before: 0x105}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Oid = zodb.Oid(i % 100)
		a, err := c.link.Ask(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if o := a.(*proto.AnswerObject); o.Serial != 0x104 || len(o.Data) != 100 {
			b.Fatalf("bad answer %+v", o)
		}
	}
}

// BenchmarkCommit measures a whole commit of one object of 100 bytes on
// one storage: AskStoreObject, AskStoreTransaction (durable vote),
// AskLockInformation (durable lock), NotifyUnlockInformation, over
// loopback links from a fake client and a fake master.
func BenchmarkCommit(b *testing.B) {
	ctx := context.Background()
	fm := newFakeMaster(b)
	n := startNode(b, fm, dbPath(b, "s1.db"), proto.NoNode)
	ml := operational(ctx, b, fm, s1, n, []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1), clientEntry(c1, 2)},
		np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})
	c := dialClient(ctx, b, n.s.Addr(), c1, 2)
	data := string(make([]byte, 100))
	serial := zodb.Tid(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ttid := zodb.Tid(0x1000 + 8*i)
		tid := ttid + np
		commit(ctx, b, c, ml, ttid, tid, map[zodb.Oid]zodb.Tid{1: serial}, map[zodb.Oid]string{1: data})
		serial = tid
	}
	b.StopTimer()
	// the last unlock was handled
	checkObject(b, load(ctx, b, c, 1, zodb.InvalidTid, serial+1), serial, zodb.InvalidTid, data)
}
