package master

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// fakePeer is a node made of a raw link to the master.
type fakePeer struct {
	t    *testing.T
	name string
	link *neonet.Link
	nid  proto.NodeID
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dialPeer(t *testing.T, ctx context.Context, addr, name string, ri *proto.RequestIdentification) *fakePeer {
	t.Helper()
	l, err := neonet.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	t.Cleanup(func() { l.Close() })
	ans, err := l.Ask(ctx, ri)
	if err != nil {
		t.Fatalf("%s: identification: %v", name, err)
	}
	acc, ok := ans.(*proto.AcceptIdentification)
	if !ok || acc.NodeType != proto.Master {
		t.Fatalf("%s: identification answered %#v", name, ans)
	}
	return &fakePeer{t: t, name: name, link: l, nid: acc.YourNID}
}

// next returns the next packet the master sends, skipping notifications of
// the given kinds.
func (p *fakePeer) next(ctx context.Context, skip ...proto.Msg) *neonet.Request {
	p.t.Helper()
	for {
		req, err := p.link.Recv(ctx)
		if err != nil {
			p.t.Fatalf("%s: recv: %v", p.name, err)
		}
		skipped := false
		for _, s := range skip {
			if req.Msg.MsgCode() == s.MsgCode() {
				skipped = true
			}
		}
		if !skipped {
			return req
		}
	}
}

// expect waits for a packet of x's type, skipping node and cluster
// information.
func (p *fakePeer) expect(ctx context.Context, x proto.Msg) *neonet.Request {
	p.t.Helper()
	req := p.next(ctx, &proto.NotifyNodeInformation{}, &proto.NotifyClusterInformation{})
	if req.Msg.MsgCode() != x.MsgCode() {
		p.t.Fatalf("%s: got %T, want %T", p.name, req.Msg, x)
	}
	return req
}

func (p *fakePeer) reply(ctx context.Context, req *neonet.Request, m proto.Msg) {
	p.t.Helper()
	if err := req.Reply(ctx, m); err != nil {
		p.t.Fatalf("%s: reply: %v", p.name, err)
	}
}

func startMaster(t *testing.T, ctx context.Context, cfg Config) (*Master, chan error) {
	t.Helper()
	cfg.Cluster = "test"
	cfg.Bind = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	m, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("master did not stop")
		}
	})
	return m, done
}

func ackOf(err error) (*proto.Error, bool) {
	var e *proto.Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// storageServe plays a storage of a new cluster through verification, up
// to StartOperation, then tells the master it is ready.
func (p *fakePeer) serveNewStorage(ctx context.Context) (rows [][]proto.CellInfo) {
	p.t.Helper()
	req := p.expect(ctx, &proto.AskRecovery{})
	p.reply(ctx, req, &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid})
	spt := p.expect(ctx, &proto.SendPartitionTable{}).Msg.(*proto.SendPartitionTable)
	req = p.expect(ctx, &proto.AskLockedTransactions{})
	p.reply(ctx, req, &proto.AnswerLockedTransactions{Transactions: []proto.LockedTransaction{}})
	req = p.expect(ctx, &proto.AskLastIDs{})
	p.reply(ctx, req, &proto.AnswerLastIDs{LastTid: zodb.InvalidTid, LastOid: zodb.InvalidOid, FirstTid: zodb.TidMax})
	req = p.expect(ctx, &proto.AskPackOrders{})
	p.reply(ctx, req, &proto.AnswerPackOrders{Orders: []proto.PackOrder{}})
	if so := p.expect(ctx, &proto.StartOperation{}).Msg.(*proto.StartOperation); so.Backup {
		p.t.Fatalf("StartOperation(backup)")
	}
	if err := p.link.Notify(ctx, &proto.NotifyReady{}); err != nil {
		p.t.Fatal(err)
	}
	return spt.Rows
}

