package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// exchange is one request neoctl must send to the fake admin, and what the
// admin does about it.
type exchange struct {
	req    proto.Msg // expected request or notification
	ans    proto.Msg // answer (an *proto.Error too); nil: none
	notify bool      // send ans as a notification, as NEO/py's admin does for a bad offset
	abort  bool      // close the connection after answering
}

// fakeAdmin listens, accepts one neoctl connection and checks that it
// carries exactly the exchanges, in order.
func fakeAdmin(t *testing.T, exchanges []exchange) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ln, err := neonet.Listen(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		<-done // the connection was served (or the 30 s ran out)
		ln.Close()
		cancel()
	})
	go func() {
		defer close(done)
		if len(exchanges) == 0 {
			return
		}
		l, err := ln.Accept(ctx)
		if err != nil {
			t.Errorf("fake admin: accept: %v", err)
			return
		}
		defer l.Close()
		for i, x := range exchanges {
			r, err := l.Recv(ctx)
			if err != nil {
				t.Errorf("fake admin: exchange %d: expected %T, got %v", i, x.req, err)
				return
			}
			if got, want := packetString(r.Msg), packetString(x.req); got != want {
				t.Errorf("fake admin: exchange %d:\ngot  %s\nwant %s", i, got, want)
			}
			switch {
			case x.ans == nil:
			case x.notify:
				l.Notify(ctx, x.ans)
			case x.abort:
				r.Abort(ctx, x.ans)
				return
			default:
				r.Reply(ctx, x.ans)
			}
		}
		if r, err := l.Recv(ctx); err == nil {
			t.Errorf("fake admin: unexpected request %s", packetString(r.Msg))
		}
	}()
	return ln.Addr().String()
}

// packetString shows a packet by its type and encoded arguments, which
// compares what goes on the wire.
func packetString(m proto.Msg) string {
	return fmt.Sprintf("%T % x", m, m.AppendArgs(nil))
}

func ack(msg string) *proto.Error { return proto.Err(proto.Ack, "%s", msg) }

func nodeList(nodes ...proto.NodeInfo) *proto.AnswerNodeList {
	return &proto.AnswerNodeList{Nodes: nodes}
}

func askStorages() *proto.AskNodeList {
	return &proto.AskNodeList{NodeType: proto.Some(proto.Storage)}
}

func node(t proto.NodeType, n int32, addr string, port uint16, st proto.NodeState, idTime any) proto.NodeInfo {
	ni := proto.NodeInfo{Type: t, NID: proto.NewNodeID(t, n), State: st}
	if addr != "" {
		ni.Addr = proto.Some(proto.Address{Host: addr, Port: port})
	}
	if f, ok := idTime.(float64); ok {
		ni.IDTime = proto.Some(f)
	}
	return ni
}

var (
	s1 = proto.NewNodeID(proto.Storage, 1)
	s2 = proto.NewNodeID(proto.Storage, 2)
	s3 = proto.NewNodeID(proto.Storage, 3)
)

const (
	tid1 zodb.Tid = 0x03f6b1c2d3e4f5a6 // 2024-02-21 20:50:49.662743
	tid2 zodb.Tid = 0x03f6b1c200000000 // 2024-02-21 20:50:00
)

// table12 is a 12-partition table: S1 everywhere (corrupted in 3), S2
// up to date in even partitions, out of date in odd ones, feeding in 11.
func table12() [][]proto.CellInfo {
	rows := make([][]proto.CellInfo, 12)
	for p := range rows {
		s1State := proto.CellUpToDate
		if p == 3 {
			s1State = proto.CellCorrupted
		}
		s2State := proto.CellUpToDate
		if p%2 == 1 {
			s2State = proto.CellOutOfDate
		}
		if p == 11 {
			s2State = proto.CellFeeding
		}
		rows[p] = []proto.CellInfo{{NID: s1, State: s1State}, {NID: s2, State: s2State}}
	}
	return rows
}

