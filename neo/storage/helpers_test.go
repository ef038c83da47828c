package storage

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/zodb"
)

const cluster = "test"

var (
	m1 = proto.NewNodeID(proto.Master, 1)
	s1 = proto.NewNodeID(proto.Storage, 1)
	s2 = proto.NewNodeID(proto.Storage, 2)
	c1 = proto.NewNodeID(proto.Client, 1)
	c2 = proto.NewNodeID(proto.Client, 2)
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("STORAGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func timeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fakeMaster is a primary master made of raw links: tests drive it
// packet by packet.
type fakeMaster struct {
	t     testing.TB
	ln    *neonet.Listener
	tls   *tls.Config // of every node of the test
	mu    sync.Mutex
	ts    float64
	links map[proto.NodeID]*masterLink
}

// masterLink is the fake master's link with one storage.
type masterLink struct {
	fm   *fakeMaster
	nid  proto.NodeID
	link *neonet.Link
	id   *proto.RequestIdentification
	in   chan *neonet.Request
	done chan struct{}
}

func newFakeMaster(t testing.TB) *fakeMaster { return newFakeMasterTLS(t, nil) }

func newFakeMasterTLS(t testing.TB, tlsConf *tls.Config) *fakeMaster {
	ln, err := neonet.Listen(context.Background(), "127.0.0.1:0", tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	fm := &fakeMaster{t: t, ln: ln, tls: tlsConf, links: map[proto.NodeID]*masterLink{}}
	t.Cleanup(func() {
		ln.Close()
		for _, ml := range fm.links {
			ml.link.Close()
			<-ml.done
		}
	})
	return fm
}

func (fm *fakeMaster) addr() string { return fm.ln.Addr().String() }

// nextTime returns the next node information timestamp.
func (fm *fakeMaster) nextTime() float64 {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.ts += 1
	return fm.ts
}

// accept accepts the identification of a storage and gives it nid.
func (fm *fakeMaster) accept(ctx context.Context, nid proto.NodeID) *masterLink {
	fm.t.Helper()
	link, err := fm.ln.Accept(ctx)
	if err != nil {
		fm.t.Fatal(err)
	}
	r, err := link.Recv(ctx)
	if err != nil {
		fm.t.Fatal(err)
	}
	id, ok := r.Msg.(*proto.RequestIdentification)
	if !ok || id.NodeType != proto.Storage || id.ClusterName != cluster {
		fm.t.Fatalf("identification: got %#v", r.Msg)
	}
	if err := r.Reply(ctx, &proto.AcceptIdentification{NodeType: proto.Master, NID: m1, YourNID: nid}); err != nil {
		fm.t.Fatal(err)
	}
	ml := &masterLink{fm: fm, nid: nid, link: link, id: id, in: make(chan *neonet.Request, 100), done: make(chan struct{})}
	go func() {
		defer close(ml.done)
		defer close(ml.in)
		for {
			r, err := link.Recv(context.Background())
			if err != nil {
				return
			}
			ml.in <- r
		}
	}()
	fm.mu.Lock()
	fm.links[nid] = ml
	fm.mu.Unlock()
	return ml
}

// refuse answers the next identification with Error(PROTOCOL_ERROR, msg),
// as a primary master refuses a node, and returns the request.
func (fm *fakeMaster) refuse(ctx context.Context, msg string) *proto.RequestIdentification {
	fm.t.Helper()
	link, err := fm.ln.Accept(ctx)
	if err != nil {
		fm.t.Fatal(err)
	}
	defer link.Close()
	r, err := link.Recv(ctx)
	if err != nil {
		fm.t.Fatal(err)
	}
	id, ok := r.Msg.(*proto.RequestIdentification)
	if !ok {
		fm.t.Fatalf("identification: got %#v", r.Msg)
	}
	r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", msg))
	return id
}

func (ml *masterLink) notify(ctx context.Context, m proto.Msg) {
	ml.fm.t.Helper()
	if err := ml.link.Notify(ctx, m); err != nil {
		ml.fm.t.Fatal(err)
	}
}

func (ml *masterLink) ask(ctx context.Context, m proto.Msg) proto.Msg {
	ml.fm.t.Helper()
	a, err := ml.link.Ask(ctx, m)
	if err != nil {
		ml.fm.t.Fatalf("%T: %v", m, err)
	}
	return a
}

// expect returns the next packet the storage sent, which must be of type T.
func expect[T proto.Msg](ctx context.Context, t testing.TB, ml *masterLink) (T, *neonet.Request) {
	t.Helper()
	select {
	case r, ok := <-ml.in:
		if !ok {
			t.Fatalf("expected %T: master link closed", *new(T))
		}
		m, ok := r.Msg.(T)
		if !ok {
			t.Fatalf("expected %T, got %#v", *new(T), r.Msg)
		}
		return m, r
	case <-ctx.Done():
		t.Fatalf("expected %T: %v", *new(T), ctx.Err())
	}
	panic("unreachable")
}

// nodeEntry describes a node in NotifyNodeInformation.
func storageEntry(nid proto.NodeID, addr string, state proto.NodeState, idTime float64) proto.NodeInfo {
	a, err := parseAddress(addr)
	if err != nil {
		panic(err)
	}
	return proto.NodeInfo{Type: proto.Storage, Addr: proto.Some(a), NID: nid, State: state, IDTime: proto.Some(idTime)}
}

func clientEntry(nid proto.NodeID, idTime float64) proto.NodeInfo {
	return proto.NodeInfo{Type: proto.Client, NID: nid, State: proto.NodeRunning, IDTime: proto.Some(idTime)}
}

// ptRows returns np rows with the given cells in each.
func ptRows(np int, cells ...proto.CellInfo) [][]proto.CellInfo {
	rows := make([][]proto.CellInfo, np)
	for i := range rows {
		rows[i] = append([]proto.CellInfo(nil), cells...)
	}
	return rows
}

// node is a storage node run by a test.
type node struct {
	s      *Storage
	db     *sqlite.DB
	path   string
	cancel context.CancelFunc
	done   chan error
}

func startNode(t testing.TB, fm *fakeMaster, path string, nid proto.NodeID) *node {
	t.Helper()
	return startNodeTLS(t, []string{fm.addr()}, path, nid, fm.tls)
}

func startNodeWith(t testing.TB, masters []string, path string, nid proto.NodeID) *node {
	t.Helper()
	return startNodeTLS(t, masters, path, nid, nil)
}

func startNodeTLS(t testing.TB, masters []string, path string, nid proto.NodeID, tlsConf *tls.Config) *node {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{Name: cluster})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{Cluster: cluster, Bind: "127.0.0.1:0", Masters: masters,
		NodeID: nid, Backend: db, TLS: tlsConf, Logger: testLogger(t)})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{s: s, db: db, path: path, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- s.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop cancels the node and waits for Run to return.
func (n *node) stop(t testing.TB) error {
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.cancel = nil
	err := <-n.done
	n.db.Close()
	if err != nil {
		t.Errorf("Run: %v", err)
	}
	return err
}

// operational makes a node operational with the given partition table:
// identification, node list, partition table, StartOperation, NotifyReady.
func operational(ctx context.Context, t testing.TB, fm *fakeMaster, nid proto.NodeID, n *node, nodes []proto.NodeInfo, np int, cells ...proto.CellInfo) *masterLink {
	t.Helper()
	ml := fm.accept(ctx, nid)
	ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: nodes})
	ml.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)), NumReplicas: 0, Rows: ptRows(np, cells...)})
	ml.notify(ctx, &proto.StartOperation{Backup: false})
	expect[*proto.NotifyReady](ctx, t, ml)
	return ml
}

