package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func TestIdentifyStorageDuringRecovery(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	if got := h.c.NodeID(); got != proto.NewNodeID(proto.Master, 1) {
		t.Fatalf("master id %v, want M1", got)
	}
	addr := h.newAddr()
	l := h.connect(storageRI(proto.NoNode, addr))
	acts := h.expect(l, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{}, &proto.AskRecovery{})
	acc := msgOf(acts[0]).(*proto.AcceptIdentification)
	want := &proto.AcceptIdentification{NodeType: proto.Master, NID: proto.NewNodeID(proto.Master, 1), YourNID: proto.NewNodeID(proto.Storage, 1)}
	if *acc != *want {
		t.Fatalf("got %+v, want %+v", acc, want)
	}
	if r := acts[0].(ActReply); r.MsgID != 0 {
		t.Fatalf("AcceptIdentification answers msg id %d, want 0", r.MsgID)
	}
	nni := msgOf(acts[1]).(*proto.NotifyNodeInformation)
	first := nni.Nodes[0]
	if first.NID != acc.YourNID || first.State != proto.NodePending || first.Addr != addr || !first.IDTime.Ok || first.Type != proto.Storage {
		t.Fatalf("first entry %+v: want the storage itself, PENDING, with its id_timestamp", first)
	}
	// The storage also learns about the master.
	if len(nni.Nodes) != 2 || nni.Nodes[1].Type != proto.Master || nni.Nodes[1].NID != acc.NID || nni.Nodes[1].State != proto.NodeRunning {
		t.Fatalf("node list %+v: want the storage then the master", nni.Nodes)
	}
}

func TestIdentifyRefused(t *testing.T) {
	h := newHarness(t, 4, 0, 0)

	// Wrong cluster name.
	ri := storageRI(proto.NoNode, h.newAddr())
	ri.ClusterName = "other"
	l := h.connect(ri)
	wantError(t, h.abortOf(l, h.take(l)), proto.ProtocolError, "invalid cluster name")
	var acts []Action

	// The master's own address.
	ri = storageRI(proto.NoNode, proto.Some(proto.Address{Host: "127.0.0.1", Port: 10000}))
	l = h.connect(ri)
	wantError(t, h.take(l)[0], proto.ProtocolError, "address conflict")

	// A client before the cluster runs.
	l = h.connect(clientRI())
	acts = h.take(l)
	if _, ok := acts[0].(ActAbort); !ok || len(acts) != 1 {
		t.Fatalf("client in RECOVERING: got %v", acts)
	}
	wantError(t, acts[0], proto.NotReady, "Retry Later")

	// Unknown node type.
	ri = storageRI(proto.NoNode, h.newAddr())
	ri.NodeType = proto.NodeType(7)
	l = h.connect(ri)
	wantError(t, h.take(l)[0], proto.ProtocolError, "")

	// A storage claiming the id of a connected one.
	s1 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	h.take(s1)
	l = h.connect(storageRI(h.nidOf(s1), h.newAddr()))
	acts = h.take(l)
	if _, ok := acts[0].(ActAbort); !ok {
		t.Fatalf("duplicate storage id: got %v", acts)
	}
	wantError(t, acts[0], proto.ProtocolError, "already connected")

	// A storage with the address of a connected one.
	l = h.connect(storageRI(proto.NoNode, h.c.nodeByID(h.nidOf(s1)).addr))
	wantError(t, h.take(l)[0], proto.ProtocolError, "already connected")

	// A storage without address (--new-nid mode) during recovery.
	l = h.connect(storageRI(proto.NoNode, proto.Opt[proto.Address]{}))
	wantError(t, h.take(l)[0], proto.NotReady, "Retry Later")

	// Any packet before identification.
	h.nextLink++
	l = h.nextLink
	h.step(EvRecv{Link: l, MsgID: 3, Msg: &proto.AskClusterState{}})
	acts = h.take(l)
	wantError(t, acts[0], proto.ProtocolError, "unexpected packet: no handler found in IdentificationHandler")
	if acts[0].(ActAbort).MsgID != 3 {
		t.Fatalf("error answers msg id %d, want 3", acts[0].(ActAbort).MsgID)
	}
}

func (h *harness) abortOf(l LinkID, acts []Action) Action {
	h.t.Helper()
	if len(acts) != 1 {
		h.t.Fatalf("got %d actions, want 1", len(acts))
	}
	if _, ok := acts[0].(ActAbort); !ok {
		h.t.Fatalf("got %s, want an abort", actionName(acts[0]))
	}
	return acts[0]
}

