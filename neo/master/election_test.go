package master

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// freeAddrs returns n loopback addresses with free ports.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

type runningMaster struct {
	m      *Master
	cancel context.CancelFunc
	done   chan error
}

func runMaster(t *testing.T, ctx context.Context, bind string, masters []string) *runningMaster {
	t.Helper()
	m, err := New(ctx, Config{Cluster: "test", Bind: bind, Masters: masters, Partitions: 2, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	r := &runningMaster{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("master %s did not stop", bind)
		}
	})
	return r
}

// probe identifies as a client at addr and tells what the master answers:
// "primary" (NOT_READY from a primary that does not run yet, or accepted),
// or the address a secondary redirects to.
func probe(ctx context.Context, addr string) (string, error) {
	l, err := neonet.Dial(ctx, addr, nil)
	if err != nil {
		return "", err
	}
	defer l.Close()
	call, err := l.Start(ctx, &proto.RequestIdentification{NodeType: proto.Client, ClusterName: "test", Extra: proto.Dict{}})
	if err != nil {
		return "", err
	}
	_, err = call.Wait(ctx)
	if err == nil {
		return "primary", nil
	}
	if e, ok := ackOf(err); ok && e.Code == proto.NotReady {
		return "primary", nil
	}
	// A secondary sends NotPrimaryMaster (not an answer) and closes: Recv
	// still returns what came before the link went down.
	req, rerr := l.Recv(ctx)
	if rerr != nil {
		return "", err
	}
	npm, ok := req.Msg.(*proto.NotPrimaryMaster)
	if !ok {
		return "", err
	}
	i := int(npm.Primary)
	if npm.Primary == proto.NoNode || i >= len(npm.KnownMasters) {
		return "unknown", nil
	}
	return npm.KnownMasters[i].String(), nil
}

// waitProbe probes addr until it answers want.
func waitProbe(t *testing.T, ctx context.Context, addr, want string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last string
	var lastErr error
	for {
		last, lastErr = probe(ctx, addr)
		if last == want {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("master %s: %q %v, want %q", addr, last, lastErr, want)
		}
	}
}

// Two masters knowing each other: the one started first is primary, the
// other redirects nodes to it; when the primary goes away the other takes
// over.
func TestElection(t *testing.T) {
	ctx := testCtx(t)
	addrs := freeAddrs(t, 2)
	m1 := runMaster(t, ctx, addrs[0], addrs)
	waitProbe(t, ctx, addrs[0], "primary")
	m2 := runMaster(t, ctx, addrs[1], addrs)
	waitProbe(t, ctx, addrs[1], addrs[0])
	waitProbe(t, ctx, addrs[0], "primary")

	// The primary knows its secondary.
	a := dialPeer(t, ctx, addrs[0], "A", &proto.RequestIdentification{
		NodeType: proto.Admin, Address: proto.Some(proto.Address{Host: "127.0.0.1", Port: 3}), ClusterName: "test", Extra: proto.Dict{}})
	go func() {
		for {
			if _, err := a.link.Recv(ctx); err != nil {
				return
			}
		}
	}()
	ans, err := a.link.Ask(ctx, &proto.AskNodeList{NodeType: proto.Some(proto.Master)})
	if err != nil {
		t.Fatal(err)
	}
	var states []proto.NodeState
	for _, n := range ans.(*proto.AnswerNodeList).Nodes {
		states = append(states, n.State)
		if n.State != proto.NodeRunning {
			t.Errorf("master %+v not running", n)
		}
	}
	if len(states) != 2 {
		t.Fatalf("masters %v", ans)
	}

	// The primary stops: the secondary becomes primary.
	m1.cancel()
	<-m1.done
	m1.done <- nil
	waitProbe(t, ctx, addrs[1], "primary")
	_ = m2
}

// neoctl set cluster STOPPING on the primary stops the secondaries too
// (§6.11): every master's Run returns nil, none takes over.
func TestElectionStop(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d masters", n), func(t *testing.T) {
			for i := range 3 {
				t.Run(fmt.Sprint(i), func(t *testing.T) { testElectionStop(t, n) })
			}
		})
	}
}