func TestNetNewClusterCommitStop(t *testing.T) {
	ctx := testCtx(t)
	m, done := startMaster(t, ctx, Config{Partitions: 3})
	if _, port, _ := net.SplitHostPort(m.Addr()); port == "0" {
		t.Fatalf("Addr %q: no real port", m.Addr())
	}

	s := dialPeer(t, ctx, m.Addr(), "S", &proto.RequestIdentification{
		NodeType: proto.Storage, Address: proto.Some(proto.Address{Host: "127.0.0.1", Port: 1}),
		ClusterName: "test", Extra: proto.Dict{{Key: "new_nid", Value: []proto.Value{}}},
	})
	if s.nid != proto.NewNodeID(proto.Storage, 1) {
		t.Fatalf("storage id %v", s.nid)
	}
	nni := s.next(ctx).Msg.(*proto.NotifyNodeInformation)
	if nni.Nodes[0].NID != s.nid || nni.Nodes[0].State != proto.NodePending {
		t.Fatalf("first node list %+v", nni.Nodes)
	}

	// neoctl start, through an admin link.
	a := dialPeer(t, ctx, m.Addr(), "A", &proto.RequestIdentification{
		NodeType: proto.Admin, Address: proto.Some(proto.Address{Host: "127.0.0.1", Port: 2}),
		ClusterName: "test", Extra: proto.Dict{},
	})
	go func() {
		// The admin must keep receiving for its answers to come.
		for {
			if _, err := a.link.Recv(ctx); err != nil {
				return
			}
		}
	}()
	ans, err := a.link.Ask(ctx, &proto.AskClusterState{})
	if err != nil || ans.(*proto.AnswerClusterState).State != proto.Some(proto.ClusterRecovering) {
		t.Fatalf("cluster state: %v %v", ans, err)
	}
	// Answered by the storage before the start: an AskRecovery is pending
	// until the storage replies, so start it in the background.
	rowsc := make(chan [][]proto.CellInfo, 1)
	go func() {
		rowsc <- s.serveNewStorage(ctx)
	}()
	// Retry neoctl start until the storage has answered AskRecovery.
	for {
		_, err = a.link.Ask(ctx, &proto.SetClusterState{State: proto.ClusterVerifying})
		e, ok := ackOf(err)
		if !ok {
			t.Fatalf("start: %v", err)
		}
		if e.Code == proto.Ack {
			if e.Message != "Cluster state changed" {
				t.Fatalf("start: %v", e)
			}
			break
		}
		if e.Code != proto.Denied {
			t.Fatalf("start: %v", e)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	rows := <-rowsc
	if len(rows) != 3 {
		t.Fatalf("partition table %v, want 3 rows", rows)
	}
	for p, row := range rows {
		if len(row) != 1 || row[0] != (proto.CellInfo{NID: s.nid, State: proto.CellUpToDate}) {
			t.Fatalf("partition %d: %v", p, row)
		}
	}

	// A client commits a transaction.
	c := dialPeer(t, ctx, m.Addr(), "C", &proto.RequestIdentification{NodeType: proto.Client, ClusterName: "test", Extra: proto.Dict{}})
	if c.nid != proto.NewNodeID(proto.Client, 1) {
		t.Fatalf("client id %v", c.nid)
	}
	c.expect(ctx, &proto.SendPartitionTable{})
	go func() {
		for {
			if _, err := c.link.Recv(ctx); err != nil {
				return
			}
		}
	}()
	ans, err = c.link.Ask(ctx, &proto.AskNewOIDs{NumOids: 100})
	if err != nil || len(ans.(*proto.AnswerNewOIDs).Oids) != 100 {
		t.Fatalf("new oids: %v %v", ans, err)
	}
	ans, err = c.link.Ask(ctx, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	ttid := ans.(*proto.AnswerBeginTransaction).TTid
	call, err := c.link.Start(ctx, &proto.AskFinishTransaction{TTid: ttid, Oids: []zodb.Oid{1, 2}, Deleted: []uint32{}, Checked: []uint32{}})
	if err != nil {
		t.Fatal(err)
	}
	req := s.expect(ctx, &proto.AskLockInformation{})
	lock := req.Msg.(*proto.AskLockInformation)
	if lock.TTid != ttid || lock.Tid <= ttid || uint64(lock.Tid)%3 != uint64(ttid)%3 {
		t.Fatalf("lock %+v for ttid %v", lock, ttid)
	}
	s.reply(ctx, req, &proto.AnswerInformationLocked{TTid: ttid})
	ans, err = call.Wait(ctx)
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	if got := *ans.(*proto.AnswerTransactionFinished); got != (proto.AnswerTransactionFinished{TTid: ttid, Tid: lock.Tid}) {
		t.Fatalf("finished %+v", got)
	}
	if u := s.expect(ctx, &proto.NotifyUnlockInformation{}).Msg.(*proto.NotifyUnlockInformation); u.TTid != ttid {
		t.Fatalf("unlock %v", u.TTid)
	}
	ans, err = c.link.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil || ans.(*proto.AnswerLastTransaction).Tid != lock.Tid {
		t.Fatalf("last transaction %v %v", ans, err)
	}

	// neoctl set cluster STOPPING: the storage is told it is DOWN, and the
	// master stops.
	_, err = a.link.Ask(ctx, &proto.SetClusterState{State: proto.ClusterStopping})
	if e, ok := ackOf(err); !ok || e.Code != proto.Ack {
		t.Fatalf("stop: %v", err)
	}
	down := s.next(ctx, &proto.NotifyClusterInformation{}).Msg.(*proto.NotifyNodeInformation)
	if len(down.Nodes) != 1 || down.Nodes[0].NID != s.nid || down.Nodes[0].State != proto.NodeDown {
		t.Fatalf("storage told %+v", down.Nodes)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		done <- nil
	case <-ctx.Done():
		t.Fatal("master did not stop")
	}
	if _, err := s.link.Recv(ctx); err == nil {
		t.Fatalf("storage link still up")
	}
}

func TestNetRefusals(t *testing.T) {
	ctx := testCtx(t)
	m, _ := startMaster(t, ctx, Config{})
	for _, tc := range []struct {
		ri   *proto.RequestIdentification
		code proto.ErrorCode
		msg  string
	}{
		{&proto.RequestIdentification{NodeType: proto.Client, ClusterName: "other", Extra: proto.Dict{}}, proto.ProtocolError, "invalid cluster name"},
		{&proto.RequestIdentification{NodeType: proto.Client, ClusterName: "test", Extra: proto.Dict{}}, proto.NotReady, "Retry Later"},
	} {
		l, err := neonet.Dial(ctx, m.Addr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Ask(ctx, tc.ri)
		e, ok := ackOf(err)
		if !ok || e.Code != tc.code || e.Message != tc.msg {
			t.Errorf("%+v: got %v, want Error(%v, %q)", tc.ri, err, tc.code, tc.msg)
		}
		// The master closes the link after refusing.
		if _, err := l.Recv(ctx); err == nil {
			t.Errorf("link still up after refusal")
		}
		l.Close()
	}
}

func TestNewConfigChecks(t *testing.T) {
	ctx := testCtx(t)
	for _, cfg := range []Config{
		{Bind: "127.0.0.1:0"},
		{Cluster: "x"},
		{Cluster: "x", Bind: "127.0.0.1:0", Replicas: -1},
		{Cluster: "x", Bind: "127.0.0.1:0", NodeID: proto.NewNodeID(proto.Storage, 1)},
		{Cluster: "x", Bind: "127.0.0.1:0", Masters: []string{"nohost"}},
	} {
		if m, err := New(ctx, cfg); err == nil {
			m.ln.Close()
			t.Errorf("%+v: accepted", cfg)
		}
	}
	// ctx ending stops Run.
	m, err := New(ctx, Config{Cluster: "x", Bind: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- m.Run(runCtx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := neonet.Dial(ctx, m.Addr(), nil); err == nil {
		t.Fatalf("still listening after Run returned")
	}
}