func TestNodeIDs(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	s1 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	s2 := h.connect(storageRI(proto.NoNode, h.newAddr()))
	// A storage proposing its persisted id keeps it.
	s7 := h.connect(storageRI(proto.NewNodeID(proto.Storage, 7), h.newAddr()))
	a1 := h.connect(h.adminRI())
	for l, want := range map[LinkID]proto.NodeID{
		s1: proto.NewNodeID(proto.Storage, 1),
		s2: proto.NewNodeID(proto.Storage, 2),
		s7: proto.NewNodeID(proto.Storage, 7),
		a1: proto.NewNodeID(proto.Admin, 1),
	} {
		if got := h.nidOf(l); got != want {
			t.Errorf("link %d: nid %v, want %v", l, got, want)
		}
	}
	// An admin proposing the id of a connected admin gets another one.
	ri := h.adminRI()
	ri.NID = proto.NewNodeID(proto.Admin, 1)
	a2 := h.connect(ri)
	if got := h.nidOf(a2); got != proto.NewNodeID(proto.Admin, 2) {
		t.Errorf("second admin: nid %v, want A2", got)
	}
	// A node proposing the master's own id gets another one.
	ri = h.adminRI()
	ri.NID = h.c.NodeID()
	ri.NodeType = proto.Master
	m2 := h.connect(ri)
	if got := h.nidOf(m2); got != proto.NewNodeID(proto.Master, 2) {
		t.Errorf("secondary master: nid %v, want M2", got)
	}
	// A storage that was lost comes back with its id and address.
	addr := h.c.nodeByID(h.nidOf(s2)).addr
	h.step(EvLinkDown{Link: s2})
	s2b := h.connect(storageRI(proto.NewNodeID(proto.Storage, 2), addr))
	if got := h.nidOf(s2b); got != proto.NewNodeID(proto.Storage, 2) {
		t.Errorf("returning storage: nid %v, want S2", got)
	}
}

// The admin learns about nodes identifying after it, and the first list a
// node receives is complete.
func TestNodeInformationBroadcast(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	a := h.connect(h.adminRI())
	acts := h.expect(a, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{}, &proto.SendPartitionTable{})
	spt := msgOf(acts[2]).(*proto.SendPartitionTable)
	if spt.PTid.Ok || len(spt.Rows) != 4 {
		t.Fatalf("PT of a new cluster: %+v, want no ptid and 4 empty rows", spt)
	}
	s := h.connect(storageRI(proto.NoNode, h.newAddr()))
	acts = h.expect(a, &proto.NotifyNodeInformation{})
	nni := msgOf(acts[0]).(*proto.NotifyNodeInformation)
	if len(nni.Nodes) != 1 || nni.Nodes[0].NID != h.nidOf(s) {
		t.Fatalf("admin told %+v, want the new storage", nni.Nodes)
	}
	// The storage's first list has itself, the master and the admin.
	acts = h.expect(s, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{}, &proto.AskRecovery{})
	nni2 := msgOf(acts[1]).(*proto.NotifyNodeInformation)
	if nni2.Timestamp <= nni.Timestamp {
		t.Fatalf("timestamps not increasing: %v then %v", nni.Timestamp, nni2.Timestamp)
	}
	types := map[proto.NodeType]int{}
	for _, x := range nni2.Nodes {
		types[x.Type]++
	}
	if types[proto.Storage] != 1 || types[proto.Master] != 1 || types[proto.Admin] != 0 {
		t.Fatalf("storage's first list %+v: want itself and the master (no admin)", nni2.Nodes)
	}
	// Admins are forgotten silently.
	h.step(EvLinkDown{Link: a})
	if _, ok := h.find(s, &proto.NotifyNodeInformation{}); ok {
		t.Fatalf("storage told about a lost admin")
	}
}

