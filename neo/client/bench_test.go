package client_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/zodb"
)

// BenchmarkCluster measures the client on an in-process cluster (one
// master, one storage, loopback): the latency of a load (the client has no
// cache: every load is a round trip to the storage) and of the commit of
// one object, next to a raw TCP ping-pong of 64 bytes on the same loopback
// for reference.
//
//	go test -run '^$' -bench BenchmarkCluster ./neo/client/
func BenchmarkCluster(b *testing.B) {
	b.Run("tcp-pingpong", benchTCPPingPong)

	c := cluster.Start(b, cluster.Options{Storages: 1})
	stor := c.Open(b, "C1", nil)
	ctx := context.Background()
	oid, err := stor.NewOid(ctx)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 100)
	serial := benchCommit(b, stor, oid, 0, data)

	b.Run("load", func(b *testing.B) {
		xid := zodb.Xid{Oid: oid, At: zodb.TidMax}
		for b.Loop() {
			if _, _, _, err := stor.Load(ctx, xid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("commit-1-object", func(b *testing.B) {
		for b.Loop() {
			serial = benchCommit(b, stor, oid, serial, data)
		}
	})
}

func benchCommit(b *testing.B, stor *zodb.Storage, oid zodb.Oid, serial zodb.Tid, data []byte) zodb.Tid {
	ctx := context.Background()
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		b.Fatal(err)
	}
	if err := txn.Store(ctx, oid, serial, data); err != nil {
		b.Fatal(err)
	}
	if _, err := txn.Vote(ctx); err != nil {
		b.Fatal(err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return tid
}

// benchTCPPingPong sends 64 bytes over loopback TCP and waits for them back.
func benchTCPPingPong(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close()
	<-done
}
