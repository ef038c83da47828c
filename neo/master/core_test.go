package master

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// harness drives a Core directly, event by event, with a fake clock.
type harness struct {
	t        testing.TB
	c        *Core
	now      time.Time
	nextLink LinkID
	// actions not looked at yet, per link
	pending map[LinkID][]Action
	global  []Action // ActStopListening, ActExit
	// asks sent by the master, by link: the tags in order
	nextPort uint16
}

var testEpoch = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(t testing.TB, np, nr, autostart int) *harness {
	t.Helper()
	h := &harness{t: t, now: testEpoch, pending: map[LinkID][]Action{}, nextPort: 20000}
	h.c = newCore(coreConfig{
		Cluster:    "test",
		Addr:       proto.Address{Host: "127.0.0.1", Port: 10000},
		Partitions: np,
		Replicas:   nr,
		Autostart:  autostart,
		Logger:     quietLogger(),
	}, h.now)
	h.collect(h.c.Start())
	return h
}

func (h *harness) collect(actions []Action) {
	for _, a := range actions {
		switch a := a.(type) {
		case ActSend:
			h.pending[a.Link] = append(h.pending[a.Link], a)
		case ActReply:
			h.pending[a.Link] = append(h.pending[a.Link], a)
		case ActAsk:
			h.pending[a.Link] = append(h.pending[a.Link], a)
		case ActAbort:
			h.pending[a.Link] = append(h.pending[a.Link], a)
		case ActClose:
			h.pending[a.Link] = append(h.pending[a.Link], a)
		default:
			h.global = append(h.global, a)
		}
	}
}

func (h *harness) step(ev Event) {
	h.t.Helper()
	h.now = h.now.Add(time.Millisecond)
	h.collect(h.c.Step(h.now, ev))
}

// take returns and forgets the actions queued for link l.
func (h *harness) take(l LinkID) []Action {
	v := h.pending[l]
	delete(h.pending, l)
	return v
}

// expect checks that the actions queued for l are exactly of the packet
// types given (in order), and returns them.
func (h *harness) expect(l LinkID, types ...any) []Action {
	h.t.Helper()
	got := h.take(l)
	var names []string
	for _, a := range got {
		names = append(names, actionName(a))
	}
	var want []string
	for _, x := range types {
		if _, ok := x.(ActClose); ok {
			want = append(want, "close")
			continue
		}
		want = append(want, fmt.Sprintf("%T", x))
	}
	if !reflect.DeepEqual(names, want) {
		h.t.Fatalf("link %d: got actions %v, want %v", l, names, want)
	}
	return got
}

func actionName(a Action) string {
	switch a := a.(type) {
	case ActSend:
		return fmt.Sprintf("%T", a.Msg)
	case ActReply:
		return fmt.Sprintf("%T", a.Msg)
	case ActAsk:
		return fmt.Sprintf("%T", a.Msg)
	case ActAbort:
		return "abort:" + fmt.Sprintf("%T", a.Msg)
	case ActClose:
		return "close"
	}
	return fmt.Sprintf("%T", a)
}

func msgOf(a Action) proto.Msg {
	switch a := a.(type) {
	case ActSend:
		return a.Msg
	case ActReply:
		return a.Msg
	case ActAsk:
		return a.Msg
	case ActAbort:
		return a.Msg
	}
	return nil
}

// find returns the first queued action for l whose message has the type of
// x, without consuming anything.
func (h *harness) find(l LinkID, x any) (Action, bool) {
	for _, a := range h.pending[l] {
		if reflect.TypeOf(msgOf(a)) == reflect.TypeOf(x) {
			return a, true
		}
	}
	return nil, false
}

func (h *harness) mustFind(l LinkID, x any) Action {
	h.t.Helper()
	a, ok := h.find(l, x)
	if !ok {
		var names []string
		for _, a := range h.pending[l] {
			names = append(names, actionName(a))
		}
		h.t.Fatalf("link %d: no %T among %v", l, x, names)
	}
	return a
}

// connect opens a new link and identifies on it.
func (h *harness) connect(ri *proto.RequestIdentification) LinkID {
	h.nextLink++
	l := h.nextLink
	h.step(EvRecv{Link: l, MsgID: 0, Msg: ri})
	return l
}

func (h *harness) newAddr() proto.Opt[proto.Address] {
	h.nextPort++
	return proto.Some(proto.Address{Host: "127.0.0.1", Port: h.nextPort})
}

func storageRI(nid proto.NodeID, addr proto.Opt[proto.Address]) *proto.RequestIdentification {
	return &proto.RequestIdentification{NodeType: proto.Storage, NID: nid, Address: addr, ClusterName: "test",
		Extra: proto.Dict{{Key: "new_nid", Value: []proto.Value{}}}}
}

