package admin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

const testTimeout = 30 * time.Second

// fakeMaster is a master made of raw links: the test decides every packet.
type fakeMaster struct {
	t  *testing.T
	ln *neonet.Listener
}

func newFakeMaster(t *testing.T) *fakeMaster { return newFakeMasterTLS(t, nil) }

func newFakeMasterTLS(t *testing.T, tlsConf *tls.Config) *fakeMaster {
	t.Helper()
	ln, err := neonet.Listen(context.Background(), "127.0.0.1:0", tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeMaster{t: t, ln: ln}
}

func (m *fakeMaster) addr() string { return m.ln.Addr().String() }

// masterConn is the fake master's end of one admin connection. After the
// identification, what the admin sends comes on reqs (pings are answered).
type masterConn struct {
	t    *testing.T
	l    *neonet.Link
	reqs chan *neonet.Request
	done chan struct{}
	stop chan struct{}

	served    bool
	closeOnce sync.Once
}

// accept waits for the admin's connection and its RequestIdentification.
func (m *fakeMaster) accept(ctx context.Context) (*masterConn, *neonet.Request) {
	m.t.Helper()
	l, err := m.ln.Accept(ctx)
	if err != nil {
		m.t.Fatalf("fake master: accept: %v", err)
	}
	r, err := l.Recv(ctx)
	if err != nil {
		m.t.Fatalf("fake master: waiting for identification: %v", err)
	}
	mc := &masterConn{t: m.t, l: l, reqs: make(chan *neonet.Request, 16), done: make(chan struct{}), stop: make(chan struct{})}
	m.t.Cleanup(mc.close)
	return mc, r
}

// serve starts receiving what the admin sends after the identification.
func (mc *masterConn) serve(ctx context.Context) {
	mc.served = true
	go func() {
		defer close(mc.done)
		defer close(mc.reqs)
		for {
			r, err := mc.l.Recv(ctx)
			if err != nil {
				return
			}
			select {
			case mc.reqs <- r:
			case <-mc.stop:
				return
			}
		}
	}()
}

// close cuts the connection and waits for serve's goroutine.
func (mc *masterConn) close() {
	mc.closeOnce.Do(func() {
		close(mc.stop)
		mc.l.Close()
		if mc.served {
			<-mc.done
		}
	})
}

// expect returns the next packet from the admin, checking it is want.
func (mc *masterConn) expect(want proto.Msg) *neonet.Request {
	mc.t.Helper()
	select {
	case r, ok := <-mc.reqs:
		if !ok {
			mc.t.Fatalf("fake master: link down while expecting %T: %v", want, mc.l.Err())
		}
		if got, w := packetString(r.Msg), packetString(want); got != w {
			mc.t.Fatalf("fake master: got %s\nwant %s", got, w)
		}
		return r
	case <-time.After(testTimeout):
		mc.t.Fatalf("fake master: timeout waiting for %T", want)
	}
	return nil
}

func packetString(m proto.Msg) string { return fmt.Sprintf("%T % x", m, m.AppendArgs(nil)) }

// sync returns once the admin has handled everything sent to it so far.
func (mc *masterConn) sync(ctx context.Context) {
	mc.t.Helper()
	if err := mc.l.Sync(ctx); err != nil {
		mc.t.Fatalf("fake master: sync: %v", err)
	}
}

func (mc *masterConn) notify(ctx context.Context, m proto.Msg) {
	mc.t.Helper()
	if err := mc.l.Notify(ctx, m); err != nil {
		mc.t.Fatalf("fake master: notify %T: %v", m, err)
	}
}

type testAdmin struct {
	*Admin
	connected chan struct{}
	runErr    chan error
	cancel    context.CancelFunc
}

func startAdmin(t *testing.T, masters ...string) *testAdmin {
	t.Helper()
	return startAdminConfig(t, Config{Masters: masters})
}

// startAdminConfig starts an admin; setup functions run before Run (to set
// test hooks).
func startAdminConfig(t *testing.T, cfg Config, setup ...func(*Admin)) *testAdmin {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.Cluster == "" {
		cfg.Cluster = "test"
	}
	cfg.Bind = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAdmin{Admin: a, connected: make(chan struct{}, 8), runErr: make(chan error, 1), cancel: cancel}
	a.onConnected = func() { ta.connected <- struct{}{} }
	for _, f := range setup {
		f(a)
	}
	go func() { ta.runErr <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ta.runErr:
			if err != nil {
				t.Errorf("admin Run: %v", err)
			}
			ta.runErr <- err
		case <-time.After(testTimeout):
			t.Errorf("admin Run did not return")
		}
	})
	return ta
}