func TestCommands(t *testing.T) {
	running := proto.NodeRunning
	for _, tc := range []struct {
		name      string
		args      []string
		exchanges []exchange
		out       string // expected stdout
		err       string // expected error text
	}{{
		name: "print node",
		args: []string{"print", "node"},
		exchanges: []exchange{{
			req: &proto.AskNodeList{},
			ans: nodeList(
				node(proto.Storage, 2, "::1", 20001, proto.NodePending, nil),
				node(proto.Master, 1, "127.0.0.1", 10000, running, 1764016257.123456789),
				node(proto.Storage, 1, "127.0.0.1", 20000, running, 1764016257.5),
				node(proto.Client, 1, "", 0, running, 1764016257.5),
				node(proto.Admin, 1, "127.0.0.1", 9999, running, 1764016257.0),
			),
		}},
		out: "A1 | ADMIN   | 127.0.0.1:9999  | RUNNING | 2025-11-24 20:30:57\n" +
			"C1 | CLIENT  |                 | RUNNING | 2025-11-24 20:30:57.500000\n" +
			"M1 | MASTER  | 127.0.0.1:10000 | RUNNING | 2025-11-24 20:30:57.123457\n" +
			"S1 | STORAGE | 127.0.0.1:20000 | RUNNING | 2025-11-24 20:30:57.500000\n" +
			"S2 | STORAGE | [::1]:20001     | PENDING | None\n",
	}, {
		name:      "print node type, empty",
		args:      []string{"print", "node", "storage"},
		exchanges: []exchange{{req: askStorages(), ans: nodeList()}},
		out:       "Empty list!\n",
	}, {
		name:      "print node type, any case",
		args:      []string{"print", "node", "Master"},
		exchanges: []exchange{{req: &proto.AskNodeList{NodeType: proto.Some(proto.Master)}, ans: nodeList()}},
		out:       "Empty list!\n",
	}, {
		name: "print node bad type",
		args: []string{"print", "node", "router"},
		err:  `invalid node type "router"`,
	}, {
		name:      "print cluster",
		args:      []string{"print", "cluster"},
		exchanges: []exchange{{req: &proto.AskClusterState{}, ans: &proto.AnswerClusterState{State: proto.Some(proto.ClusterStartingBackup)}}},
		out:       "STARTING_BACKUP\n",
	}, {
		name:      "print cluster unknown",
		args:      []string{"print", "cluster"},
		exchanges: []exchange{{req: &proto.AskClusterState{}, ans: &proto.AnswerClusterState{}}},
		out:       "None\n",
	}, {
		name: "print pt",
		args: []string{"print", "pt"},
		exchanges: []exchange{
			{req: &proto.AskPartitionList{}, ans: &proto.AnswerPartitionList{PTid: proto.Some[proto.PTid](5), NumReplicas: 1, Rows: table12()}},
			{req: askStorages(), ans: nodeList(
				node(proto.Storage, 1, "127.0.0.1", 20000, running, 1.0),
				node(proto.Storage, 2, "127.0.0.1", 20001, proto.NodeDown, 1.0),
				node(proto.Storage, 3, "127.0.0.1", 20002, running, 1.0),
				node(proto.Storage, 4, "127.0.0.1", 20003, proto.NodePending, 1.0),
			)},
		},
		out: "# ptid: 5, replicas: 1\n" +
			"             10v\n" +
			"S1 R UUUCUUUUUUUU\n" +
			"S2 D UOUOUOUOUOUF\n" +
			"S3 R ............\n",
	}, {
		name: "print pt small new",
		args: []string{"print", "pt"},
		exchanges: []exchange{
			{req: &proto.AskPartitionList{}, ans: &proto.AnswerPartitionList{Rows: make([][]proto.CellInfo, 3)}},
			{req: askStorages(), ans: nodeList(node(proto.Storage, 1, "127.0.0.1", 20000, proto.NodePending, 1.0))},
		},
		out: "# ptid: None, replicas: 0\n\n",
	}, {
		name: "print pt range",
		args: []string{"print", "pt", "1", "3"},
		exchanges: []exchange{{
			req: &proto.AskPartitionList{MinOffset: 1, MaxOffset: 3},
			ans: &proto.AnswerPartitionList{PTid: proto.Some[proto.PTid](7), Rows: [][]proto.CellInfo{
				{{NID: s1, State: proto.CellUpToDate}, {NID: s2, State: proto.CellOutOfDate}},
				{},
			}},
		}},
		out: "# ptid: 7, replicas: 0\n" +
			"001 | S1 - UP_TO_DATE | S2 - OUT_OF_DATE |\n" +
			"002 |\n",
	}, {
		name: "print pt node",
		args: []string{"print", "pt", "10", "0", "S3"},
		exchanges: []exchange{{
			req: &proto.AskPartitionList{MinOffset: 10, NID: s3},
			ans: &proto.AnswerPartitionList{PTid: proto.Some[proto.PTid](7), Rows: [][]proto.CellInfo{
				{{NID: s3, State: proto.CellFeeding}},
			}},
		}},
		out: "# ptid: 7, replicas: 0\n" +
			"010 | S3 - FEEDING |\n",
	}, {
		name: "print pt bad offset",
		args: []string{"print", "pt", "0", "99"},
		exchanges: []exchange{{
			req:    &proto.AskPartitionList{MaxOffset: 99},
			ans:    proto.Err(proto.ProtocolError, "invalid partition table offset"),
			notify: true,
		}},
		err: "unexpected answer: Error PROTOCOL_ERROR: invalid partition table offset",
	}, {
		name: "print ids",
		args: []string{"print", "ids"},
		exchanges: []exchange{
			{req: &proto.AskRecovery{}, ans: &proto.AnswerRecovery{PTid: proto.Some[proto.PTid](5), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid}},
			{req: &proto.AskLastIDs{}, ans: &proto.AnswerLastIDs{LastTid: tid1, LastOid: 0x1234, FirstTid: tid2}},
		},
		out: "last_oid = 0x1234\n" +
			"last_tid = 0x3f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n" +
			"last_ptid = 5\n",
	}, {
		name: "print ids backup",
		args: []string{"print", "ids"},
		exchanges: []exchange{
			{req: &proto.AskRecovery{}, ans: &proto.AnswerRecovery{PTid: proto.Some[proto.PTid](9), BackupTid: tid2, TruncateTid: zodb.InvalidTid}},
			{req: &proto.AskLastTransaction{}, ans: &proto.AnswerLastTransaction{Tid: tid1}},
		},
		out: "backup_tid = 0x3f6b1c200000000 (2024-02-21 20:50:00)\n" +
			"last_tid = 0x3f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n" +
			"last_ptid = 9\n",
	}, {
		name:      "print primary",
		args:      []string{"print", "primary"},
		exchanges: []exchange{{req: &proto.AskPrimary{}, ans: &proto.AnswerPrimary{PrimaryNID: proto.NewNodeID(proto.Master, 2)}}},
		out:       "M2\n",
	}, {
		name: "print summary problem",
		args: []string{"print", "summary"},
		exchanges: []exchange{{req: &proto.AskMonitorInformation{}, ans: &proto.AnswerMonitorInformation{
			Warnings: []proto.Opt[string]{}, Problems: []proto.Opt[string]{{}}, Summary: "RECOVERING"}}},
		out: "# {\"problem\": [null]}\nRECOVERING\n",
	}, {
		name: "print summary ok",
		args: []string{"print", "summary"},
		exchanges: []exchange{{req: &proto.AskMonitorInformation{}, ans: &proto.AnswerMonitorInformation{
			Summary: "RUNNING; UP_TO_DATE=12; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)"}}},
		out: "# {}\nRUNNING; UP_TO_DATE=12; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n",
	}, {
		name: "print summary backups",
		args: []string{"print", "summary"},
		exchanges: []exchange{{req: &proto.AskMonitorInformation{}, ans: &proto.AnswerMonitorInformation{
			Warnings: []proto.Opt[string]{{}, proto.Some("b\"1é")}, Problems: []proto.Opt[string]{proto.Some("b2")},
			Summary: "x"}}},
		out: "# {\"warning\": [null, \"b\\\"1\\u00e9\"], \"problem\": [\"b2\"]}\nx\n",
	}, {
		name:      "set cluster",
		args:      []string{"set", "cluster", "stopping"},
		exchanges: []exchange{{req: &proto.SetClusterState{State: proto.ClusterStopping}, ans: ack("Cluster state changed")}},
		out:       "Cluster state changed\n",
	}, {
		name:      "set cluster denied",
		args:      []string{"set", "cluster", "RUNNING"},
		exchanges: []exchange{{req: &proto.SetClusterState{State: proto.ClusterRunning}, ans: proto.Err(proto.Denied, "Can not switch to this state")}},
		err:       "Can not switch to this state",
	}, {
		name: "set cluster bad state",
		args: []string{"set", "cluster", "flying"},
		err:  `invalid cluster state "flying"`,
	}, {
		name:      "set replicas",
		args:      []string{"set", "replicas", "2"},
		exchanges: []exchange{{req: &proto.SetNumReplicas{NumReplicas: 2}, ans: ack("")}},
		out:       "\n",
	}, {
		name: "set replicas negative",
		args: []string{"set", "replicas", "-1"},
		err:  "invalid number of replicas",
	}, {
		name:      "start",
		args:      []string{"start"},
		exchanges: []exchange{{req: &proto.SetClusterState{State: proto.ClusterVerifying}, ans: ack("Cluster state changed")}},
		out:       "Cluster state changed\n",
	}, {
		name:      "start not ready",
		args:      []string{"start"},
		exchanges: []exchange{{req: &proto.SetClusterState{State: proto.ClusterVerifying}, ans: proto.Err(proto.NotReady, "Not connected to a primary master."), abort: true}},
		err:       "ERROR: Not connected to a primary master.",
	}, {
		name:      "add",
		args:      []string{"add", "S1", "S2"},
		exchanges: []exchange{{req: &proto.AddPendingNodes{NIDs: []proto.NodeID{s1, s2}}, ans: ack("Nodes added: S1, S2")}},
		out:       "Nodes added: S1, S2\n",
	}, {
		name: "add all",
		args: []string{"add", "all"},
		exchanges: []exchange{
			{req: askStorages(), ans: nodeList(node(proto.Storage, 1, "h", 1, running, nil), node(proto.Storage, 3, "h", 3, proto.NodePending, nil))},
			{req: &proto.AddPendingNodes{NIDs: []proto.NodeID{s1, s3}}, ans: ack("Nodes added: S3")},
		},
		out: "Nodes added: S3\n",
	}, {
		name: "tweak dry run",
		args: []string{"tweak", "-n", "S2"},
		exchanges: []exchange{
			{req: &proto.TweakPartitionTable{DryRun: true, Exclude: []proto.NodeID{s2}}, ans: &proto.AnswerTweakPartitionTable{Changed: true, Rows: [][]proto.CellInfo{
				{{NID: s1, State: proto.CellUpToDate}, {NID: s2, State: proto.CellFeeding}},
				{{NID: s2, State: proto.CellFeeding}, {NID: s1, State: proto.CellOutOfDate}},
			}}},
			{req: askStorages(), ans: nodeList(node(proto.Storage, 1, "h", 1, running, nil), node(proto.Storage, 2, "h", 2, running, nil))},
		},
		out: "S1 R UO\nS2 R FF\n",
	}, {
		name:      "tweak no change",
		args:      []string{"tweak"},
		exchanges: []exchange{{req: &proto.TweakPartitionTable{Exclude: []proto.NodeID{}}, ans: &proto.AnswerTweakPartitionTable{Rows: [][]proto.CellInfo{}}}},
		out:       "No change done.\n",
	}, {
		name:      "tweak denied",
		args:      []string{"tweak"},
		exchanges: []exchange{{req: &proto.TweakPartitionTable{Exclude: []proto.NodeID{}}, ans: proto.Err(proto.Denied, "tweak: down nodes must be listed explicitly")}},
		err:       "tweak: down nodes must be listed explicitly",
	}, {
		name:      "kill",
		args:      []string{"kill", "S1"},
		exchanges: []exchange{{req: &proto.SetNodeState{NID: s1, State: proto.NodeDown}, ans: ack("state changed")}},
		out:       "state changed\n",
	}, {
		name:      "drop",
		args:      []string{"drop", "S2"},
		exchanges: []exchange{{req: &proto.SetNodeState{NID: s2, State: proto.NodeUnknown}, ans: ack("node permanently removed")}},
		out:       "node permanently removed\n",
	}, {
		name: "drop bad node",
		args: []string{"drop", "X2"},
		err:  `invalid node "X2": expected a node id like S1, M2`,
	}, {
		name: "prune_orphan all",
		args: []string{"prune_orphan", "1", "all"},
		exchanges: []exchange{
			{req: askStorages(), ans: nodeList(node(proto.Storage, 2, "h", 2, running, nil))},
			{req: &proto.Repair{NIDs: []proto.NodeID{s2}, DryRun: true}, ans: ack("")},
		},
		out: "\n",
	}, {
		name:      "prune_orphan",
		args:      []string{"prune_orphan", "0", "S1", "S3"},
		exchanges: []exchange{{req: &proto.Repair{NIDs: []proto.NodeID{s1, s3}}, ans: ack("")}},
		out:       "\n",
	}, {
		name:      "truncate tid",
		args:      []string{"truncate", "TID:0x3937af2eeeeeeee"},
		exchanges: []exchange{{req: &proto.Truncate{Tid: 0x3937af2eeeeeeee}, ans: ack("")}},
	}, {
		name:      "truncate decimal tid",
		args:      []string{"truncate", "tid:257684787499560686"},
		exchanges: []exchange{{req: &proto.Truncate{Tid: 257684787499560686}, ans: ack("")}},
	}, {
		name:      "truncate timestamp",
		args:      []string{"truncate", "1325421296"},
		exchanges: []exchange{{req: &proto.Truncate{Tid: 0x3937af2eeeeeeee}, ans: ack("")}},
	}, {
		name:      "truncate denied",
		args:      []string{"truncate", "1325421296"},
		exchanges: []exchange{{req: &proto.Truncate{Tid: 0x3937af2eeeeeeee}, ans: proto.Err(proto.Denied, "Truncating after last transaction does nothing")}},
		err:       "Truncating after last transaction does nothing",
	}, {
		name: "check",
		args: []string{"check", "0:S1", "3:", "0:S2"},
		exchanges: []exchange{{req: &proto.CheckReplicas{
			Partitions: []proto.CheckReplicasPartition{{Partition: 0, Reference: s2}, {Partition: 3}},
			MaxTid:     zodb.InvalidTid,
		}, ans: ack("")}},
	}, {
		name: "check all with tids",
		args: []string{"check", ":S2", "1764016257.25", "tid:0x3937af2eeeeeeee"},
		exchanges: []exchange{
			{req: &proto.AskPartitionList{}, ans: &proto.AnswerPartitionList{Rows: make([][]proto.CellInfo, 3)}},
			{req: &proto.CheckReplicas{
				Partitions: []proto.CheckReplicasPartition{{Partition: 0, Reference: s2}, {Partition: 1, Reference: s2}, {Partition: 2, Reference: s2}},
				MinTid:     0x405106ef4444444,
				MaxTid:     0x3937af2eeeeeeee,
			}, ans: ack("")},
		},
	}, {
		name:      "flush_log",
		args:      []string{"flush_log"},
		exchanges: []exchange{{req: &proto.FlushLog{}}},
	}, {
		name: "invalid command",
		args: []string{"print", "foo", "bar"},
		err:  "invalid command: print foo bar",
	}, {
		name: "incomplete command",
		args: []string{"set"},
		err:  "invalid command: set",
	}, {
		name: "extra argument",
		args: []string{"print", "cluster", "x"},
		err:  "print cluster: takes no argument",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeAdmin(t, tc.exchanges)
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := Run(ctx, addr, nil, tc.args, &out)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tc.err != "" && err == nil:
				t.Fatalf("no error, want %q", tc.err)
			case err != nil && err.Error() != tc.err:
				t.Fatalf("error:\ngot  %q\nwant %q", err, tc.err)
			}
			if out.String() != tc.out {
				t.Errorf("output:\ngot:\n%s\nwant:\n%s", out.String(), tc.out)
			}
		})
	}
}

