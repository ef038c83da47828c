package storage

import (
	"context"
	"crypto/sha1"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/zodb"
)

const np = 4

// single starts one storage S1 owning every partition, known clients C1
// and C2, and returns it with its master link and a linked client C1.
func single(t *testing.T) (context.Context, *fakeMaster, *node, *masterLink, *client) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n := startNode(t, fm, dbPath(t, "s1.db"), proto.NoNode)
	ml := operational(ctx, t, fm, s1, n, []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1),
		clientEntry(c1, 2), clientEntry(c2, 3), storageEntry(s2, "127.0.0.1:1", proto.NodeRunning, 4)},
		np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})
	c := dialClient(ctx, t, n.s.Addr(), c1, 2)
	return ctx, fm, n, ml, c
}

func TestIdentificationAnnouncesRealAddress(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n := startNode(t, fm, dbPath(t, "s.db"), proto.NoNode)
	ml := fm.accept(ctx, s1)
	addr, ok := ml.id.Address.Get()
	if !ok || addr.String() != n.s.Addr() || addr.Port == 0 {
		t.Fatalf("announced address %v, listening on %s", ml.id.Address, n.s.Addr())
	}
	if ml.id.NID != proto.NoNode {
		t.Fatalf("new node proposed nid %s", ml.id.NID)
	}
	// recovery: nothing stored yet
	a := ml.ask(ctx, &proto.AskRecovery{}).(*proto.AnswerRecovery)
	if a.PTid.Ok || a.BackupTid != zodb.InvalidTid || a.TruncateTid != zodb.InvalidTid {
		t.Fatalf("AnswerRecovery of a new node: %+v", a)
	}
	// the node id is persisted
	ml.ask(ctx, &proto.AskPartitionTable{})
	v, ok, err := n.db.Config(ctx, backend.KeyNID)
	if err != nil || !ok || v != "1" {
		t.Fatalf("stored nid %q %v %v", v, ok, err)
	}
}

func TestCommitAndLoad(t *testing.T) {
	ctx, _, _, ml, c := single(t)
	const ttid, tid = zodb.Tid(0x100), zodb.Tid(0x104)
	commit(ctx, t, c, ml, ttid, tid, nil, map[zodb.Oid]string{1: "hello", 2: "world"})

	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, tid+1), tid, zodb.InvalidTid, "hello")
	checkObject(t, load(ctx, t, c, 2, tid, zodb.InvalidTid), tid, zodb.InvalidTid, "world")
	c.askErr(ctx, &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: tid}, proto.OidNotFound)
	c.askErr(ctx, &proto.AskObject{Oid: 3, At: zodb.InvalidTid, Before: zodb.InvalidTid}, proto.OidDoesNotExist)

	// a second revision, based on the first
	const ttid2, tid2 = zodb.Tid(0x200), zodb.Tid(0x204)
	commit(ctx, t, c, ml, ttid2, tid2, map[zodb.Oid]zodb.Tid{1: tid}, map[zodb.Oid]string{1: "hello2"})
	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, tid2), tid, tid2, "hello")
	checkObject(t, load(ctx, t, c, 1, tid, zodb.InvalidTid), tid, tid2, "hello")
	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, zodb.InvalidTid), tid2, zodb.InvalidTid, "hello2")

	// final tid, from the storage
	if a := c.ask(ctx, &proto.AskFinalTID{TTid: ttid2}).(*proto.AnswerFinalTID); a.Tid != tid2 {
		t.Fatalf("AskFinalTID: %s", a.Tid)
	}
	if a := c.ask(ctx, &proto.AskFinalTID{TTid: 0x300}).(*proto.AnswerFinalTID); a.Tid != zodb.InvalidTid {
		t.Fatalf("AskFinalTID of unknown: %s", a.Tid)
	}

	// history
	h := c.ask(ctx, &proto.AskObjectHistory{Oid: 1, First: 0, Last: 10}).(*proto.AnswerObjectHistory)
	if len(h.History) != 2 || h.History[0] != (proto.HistoryEntry{Serial: tid2, Size: 6}) || h.History[1] != (proto.HistoryEntry{Serial: tid, Size: 5}) {
		t.Fatalf("history: %+v", h.History)
	}
	c.askErr(ctx, &proto.AskObjectHistory{Oid: 9, First: 0, Last: 10}, proto.OidNotFound)

	// iteration
	tids := c.ask(ctx, &proto.AskTIDs{First: 0, Last: 10, Partition: 0xffffffff}).(*proto.AnswerTIDs)
	if !slices.Equal(tids.Tids, []zodb.Tid{tid2, tid}) {
		t.Fatalf("AskTIDs: %v", tids.Tids)
	}
	from := c.ask(ctx, &proto.AskTIDsFrom{MinTid: 0, MaxTid: zodb.TidMax, Length: 10, Partition: uint32(tid % np)}).(*proto.AnswerTIDsFrom)
	if !slices.Equal(from.Tids, []zodb.Tid{tid, tid2}) {
		t.Fatalf("AskTIDsFrom: %v", from.Tids)
	}
	info := c.ask(ctx, &proto.AskTransactionInformation{Tid: tid}).(*proto.AnswerTransactionInformation)
	slices.Sort(info.Oids)
	if string(info.User) != "user" || string(info.Description) != "desc "+ttid.String() || !slices.Equal(info.Oids, []zodb.Oid{1, 2}) {
		t.Fatalf("transaction information: %+v", info)
	}
	c.askErr(ctx, &proto.AskTransactionInformation{Tid: 0x108}, proto.TidNotFound)

	// undo information: undoing tid2 restores tid's data of oid 1
	u := c.ask(ctx, &proto.AskObjectUndoSerial{TTid: 0x400, LTid: tid2 + 1, UndoneTid: tid2, Oids: []zodb.Oid{1, 2}}).(*proto.AnswerObjectUndoSerial)
	if len(u.Serials) != 1 || u.Serials[0] != (proto.UndoSerial{Oid: 1, CurrentSerial: tid2, UndoSerial: tid, IsCurrent: true}) {
		t.Fatalf("undo serial: %+v", u.Serials)
	}

	// bad requests close the link only
	c.askErr(ctx, &proto.AskObjectHistory{Oid: 1, First: 5, Last: 5}, proto.ProtocolError)
	<-c.link.Done()
	c2 := dialClient(ctx, t, c.link.RemoteAddr().String(), c1, 2)
	checkObject(t, load(ctx, t, c2, 2, zodb.InvalidTid, zodb.InvalidTid), tid, zodb.InvalidTid, "world")
}

