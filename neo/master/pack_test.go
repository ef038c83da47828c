package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func TestPackOrder(t *testing.T) {
	h := newHarness(t, 2, 0, 0)
	storages, _ := h.startNewCluster(1)
	s := storages[0]
	cl := h.connect(clientRI())
	h.take(cl)
	ttid := h.begin(cl, 1)
	h.request(cl, 2, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{1}})
	h.answerAsk(s, &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
	tid1 := h.c.lastTid
	h.take(cl)
	h.take(s)

	// A pack after the last transaction is refused.
	ttid = h.begin(cl, 3)
	h.request(cl, 4, &proto.AskFinishTransaction{TTid: ttid, Pack: proto.Some(proto.PackInfo{PackTid: tid1 + 1})})
	wantError(t, h.take(cl)[0], proto.ProtocolError, "invalid pack time")

	cl = h.connect(clientRI())
	h.take(cl)
	ttid = h.begin(cl, 5)
	h.request(cl, 6, &proto.AskFinishTransaction{TTid: ttid, Pack: proto.Some(proto.PackInfo{PackTid: tid1})})
	lock, ok := h.lockAsked(s)
	if !ok || !lock.Pack {
		t.Fatalf("lock %+v: want the pack order approved", lock)
	}
	h.answerAsk(s, &proto.AskLockInformation{}, &proto.AnswerInformationLocked{TTid: ttid})
	packID := lock.Tid
	acts := h.expect(s, &proto.NotifyNodeInformation{}, &proto.NotifyUnlockInformation{}, &proto.NotifyPackSigned{})
	if m := msgOf(acts[2]).(*proto.NotifyPackSigned); len(m.Approved) != 1 || m.Approved[0] != packID || len(m.Rejected) != 0 {
		t.Fatalf("signed %+v", m)
	}
	// The storage asks for the next order to process.
	h.request(s, 7, &proto.AskPackOrders{MinPackID: 0})
	orders := msgOf(h.take(s)[0]).(*proto.AnswerPackOrders).Orders
	if len(orders) != 1 || orders[0].PackID != packID || orders[0].Approved != proto.Some(true) || orders[0].PackTid != tid1 || orders[0].Partial {
		t.Fatalf("orders %+v", orders)
	}
	// WaitForPack waits until the storages completed it.
	h.take(cl)
	h.request(cl, 8, &proto.WaitForPack{PackID: packID})
	if len(h.pending[cl]) != 0 {
		t.Fatalf("WaitForPack answered before completion")
	}
	h.request(s, 9, &proto.NotifyPackCompleted{PackID: packID})
	acts = h.expect(cl, &proto.WaitedForPack{})
	if acts[0].(ActReply).MsgID != 8 {
		t.Fatalf("answer id %d", acts[0].(ActReply).MsgID)
	}
	// Orders older than what the master remembers are asked to the
	// storages first.
	h.take(s)
	h.request(s, 11, &proto.AskPackOrders{MinPackID: 1})
	a := h.mustFind(s, &proto.AskPackOrders{}).(ActAsk)
	if a.Msg.(*proto.AskPackOrders).MinPackID != 1 {
		t.Fatalf("asked %+v", a.Msg)
	}
	old := proto.PackOrder{PackID: packID, Approved: proto.Some(true), PackTid: tid1}
	h.answerAsk(s, &proto.AskPackOrders{}, &proto.AnswerPackOrders{Orders: []proto.PackOrder{old}})
	acts = h.expect(s, &proto.AnswerPackOrders{})
	if r := acts[0].(ActReply); r.MsgID != 11 || len(r.Msg.(*proto.AnswerPackOrders).Orders) != 1 || r.Msg.(*proto.AnswerPackOrders).Orders[0].PackID != packID {
		t.Fatalf("old orders %+v", r)
	}
	// Unknown (or completed) pack: answered at once.
	h.request(cl, 10, &proto.WaitForPack{PackID: packID})
	h.expect(cl, &proto.WaitedForPack{})
	// A storage becoming ready learns the last completed pack.
	s2 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	h.wantAdmin(h.connect(h.adminRI()), &proto.AddPendingNodes{NIDs: []proto.NodeID{h.nidOf(s2)}}, proto.Ack, "Nodes added: S2")
	h.take(s2)
	h.request(s2, 1, &proto.NotifyReady{})
	acts = h.expect(s2, &proto.NotifyPackSigned{})
	if m := msgOf(acts[0]).(*proto.NotifyPackSigned); len(m.Approved) != 1 || m.Approved[0] != packID {
		t.Fatalf("new storage told %+v", m)
	}
}
