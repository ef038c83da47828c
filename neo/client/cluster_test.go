package client_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func commit(t *testing.T, stor *zodb.Storage, oid zodb.Oid, serial zodb.Tid, data []byte) zodb.Tid {
	t.Helper()
	tid, err := tryCommit(testCtx(t), stor, oid, serial, data)
	if err != nil {
		t.Fatalf("commit %v: %v", oid, err)
	}
	return tid
}

func tryCommit(ctx context.Context, stor *zodb.Storage, oid zodb.Oid, serial zodb.Tid, data []byte) (zodb.Tid, error) {
	txn, err := stor.Begin(ctx, zodb.TxnMeta{Description: []byte("test")})
	if err != nil {
		return 0, err
	}
	if err := txn.Store(ctx, oid, serial, data); err != nil {
		txn.Abort(ctx)
		return 0, err
	}
	if _, err := txn.Vote(ctx); err != nil {
		txn.Abort(ctx)
		return 0, err
	}
	return txn.Finish(ctx)
}

func loadAt(t *testing.T, stor *zodb.Storage, oid zodb.Oid, at zodb.Tid) ([]byte, zodb.Tid) {
	t.Helper()
	data, serial, _, err := stor.Load(testCtx(t), zodb.Xid{Oid: oid, At: at})
	if err != nil {
		t.Fatalf("load %v at %v: %v", oid, at, err)
	}
	return data, serial
}

// TestWatchOtherClient: a commit by one client reaches the watchers of
// another, and that client then loads what was committed.
func TestWatchOtherClient(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	a := c.Open(t, "C1", nil)
	b := c.Open(t, "C2", nil)
	ch := make(chan zodb.Event, 16)
	at0 := b.AddWatch(ch)
	defer b.DelWatch(ch)

	ctx := testCtx(t)
	oid, err := a.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tid := commit(t, a, oid, 0, []byte("hello"))
	if tid <= at0 {
		t.Fatalf("commit tid %v not after the watch start %v", tid, at0)
	}
	select {
	case ev := <-ch:
		ce, ok := ev.(*zodb.CommitEvent)
		if !ok || ce.Tid != tid || !slices.Equal(ce.Changed, []zodb.Oid{oid}) {
			t.Fatalf("event %#v, want commit %v of %v", ev, tid, oid)
		}
	case <-ctx.Done():
		t.Fatal("no event")
	}
	if last, err := b.LastTid(ctx); err != nil || last != tid {
		t.Errorf("other client: last tid %v (%v), want %v", last, err, tid)
	}
	if data, serial := loadAt(t, b, oid, zodb.TidMax); string(data) != "hello" || serial != tid {
		t.Errorf("other client loads %q at %v, want %q at %v", data, serial, "hello", tid)
	}
}

// twoClients starts a cluster of two storages holding every partition
// twice, with two clients, and allocates an oid.
func twoClients(t *testing.T) (c *cluster.Cluster, a, b *zodb.Storage, oid zodb.Oid) {
	t.Helper()
	c = cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	a = c.Open(t, "C1", nil)
	b = c.Open(t, "C2", nil)
	oid, err := a.NewOid(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return c, a, b, oid
}

// TestConflict: two clients store the same object from the same revision;
// the second gets a ConflictError with both serials.
func TestConflict(t *testing.T) {
	_, a, b, oid := twoClients(t)
	ctx := testCtx(t)
	t1 := commit(t, a, oid, 0, []byte("v1"))
	t2 := commit(t, a, oid, t1, []byte("v2 by a"))
	_, err := tryCommit(ctx, b, oid, t1, []byte("v2 by b"))
	var ce *zodb.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("stale store: %v, want *zodb.ConflictError", err)
	}
	if ce.Oid != oid || ce.ReadSerial != t1 || ce.CommittedSerial != t2 {
		t.Errorf("conflict %+v, want oid %v read %v committed %v", ce, oid, t1, t2)
	}
	// The failed transaction left no lock: b commits on the right serial.
	t3 := commit(t, b, oid, t2, []byte("v3 by b"))
	if data, serial := loadAt(t, a, oid, zodb.TidMax); string(data) != "v3 by b" || serial != t3 {
		t.Errorf("load %q at %v, want v3 by b at %v", data, serial, t3)
	}
}