func TestStoreChecks(t *testing.T) {
	ctx, _, _, _, c := single(t)
	bad := storeReq(0x100, 1, 0, "data")
	bad.Checksum[0] ^= 1
	c.askErr(ctx, bad, proto.ProtocolError)
	<-c.link.Done()
	c = dialClient(ctx, t, c.link.RemoteAddr().String(), c1, 2)
	bad = storeReq(0x100, 1, 0, "data")
	bad.Compression = 2
	c.askErr(ctx, bad, proto.ProtocolError)
	<-c.link.Done()
	c = dialClient(ctx, t, c.link.RemoteAddr().String(), c1, 2)
	c.askErr(ctx, &proto.AskVoteTransaction{TTid: 0x999}, proto.ProtocolError)
}

func TestConflict(t *testing.T) {
	ctx, _, _, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "a"})
	// a store based on a stale serial gets the current one
	a := c.ask(ctx, storeReq(0x200, 1, 0, "b")).(*proto.AnswerStoreObject)
	if a.Conflict != 0x104 {
		t.Fatalf("conflict: %s", a.Conflict)
	}
	// a readCurrent check too
	cc := c.ask(ctx, &proto.AskCheckCurrentSerial{TTid: 0x200, Oid: 1, Serial: 0x50}).(*proto.AnswerCheckCurrentSerial)
	if cc.Conflict != 0x104 {
		t.Fatalf("check conflict: %s", cc.Conflict)
	}
	cc = c.ask(ctx, &proto.AskCheckCurrentSerial{TTid: 0x200, Oid: 1, Serial: 0x104}).(*proto.AnswerCheckCurrentSerial)
	if cc.Conflict != zodb.InvalidTid {
		t.Fatalf("check: %s", cc.Conflict)
	}
	c.link.Notify(ctx, &proto.AbortTransaction{TTid: 0x200})
	// resolved: stored again on the right serial
	c.storeOK(ctx, 0x300, 1, 0x104, "c")
}

// answerOf waits for the answer of a call started with Start.
type pendingCall struct {
	ch chan proto.Msg
}