func (ta *testAdmin) waitConnected(t *testing.T) {
	t.Helper()
	select {
	case <-ta.connected:
	case <-time.After(testTimeout):
		t.Fatal("admin did not connect to the master")
	}
}

// testLog writes the admin's log records to the test's log (Run ends
// before the test does).
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type ctlResult struct {
	out string
	err error
}

// neoctl runs a neoctl command against the admin in the background.
func neoctl(a *Admin, args ...string) <-chan ctlResult { return neoctlTLS(a, nil, args...) }

func neoctlTLS(a *Admin, tlsConf *tls.Config, args ...string) <-chan ctlResult {
	ch := make(chan ctlResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		var out bytes.Buffer
		err := ctl.Run(ctx, a.Addr(), tlsConf, args, &out)
		ch <- ctlResult{out.String(), err}
	}()
	return ch
}

func wantCtl(t *testing.T, ch <-chan ctlResult, out, errText string) {
	t.Helper()
	var r ctlResult
	select {
	case r = <-ch:
	case <-time.After(testTimeout):
		t.Fatal("neoctl did not return")
	}
	if errText != "" {
		if r.err == nil || r.err.Error() != errText {
			t.Fatalf("neoctl: got error %v (output %q), want %q", r.err, r.out, errText)
		}
		return
	}
	if r.err != nil {
		t.Fatalf("neoctl: %v", r.err)
	}
	if r.out != out {
		t.Fatalf("neoctl output:\ngot:\n%s\nwant:\n%s", r.out, out)
	}
}

var (
	m1 = proto.NewNodeID(proto.Master, 1)
	a1 = proto.NewNodeID(proto.Admin, 1)
	c1 = proto.NewNodeID(proto.Client, 1)
	s1 = proto.NewNodeID(proto.Storage, 1)
	s2 = proto.NewNodeID(proto.Storage, 2)
)

func addr(s string) proto.Opt[proto.Address] {
	host, port, _ := strings.Cut(s, ":")
	p, _ := strconv.Atoi(port)
	return proto.Some(proto.Address{Host: host, Port: uint16(p)})
}

func adminAddress(a *Admin) proto.Opt[proto.Address] { return addr(a.Addr()) }

// identify checks the admin's RequestIdentification and accepts it, then
// sends what a master sends an admin: the node list and the partition
// table; then it answers the admin's AskClusterState.
func identify(t *testing.T, ctx context.Context, ta *testAdmin, mc *masterConn, r *neonet.Request,
	nodes []proto.NodeInfo, rows [][]proto.CellInfo, state proto.ClusterState) {
	t.Helper()
	want := &proto.RequestIdentification{
		NodeType:    proto.Admin,
		Address:     adminAddress(ta.Admin),
		ClusterName: ta.cfg.Cluster,
		Extra:       proto.Dict{{Key: "backup", Value: append([]string{}, ta.cfg.MonitorBackup...)}},
	}
	if got, w := packetString(r.Msg), packetString(want); got != w {
		t.Fatalf("identification: got %s\nwant %s", got, w)
	}
	if err := r.Reply(ctx, &proto.AcceptIdentification{NodeType: proto.Master, NID: m1, YourNID: a1}); err != nil {
		t.Fatal(err)
	}
	mc.notify(ctx, &proto.NotifyNodeInformation{Timestamp: 100, Nodes: nodes})
	mc.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some[proto.PTid](1), Rows: rows})
	mc.serve(ctx)
	mc.expect(&proto.AskClusterState{}).Reply(ctx, &proto.AnswerClusterState{State: proto.Some(state)})
	ta.waitConnected(t)
}