// TestFutureSerial: a store or check on a serial after every committed
// transaction (which no client read) is a conflict found by the client: it
// is not sent to the storages (NEO/py's stop on an assertion when asked to
// lock an object on such a serial). A serial this client does not know yet,
// committed by another client, is sent.
func TestFutureSerial(t *testing.T) {
	c, a, b, oid := twoClients(t)
	ctx := testCtx(t)
	t1 := commit(t, a, oid, 0, []byte("v1"))
	future := t1 + 1
	var sent atomic.Int32
	for _, code := range []uint16{proto.CodeAskStoreObject, proto.CodeAskCheckCurrentSerial} {
		for _, s := range []string{"S1", "S2"} {
			tr := c.Net.OnPacket("C1", s, code, func(p faultnet.Packet) bool {
				m, err := p.Decode()
				if err != nil {
					return false
				}
				switch m := m.(type) {
				case *proto.AskStoreObject:
					if m.Serial == future {
						sent.Add(1)
					}
				case *proto.AskCheckCurrentSerial:
					if m.Serial == future {
						sent.Add(1)
					}
				}
				return false
			})
			defer tr.Stop()
		}
	}
	_, err := tryCommit(ctx, a, oid, future, []byte("future"))
	var ce *zodb.ConflictError
	if !errors.As(err, &ce) || ce.Oid != oid || ce.ReadSerial != future || ce.CommittedSerial != t1 {
		t.Errorf("store on a future serial: %v, want a conflict (read %v, committed %v)", err, future, t1)
	}
	txn, err := a.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.CheckCurrentSerial(ctx, oid, future); !errors.As(err, &ce) {
		t.Errorf("check of a future serial: %v, want a conflict", err)
	}
	txn.Abort(ctx)
	if n := sent.Load(); n != 0 {
		t.Errorf("%d requests on the future serial reached the storages", n)
	}
	// b commits; a, which may not know of it yet, stores on b's serial.
	t2 := commit(t, b, oid, t1, []byte("v2 by b"))
	if _, err := tryCommit(ctx, a, oid, t2, []byte("v3 by a")); err != nil {
		t.Errorf("store on another client's fresh serial: %v", err)
	}
}

// TestLoadOld: loads at old tids see the revisions of then, with their
// next serials, and before the creation nothing.
func TestLoadOld(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	stor := c.Open(t, "C1", nil)
	ctx := testCtx(t)
	oid, err := stor.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tids []zodb.Tid
	var serial zodb.Tid
	for i := range 4 {
		serial = commit(t, stor, oid, serial, []byte{'v', byte('0' + i)})
		tids = append(tids, serial)
	}
	for i, tid := range tids {
		for _, at := range []zodb.Tid{tid, tid + 1} {
			data, s, next, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: at})
			if err != nil {
				t.Fatalf("load at %v: %v", at, err)
			}
			var wantNext zodb.Tid
			if i+1 < len(tids) {
				wantNext = tids[i+1]
			}
			if string(data) != string([]byte{'v', byte('0' + i)}) || s != tid || next != wantNext {
				t.Errorf("load at %v: %q serial %v next %v, want v%d serial %v next %v", at, data, s, next, i, tid, wantNext)
			}
		}
	}
	_, _, _, err = stor.Load(ctx, zodb.Xid{Oid: oid, At: tids[0] - 1})
	var nd *zodb.NoDataError
	if !errors.As(err, &nd) || nd.DeletedAt != 0 {
		t.Errorf("load before creation: %v, want *NoDataError (not yet created)", err)
	}
}

// TestReadFromOtherReplica: with every partition on two storages, the
// client still loads and commits when one storage is cut off from it, and
// when it is stopped.
func TestReadFromOtherReplica(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1, Partitions: 3})
	stor := c.Open(t, "C1", nil)
	ctx := testCtx(t)
	oids, err := stor.NewOids(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	serials := map[zodb.Oid]zodb.Tid{}
	for _, oid := range oids {
		serials[oid] = commit(t, stor, oid, 0, []byte("data of "+oid.String()))
	}
	check := func(what string) {
		t.Helper()
		for _, oid := range oids {
			data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
			if err != nil {
				t.Fatalf("%s: load %v: %v", what, oid, err)
			}
			if string(data) != "data of "+oid.String() || serial != serials[oid] {
				t.Errorf("%s: load %v: %q at %v", what, oid, data, serial)
			}
		}
	}
	check("both storages")

	// The link between the client and S1 is cut: every read goes to S2.
	c.Net.Cut("C1", c.StorageName(0))
	check("S1 cut off")
	c.Net.Heal("C1", c.StorageName(0))

	// S1 stops: the master outdates its cells; reads and commits go on.
	c.KillStorage(0)
	check("S1 killed")
	tid := commit(t, stor, oids[0], serials[oids[0]], []byte("after the kill"))
	if data, serial := loadAt(t, stor, oids[0], zodb.TidMax); string(data) != "after the kill" || serial != tid {
		t.Errorf("after the kill: load %q at %v, want new data at %v", data, serial, tid)
	}
}

