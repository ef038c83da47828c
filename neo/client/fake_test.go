package client

import (
	"context"
	"crypto/sha1"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// Tests against fake masters and storages built from neonet links: they
// check what the client does with answers a real cluster rarely gives.

func listen(t *testing.T) *neonet.Listener {
	t.Helper()
	ln, err := neonet.Listen(t.Context(), "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func address(t *testing.T, a net.Addr) proto.Address {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return proto.Address{Host: host, Port: uint16(p)}
}

// serveLinks accepts links on ln and runs handle for each request, in the
// background, until the test ends.
func serveLinks(t *testing.T, ln *neonet.Listener, handle func(l *neonet.Link, req *neonet.Request)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			l, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				defer l.Close()
				go func() { <-ctx.Done(); l.Close() }()
				for {
					req, err := l.Recv(ctx)
					if err != nil {
						return
					}
					handle(l, req)
				}
			}()
		}
	}()
}

const (
	fakeMaster = proto.NodeID(-0x10<<24 | 1)
	fakeClient = proto.NodeID(-0x20<<24 | 1)
)

// fakeCluster is a master serving one partition held by the given
// storages, and the last tid 0x10.
func fakeCluster(t *testing.T, storages map[proto.NodeID]net.Addr) *neonet.Listener {
	ln := listen(t)
	serveLinks(t, ln, func(l *neonet.Link, req *neonet.Request) {
		ctx := context.Background()
		switch req.Msg.(type) {
		case *proto.RequestIdentification:
			req.Reply(ctx, &proto.AcceptIdentification{NodeType: proto.Master, NID: fakeMaster, YourNID: fakeClient})
			nodes := []proto.NodeInfo{{Type: proto.Client, NID: fakeClient, State: proto.NodeRunning, IDTime: proto.Some(1.0)}}
			var row []proto.CellInfo
			for nid, a := range storages {
				nodes = append(nodes, proto.NodeInfo{Type: proto.Storage, Addr: proto.Some(address(t, a)), NID: nid, State: proto.NodeRunning, IDTime: proto.Some(0.5)})
				row = append(row, proto.CellInfo{NID: nid, State: proto.CellUpToDate})
			}
			l.Notify(ctx, &proto.NotifyNodeInformation{Timestamp: 1, Nodes: nodes})
			l.Notify(ctx, &proto.SendPartitionTable{PTid: proto.Some(proto.PTid(1)), NumReplicas: uint32(len(row) - 1), Rows: [][]proto.CellInfo{row}})
		case *proto.AskLastTransaction:
			req.Reply(ctx, &proto.AnswerLastTransaction{Tid: 0x10})
		}
	})
	return ln
}

// fakeStorage answers identification and AskObject with data, whose
// checksum is right or not.
func fakeStorage(t *testing.T, nid proto.NodeID, data []byte, goodChecksum bool, asked *atomic.Int32) *neonet.Listener {
	ln := listen(t)
	serveLinks(t, ln, func(l *neonet.Link, req *neonet.Request) {
		ctx := context.Background()
		switch m := req.Msg.(type) {
		case *proto.RequestIdentification:
			req.Reply(ctx, &proto.AcceptIdentification{NodeType: proto.Storage, NID: nid, YourNID: m.NID})
		case *proto.AskObject:
			asked.Add(1)
			sum := sha1.Sum(data)
			if !goodChecksum {
				sum[0] ^= 0xff
			}
			req.Reply(ctx, &proto.AnswerObject{Oid: m.Oid, Serial: 0x10, NextSerial: zodb.InvalidTid, Compression: proto.Some[uint8](0),
				Checksum: sum, Data: data, DataSerial: zodb.InvalidTid})
		}
	})
	return ln
}

// TestChecksumMismatch: a record whose checksum is wrong is not returned;
// the other cell is read.
func TestChecksumMismatch(t *testing.T) {
	var badAsked, goodAsked atomic.Int32
	s1 := proto.NodeID(1)
	s2 := proto.NodeID(2)
	bad := fakeStorage(t, s1, []byte("bad data"), false, &badAsked)
	good := fakeStorage(t, s2, []byte("good data"), true, &goodAsked)
	m := fakeCluster(t, map[proto.NodeID]net.Addr{s1: bad.Addr(), s2: good.Addr()})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, Config{Cluster: "fake", Masters: []string{m.Addr().String()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if head, _ := c.LastTid(ctx); head != 0x10 {
		t.Errorf("last tid %v, want 0x10", head)
	}
	for range 4 {
		data, serial, _, err := c.Load(ctx, zodb.Xid{Oid: 1, At: zodb.TidMax})
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != "good data" || serial != 0x10 {
			t.Fatalf("load: %q at %v", data, serial)
		}
	}
	if goodAsked.Load() != 4 {
		t.Errorf("the good storage was asked %d times, want 4", goodAsked.Load())
	}
	if badAsked.Load() > 1 {
		t.Errorf("the storage with bad checksums was asked %d times: it should be tried last once it failed", badAsked.Load())
	}
}

// TestNotPrimaryMaster: a master that is not the primary redirects the
// client to the one that is.
func TestNotPrimaryMaster(t *testing.T) {
	var asked atomic.Int32
	s1 := proto.NodeID(1)
	st := fakeStorage(t, s1, []byte("data"), true, &asked)
	primary := fakeCluster(t, map[proto.NodeID]net.Addr{s1: st.Addr()})
	secondary := listen(t)
	serveLinks(t, secondary, func(l *neonet.Link, req *neonet.Request) {
		if _, ok := req.Msg.(*proto.RequestIdentification); ok {
			l.Notify(context.Background(), &proto.NotPrimaryMaster{
				Primary:      1, // index in KnownMasters
				KnownMasters: []proto.Address{address(t, secondary.Addr()), address(t, primary.Addr())},
			})
			l.Close()
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, Config{Cluster: "fake", Masters: []string{secondary.Addr().String()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.NodeID() != fakeClient {
		t.Errorf("node id %v, want %v", c.NodeID(), fakeClient)
	}
	if data, _, _, err := c.Load(ctx, zodb.Xid{Oid: 1, At: zodb.TidMax}); err != nil || string(data) != "data" {
		t.Errorf("load through the primary's cluster: %q %v", data, err)
	}
}