func testNodes(masterAddr string, ta *testAdmin) []proto.NodeInfo {
	return []proto.NodeInfo{
		{Type: proto.Admin, Addr: adminAddress(ta.Admin), NID: a1, State: proto.NodeRunning, IDTime: proto.Some(1764016257.5)},
		{Type: proto.Master, Addr: addr(masterAddr), NID: m1, State: proto.NodeRunning, IDTime: proto.Some(1764016257.0)},
		{Type: proto.Storage, Addr: addr("127.0.0.1:20001"), NID: s1, State: proto.NodeRunning, IDTime: proto.Some(1764016258.25)},
		{Type: proto.Storage, Addr: addr("127.0.0.1:20002"), NID: s2, State: proto.NodePending, IDTime: proto.Some(1764016259.0)},
		{Type: proto.Client, NID: c1, State: proto.NodeRunning, IDTime: proto.Some(1764016260.0)},
	}
}

func upToDate(nids ...proto.NodeID) []proto.CellInfo {
	var row []proto.CellInfo
	for _, n := range nids {
		row = append(row, proto.CellInfo{NID: n, State: proto.CellUpToDate})
	}
	return row
}

// nodeLines is "print node" for testNodes, in NEO/py's format.
func nodeLines(masterAddr, adminAddr string) string {
	w := max(len(masterAddr), len(adminAddr), len("127.0.0.1:20001"))
	return fmt.Sprintf(""+
		"A1 | ADMIN   | %-*s | RUNNING | 2025-11-24 20:30:57.500000\n"+
		"C1 | CLIENT  | %-*s | RUNNING | 2025-11-24 20:31:00\n"+
		"M1 | MASTER  | %-*s | RUNNING | 2025-11-24 20:30:57\n"+
		"S1 | STORAGE | %-*s | RUNNING | 2025-11-24 20:30:58.250000\n"+
		"S2 | STORAGE | %-*s | PENDING | 2025-11-24 20:30:59\n",
		w, adminAddr, w, "", w, masterAddr, w, "127.0.0.1:20001", w, "127.0.0.1:20002")
}