// TestMasterReconnect: a client cut off from the master reconnects when
// the link is back, and its watchers get the transactions committed
// meanwhile, in order; then it commits again.
func TestMasterReconnect(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	a := c.Open(t, "C1", nil)
	b := c.Open(t, "C2", nil)
	ctx := testCtx(t)
	ch := make(chan zodb.Event, 16)
	a.AddWatch(ch)
	defer a.DelWatch(ch)
	oids, err := b.NewOids(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}

	c.Net.Cut("C1", "M1")
	t1 := commit(t, b, oids[0], 0, []byte("x1"))
	t2 := commit(t, b, oids[1], 0, []byte("y1"))
	c.Net.Heal("C1", "M1")

	for _, want := range []struct {
		tid zodb.Tid
		oid zodb.Oid
	}{{t1, oids[0]}, {t2, oids[1]}} {
		select {
		case ev := <-ch:
			ce, ok := ev.(*zodb.CommitEvent)
			if !ok || ce.Tid != want.tid || !slices.Equal(ce.Changed, []zodb.Oid{want.oid}) {
				t.Fatalf("event %#v, want commit %v of %v", ev, want.tid, want.oid)
			}
		case <-ctx.Done():
			t.Fatalf("no event for %v after the master link came back", want.tid)
		}
	}
	t3 := commit(t, a, oids[0], t1, []byte("x2"))
	if data, serial := loadAt(t, b, oids[0], zodb.TidMax); string(data) != "x2" || serial != t3 {
		t.Errorf("load %q at %v, want x2 at %v", data, serial, t3)
	}
}

// TestDeadlockAvoidance: two transactions store two objects in opposite
// orders. The storage tells the younger one to give its lock back
// (NotifyDeadlock); its client relocks (AskRelockObject), the older one
// commits and the younger one gets a conflict instead of waiting forever.
func TestDeadlockAvoidance(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 1})
	a := c.Open(t, "C1", nil)
	b := c.Open(t, "C2", nil)
	ctx := testCtx(t)
	oids, err := a.NewOids(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	x, y := oids[0], oids[1]
	sx := commit(t, a, x, 0, []byte("x0"))
	sy := commit(t, a, y, 0, []byte("y0"))

	ta, err := a.Begin(ctx, zodb.TxnMeta{}) // older
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Abort(ctx)
	tb, err := b.Begin(ctx, zodb.TxnMeta{}) // younger
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Abort(ctx)
	// Stores are answered later: a load on the same link after one is a
	// barrier (the storage handles a link's requests in order).
	barrier := func(stor *zodb.Storage) {
		t.Helper()
		loadAt(t, stor, x, sx)
	}
	if err := ta.Store(ctx, y, sy, []byte("y by a")); err != nil {
		t.Fatal(err)
	}
	barrier(a)
	if err := tb.Store(ctx, x, sx, []byte("x by b")); err != nil {
		t.Fatal(err)
	}
	barrier(b)
	if err := ta.Store(ctx, x, sx, []byte("x by a")); err != nil { // waits for b's lock
		t.Fatal(err)
	}
	if err := tb.Store(ctx, y, sy, []byte("y by b")); err != nil { // waits for a's lock
		t.Fatal(err)
	}
	vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := ta.Vote(vctx); err != nil {
		t.Fatalf("older transaction: vote: %v (deadlock not avoided?)", err)
	}
	tid, err := ta.Finish(vctx)
	if err != nil {
		t.Fatalf("older transaction: finish: %v", err)
	}
	_, err = tb.Vote(vctx)
	var ce *zodb.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("younger transaction: vote: %v, want a conflict", err)
	}
	if ce.CommittedSerial != tid {
		t.Errorf("conflict %v, want with the older transaction's %v", ce, tid)
	}
	for oid, want := range map[zodb.Oid]string{x: "x by a", y: "y by a"} {
		if data, serial := loadAt(t, b, oid, zodb.TidMax); string(data) != want || serial != tid {
			t.Errorf("load %v: %q at %v, want %q at %v", oid, data, serial, want, tid)
		}
	}
}