func startAsk(ctx context.Context, t *testing.T, link *neonet.Link, m proto.Msg) *pendingCall {
	t.Helper()
	call, err := link.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	p := &pendingCall{ch: make(chan proto.Msg, 1)}
	go func() {
		a, err := call.Wait(ctx)
		if err != nil {
			a = &proto.Error{Code: proto.ProtocolError, Message: err.Error()}
		}
		p.ch <- a
	}()
	return p
}

func (p *pendingCall) pending() bool {
	select {
	case a := <-p.ch:
		p.ch <- a
		return false
	default:
		return true
	}
}

func (p *pendingCall) wait(ctx context.Context, t *testing.T) proto.Msg {
	t.Helper()
	select {
	case a := <-p.ch:
		return a
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	return nil
}

// sync makes sure the storage handled what was sent on link before.
func syncLink(ctx context.Context, t *testing.T, link *neonet.Link) {
	t.Helper()
	if _, err := link.Ask(ctx, &proto.Ping{}); err != nil {
		t.Fatal(err)
	}
}

func TestLockWait(t *testing.T) {
	ctx, _, n, ml, c := single(t)
	other := dialClient(ctx, t, n.s.Addr(), c2, 3)
	c.storeOK(ctx, 0x100, 1, 0, "older")
	// the younger transaction waits for the older one
	younger := startAsk(ctx, t, other.link, storeReq(0x200, 1, 0, "younger"))
	syncLink(ctx, t, other.link)
	if !younger.pending() {
		t.Fatalf("younger store answered while the older holds the lock: %#v", younger.wait(ctx, t))
	}
	// the older one commits: the younger gets a conflict with it
	c.ask(ctx, &proto.AskStoreTransaction{TTid: 0x100, Oids: []zodb.Oid{1}})
	ml.ask(ctx, &proto.AskLockInformation{TTid: 0x100, Tid: 0x104})
	// reads of a locked oid wait for the unlock
	reading := startAsk(ctx, t, c.link, &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: 0x105})
	syncLink(ctx, t, c.link)
	if !reading.pending() {
		t.Fatalf("load of a read-locked oid answered: %#v", reading.wait(ctx, t))
	}
	ml.notify(ctx, &proto.NotifyUnlockInformation{TTid: 0x100})
	if a := younger.wait(ctx, t).(*proto.AnswerStoreObject); a.Conflict != 0x104 {
		t.Fatalf("younger store after commit: %s", a.Conflict)
	}
	checkObject(t, reading.wait(ctx, t).(*proto.AnswerObject), 0x104, zodb.InvalidTid, "older")

	// after an abort the waiting store gets the lock
	c.storeOK(ctx, 0x300, 2, 0, "x")
	waiting := startAsk(ctx, t, other.link, storeReq(0x400, 2, 0, "y"))
	syncLink(ctx, t, other.link)
	if !waiting.pending() {
		t.Fatal("store not delayed")
	}
	c.link.Notify(ctx, &proto.AbortTransaction{TTid: 0x300})
	if a := waiting.wait(ctx, t).(*proto.AnswerStoreObject); a.Conflict != zodb.InvalidTid {
		t.Fatalf("store after abort: %s", a.Conflict)
	}
}

func TestDeadlock(t *testing.T) {
	ctx, _, n, _, c := single(t)
	young := dialClient(ctx, t, n.s.Addr(), c2, 3)
	notified := make(chan *proto.NotifyDeadlock, 1)
	go func() {
		for {
			r, err := young.link.Recv(ctx)
			if err != nil {
				return
			}
			if m, ok := r.Msg.(*proto.NotifyDeadlock); ok {
				notified <- m
			}
		}
	}()
	// the younger transaction locks oid 1 first
	young.storeOK(ctx, 0x200, 1, 0, "young")
	// the older one wants it: possible deadlock, the holder is told
	older := startAsk(ctx, t, c.link, storeReq(0x100, 1, 0, "old"))
	var dl *proto.NotifyDeadlock
	select {
	case dl = <-notified:
	case <-ctx.Done():
		t.Fatal("no NotifyDeadlock")
	}
	if dl.TTid != 0x200 || dl.Oid != 1 {
		t.Fatalf("NotifyDeadlock %+v", dl)
	}
	if !older.pending() {
		t.Fatal("older store answered before the relock")
	}
	// the younger one releases and asks again: the older one proceeds
	relock := startAsk(ctx, t, young.link, &proto.AskRelockObject{TTid: 0x200, Oid: 1})
	if a := older.wait(ctx, t).(*proto.AnswerStoreObject); a.Conflict != zodb.InvalidTid {
		t.Fatalf("older store: conflict %s", a.Conflict)
	}
	syncLink(ctx, t, young.link)
	if !relock.pending() {
		t.Fatal("relock answered while the older transaction holds the lock")
	}
	c.link.Notify(ctx, &proto.AbortTransaction{TTid: 0x100})
	if a := relock.wait(ctx, t).(*proto.AnswerRelockObject); a.Conflict.Ok {
		t.Fatalf("relock: %+v", a.Conflict)
	}
}