// client is a fake client linked with a storage.
type client struct {
	t    testing.TB
	nid  proto.NodeID
	link *neonet.Link
}

func dialClient(ctx context.Context, t testing.TB, addr string, nid proto.NodeID, idTime float64) *client {
	t.Helper()
	return dialClientTLS(ctx, t, addr, nid, idTime, nil)
}

func dialClientTLS(ctx context.Context, t testing.TB, addr string, nid proto.NodeID, idTime float64, tlsConf *tls.Config) *client {
	t.Helper()
	link, err := neonet.Dial(ctx, addr, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	a, err := link.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Client, NID: nid, ClusterName: cluster,
		IDTimestamp: proto.Some(idTime), Extra: proto.Dict{}})
	if err != nil {
		t.Fatalf("client identification: %v", err)
	}
	acc, ok := a.(*proto.AcceptIdentification)
	if !ok || acc.NodeType != proto.Storage || acc.YourNID != nid {
		t.Fatalf("client identification: %#v", a)
	}
	return &client{t: t, nid: nid, link: link}
}

func (c *client) ask(ctx context.Context, m proto.Msg) proto.Msg {
	c.t.Helper()
	a, err := c.link.Ask(ctx, m)
	if err != nil {
		c.t.Fatalf("%T: %v", m, err)
	}
	return a
}