// TestFailedVote: a storage the client cannot reach during a commit, while
// the master still sees it running, is reported with FailedVote; the commit
// goes on with the other replica, which then serves the data.
func TestFailedVote(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1, Partitions: 2})
	stor := c.Open(t, "C1", nil)
	ctx := testCtx(t)
	oid, err := stor.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s0 := commit(t, stor, oid, 0, []byte("v0"))

	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort(ctx)
	if err := txn.Store(ctx, oid, s0, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	c.Net.Cut("C1", c.StorageName(0))
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatalf("vote with one storage cut off: %v", err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		t.Fatalf("finish with one storage cut off: %v", err)
	}
	if data, serial := loadAt(t, stor, oid, zodb.TidMax); string(data) != "v1" || serial != tid {
		t.Errorf("load %q at %v, want v1 at %v", data, serial, tid)
	}
}

// TestStoreLinkLostQuietly: the link to a storage closes while none of the
// transaction's requests is in flight (its stores were answered). The
// storage forgets the transaction's stores with the link; the client must
// not go on over a new link (the storage would vote and commit the
// transaction without them) but count the storage as failed, so that the
// master outdates its cells and it catches up by replication.
func TestStoreLinkLostQuietly(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1, Partitions: 1})
	cl := c.Client(t, "C1", nil)
	ctx := testCtx(t)
	oids, err := cl.NewOids(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	txn, err := cl.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort(ctx)
	for i, oid := range oids {
		if i == len(oids)/2 {
			// The first stores are answered by both storages; then the
			// link to S1 closes and can be made again.
			if err := client.WaitStored(ctx, txn); err != nil {
				t.Fatal(err)
			}
			c.Net.Cut("C1", c.StorageName(0))
			c.Net.Heal("C1", c.StorageName(0))
		}
		if err := txn.Store(ctx, oid, 0, []byte("new "+oid.String())); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatalf("vote: %v", err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	if err := c.WaitUpToDate(ctx); err != nil {
		t.Fatal(err)
	}
	// S1 alone serves everything.
	c.KillStorage(1)
	for _, oid := range oids {
		data, serial, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
		if err != nil || string(data) != "new "+oid.String() || serial != tid {
			t.Errorf("load %v from S1: %q at %v, %v; want the commit at %v", oid, data, serial, err, tid)
		}
	}
}

// TestMetadataStorageLost: the only storage a transaction writes nothing
// to but its metadata (a cell of the ttid's partition) cannot be reached at
// the vote. As with NEO/py's client, it is one of the transaction's
// storages: reported to the master as failed, which outdates its cells
// instead of asking it to lock, and the commit goes on with the other
// cells.
func TestMetadataStorageLost(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 3, Replicas: 1, Partitions: 3})
	cl := c.Client(t, "C1", nil)
	ctx := testCtx(t)
	txn, err := cl.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort(ctx)
	meta := client.WriteCells(cl, uint64(client.TTid(txn)))
	// An oid of another partition: of the ttid's two cells, one is not
	// among the oid's (with 3 storages, 3 partitions, 2 copies each).
	var oid zodb.Oid
	var metaOnly proto.NodeID
	for metaOnly == 0 {
		oids, err := cl.NewOids(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		oid = oids[0]
		cells := client.WriteCells(cl, uint64(oid))
		for _, nid := range meta {
			if !slices.Contains(cells, nid) {
				metaOnly = nid
			}
		}
	}
	if err := txn.Store(ctx, oid, 0, []byte("data")); err != nil {
		t.Fatal(err)
	}
	locked := c.Net.OnPacket("M1", metaOnly.String(), proto.CodeAskLockInformation, func(faultnet.Packet) bool { return true })
	defer locked.Stop()
	c.Net.Cut("C1", metaOnly.String())
	defer c.Net.Heal("C1", metaOnly.String())
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatalf("vote with %v cut off: %v", metaOnly, err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		t.Fatalf("finish with %v cut off: %v", metaOnly, err)
	}
	select {
	case <-locked.Fired():
		t.Errorf("the master asked %v, which did not take the vote, to lock the transaction", metaOnly)
	default:
	}
	c.Net.Heal("C1", metaOnly.String())
	if err := c.WaitUpToDate(ctx); err != nil {
		t.Fatal(err)
	}
	data, serial, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
	if err != nil || string(data) != "data" || serial != tid {
		t.Errorf("load %q at %v, %v; want the commit at %v", data, serial, err, tid)
	}
}

// TestFinishOrphan: the master's answer to AskFinishTransaction is lost
// with the connection; the client asks the next session for the final tid
// (AskFinalTID) and returns it.
func TestFinishOrphan(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	a := c.Open(t, "C1", nil)
	b := c.Open(t, "C2", nil)
	ctx := testCtx(t)
	ch := make(chan zodb.Event, 16)
	b.AddWatch(ch)
	defer b.DelWatch(ch)
	oid, err := a.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txn, err := a.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort(ctx)
	if err := txn.Store(ctx, oid, 0, []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	c.Net.Blackhole("M1", "C1") // the answer to finish will not come
	type result struct {
		tid zodb.Tid
		err error
	}
	done := make(chan result, 1)
	go func() {
		tid, err := txn.Finish(ctx)
		done <- result{tid, err}
	}()
	// The other client sees the commit: the answer is held back.
	var committed zodb.Tid
	select {
	case ev := <-ch:
		ce, ok := ev.(*zodb.CommitEvent)
		if !ok {
			t.Fatalf("event %#v", ev)
		}
		committed = ce.Tid
	case <-ctx.Done():
		t.Fatal("the commit was not seen by the other client")
	}
	c.Net.Cut("M1", "C1") // drops the held answer with the connection
	c.Net.Heal("M1", "C1")
	r := <-done
	if r.err != nil {
		t.Fatalf("finish after losing the answer: %v", r.err)
	}
	if r.tid != committed {
		t.Errorf("finish returned %v, the commit is %v", r.tid, committed)
	}
	if data, serial := loadAt(t, a, oid, zodb.TidMax); string(data) != "orphan" || serial != committed {
		t.Errorf("load %q at %v", data, serial)
	}
}

// TestBlackholedStorage: a storage whose answers no longer come (a
// partition that closes nothing) holds reads only for the read timeout;
// they go to the other replica.
func TestBlackholedStorage(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1, Partitions: 3})
	ctx := testCtx(t)
	stor, err := zodb.Open(ctx, c.TestURL("C1", "read_timeout=200ms"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	oids, err := stor.NewOids(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	serials := map[zodb.Oid]zodb.Tid{}
	for _, oid := range oids {
		serials[oid] = commit(t, stor, oid, 0, []byte("data"))
	}
	c.Net.Blackhole(c.StorageName(0), "C1")
	defer c.Net.Heal(c.StorageName(0), "C1")
	for round := range 2 {
		for _, oid := range oids {
			if _, serial := loadAt(t, stor, oid, zodb.TidMax); serial != serials[oid] {
				t.Errorf("round %d: load %v: serial %v, want %v", round, oid, serial, serials[oid])
			}
		}
	}
}

// TestWrongClusterName: a client naming another cluster is refused, and
// says why.
func TestWrongClusterName(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	stor, err := zodb.Open(ctx, "neo://other@"+c.MasterAddrs()[0], nil)
	if err == nil {
		stor.Close()
		t.Fatal("client of another cluster connected")
	}
	if !strings.Contains(err.Error(), "cluster name") {
		t.Errorf("error %q does not tell the cluster name was refused", err)
	}
}

// TestIterateBatches: iteration goes past the batches of tids asked per
// partition, in order, with every transaction once, and stops at tidMax.
func TestIterateBatches(t *testing.T) {
	const n = 250
	c := cluster.Start(t, cluster.Options{Storages: 1, Partitions: 3})
	stor := c.Open(t, "C1", nil)
	ctx := testCtx(t)
	oid, err := stor.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tids []zodb.Tid
	var serial zodb.Tid
	for i := range n {
		serial = commit(t, stor, oid, serial, []byte{byte(i)})
		tids = append(tids, serial)
	}
	for _, r := range []struct{ min, max zodb.Tid }{
		{0, zodb.TidMax},
		{tids[10], tids[210]},
		{tids[99] + 1, tids[100]},
	} {
		var got []zodb.Tid
		it := stor.Iterate(ctx, r.min, r.max)
		for {
			info, dit, err := it.NextTxn(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			d, err := dit.NextData(ctx)
			if err != nil || d.Oid != oid || d.Tid != info.Tid {
				t.Fatalf("txn %v: record %+v %v", info.Tid, d, err)
			}
			got = append(got, info.Tid)
		}
		var want []zodb.Tid
		for _, tid := range tids {
			if r.min <= tid && tid <= r.max {
				want = append(want, tid)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("iterate %v..%v: %d transactions, want %d", r.min, r.max, len(got), len(want))
		}
	}
}