func TestDeadlockRelockConflict(t *testing.T) {
	ctx, _, n, ml, c := single(t)
	young := dialClient(ctx, t, n.s.Addr(), c2, 3)
	notified := make(chan struct{}, 1)
	go func() {
		for {
			r, err := young.link.Recv(ctx)
			if err != nil {
				return
			}
			if _, ok := r.Msg.(*proto.NotifyDeadlock); ok {
				notified <- struct{}{}
			}
		}
	}()
	young.storeOK(ctx, 0x200, 1, 0, "young")
	older := startAsk(ctx, t, c.link, storeReq(0x100, 1, 0, "old"))
	select {
	case <-notified:
	case <-ctx.Done():
		t.Fatal("no NotifyDeadlock")
	}
	relock := startAsk(ctx, t, young.link, &proto.AskRelockObject{TTid: 0x200, Oid: 1})
	if a := older.wait(ctx, t).(*proto.AnswerStoreObject); a.Conflict != zodb.InvalidTid {
		t.Fatalf("older store: conflict %s", a.Conflict)
	}
	// the older one commits: the relock conflicts and hands the data back
	c.ask(ctx, &proto.AskStoreTransaction{TTid: 0x100, Oids: []zodb.Oid{1}})
	lockAndUnlock(ctx, t, ml, 0x100, 0x104)
	a := relock.wait(ctx, t).(*proto.AnswerRelockObject)
	rc, ok := a.Conflict.Get()
	if !ok || rc.Serial != 0 || rc.ConflictSerial != 0x104 {
		t.Fatalf("relock conflict: %+v", a.Conflict)
	}
	d, ok := rc.Data.Get()
	if !ok || string(d.Data) != "young" || d.Checksum != sha1.Sum([]byte("young")) {
		t.Fatalf("relock data: %+v", rc.Data)
	}
}

func TestStopOnDown(t *testing.T) {
	ctx, fm, n, ml, _ := single(t)
	ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(),
		Nodes: []proto.NodeInfo{storageEntry(s1, n.s.Addr(), proto.NodeDown, 1)}})
	select {
	case err := <-n.done:
		n.done <- err
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("node did not stop")
	}
}

func TestNotReadyBeforeOperation(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n := startNode(t, fm, dbPath(t, "s.db"), proto.NoNode)
	ml := fm.accept(ctx, s1)
	ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{clientEntry(c1, 1)}})
	ml.ask(ctx, &proto.AskRecovery{})
	link, err := neonet.Dial(ctx, n.s.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	_, err = link.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Client, NID: c1, ClusterName: cluster,
		IDTimestamp: proto.Some(1.0), Extra: proto.Dict{}})
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.NotReady {
		t.Fatalf("identification before operation: %v", err)
	}
}

func TestNonReadableCell(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	n := startNode(t, fm, dbPath(t, "s.db"), proto.NoNode)
	ml := fm.accept(ctx, s1)
	ml.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{
		storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1),
		storageEntry(s2, "127.0.0.1:1", proto.NodeRunning, 2), clientEntry(c1, 3)}})
	rows := [][]proto.CellInfo{{{NID: s1, State: proto.CellUpToDate}}, {{NID: s2, State: proto.CellUpToDate}}}
	ml.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)), Rows: rows})
	ml.notify(ctx, &proto.StartOperation{})
	expect[*proto.NotifyReady](ctx, t, ml)
	c := dialClient(ctx, t, n.s.Addr(), c1, 3)
	c.askErr(ctx, &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: zodb.InvalidTid}, proto.NonReadableCell)
	c.askErr(ctx, &proto.AskObject{Oid: 2, At: zodb.InvalidTid, Before: zodb.InvalidTid}, proto.OidDoesNotExist)
	// a store to a partition not assigned here is ignored
	if a := c.ask(ctx, storeReq(0x100, 1, 0, "x")).(*proto.AnswerStoreObject); a.Conflict != 0 {
		t.Fatalf("store to unassigned partition: %s", a.Conflict)
	}
	// partition changes must follow the ptid
	ml.notify(ctx, &proto.NotifyPartitionChanges{PTid: 3})
	select {
	case <-ml.done:
	case <-ctx.Done():
		t.Fatal("wrong ptid did not close the master link")
	}
}