func clientRI() *proto.RequestIdentification {
	return &proto.RequestIdentification{NodeType: proto.Client, ClusterName: "test", Extra: proto.Dict{}}
}

func (h *harness) adminRI() *proto.RequestIdentification {
	return &proto.RequestIdentification{NodeType: proto.Admin, Address: h.newAddr(), ClusterName: "test", Extra: proto.Dict{}}
}

// answerAsk answers the (only) pending request of type x on l.
func (h *harness) answerAsk(l LinkID, x any, answer proto.Msg) {
	h.t.Helper()
	a := h.mustFind(l, x).(ActAsk)
	h.dropAction(l, a)
	h.step(EvAnswer{Link: l, Tag: a.Tag, Msg: answer})
}

func (h *harness) dropAction(l LinkID, x Action) {
	v := h.pending[l]
	for i, a := range v {
		if reflect.DeepEqual(a, x) {
			h.pending[l] = append(v[:i:i], v[i+1:]...)
			return
		}
	}
}

// request sends a request from the node on l and returns the master's
// actions for l.
func (h *harness) request(l LinkID, msgID uint32, m proto.Msg) {
	h.step(EvRecv{Link: l, MsgID: msgID, Msg: m})
}

func errorOf(t testing.TB, a Action) *proto.Error {
	t.Helper()
	e, ok := msgOf(a).(*proto.Error)
	if !ok {
		t.Fatalf("got %s, want an Error", actionName(a))
	}
	return e
}

func wantError(t testing.TB, a Action, code proto.ErrorCode, msg string) {
	t.Helper()
	e := errorOf(t, a)
	if e.Code != code || e.Message != msg {
		t.Fatalf("got Error(%v, %q), want Error(%v, %q)", e.Code, e.Message, code, msg)
	}
}

// startNewCluster makes a new cluster of n storages and brings it to
// RUNNING with every storage ready; it returns the storages' links and the
// admin's.
func (h *harness) startNewCluster(n int) (storages []LinkID, admin LinkID) {
	h.t.Helper()
	admin = h.connect(h.adminRI())
	h.take(admin)
	for i := 0; i < n; i++ {
		l := h.connect(storageRI(proto.NoNode, h.newAddr()))
		h.answerAsk(l, &proto.AskRecovery{}, &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
		h.take(l)
		storages = append(storages, l)
	}
	h.take(admin)
	h.request(admin, 7, &proto.SetClusterState{State: proto.ClusterVerifying})
	wantError(h.t, h.mustFind(admin, &proto.Error{}), proto.Ack, "Cluster state changed")
	h.take(admin)
	h.verify(storages, nil, zodb.InvalidTid, zodb.InvalidOid)
	h.ready(storages)
	h.take(admin)
	return storages, admin
}

// verify answers the verification requests of storages.
func (h *harness) verify(storages []LinkID, locked []proto.LockedTransaction, lastTid zodb.Tid, lastOid zodb.Oid) {
	h.t.Helper()
	if h.c.ClusterState() != proto.ClusterVerifying {
		h.t.Fatalf("cluster state %v, want VERIFYING", h.c.ClusterState())
	}
	for _, l := range storages {
		h.mustFind(l, &proto.SendPartitionTable{})
		if _, ok := h.find(l, &proto.AskLockedTransactions{}); ok {
			h.answerAsk(l, &proto.AskLockedTransactions{}, &proto.AnswerLockedTransactions{Transactions: locked})
		}
	}
	for _, l := range storages {
		h.answerAsk(l, &proto.AskLastIDs{}, &proto.AnswerLastIDs{LastTid: lastTid, LastOid: lastOid, FirstTid: zodb.TidMax})
	}
	for _, l := range storages {
		if _, ok := h.find(l, &proto.AskPackOrders{}); ok {
			h.answerAsk(l, &proto.AskPackOrders{}, &proto.AnswerPackOrders{})
		}
	}
	if h.c.ClusterState() != proto.ClusterRunning {
		h.t.Fatalf("cluster state %v, want RUNNING", h.c.ClusterState())
	}
}

func (h *harness) ready(storages []LinkID) {
	h.t.Helper()
	for _, l := range storages {
		h.mustFind(l, &proto.StartOperation{})
		h.take(l)
		h.request(l, 1, &proto.NotifyReady{})
	}
}

func (h *harness) nidOf(l LinkID) proto.NodeID {
	p := h.c.peers[l]
	if p == nil || p.node == nil {
		h.t.Fatalf("link %d not identified", l)
	}
	return p.node.nid
}