func TestAdmin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m := newFakeMaster(t)
	ta := startAdmin(t, m.addr())

	// Not identified yet: neoctl is refused.
	mc, r := m.accept(ctx)
	wantCtl(t, neoctl(ta.Admin, "print", "cluster"), "", "ERROR: Not connected to a primary master.")

	identify(t, ctx, ta, mc, r, testNodes(m.addr(), ta),
		[][]proto.CellInfo{upToDate(s1), upToDate(s1), upToDate(s1)}, proto.ClusterRunning)

	// Answered from the admin's copy.
	wantCtl(t, neoctl(ta.Admin, "print", "cluster"), "RUNNING\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "primary"), "M1\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "node"), nodeLines(m.addr(), ta.Addr()), "")
	wantCtl(t, neoctl(ta.Admin, "print", "pt"), "# ptid: 1, replicas: 0\nS1 R UUU\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "pt", "1", "2"), "# ptid: 1, replicas: 0\n001 | S1 - UP_TO_DATE |\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "pt", "0", "4"), "", "unexpected answer: Error PROTOCOL_ERROR: invalid partition table offset")

	// Notifications change the admin's copy.
	mc.notify(ctx, &proto.NotifyPartitionChanges{PTid: 2, NumReplicas: 1, Changes: []proto.CellChange{
		{Partition: 0, NID: s2, State: proto.CellOutOfDate},
		{Partition: 2, NID: s1, State: proto.CellFeeding},
		{Partition: 2, NID: s2, State: proto.CellUpToDate},
	}})
	mc.notify(ctx, &proto.NotifyNodeInformation{Timestamp: 101, Nodes: []proto.NodeInfo{
		{Type: proto.Storage, Addr: addr("127.0.0.1:20002"), NID: s2, State: proto.NodeRunning, IDTime: proto.Some(1764016259.0)},
		{Type: proto.Client, NID: c1, State: proto.NodeUnknown},
	}})
	mc.notify(ctx, &proto.NotifyClusterInformation{State: proto.ClusterStartingBackup})
	mc.sync(ctx)
	wantCtl(t, neoctl(ta.Admin, "print", "cluster"), "STARTING_BACKUP\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "pt"), "# ptid: 2, replicas: 1\nS1 R UUF\nS2 R O.U\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "node", "client"), "Empty list!\n", "")
	wantCtl(t, neoctl(ta.Admin, "print", "summary"), "# {\"problem\": [null]}\nSTARTING_BACKUP; OUT_OF_DATE=1, UP_TO_DATE=3, FEEDING=1\n", "")
	mc.notify(ctx, &proto.NotifyClusterInformation{State: proto.ClusterRunning})
	mc.sync(ctx)

	// Health when operational: the admin asks the master for the last tid.
	ch := neoctl(ta.Admin, "print", "summary")
	mc.expect(&proto.AskLastTransaction{}).Reply(ctx, &proto.AnswerLastTransaction{Tid: 0x03f6b1c2d3e4f5a6})
	wantCtl(t, ch, "# {\"warning\": [null]}\nRUNNING; OUT_OF_DATE=1, UP_TO_DATE=3, FEEDING=1; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n", "")

	// Relayed requests reach the master, its answers come back.
	for _, tc := range []struct {
		args []string
		reqs []proto.Msg // relayed to the master
		ans  []proto.Msg // the master's answers
		out  string
		err  string
	}{
		{args: []string{"start"}, reqs: []proto.Msg{&proto.SetClusterState{State: proto.ClusterVerifying}},
			ans: []proto.Msg{proto.Err(proto.Denied, "Can not switch to this state")}, err: "Can not switch to this state"},
		{args: []string{"set", "cluster", "stopping"}, reqs: []proto.Msg{&proto.SetClusterState{State: proto.ClusterStopping}},
			ans: []proto.Msg{proto.Err(proto.Ack, "Cluster state changed")}, out: "Cluster state changed\n"},
		{args: []string{"set", "replicas", "1"}, reqs: []proto.Msg{&proto.SetNumReplicas{NumReplicas: 1}},
			ans: []proto.Msg{proto.Err(proto.Ack, "")}, out: "\n"},
		{args: []string{"add", "S2"}, reqs: []proto.Msg{&proto.AddPendingNodes{NIDs: []proto.NodeID{s2}}},
			ans: []proto.Msg{proto.Err(proto.Ack, "Nodes added: S2")}, out: "Nodes added: S2\n"},
		{args: []string{"kill", "S1"}, reqs: []proto.Msg{&proto.SetNodeState{NID: s1, State: proto.NodeDown}},
			ans: []proto.Msg{proto.Err(proto.Ack, "state changed")}, out: "state changed\n"},
		{args: []string{"drop", "S1"}, reqs: []proto.Msg{&proto.SetNodeState{NID: s1, State: proto.NodeUnknown}},
			ans: []proto.Msg{proto.Err(proto.Denied, "a running node must be stopped before removal")}, err: "a running node must be stopped before removal"},
		{args: []string{"tweak", "-n", "S1"}, reqs: []proto.Msg{&proto.TweakPartitionTable{DryRun: true, Exclude: []proto.NodeID{s1}}},
			ans: []proto.Msg{&proto.AnswerTweakPartitionTable{Changed: true, Rows: [][]proto.CellInfo{
				{{NID: s1, State: proto.CellFeeding}, {NID: s2, State: proto.CellOutOfDate}}, upToDate(s2), upToDate(s2)}}},
			out: "S1 R F..\nS2 R OUU\n"},
		{args: []string{"truncate", "tid:0x3937af2eeeeeeee"}, reqs: []proto.Msg{&proto.Truncate{Tid: 0x3937af2eeeeeeee}},
			ans: []proto.Msg{proto.Err(proto.Ack, "")}},
		{args: []string{"check", "1:S2"}, reqs: []proto.Msg{&proto.CheckReplicas{
			Partitions: []proto.CheckReplicasPartition{{Partition: 1, Reference: s2}}, MaxTid: zodb.InvalidTid}},
			ans: []proto.Msg{proto.Err(proto.Ack, "")}},
		{args: []string{"prune_orphan", "1", "S1"}, reqs: []proto.Msg{&proto.Repair{NIDs: []proto.NodeID{s1}, DryRun: true}},
			ans: []proto.Msg{proto.Err(proto.Ack, "")}, out: "\n"},
		{args: []string{"print", "ids"}, reqs: []proto.Msg{&proto.AskRecovery{}, &proto.AskLastIDs{}},
			ans: []proto.Msg{
				&proto.AnswerRecovery{PTid: proto.Some[proto.PTid](2), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid},
				&proto.AnswerLastIDs{LastTid: 0x03f6b1c200000000, LastOid: 0x3f, FirstTid: 0x03f6b1c100000000}},
			out: "last_oid = 0x3f\nlast_tid = 0x3f6b1c200000000 (2024-02-21 20:50:00)\nlast_ptid = 2\n"},
		{args: []string{"print", "ids"}, reqs: []proto.Msg{&proto.AskRecovery{}, &proto.AskLastTransaction{}},
			ans: []proto.Msg{
				&proto.AnswerRecovery{PTid: proto.Some[proto.PTid](2), BackupTid: 0x03f6b1c200000000, TruncateTid: zodb.InvalidTid},
				&proto.AnswerLastTransaction{Tid: 0x03f6b1c2d3e4f5a6}},
			out: "backup_tid = 0x3f6b1c200000000 (2024-02-21 20:50:00)\nlast_tid = 0x3f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\nlast_ptid = 2\n"},
	} {
		ch := neoctl(ta.Admin, tc.args...)
		for i, req := range tc.reqs {
			if err := mc.expect(req).Reply(ctx, tc.ans[i]); err != nil {
				t.Fatal(err)
			}
		}
		wantCtl(t, ch, tc.out, tc.err)
	}

	// flush_log is forwarded as a notification.
	wantCtl(t, neoctl(ta.Admin, "flush_log"), "", "")
	mc.expect(&proto.FlushLog{})

	// A PROTOCOL_ERROR from the master is relayed, then neoctl is cut off.
	ch = neoctl(ta.Admin, "set", "replicas", "3")
	mc.expect(&proto.SetNumReplicas{NumReplicas: 3}).Reply(ctx, proto.Err(proto.ProtocolError, "bad"))
	wantCtl(t, ch, "", "unexpected answer: Error PROTOCOL_ERROR: bad")

	// Another admin may not identify: this one monitors no backup cluster.
	l, err := neonet.Dial(ctx, ta.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Admin, ClusterName: "backup1"})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.ProtocolError || perr.Message != `unknown backup cluster "backup1"` {
		t.Errorf("identification of a backup admin: got %v", err)
	}
	l.Close()

	// The master goes away during a relayed request: neoctl is told, and
	// the admin, having forgotten its id, looks for the master again.
	ch = neoctl(ta.Admin, "start")
	mc.expect(&proto.SetClusterState{State: proto.ClusterVerifying})
	mc.close()
	wantCtl(t, ch, "", "unexpected answer: Error PROTOCOL_ERROR: connection to master lost")

	mc2, r := m.accept(ctx)
	// The admin's copy is kept, but it does not serve without a master.
	wantCtl(t, neoctl(ta.Admin, "print", "node"), "", "ERROR: Not connected to a primary master.")
	// The first node list is a full one; storages that have cells in the
	// partition table (the one known when the list comes) are kept.
	identify(t, ctx, ta, mc2, r, []proto.NodeInfo{
		{Type: proto.Admin, Addr: adminAddress(ta.Admin), NID: a1, State: proto.NodeRunning, IDTime: proto.Some(1764016300.0)},
		{Type: proto.Master, Addr: addr(m.addr()), NID: m1, State: proto.NodeRunning, IDTime: proto.Some(1764016257.0)},
	}, [][]proto.CellInfo{upToDate(s1), upToDate(s1), upToDate(s1)}, proto.ClusterRecovering)
	wantCtl(t, neoctl(ta.Admin, "print", "node"), fmt.Sprintf(""+
		"A1 | ADMIN   | %-15s | RUNNING | 2025-11-24 20:31:40\n"+
		"M1 | MASTER  | %-15s | RUNNING | 2025-11-24 20:30:57\n"+
		"S1 | STORAGE | 127.0.0.1:20001 | RUNNING | 2025-11-24 20:30:58.250000\n"+
		"S2 | STORAGE | 127.0.0.1:20002 | RUNNING | 2025-11-24 20:30:59\n", ta.Addr(), m.addr()), "")
	wantCtl(t, neoctl(ta.Admin, "print", "cluster"), "RECOVERING\n", "")

	// Stopping: when the master goes away the admin exits.
	mc2.notify(ctx, &proto.NotifyClusterInformation{State: proto.ClusterStopping})
	mc2.sync(ctx)
	mc2.close()
	select {
	case err := <-ta.runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		ta.runErr <- nil // for the cleanup
	case <-time.After(testTimeout):
		t.Fatal("admin did not stop with the cluster")
	}
}