func TestRestartKeepsNidAndData(t *testing.T) {
	ctx, fm, n, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{5: "kept"})
	// a transaction voted and locked but not unlocked is reported again
	c.storeOK(ctx, 0x200, 6, 0, "locked")
	c.ask(ctx, &proto.AskStoreTransaction{TTid: 0x200, Oids: []zodb.Oid{6}})
	ml.ask(ctx, &proto.AskLockInformation{TTid: 0x200, Tid: 0x204})
	path := n.path
	if err := n.stop(t); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, fm, path, proto.NoNode)
	ml2 := fm.accept(ctx, s1)
	if ml2.id.NID != s1 {
		t.Fatalf("restarted node proposed %s", ml2.id.NID)
	}
	rec := ml2.ask(ctx, &proto.AskRecovery{}).(*proto.AnswerRecovery)
	if ptid, _ := rec.PTid.Get(); ptid != 1 {
		t.Fatalf("recovered ptid %v", rec.PTid)
	}
	pt := ml2.ask(ctx, &proto.AskPartitionTable{}).(*proto.AnswerPartitionTable)
	if len(pt.Rows) != np || pt.Rows[0][0] != (proto.CellInfo{NID: s1, State: proto.CellUpToDate}) {
		t.Fatalf("recovered table %+v", pt.Rows)
	}
	locked := ml2.ask(ctx, &proto.AskLockedTransactions{}).(*proto.AnswerLockedTransactions)
	if len(locked.Transactions) != 1 || locked.Transactions[0] != (proto.LockedTransaction{TTid: 0x200, Tid: 0x204}) {
		t.Fatalf("locked transactions %+v", locked.Transactions)
	}
	ml2.notify(ctx, &proto.ValidateTransaction{TTid: 0x200, Tid: 0x204})
	ids := ml2.ask(ctx, &proto.AskLastIDs{}).(*proto.AnswerLastIDs)
	if ids.LastTid != 0x204 || ids.LastOid != 6 || ids.FirstTid != 0x104 {
		t.Fatalf("last ids %+v", ids)
	}
	ml2.notify(ctx, &proto.NotifyNodeInformation{Timestamp: fm.nextTime(), Nodes: []proto.NodeInfo{
		storageEntry(s1, n2.s.Addr(), proto.NodeRunning, 10), clientEntry(c1, 11)}})
	ml2.notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)), Rows: ptRows(np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})})
	ml2.notify(ctx, &proto.StartOperation{})
	expect[*proto.NotifyReady](ctx, t, ml2)
	c2 := dialClient(ctx, t, n2.s.Addr(), c1, 11)
	checkObject(t, load(ctx, t, c2, 5, zodb.InvalidTid, zodb.InvalidTid), 0x104, zodb.InvalidTid, "kept")
	checkObject(t, load(ctx, t, c2, 6, zodb.InvalidTid, zodb.InvalidTid), 0x204, zodb.InvalidTid, "locked")
}

