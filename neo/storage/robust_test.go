package storage

import (
	"errors"
	"net"
	"testing"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestBadInputClosesLinkOnly: bytes that are not NEO packets, packets out
// of place and requests of the wrong kind close the link they came on;
// the node goes on serving others.
func TestBadInputClosesLinkOnly(t *testing.T) {
	ctx, _, n, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "x"})

	// garbage after the handshake
	conn, err := net.Dial("tcp", n.s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(append(append([]byte(nil), proto.Handshake...), 0xc1, 0xc1, 0xc1, 0xff, 0x00)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for {
		if _, err := conn.Read(buf); err != nil {
			break // closed by the node
		}
	}

	// a request before identification
	link, err := neonet.Dial(ctx, n.s.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	if _, err := link.Ask(ctx, &proto.AskObject{Oid: 1, At: zodb.InvalidTid, Before: zodb.InvalidTid}); err == nil {
		t.Fatal("request before identification answered")
	}
	<-link.Done()

	// an unknown client, a wrong cluster name, a master-only packet
	for _, tc := range []struct {
		id   *proto.RequestIdentification
		code proto.ErrorCode
	}{
		{&proto.RequestIdentification{NodeType: proto.Client, NID: proto.NewNodeID(proto.Client, 9), ClusterName: cluster, IDTimestamp: proto.Some(0.5), Extra: proto.Dict{}}, proto.NotReady},
		{&proto.RequestIdentification{NodeType: proto.Client, NID: c1, ClusterName: "other", IDTimestamp: proto.Some(2.0), Extra: proto.Dict{}}, proto.ProtocolError},
		{&proto.RequestIdentification{NodeType: proto.Client, ClusterName: cluster, Extra: proto.Dict{}}, proto.ProtocolError},
		{&proto.RequestIdentification{NodeType: proto.Storage, NID: s1, ClusterName: cluster, Extra: proto.Dict{}}, proto.ProtocolError},
	} {
		link, err := neonet.Dial(ctx, n.s.Addr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = link.Ask(ctx, tc.id)
		if pe := asProtoError(err); pe == nil || pe.Code != tc.code {
			t.Errorf("identification %+v: %v, want %v", tc.id, err, tc.code)
		}
		<-link.Done()
		link.Close()
	}

	c2 := dialClient(ctx, t, n.s.Addr(), c2, 3)
	c2.askErr(ctx, &proto.AskLockInformation{TTid: 0x100, Tid: 0x104}, proto.ProtocolError)
	<-c2.link.Done()
	c2 = dialClient(ctx, t, n.s.Addr(), c2.nid, 3)
	c2.askErr(ctx, &proto.AskFetchTransactions{Partition: 0, Length: 10, MaxTid: zodb.TidMax}, proto.ProtocolError)
	<-c2.link.Done()

	// the first client and the master were not affected
	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, zodb.InvalidTid), 0x104, zodb.InvalidTid, "x")
	commit(ctx, t, c, ml, 0x200, 0x204, map[zodb.Oid]zodb.Tid{1: 0x104}, map[zodb.Oid]string{1: "y"})
}

// TestStopAndStartOperation: StopOperation makes the node refuse peers
// until StartOperation; the master link stays.
func TestStopAndStartOperation(t *testing.T) {
	ctx, _, n, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "x"})
	c.storeOK(ctx, 0x200, 1, 0x104, "aborted by the stop")
	ml.notify(ctx, &proto.StopOperation{})
	<-c.link.Done()
	// verification again: the voted-only transaction was not voted here
	locked := ml.ask(ctx, &proto.AskLockedTransactions{}).(*proto.AnswerLockedTransactions)
	if len(locked.Transactions) != 0 {
		t.Fatalf("locked transactions after stop: %+v", locked.Transactions)
	}
	link, err := neonet.Dial(ctx, n.s.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = link.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Client, NID: c1, ClusterName: cluster,
		IDTimestamp: proto.Some(2.0), Extra: proto.Dict{}})
	if pe := asProtoError(err); pe == nil || pe.Code != proto.NotReady {
		t.Fatalf("identification while stopped: %v", err)
	}
	link.Close()
	ml.notify(ctx, &proto.StartOperation{})
	expect[*proto.NotifyReady](ctx, t, ml)
	c = dialClient(ctx, t, n.s.Addr(), c1, 2)
	// the lock of the forgotten transaction is gone
	c.storeOK(ctx, 0x300, 1, 0x104, "after restart")
}

// TestRedirectToPrimary: a master answering NotPrimaryMaster sends the
// node to the primary.
func TestRedirectToPrimary(t *testing.T) {
	ctx := timeout(t)
	primary := newFakeMaster(t)
	secondary, err := neonet.Listen(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer secondary.Close()
	db := dbPath(t, "s.db")
	n := startNodeWith(t, []string{secondary.Addr().String()}, db, proto.NoNode)
	link, err := secondary.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := link.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := parseAddress(primary.addr())
	sa, _ := parseAddress(secondary.Addr().String())
	// index 1 of the list is the primary
	if err := r.Abort(ctx, &proto.NotPrimaryMaster{Primary: 1, KnownMasters: []proto.Address{sa, pa}}); err != nil {
		t.Fatal(err)
	}
	ml := primary.accept(ctx, s1)
	if addr, _ := ml.id.Address.Get(); addr.String() != n.s.Addr() {
		t.Fatalf("identification at the primary: %+v", ml.id)
	}
}

func asProtoError(err error) *proto.Error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}