func TestNotConnected(t *testing.T) {
	// A port nobody listens on: the listener is closed at once.
	ln, err := neonet.Listen(context.Background(), "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = Run(context.Background(), addr, nil, []string{"print", "cluster"}, &bytes.Buffer{})
	if err == nil || err.Error() != "ERROR: not connected" || !errors.Is(err, errNotReady) {
		t.Fatalf("got %v, want ERROR: not connected", err)
	}
}

func TestConnectionClosed(t *testing.T) {
	// The admin closes the connection without answering.
	ctx := context.Background()
	ln, err := neonet.Listen(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		l, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		l.Recv(ctx)
		l.Close()
	}()
	err = Run(ctx, ln.Addr().String(), nil, []string{"print", "cluster"}, &bytes.Buffer{})
	<-done
	if err == nil || err.Error() != "ERROR: Connection closed" {
		t.Fatalf("got %v, want ERROR: Connection closed", err)
	}
}

func TestUnexpectedAnswer(t *testing.T) {
	// (An answer of the wrong type is a protocol error: the link is closed.)
	for _, ans := range []proto.Msg{proto.Err(proto.Ack, "x"), proto.Err(proto.OidNotFound, "x")} {
		addr := fakeAdmin(t, []exchange{{req: &proto.AskPrimary{}, ans: ans}})
		err := Run(context.Background(), addr, nil, []string{"print", "primary"}, &bytes.Buffer{})
		if err == nil || !strings.HasPrefix(err.Error(), "unexpected answer") {
			t.Errorf("%T: got %v, want an unexpected answer error", ans, err)
		}
	}
}

func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), "127.0.0.1:1", nil, nil, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"Available commands:\nprint\n  ids\n    Print the last ids",
		"\n  pt\n", "\n  node\n", "\n  cluster\n", "\n  primary\n", "\n  summary\n",
		"\nset\n  cluster\n", "\n  replicas\n", "\ncheck\n", "\nstart\n", "\nadd\n",
		"\ntweak\n", "\ndrop\n", "\nkill\n", "\nprune_orphan\n", "\ntruncate\n", "\nflush_log\n",
		"    Parameters: [min [max [node]]]\n      min: ",
		"or '1325421296' (2012-01-01 12:34:56 UTC).\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("usage lacks %q:\n%s", want, s)
		}
	}
}

func TestDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:9999",
		"127.0.0.1:1234": "127.0.0.1:1234",
		"[::1]":          "[::1]:9999",
		"[::1]:1234":     "[::1]:1234",
		"::1":            "[::1]:9999",
		"localhost":      "localhost:9999",
	} {
		if got := withDefaultPort(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestTidFormats(t *testing.T) {
	for tid, want := range map[zodb.Tid]string{
		tid1: "2024-02-21 20:50:49.662743",
		tid2: "2024-02-21 20:50:00",
		0:    "1900-01-01 00:00:00",
	} {
		if got := TidDatetime(tid); got != want {
			t.Errorf("%016x: got %q, want %q", uint64(tid), got, want)
		}
	}
	for s, want := range map[string]zodb.Tid{
		"1325421296":            0x3937af2eeeeeeee,
		"1764016257.25":         0x405106ef4444444,
		"tid:0x3937af2eeeeeeee": 0x3937af2eeeeeeee,
		"TID:0o17":              017,
		"tid:0b101":             5,
		"tid:1_000":             1000,
	} {
		got, err := parseTid(s)
		if err != nil || got != want {
			t.Errorf("%q: got %x, %v; want %x", s, uint64(got), err, uint64(want))
		}
	}
	for _, s := range []string{"tid:", "tid:-1", "tid:012", "abc", "tid:0x1__2", "-1e20", "nan"} {
		if tid, err := parseTid(s); err == nil {
			t.Errorf("%q: no error (%x)", s, uint64(tid))
		}
	}
	for ts, want := range map[float64]string{
		1764016257.123456789: "2025-11-24 20:30:57.123457",
		1764016257.0:         "2025-11-24 20:30:57",
		1764016257.5:         "2025-11-24 20:30:57.500000",
		1764016257.9999995:   "2025-11-24 20:30:58", // rounded up to the next second
	} {
		if got := unixDatetime(ts); got != want {
			t.Errorf("%v: got %q, want %q", ts, got, want)
		}
	}
}