func TestClusterNameChecked(t *testing.T) {
	path := dbPath(t, "s.db")
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := New(context.Background(), Config{Cluster: cluster, Masters: []string{"127.0.0.1:1"}, Backend: db, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(timeout(t)); !errors.Is(err, backend.ErrClusterName) {
		t.Fatalf("Run with a database of another cluster: %v", err)
	}
}

func TestPack(t *testing.T) {
	ctx, _, _, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "old", 2: "only"})
	commit(ctx, t, c, ml, 0x200, 0x204, map[zodb.Oid]zodb.Tid{1: 0x104}, map[zodb.Oid]string{1: "new"})
	// a pack order at 0x204, approved at lock time
	const packID = zodb.Tid(0x304)
	c.ask(ctx, &proto.AskStoreTransaction{TTid: 0x300, Description: []byte("IStorage.pack"), Oids: []zodb.Oid{},
		Pack: proto.Some(proto.PackInfo{PackTid: 0x204})})
	a := ml.ask(ctx, &proto.AskLockInformation{TTid: 0x300, Tid: packID, Pack: true}).(*proto.AnswerInformationLocked)
	if a.TTid != 0x300 {
		t.Fatal(a)
	}
	ml.notify(ctx, &proto.NotifyUnlockInformation{TTid: 0x300})
	ml.notify(ctx, &proto.NotifyPackSigned{Approved: []zodb.Tid{packID}, Rejected: []zodb.Tid{}})
	ask, req := expect[*proto.AskPackOrders](ctx, t, ml)
	if ask.MinPackID != 1 {
		t.Fatalf("AskPackOrders from %s", ask.MinPackID)
	}
	if err := req.Reply(ctx, &proto.AnswerPackOrders{Orders: []proto.PackOrder{
		{PackID: packID, Approved: proto.Some(true), PackTid: 0x204}}}); err != nil {
		t.Fatal(err)
	}
	done, _ := expect[*proto.NotifyPackCompleted](ctx, t, ml)
	if done.PackID != packID {
		t.Fatalf("NotifyPackCompleted %s", done.PackID)
	}
	c.askErr(ctx, &proto.AskObject{Oid: 1, At: 0x104, Before: zodb.InvalidTid}, proto.OidNotFound)
	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, zodb.InvalidTid), 0x204, zodb.InvalidTid, "new")
	checkObject(t, load(ctx, t, c, 2, zodb.InvalidTid, zodb.InvalidTid), 0x104, zodb.InvalidTid, "only")
}

// TestBackupReadOnly: with a backup tid, clients are served read-only,
// nothing after the backup tid.
func TestBackupReadOnly(t *testing.T) {
	ctx, _, n, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "a"})
	commit(ctx, t, c, ml, 0x200, 0x204, map[zodb.Oid]zodb.Tid{1: 0x104}, map[zodb.Oid]string{1: "b"})
	ml.notify(ctx, &proto.StopOperation{})
	<-c.link.Done()
	ml.ask(ctx, &proto.AskLockedTransactions{}) // the stop was handled
	if err := n.db.SetConfig(ctx, backend.KeyBackupTid, zodb.Tid(0x104).String(), true); err != nil {
		t.Fatal(err)
	}
	ml.notify(ctx, &proto.StartOperation{Backup: true})
	expect[*proto.NotifyReady](ctx, t, ml)
	c = dialClient(ctx, t, n.s.Addr(), c1, 2)
	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, zodb.InvalidTid), 0x104, 0x204, "a")
	c.askErr(ctx, &proto.AskObject{Oid: 1, At: 0x204, Before: zodb.InvalidTid}, proto.OidNotFound)
	if a := c.ask(ctx, &proto.AskTIDs{First: 0, Last: 10, Partition: 0xffffffff}).(*proto.AnswerTIDs); !slices.Equal(a.Tids, []zodb.Tid{0x104}) {
		t.Fatalf("AskTIDs in backup mode: %v", a.Tids)
	}
	c.askErr(ctx, &proto.AskTransactionInformation{Tid: 0x204}, proto.TidNotFound)
	c.askErr(ctx, storeReq(0x300, 2, 0, "x"), proto.ReadOnlyAccess)
	// the link stays
	checkObject(t, load(ctx, t, c, 1, 0x104, zodb.InvalidTid), 0x104, 0x204, "a")
}

// TestUndoSerialWaitsForUnlock: undo information about an oid of a
// transaction between lock and unlock (committed for the cluster) waits
// for the unlock, so that the undo sees it.
func TestUndoSerialWaitsForUnlock(t *testing.T) {
	ctx, _, _, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "a1"})
	commit(ctx, t, c, ml, 0x200, 0x204, map[zodb.Oid]zodb.Tid{1: 0x104}, map[zodb.Oid]string{1: "a2"})
	c.storeOK(ctx, 0x300, 1, 0x204, "a3")
	c.ask(ctx, &proto.AskStoreTransaction{TTid: 0x300, Oids: []zodb.Oid{1}})
	ml.ask(ctx, &proto.AskLockInformation{TTid: 0x300, Tid: 0x304})
	undo := startAsk(ctx, t, c.link, &proto.AskObjectUndoSerial{TTid: 0x400, LTid: 0x305, UndoneTid: 0x204, Oids: []zodb.Oid{1}})
	syncLink(ctx, t, c.link)
	if !undo.pending() {
		t.Fatalf("undo information answered before the unlock: %#v", undo.wait(ctx, t))
	}
	ml.notify(ctx, &proto.NotifyUnlockInformation{TTid: 0x300})
	a := undo.wait(ctx, t).(*proto.AnswerObjectUndoSerial)
	if len(a.Serials) != 1 || a.Serials[0] != (proto.UndoSerial{Oid: 1, CurrentSerial: 0x304, UndoSerial: 0x104, IsCurrent: false}) {
		t.Fatalf("undo serials %+v", a.Serials)
	}
}

