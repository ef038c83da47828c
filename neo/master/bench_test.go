package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// BenchmarkCoreCommit measures the master's share of a commit, in the core
// only: AskBeginTransaction, AskFinishTransaction with 10 oids, the lock
// answers of the involved storages (12 partitions, 3 storages, 1 replica),
// then the commit notifications.
func BenchmarkCoreCommit(b *testing.B) {
	h := newHarness(b, 12, 1, 0)
	storages, _ := h.startNewCluster(3)
	cl := h.connect(clientRI())
	h.take(cl)
	for _, l := range storages {
		h.take(l)
	}
	oids := make([]zodb.Oid, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.step(EvRecv{Link: cl, MsgID: 1, Msg: &proto.AskBeginTransaction{Tid: zodb.InvalidTid}})
		ttid := msgOf(h.take(cl)[0]).(*proto.AnswerBeginTransaction).TTid
		for j := range oids {
			oids[j] = zodb.Oid(i*10 + j)
		}
		h.step(EvRecv{Link: cl, MsgID: 2, Msg: &proto.AskFinishTransaction{TTid: ttid, Oids: oids}})
		for _, l := range storages {
			for _, a := range h.take(l) {
				if ask, ok := a.(ActAsk); ok {
					h.step(EvAnswer{Link: l, Tag: ask.Tag, Msg: &proto.AnswerInformationLocked{TTid: ttid}})
				}
			}
		}
		if len(h.take(cl)) != 1 {
			b.Fatal("not committed")
		}
		for _, l := range storages {
			h.take(l)
		}
	}
}