func TestClientIdentifiesWhenRunning(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, admin := h.startNewCluster(1)
	cl := h.connect(clientRI())
	acts := h.expect(cl, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{}, &proto.SendPartitionTable{})
	if got := msgOf(acts[0]).(*proto.AcceptIdentification).YourNID; got != proto.NewNodeID(proto.Client, 1) {
		t.Fatalf("client id %v, want C1", got)
	}
	nni := msgOf(acts[1]).(*proto.NotifyNodeInformation)
	for _, x := range nni.Nodes[1:] {
		if x.Type == proto.Client || x.Type == proto.Admin {
			t.Fatalf("client's first list has %v", x)
		}
	}
	// Storages and admins learn about it; on loss it is forgotten.
	h.expect(storages[0], &proto.NotifyNodeInformation{})
	h.expect(admin, &proto.NotifyNodeInformation{})
	h.step(EvLinkDown{Link: cl})
	acts = h.expect(storages[0], &proto.NotifyNodeInformation{})
	if st := msgOf(acts[0]).(*proto.NotifyNodeInformation).Nodes[0].State; st != proto.NodeUnknown {
		t.Fatalf("lost client state %v, want UNKNOWN", st)
	}
	// A read-only client may not commit.
	ri := clientRI()
	ri.Extra = proto.Dict{{Key: "read_only", Value: true}}
	ro := h.connect(ri)
	h.take(ro)
	h.request(ro, 5, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
	acts = h.take(ro)
	wantError(t, acts[0], proto.ReadOnlyAccess, "read-only access as requested by the client")
	if _, ok := acts[0].(ActReply); !ok {
		t.Fatalf("read-only refusal must not close the link")
	}
}

// A storage started with --new-nid (no address, the partitions it holds)
// joining a running cluster gets a new id, OUT_OF_DATE cells for them, and
// the state DOWN (it leaves once it knows its id).
func TestIdentifyNewNID(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, admin := h.startNewCluster(1)
	ptid := h.c.pt.PTid
	ri := &proto.RequestIdentification{NodeType: proto.Storage, ClusterName: "test",
		Extra: proto.Dict{{Key: "new_nid", Value: []proto.Value{int64(1), int64(3)}}}}
	l := h.connect(ri)
	acts := h.expect(l, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{}, &proto.SendPartitionTable{})
	nid := msgOf(acts[0]).(*proto.AcceptIdentification).YourNID
	if nid != proto.NewNodeID(proto.Storage, 2) {
		t.Fatalf("new nid %v", nid)
	}
	if st := msgOf(acts[1]).(*proto.NotifyNodeInformation).Nodes[0].State; st != proto.NodeDown {
		t.Fatalf("state %v, want DOWN", st)
	}
	for _, x := range []LinkID{storages[0], admin} {
		ch := h.ptChanges(x)
		if len(ch) != 1 || ch[0].PTid != ptid+1 || len(ch[0].Changes) != 2 ||
			ch[0].Changes[0] != (proto.CellChange{Partition: 1, NID: nid, State: proto.CellOutOfDate}) {
			t.Fatalf("link %d: changes %+v", x, ch)
		}
	}
	// Without new_nid partitions, or with a nid: refused.
	for _, ri := range []*proto.RequestIdentification{
		{NodeType: proto.Storage, ClusterName: "test", Extra: proto.Dict{{Key: "new_nid", Value: []proto.Value{}}}},
		{NodeType: proto.Storage, NID: proto.NewNodeID(proto.Storage, 9), ClusterName: "test", Extra: proto.Dict{{Key: "new_nid", Value: []proto.Value{int64(0)}}}},
	} {
		l := h.connect(ri)
		wantError(t, h.abortOf(l, h.take(l)), proto.ProtocolError, "")
	}
}

// Another master is accepted as a secondary: it learns about masters only,
// gets no partition table, and is DOWN when it leaves.
func TestIdentifySecondaryMaster(t *testing.T) {
	h := newHarness(t, 4, 0, 0)
	storages, admin := h.startNewCluster(1)
	ri := &proto.RequestIdentification{NodeType: proto.Master, Address: h.newAddr(), ClusterName: "test", Extra: proto.Dict{}}
	m := h.connect(ri)
	acts := h.expect(m, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{})
	for _, x := range msgOf(acts[1]).(*proto.NotifyNodeInformation).Nodes {
		if x.Type != proto.Master {
			t.Fatalf("secondary told about %+v", x)
		}
	}
	h.mustFind(storages[0], &proto.NotifyNodeInformation{})
	h.mustFind(admin, &proto.NotifyNodeInformation{})
	// It gets cluster states, not partition changes.
	h.take(m)
	h.request(admin, 1, &proto.SetNumReplicas{NumReplicas: 0})
	if len(h.take(m)) != 0 {
		t.Fatalf("secondary got partition changes")
	}
	h.take(storages[0])
	h.step(EvLinkDown{Link: m})
	a := h.mustFind(storages[0], &proto.NotifyNodeInformation{})
	if st := msgOf(a).(*proto.NotifyNodeInformation).Nodes[0].State; st != proto.NodeDown {
		t.Fatalf("lost secondary %v", st)
	}
}