// TestConfiguredNodeID: a new database proposes the configured node id;
// the id the master gives is the one kept.
func TestConfiguredNodeID(t *testing.T) {
	ctx := timeout(t)
	fm := newFakeMaster(t)
	s5 := proto.NewNodeID(proto.Storage, 5)
	n := startNode(t, fm, dbPath(t, "s.db"), s5)
	ml := fm.accept(ctx, s2)
	if ml.id.NID != s5 {
		t.Fatalf("proposed %s, want %s", ml.id.NID, s5)
	}
	ml.ask(ctx, &proto.AskRecovery{})
	if v, ok, err := n.db.Config(ctx, backend.KeyNID); err != nil || !ok || v != "2" {
		t.Fatalf("stored nid %q %v %v, want the one given by the master", v, ok, err)
	}
}

// TestIDConflict: a storage refused because its id is another node's
// forgets the id when it owns no cell under it (two masters that both
// acted as primary during an election may have given one id to two new
// storages), and keeps it when it owns cells.
func TestIDConflict(t *testing.T) {
	t.Run("NoCell", func(t *testing.T) {
		ctx := timeout(t)
		fm := newFakeMaster(t)
		n := startNode(t, fm, dbPath(t, "s.db"), proto.NoNode)
		ml := fm.accept(ctx, s1)
		ml.ask(ctx, &proto.AskRecovery{})
		ml.link.Close()
		if id := fm.refuse(ctx, "already connected"); id.NID != s1 {
			t.Fatalf("proposed %s, want %s", id.NID, s1)
		}
		ml = fm.accept(ctx, s2)
		if ml.id.NID != proto.NoNode {
			t.Fatalf("after the refusal the storage proposed %s, want none", ml.id.NID)
		}
		ml.ask(ctx, &proto.AskRecovery{})
		if v, ok, err := n.db.Config(ctx, backend.KeyNID); err != nil || !ok || v != strconv.Itoa(int(s2)) {
			t.Fatalf("stored nid %q %v %v, want %d", v, ok, err, s2)
		}
	})
	t.Run("OwnsCells", func(t *testing.T) {
		ctx := timeout(t)
		fm := newFakeMaster(t)
		n := startNode(t, fm, dbPath(t, "s.db"), proto.NoNode)
		ml := operational(ctx, t, fm, s1, n, []proto.NodeInfo{storageEntry(s1, n.s.Addr(), proto.NodeRunning, 1)},
			np, proto.CellInfo{NID: s1, State: proto.CellUpToDate})
		ml.link.Close()
		fm.refuse(ctx, "already connected")
		if id := fm.refuse(ctx, "already connected"); id.NID != s1 {
			t.Fatalf("a storage owning cells proposed %s after a refusal, want %s", id.NID, s1)
		}
	})
}

// TestFailedStoreLeavesNoLock: a store that fails after taking its write
// lock (here an undo whose revision does not exist; also a store whose data
// write fails because its client went away) leaves no lock once the
// transaction is aborted: the next transaction storing the object is not
// held up for ever.
func TestFailedStoreLeavesNoLock(t *testing.T) {
	ctx, _, n, _, c := single(t)
	s := n.s
	s.mu.Lock()
	s.tm.register(c.link, c1, 0x100)
	_, err := s.tm.storeObject(ctx, 0x100, 0, 5, 0, proto.Checksum{}, nil, false, 0x50)
	if !errors.Is(err, backend.ErrUndoData) {
		s.mu.Unlock()
		t.Fatalf("undo of a revision that does not exist: %v", err)
	}
	abortErr := s.tm.abort(ctx, 0x100, false)
	_, leaked := s.tm.storeLock[5]
	s.mu.Unlock()
	if abortErr != nil {
		t.Fatal(abortErr)
	}
	if leaked {
		t.Fatal("the write lock of the failed store outlived its transaction")
	}
	c.storeOK(ctx, 0x200, 5, 0, "next")
}