func testElectionStop(t *testing.T, n int) {
	ctx := testCtx(t)
	addrs := freeAddrs(t, n)
	var ms []*runningMaster
	for _, a := range addrs {
		ms = append(ms, runMaster(t, ctx, a, addrs))
	}
	// Whoever wins, every secondary points to the same primary.
	var primary string
	for primary == "" {
		answers := map[string]string{}
		for _, a := range addrs {
			r, err := probe(ctx, a)
			if err != nil {
				r = err.Error()
			}
			answers[a] = r
		}
		for _, a := range addrs {
			ok := answers[a] == "primary"
			for _, b := range addrs {
				ok = ok && (b == a || answers[b] == a)
			}
			if ok {
				primary = a
			}
		}
		if primary == "" {
			select {
			case <-ctx.Done():
				t.Fatalf("no single primary: %v", answers)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	a := dialPeer(t, ctx, primary, "A", &proto.RequestIdentification{
		NodeType: proto.Admin, Address: proto.Some(proto.Address{Host: "127.0.0.1", Port: 3}), ClusterName: "test", Extra: proto.Dict{}})
	go func() {
		for {
			if _, err := a.link.Recv(ctx); err != nil {
				return
			}
		}
	}()
	_, err := a.link.Ask(ctx, &proto.SetClusterState{State: proto.ClusterStopping})
	if e, ok := ackOf(err); !ok || e.Code != proto.Ack {
		t.Fatalf("stop: %v", err)
	}
	for i, r := range ms {
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run of %s: %v", addrs[i], err)
			}
			r.done <- nil
		case <-ctx.Done():
			st, _ := probe(context.Background(), addrs[i])
			t.Fatalf("master %s did not stop (it answers %q)", addrs[i], st)
		}
	}
}

func newHarnessWithMasters(t *testing.T, masters ...proto.Address) *harness {
	t.Helper()
	h := &harness{t: t, now: testEpoch, pending: map[LinkID][]Action{}, nextPort: 20000}
	h.c = newCore(coreConfig{
		Cluster:    "test",
		Addr:       proto.Address{Host: "127.0.0.1", Port: 10000},
		Masters:    masters,
		Partitions: 2,
		Logger:     quietLogger(),
	}, h.now)
	h.collect(h.c.Start())
	return h
}

func (h *harness) takeDial() ActDial {
	h.t.Helper()
	for i, a := range h.global {
		if d, ok := a.(ActDial); ok {
			h.global = append(h.global[:i:i], h.global[i+1:]...)
			return d
		}
	}
	h.t.Fatalf("no dial among %v", h.global)
	return ActDial{}
}

func TestCoreElection(t *testing.T) {
	m2 := proto.Address{Host: "127.0.0.1", Port: 10001}
	m3 := proto.Address{Host: "127.0.0.1", Port: 10002}

	t.Run("peer accepts: it is primary", func(t *testing.T) {
		h := newHarnessWithMasters(t, m2)
		d := h.takeDial()
		if d.Addr != m2.String() {
			t.Fatalf("dial %v", d.Addr)
		}
		h.nextLink++
		l := h.nextLink
		h.step(EvDialed{Tag: d.Tag, Link: l})
		a := h.mustFind(l, &proto.RequestIdentification{}).(ActAsk)
		ri := a.Msg.(*proto.RequestIdentification)
		if ri.NodeType != proto.Master || !ri.IDTimestamp.Ok || ri.IDTimestamp.V != h.c.electionTS || ri.Address != proto.Some(h.c.cfg.Addr) {
			t.Fatalf("identification %+v", ri)
		}
		h.take(l)
		h.step(EvAnswer{Link: l, Tag: a.Tag, Msg: &proto.AcceptIdentification{NodeType: proto.Master, NID: proto.NewNodeID(proto.Master, 1), YourNID: proto.NewNodeID(proto.Master, 2)}})
		if h.c.role != roleSecondary || h.c.NodeID() != proto.NewNodeID(proto.Master, 2) {
			t.Fatalf("role %v nid %v", h.c.role, h.c.NodeID())
		}
		// Everyone else is redirected to the primary.
		cl := h.connect(clientRI())
		acts := h.take(cl)
		npm := msgOf(h.abortOf(cl, acts)).(*proto.NotPrimaryMaster)
		if i := int(npm.Primary); i <= 0 || i >= len(npm.KnownMasters) || npm.KnownMasters[i] != m2 {
			t.Fatalf("redirect %+v", npm)
		}
		// The primary's node list and cluster state are followed; told
		// DOWN, the secondary stops.
		h.step(EvRecv{Link: l, MsgID: 5, Msg: &proto.NotifyClusterInformation{State: proto.ClusterRunning}})
		if h.c.ClusterState() != proto.ClusterRunning {
			t.Fatalf("state %v", h.c.ClusterState())
		}
		h.step(EvRecv{Link: l, MsgID: 6, Msg: &proto.NotifyNodeInformation{Timestamp: 1, Nodes: []proto.NodeInfo{
			{Type: proto.Master, Addr: proto.Some(h.c.cfg.Addr), NID: h.c.NodeID(), State: proto.NodeDown}}}})
		if len(h.global) == 0 {
			t.Fatalf("secondary told DOWN did not exit")
		}
		if _, ok := h.global[len(h.global)-1].(ActExit); !ok {
			t.Fatalf("actions %v", h.global)
		}
	})

	t.Run("earlier peer wins", func(t *testing.T) {
		h := newHarnessWithMasters(t, m2)
		d0 := h.takeDial()
		ri := &proto.RequestIdentification{NodeType: proto.Master, Address: proto.Some(m2), ClusterName: "test",
			IDTimestamp: proto.Some(h.c.electionTS - 1), Extra: proto.Dict{}}
		l := h.connect(ri)
		acts := h.take(l)
		if len(acts) != 1 || actionName(acts[0]) != "close" {
			t.Fatalf("challenger's link: %v, want closed unanswered", acts)
		}
		if h.c.role != roleSecondary {
			t.Fatalf("still primary")
		}
		// The connection attempt started for the election is used to
		// identify with the primary, without timestamp.
		h.nextLink++
		h.step(EvDialed{Tag: d0.Tag, Link: h.nextLink})
		a := h.mustFind(h.nextLink, &proto.RequestIdentification{}).(ActAsk)
		if a.Msg.(*proto.RequestIdentification).IDTimestamp.Ok {
			t.Fatalf("secondary identifies with a timestamp")
		}
	})

	t.Run("later peer is accepted as secondary", func(t *testing.T) {
		h := newHarnessWithMasters(t, m2)
		h.takeDial()
		ri := &proto.RequestIdentification{NodeType: proto.Master, Address: proto.Some(m2), ClusterName: "test",
			IDTimestamp: proto.Some(h.c.electionTS + 1), Extra: proto.Dict{}}
		l := h.connect(ri)
		h.expect(l, &proto.AcceptIdentification{}, &proto.NotifyNodeInformation{})
		if h.c.role != rolePrimary {
			t.Fatalf("not primary")
		}
		// Equal timestamps: the smaller address wins.
		if !lessElection(1, proto.Address{Host: "127.0.0.1", Port: 1}, 1, proto.Address{Host: "127.0.0.1", Port: 2}) {
			t.Fatalf("address order")
		}
	})

	t.Run("another name of this master", func(t *testing.T) {
		alias := proto.Address{Host: "localhost", Port: 10000}
		h := newHarnessWithMasters(t, alias)
		d := h.takeDial()
		h.nextLink++
		l := h.nextLink
		h.step(EvDialed{Tag: d.Tag, Link: l})
		a := h.mustFind(l, &proto.RequestIdentification{}).(ActAsk)
		h.take(l)
		h.step(EvAnswer{Link: l, Tag: a.Tag, Msg: proto.Err(proto.ProtocolError, "address conflict")})
		h.step(EvLinkDown{Link: l})
		h.step(EvTick{})
		for _, a := range h.global {
			if _, ok := a.(ActDial); ok {
				t.Fatalf("dials itself again")
			}
		}
		if h.c.nodeByAddr(alias) != nil {
			t.Fatalf("alias still a known master")
		}
	})

	t.Run("primary lost: retry, then others, then primary again", func(t *testing.T) {
		h := newHarnessWithMasters(t, m2, m3)
		// m3 is not reachable; m2 wins by accepting our identification.
		var d ActDial
		for range 2 {
			x := h.takeDial()
			if x.Addr == m2.String() {
				d = x
			} else {
				h.step(EvDialed{Tag: x.Tag, Err: errTest})
			}
		}
		if d.Addr != m2.String() {
			t.Fatalf("no dial to m2")
		}
		h.nextLink++
		l := h.nextLink
		h.step(EvDialed{Tag: d.Tag, Link: l})
		a := h.mustFind(l, &proto.RequestIdentification{}).(ActAsk)
		h.step(EvAnswer{Link: l, Tag: a.Tag, Msg: &proto.AcceptIdentification{NodeType: proto.Master, NID: proto.NewNodeID(proto.Master, 1), YourNID: proto.NewNodeID(proto.Master, 3)}})
		h.step(EvLinkDown{Link: l})
		dials := map[string]ActDial{}
		for _, a := range h.global {
			if d, ok := a.(ActDial); ok {
				dials[d.Addr] = d
			}
		}
		h.global = nil
		// The same primary is retried; m3 was still being tried for the
		// election.
		if _, ok := dials[m2.String()]; !ok {
			t.Fatalf("dials %v: no retry of the primary", dials)
		}
		h.step(EvDialed{Tag: dials[m2.String()].Tag, Err: errTest})
		if h.c.role != roleSecondary {
			t.Fatalf("primary again while m3 was not tried")
		}
		h.step(EvDialed{Tag: dials[m3.String()].Tag, Err: errTest})
		if h.c.role != rolePrimary || h.c.ClusterState() != proto.ClusterRecovering || h.c.startupAllowed {
			t.Fatalf("role %v state %v", h.c.role, h.c.ClusterState())
		}
	})
}

var errTest = errors.New("test: connection refused")
