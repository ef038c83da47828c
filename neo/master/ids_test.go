package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
)

// A master restarted after a failover names itself M1 again, while the
// primary gave M1 to another master since: it is accepted with another id
// (master ids are negative, as temporary ones), not refused as "already
// connected".
func TestMasterIDConflict(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, _ := h.startNewCluster(1)
	a := h.connect(&proto.RequestIdentification{NodeType: proto.Master, Address: h.newAddr(), ClusterName: "test", Extra: proto.Dict{}})
	acc := msgOf(h.mustFind(a, &proto.AcceptIdentification{})).(*proto.AcceptIdentification)
	h.take(a)
	h.take(storages[0])
	b := h.connect(&proto.RequestIdentification{NodeType: proto.Master, NID: acc.YourNID, Address: h.newAddr(), ClusterName: "test", Extra: proto.Dict{}})
	x, ok := h.find(b, &proto.AcceptIdentification{})
	if !ok {
		t.Fatalf("master proposing an id in use refused: %v", h.take(b))
	}
	accB := msgOf(x).(*proto.AcceptIdentification)
	if accB.YourNID == acc.YourNID || accB.YourNID == h.c.NodeID() {
		t.Fatalf("id %v given twice (first %v, primary %v)", accB.YourNID, acc.YourNID, h.c.NodeID())
	}
	if h.nidOf(a) != acc.YourNID {
		t.Fatalf("first master's id changed to %v", h.nidOf(a))
	}
	// The primary's own id is not given either.
	c := h.connect(&proto.RequestIdentification{NodeType: proto.Master, NID: h.c.NodeID(), Address: h.newAddr(), ClusterName: "test", Extra: proto.Dict{}})
	x, ok = h.find(c, &proto.AcceptIdentification{})
	if !ok || msgOf(x).(*proto.AcceptIdentification).YourNID == h.c.NodeID() {
		t.Fatalf("master proposing the primary's id: %v", h.take(c))
	}
}

// A secondary follows the primary's list of masters by address: an old
// entry with its own id but another address (a master that had that id
// before an election) neither stops it nor moves the address of a master.
func TestSecondaryFollowsMastersByAddress(t *testing.T) {
	m2 := proto.Address{Host: "127.0.0.1", Port: 10001}
	m3 := proto.Address{Host: "127.0.0.1", Port: 10002}
	m4 := proto.Address{Host: "127.0.0.1", Port: 10003}
	h := newHarnessWithMasters(t, m2, m3)
	var d ActDial
	for range 2 {
		x := h.takeDial()
		if x.Addr == m2.String() {
			d = x
		} else {
			h.step(EvDialed{Tag: x.Tag, Err: errTest})
		}
	}
	h.nextLink++
	l := h.nextLink
	h.step(EvDialed{Tag: d.Tag, Link: l})
	a := h.mustFind(l, &proto.RequestIdentification{}).(ActAsk)
	h.take(l)
	self := proto.NewNodeID(proto.Master, 2)
	h.step(EvAnswer{Link: l, Tag: a.Tag, Msg: &proto.AcceptIdentification{NodeType: proto.Master, NID: proto.NewNodeID(proto.Master, 1), YourNID: self}})
	if h.c.role != roleSecondary {
		t.Fatal("not secondary")
	}
	h.global = nil
	h.step(EvRecv{Link: l, MsgID: 1, Msg: &proto.NotifyNodeInformation{Timestamp: 1, Nodes: []proto.NodeInfo{
		{Type: proto.Master, Addr: proto.Some(m3), NID: self, State: proto.NodeDown},
		{Type: proto.Master, Addr: proto.Some(m4), NID: proto.NewNodeID(proto.Master, 3), State: proto.NodeRunning},
		{Type: proto.Master, Addr: proto.Some(h.c.cfg.Addr), NID: self, State: proto.NodeRunning},
	}}})
	if h.exited() {
		t.Fatalf("secondary exited on another master's entry with its id: %v", h.global)
	}
	for _, want := range []proto.Address{m2, m3, m4} {
		if h.c.nodeByAddr(want) == nil {
			t.Errorf("master %v forgotten", want)
		}
	}
	if n := h.c.nodeByAddr(m3); n == nil || n.nid == self {
		t.Errorf("m3 has this master's id")
	}
	// Its own entry DOWN stops it.
	h.step(EvRecv{Link: l, MsgID: 2, Msg: &proto.NotifyNodeInformation{Timestamp: 2, Nodes: []proto.NodeInfo{
		{Type: proto.Master, Addr: proto.Some(h.c.cfg.Addr), NID: self, State: proto.NodeDown}}}})
	if !h.exited() {
		t.Fatalf("secondary told DOWN did not exit")
	}
}

// A NotifyReady that crossed the StopOperation of an operation that ended
// is ignored: the storage is not disconnected for it.
func TestStaleNotifyReady(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	st := h.connect(storageRI(proto.NoNode, h.newAddr()))
	h.take(st)
	if h.c.ClusterState() != proto.ClusterRecovering {
		t.Fatalf("state %v", h.c.ClusterState())
	}
	h.request(st, 9, &proto.NotifyReady{})
	for _, a := range h.take(st) {
		switch a.(type) {
		case ActAbort, ActClose:
			t.Fatalf("storage disconnected for a stale NotifyReady: %v", a)
		}
	}
}
