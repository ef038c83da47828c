package master

import (
	"context"
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

// neoctl set cluster STOPPING on the primary stops the secondaries too.
func TestElectionStop(t *testing.T) {
	ctx := testCtx(t)
	addrs := freeAddrs(t, 2)
	m1 := runMaster(t, ctx, addrs[0], addrs)
	waitProbe(t, ctx, addrs[0], "primary")
	m2 := runMaster(t, ctx, addrs[1], addrs)
	waitProbe(t, ctx, addrs[1], addrs[0])
	a := dialPeer(t, ctx, addrs[0], "A", &proto.RequestIdentification{
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
	for _, r := range []*runningMaster{m1, m2} {
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
			r.done <- nil
		case <-ctx.Done():
			t.Fatalf("master did not stop")
		}
	}
}