// askErr asks m and expects an Error of the given code.
func (c *client) askErr(ctx context.Context, m proto.Msg, code proto.ErrorCode) {
	c.t.Helper()
	a, err := c.link.Ask(ctx, m)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != code {
		c.t.Fatalf("%T: want error %v, got %#v, %v", m, code, a, err)
	}
}

func storeReq(ttid zodb.Tid, oid zodb.Oid, serial zodb.Tid, data string) *proto.AskStoreObject {
	return &proto.AskStoreObject{Oid: oid, Serial: serial, Checksum: sha1.Sum([]byte(data)), Data: []byte(data),
		DataSerial: zodb.InvalidTid, TTid: ttid}
}

// storeOK stores and expects a write lock.
func (c *client) storeOK(ctx context.Context, ttid zodb.Tid, oid zodb.Oid, serial zodb.Tid, data string) {
	c.t.Helper()
	a := c.ask(ctx, storeReq(ttid, oid, serial, data)).(*proto.AnswerStoreObject)
	if a.Conflict != zodb.InvalidTid {
		c.t.Fatalf("store %s in %s: conflict %s", oid, ttid, a.Conflict)
	}
}

// commit runs a whole commit of data (oid → data) as ttid, final tid tid.
func commit(ctx context.Context, t testing.TB, c *client, ml *masterLink, ttid, tid zodb.Tid, serials map[zodb.Oid]zodb.Tid, data map[zodb.Oid]string) {
	t.Helper()
	var oids []zodb.Oid
	for oid, d := range data {
		c.storeOK(ctx, ttid, oid, serials[oid], d)
		oids = append(oids, oid)
	}
	c.ask(ctx, &proto.AskStoreTransaction{TTid: ttid, User: []byte("user"), Description: []byte("desc " + ttid.String()), Oids: oids})
	lockAndUnlock(ctx, t, ml, ttid, tid)
}

func lockAndUnlock(ctx context.Context, t testing.TB, ml *masterLink, ttid, tid zodb.Tid) {
	t.Helper()
	a := ml.ask(ctx, &proto.AskLockInformation{TTid: ttid, Tid: tid}).(*proto.AnswerInformationLocked)
	if a.TTid != ttid {
		t.Fatalf("AnswerInformationLocked: %s, want %s", a.TTid, ttid)
	}
	ml.notify(ctx, &proto.NotifyUnlockInformation{TTid: ttid})
}

func load(ctx context.Context, t testing.TB, c *client, oid zodb.Oid, at, before zodb.Tid) *proto.AnswerObject {
	t.Helper()
	return c.ask(ctx, &proto.AskObject{Oid: oid, At: at, Before: before}).(*proto.AnswerObject)
}

func checkObject(t testing.TB, a *proto.AnswerObject, serial, next zodb.Tid, data string) {
	t.Helper()
	if a.Serial != serial || a.NextSerial != next || string(a.Data) != data {
		t.Fatalf("object %s: serial %s next %s data %q; want %s %s %q", a.Oid, a.Serial, a.NextSerial, a.Data, serial, next, data)
	}
	if sha1.Sum(a.Data) != a.Checksum {
		t.Fatalf("object %s@%s: checksum mismatch", a.Oid, a.Serial)
	}
	if c, ok := a.Compression.Get(); !ok || c != 0 {
		t.Fatalf("object %s@%s: compression %v", a.Oid, a.Serial, a.Compression)
	}
}

func dbPath(t testing.TB, name string) string {
	return filepath.Join(t.TempDir(), name)
}
