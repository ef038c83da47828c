package master

import (
	"context"
	"testing"

	"github.com/neozodb/neo/neo/neonet"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// BenchmarkCoreCommit measures the master's share of a commit, in the core
// only: AskBeginTransaction, AskFinishTransaction with 10 oids, the lock
// answers of the involved storages (12 partitions, 3 storages, 1 replica),
// then the commit notifications.
func BenchmarkCoreCommit(b *testing.B) {
	h := newHarness(b, 12, 1, 0)
	storages, _ := h.startNewCluster(3)
	cl := h.connect(clientRI())
	h.take(cl)
	for _, l := range storages {
		h.take(l)
	}
	oids := make([]zodb.Oid, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.step(EvRecv{Link: cl, MsgID: 1, Msg: &proto.AskBeginTransaction{Tid: zodb.InvalidTid}})
		ttid := msgOf(h.take(cl)[0]).(*proto.AnswerBeginTransaction).TTid
		for j := range oids {
			oids[j] = zodb.Oid(i*10 + j)
		}
		h.step(EvRecv{Link: cl, MsgID: 2, Msg: &proto.AskFinishTransaction{TTid: ttid, Oids: oids}})
		for _, l := range storages {
			for _, a := range h.take(l) {
				if ask, ok := a.(ActAsk); ok {
					h.step(EvAnswer{Link: l, Tag: ask.Tag, Msg: &proto.AnswerInformationLocked{TTid: ttid}})
				}
			}
		}
		if len(h.take(cl)) != 1 {
			b.Fatal("not committed")
		}
		for _, l := range storages {
			h.take(l)
		}
	}
}

// BenchmarkNetCommit measures a commit as the master serves it over
// loopback TCP: AskBeginTransaction and AskFinishTransaction from a client
// link, AskLockInformation answered by a fake storage link.
func BenchmarkNetCommit(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := New(ctx, Config{Cluster: "test", Bind: "127.0.0.1:0", Partitions: 12, Autostart: 1, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	s, err := neonet.Dial(ctx, m.Addr(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Storage, Address: proto.Some(proto.Address{Host: "127.0.0.1", Port: 1}),
		ClusterName: "test", Extra: proto.Dict{}}); err != nil {
		b.Fatal(err)
	}
	// The storage: answers what the master asks, tells it is ready.
	storageDone := make(chan struct{})
	go func() {
		defer close(storageDone)
		for {
			req, err := s.Recv(ctx)
			if err != nil {
				return
			}
			var ans proto.Msg
			switch r := req.Msg.(type) {
			case *proto.AskRecovery:
				ans = &proto.AnswerRecovery{BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid}
			case *proto.AskLockedTransactions:
				ans = &proto.AnswerLockedTransactions{}
			case *proto.AskLastIDs:
				ans = &proto.AnswerLastIDs{LastTid: zodb.InvalidTid, LastOid: zodb.InvalidOid, FirstTid: zodb.TidMax}
			case *proto.AskPackOrders:
				ans = &proto.AnswerPackOrders{}
			case *proto.AskLockInformation:
				ans = &proto.AnswerInformationLocked{TTid: r.TTid}
			case *proto.StartOperation:
				s.Notify(ctx, &proto.NotifyReady{})
			}
			if ans != nil {
				req.Reply(ctx, ans)
			}
		}
	}()
	defer func() { s.Close(); <-storageDone }()
	var cl *neonet.Link
	for {
		cl, err = neonet.Dial(ctx, m.Addr(), nil)
		if err != nil {
			b.Fatal(err)
		}
		_, err = cl.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Client, ClusterName: "test", Extra: proto.Dict{}})
		if err == nil {
			break
		}
		cl.Close()
	}
	defer cl.Close()
	go func() {
		for {
			if _, err := cl.Recv(ctx); err != nil {
				return
			}
		}
	}()
	oids := []zodb.Oid{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ans, err := cl.Ask(ctx, &proto.AskBeginTransaction{Tid: zodb.InvalidTid})
		if err != nil {
			b.Fatal(err)
		}
		ttid := ans.(*proto.AnswerBeginTransaction).TTid
		if _, err := cl.Ask(ctx, &proto.AskFinishTransaction{TTid: ttid, Oids: oids}); err != nil {
			b.Fatal(err)
		}
	}
}