// TestNotPrimaryMaster: a secondary master redirects the admin to the
// primary, which is not in the admin's configuration.
func TestNotPrimaryMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	secondary, primary := newFakeMaster(t), newFakeMaster(t)
	dead := newFakeMaster(t) // must never be tried: the redirection comes first
	ta := startAdmin(t, secondary.addr(), dead.addr())

	mc, r := secondary.accept(ctx)
	if _, ok := r.Msg.(*proto.RequestIdentification); !ok {
		t.Fatalf("secondary got %T", r.Msg)
	}
	mc.notify(ctx, &proto.NotPrimaryMaster{Primary: 2, KnownMasters: []proto.Address{
		addr(secondary.addr()).V, addr(dead.addr()).V, addr(primary.addr()).V}})
	mc.close()

	mp, r := primary.accept(ctx)
	identify(t, ctx, ta, mp, r, testNodes(primary.addr(), ta), [][]proto.CellInfo{upToDate(s1)}, proto.ClusterRunning)
	wantCtl(t, neoctl(ta.Admin, "print", "primary"), "M1\n", "")
}

func TestNodeTable(t *testing.T) {
	var tab nodeTable
	sA, sB := addr("10.0.0.1:1"), addr("10.0.0.2:2")
	withS2 := pt.FromRows(1, 0, [][]proto.CellInfo{upToDate(s2)})
	steps := []struct {
		reset bool // a new connection to the master: a full list comes
		ts    float64
		nodes []proto.NodeInfo
		pt    *pt.Table
		want  string // nid:state of the nodes, by id
		err   bool
	}{
		{ts: 1, nodes: []proto.NodeInfo{
			{Type: proto.Storage, Addr: sA, NID: s1, State: proto.NodeRunning},
			{Type: proto.Storage, Addr: sB, NID: s2, State: proto.NodePending},
		}, want: "S1:RUNNING S2:PENDING"},
		{ts: 1, err: true, want: "S1:RUNNING S2:PENDING"},
		// The node at S2's address takes S1's id: S1's node loses it.
		{ts: 2, nodes: []proto.NodeInfo{{Type: proto.Storage, Addr: sB, NID: s1, State: proto.NodeRunning}},
			want: "S1:RUNNING None:RUNNING"},
		{ts: 3, nodes: []proto.NodeInfo{{Type: proto.Storage, Addr: sA, NID: s2, State: proto.NodeDown}},
			want: "S1:RUNNING S2:DOWN"},
		// Full list: unlisted nodes go, except storages having cells.
		{reset: true, ts: 1, pt: withS2, nodes: []proto.NodeInfo{{Type: proto.Master, Addr: addr("10.0.0.3:3"), NID: m1, State: proto.NodeRunning}},
			want: "M1:RUNNING S2:DOWN"},
		{ts: 2, nodes: []proto.NodeInfo{{Type: proto.Storage, Addr: sA, NID: s2, State: proto.NodeUnknown}},
			want: "M1:RUNNING"},
		{ts: 3, nodes: []proto.NodeInfo{{Type: proto.Client, NID: c1, State: proto.NodeUnknown}},
			want: "M1:RUNNING"},
	}
	for i, st := range steps {
		if st.reset {
			tab.reset()
		}
		err := tab.update(&proto.NotifyNodeInformation{Timestamp: st.ts, Nodes: st.nodes}, st.pt)
		if (err != nil) != st.err {
			t.Errorf("step %d: error %v", i, err)
		}
		var got []string
		for _, n := range tab.list(proto.Opt[proto.NodeType]{}) {
			got = append(got, n.NID.String()+":"+n.State.String())
		}
		if strings.Join(got, " ") != st.want {
			t.Errorf("step %d: got %q, want %q", i, strings.Join(got, " "), st.want)
		}
	}
}

func TestConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []Config{
		{Masters: []string{"127.0.0.1:1"}, Bind: "127.0.0.1:0"},
		{Cluster: "x", Bind: "127.0.0.1:0"},
		{Cluster: "x", Masters: []string{"nohost"}, Bind: "127.0.0.1:0"},
		{Cluster: "x", Masters: []string{"127.0.0.1:1"}, Bind: "127.0.0.1:0", NodeID: s1},
	} {
		if a, err := New(ctx, cfg); err == nil {
			a.ln.Close()
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// testTLSConfig returns a NEO TLS configuration: a CA and one certificate
// it signed, which every node of the test uses.
func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, key := newKey(), newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := neonet.TLSConfig(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestTLS: with TLS, the admin talks TLS to the master and to neoctl.
func TestTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conf := testTLSConfig(t)
	m := newFakeMasterTLS(t, conf)
	ta := startAdminConfig(t, Config{Masters: []string{m.addr()}, TLS: conf})
	mc, r := m.accept(ctx)
	identify(t, ctx, ta, mc, r, testNodes(m.addr(), ta), [][]proto.CellInfo{upToDate(s1)}, proto.ClusterVerifying)
	wantCtl(t, neoctlTLS(ta.Admin, conf, "print", "cluster"), "VERIFYING\n", "")
	// A neoctl without TLS is refused.
	wantCtl(t, neoctl(ta.Admin, "print", "cluster"), "", "ERROR: not connected")
}

// TestMonitorBackup: the admin of a backup cluster reports to the admin of
// the upstream cluster, which shows both clusters in its summary.
func TestMonitorBackup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	mUp, mBackup := newFakeMaster(t), newFakeMaster(t)
	reports := make(chan string, 16)
	up := startAdminConfig(t, Config{Masters: []string{mUp.addr()}, MonitorBackup: []string{"backup1", "backup0"}, MonitorMaxLag: 10},
		func(a *Admin) { a.onBackupReport = func(name string) { reports <- name } })
	backup := startAdminConfig(t, Config{Cluster: "backup1", Masters: []string{mBackup.addr()}})

	// Nothing connected yet.
	mc, r := mUp.accept(ctx)
	identify(t, ctx, up, mc, r, testNodes(mUp.addr(), up), [][]proto.CellInfo{upToDate(s1), upToDate(s1)}, proto.ClusterRunning)
	ch := neoctl(up.Admin, "print", "summary")
	mc.expect(&proto.AskLastTransaction{}).Reply(ctx, &proto.AnswerLastTransaction{Tid: 0x03f6b1c2d3e4f5a6})
	wantCtl(t, ch, "# {\"problem\": [\"backup0\", \"backup1\"]}\n"+
		"RUNNING; UP_TO_DATE=2; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n"+
		"\nbackup1\n    None\n"+
		"\nbackup0\n    None\n", "")

	// The backup cluster's master names the upstream admin: the backup
	// admin connects and reports.
	mb, r := mBackup.accept(ctx)
	identify(t, ctx, backup, mb, r, testNodes(mBackup.addr(), backup),
		[][]proto.CellInfo{upToDate(s1), {{NID: s1, State: proto.CellOutOfDate}}, upToDate(s1)}, proto.ClusterBackingUp)
	mb.notify(ctx, &proto.NotifyUpstreamAdmin{Address: adminAddress(up.Admin).V})
	waitReport := func() {
		t.Helper()
		select {
		case name := <-reports:
			if name != "backup1" {
				t.Fatalf("report from %q", name)
			}
		case <-time.After(testTimeout):
			t.Fatal("no report from the backup admin")
		}
	}
	waitReport()

	// Summary: the upstream admin asks both masters (the backup's through
	// its admin) for the tids.
	summary := func(upTid, backupTid zodb.Tid) string {
		t.Helper()
		ch := neoctl(up.Admin, "print", "summary")
		mc.expect(&proto.AskLastTransaction{}).Reply(ctx, &proto.AnswerLastTransaction{Tid: upTid})
		mb.expect(&proto.AskRecovery{}).Reply(ctx, &proto.AnswerRecovery{PTid: proto.Some[proto.PTid](1), BackupTid: backupTid, TruncateTid: zodb.InvalidTid})
		mb.expect(&proto.AskLastTransaction{}).Reply(ctx, &proto.AnswerLastTransaction{Tid: backupTid})
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.out
	}
	// 49.662743 s late, more than the 10 s allowed; some cell out of date.
	want := "# {\"warning\": [\"backup1\"], \"problem\": [\"backup0\"]}\n" +
		"RUNNING; UP_TO_DATE=2; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n" +
		"\nbackup1\n    BACKINGUP; OUT_OF_DATE=1, UP_TO_DATE=2; ltid=03f6b1c200000000; lag=49.662743\n" +
		"\nbackup0\n    None\n"
	if got := summary(0x03f6b1c2d3e4f5a6, 0x03f6b1c200000000); got != want {
		t.Errorf("summary:\ngot:\n%s\nwant:\n%s", got, want)
	}

	// Changes are reported: all cells up to date now; the backup is up to
	// date too ("ε" lag), and the upstream cluster has a problem.
	mb.notify(ctx, &proto.NotifyPartitionChanges{PTid: 2, Changes: []proto.CellChange{{Partition: 1, NID: s1, State: proto.CellUpToDate}}})
	waitReport()
	mc.notify(ctx, &proto.NotifyNodeInformation{Timestamp: 200, Nodes: []proto.NodeInfo{
		{Type: proto.Storage, Addr: addr("127.0.0.1:20001"), NID: s1, State: proto.NodeDown}}})
	mc.sync(ctx)
	want = "# {\"problem\": [null, \"backup0\"]}\n" +
		"RUNNING; UP_TO_DATE=2; DOWN=1; ltid=03f6b1c200000040 (2024-02-21 20:50:00)\n" +
		"\nbackup1\n    BACKINGUP; UP_TO_DATE=3; ltid=03f6b1c200000000; lag=ε\n" +
		"\nbackup0\n    None\n"
	// (Less than a microsecond behind: "ε"; exactly as late, it would be 0.0.)
	if got := summary(0x03f6b1c200000040, 0x03f6b1c200000000); got != want {
		t.Errorf("summary:\ngot:\n%s\nwant:\n%s", got, want)
	}

	// A second admin for the same backup cluster is refused.
	l, err := neonet.Dial(ctx, up.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Admin, ClusterName: "backup1"})
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.ProtocolError || perr.Message != "already connected" {
		t.Errorf("second backup admin: got %v", err)
	}
	l.Close()
}

func TestPyFloat(t *testing.T) {
	// Python's repr of these floats.
	for f, want := range map[float64]string{
		0: "0.0", 49.662743: "49.662743", 3e-06: "3e-06", 1e16: "1e+16", 123456789: "123456789.0",
		-0.5: "-0.5", 0.0001: "0.0001", 9999999999999998: "9999999999999998.0", -1e-05: "-1e-05",
	} {
		if got := pyFloat(f); got != want {
			t.Errorf("%v: got %q, want %q", f, got, want)
		}
	}
}

// TestMasterCycle: masters that cannot be reached are skipped; the admin
// proposes its configured id.
func TestMasterCycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dead := newFakeMaster(t)
	deadAddr := dead.addr()
	dead.ln.Close()
	m := newFakeMaster(t)
	a5 := proto.NewNodeID(proto.Admin, 5)
	startAdminConfig(t, Config{Masters: []string{deadAddr, m.addr()}, NodeID: a5})
	_, r := m.accept(ctx)
	ri, ok := r.Msg.(*proto.RequestIdentification)
	if !ok || ri.NID != a5 {
		t.Fatalf("identification: %s", packetString(r.Msg))
	}
}
