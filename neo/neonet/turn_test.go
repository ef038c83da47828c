package neonet

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// Many goroutines ask on one link, some giving up early (while reading for
// themselves, in the middle of a packet or of a TLS record), while the
// server answers late, out of order, and sends requests of its own: every
// answer waited for arrives whole (whoever reads it), and the link stays
// up.
func TestReadTurnStress(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		c, s := pair(t)
		readTurnStress(t, c, s)
	})
	t.Run("tls", func(t *testing.T) {
		ca := newTestCA(t, "cluster CA")
		c, s := pairTLS(t, node(t, ca.pem, ca, "client"), node(t, ca.pem, ca, "storage"))
		readTurnStress(t, c, s)
	})
}

func readTurnStress(t *testing.T, c, s *Link) {
	ctx := testCtx(t)
	var wg sync.WaitGroup
	serve(t, s, func(r *Request) {
		oid := r.Msg.(*proto.AskObject).Oid
		wg.Go(func() {
			if oid%3 == 0 {
				time.Sleep(time.Duration(oid%7) * 100 * time.Microsecond)
			}
			r.Reply(ctx, objectAnswer(oid, int(oid%5)*30000))
			r.Release()
		})
	})
	notified := make(chan struct{})
	go func() { // requests from the server, received by c's Recv
		defer close(notified)
		for i := range 200 {
			if err := s.Notify(ctx, &proto.NotifyClusterInformation{State: proto.ClusterState(i % 4)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var recvd atomic.Int64
	recvDone := make(chan struct{})
	go func() { // until c is closed
		defer close(recvDone)
		for {
			r, err := c.Recv(ctx)
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					t.Error(err)
				}
				return
			}
			recvd.Add(1)
			r.Release()
		}
	}()
	var askers sync.WaitGroup
	var gaveUp atomic.Int64
	for g := range 6 {
		askers.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 150 {
				oid := zodb.Oid(g*1000 + i)
				actx, cancel := ctx, context.CancelFunc(func() {})
				if rnd.IntN(4) == 0 {
					actx, cancel = context.WithTimeout(ctx, time.Duration(rnd.IntN(300))*time.Microsecond)
				}
				call, err := c.Start(actx, &proto.AskObject{Oid: oid, At: zodb.InvalidTid, Before: zodb.InvalidTid})
				if err != nil {
					cancel()
					if actx.Err() != nil {
						continue
					}
					t.Error(err)
					return
				}
				a, err := call.Wait(actx)
				cancel()
				switch {
				case err == nil:
					if !answers(a, oid, int(oid%5)*30000) {
						t.Errorf("oid %d: wrong answer", oid)
					}
				case errors.Is(err, context.DeadlineExceeded) && actx != ctx:
					gaveUp.Add(1)
				default:
					t.Errorf("oid %d: %v", oid, err)
				}
				call.Release()
			}
		})
	}
	askers.Wait()
	<-notified
	wg.Wait()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil || s.Err() != nil {
		t.Fatalf("links down: %v; %v", c.Err(), s.Err())
	}
	if n := recvd.Load(); n != 200 {
		t.Errorf("received %d notifications, want 200", n)
	}
	if gaveUp.Load() == 0 {
		t.Error("no call gave up waiting")
	}
	c.Close()
	<-recvDone
}

// An Ask reading for itself when its link is aborted (by a handler of a
// request that Ask read) fails at once, without waiting for the peer to
// close or the abort to stop lingering.
func TestAbortWhileAsking(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	asked := make(chan struct{})
	go func() { // s receives the Ask, never answers it, then notifies
		r, err := s.Recv(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		close(asked)
		_ = r
		s.Notify(ctx, &proto.NotifyReady{})
	}()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Ask(ctx, &proto.AskLastTransaction{})
		errc <- err
	}()
	<-asked
	r, err := c.Recv(ctx) // read by the Ask, which holds the read turn
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Abort(ctx, &proto.Error{Code: proto.ProtocolError, Message: "bye"}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrLinkDown) {
		t.Fatalf("ask: %v", err)
	}
	select {
	case <-c.reading:
		t.Fatal("the ask failed only once the link stopped lingering")
	default:
	}
	// s receives the Error (answering nothing of s, it goes to Recv).
	a, err := s.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := a.Msg.(*proto.Error); !ok || e.Message != "bye" {
		t.Fatalf("server received %v", a.Msg)
	}
	s.Close()
	<-c.reading
}
