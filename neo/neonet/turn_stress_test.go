package neonet

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestRecvAndAskTogether: one goroutine receives the peer's notifications
// while others ask, on the same link, as a client does with its master
// (notifications and answers interleaved on the wire). Every notification
// must come in order and every request must get its own answer: the read
// turn passes between the receiver, the askers and the link's goroutine
// without losing or mixing bytes.
func TestRecvAndAskTogether(t *testing.T) {
	const (
		notifs  = 3000
		askers  = 3
		perAsk  = 300
		timeout = 60 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, s := pair(t)

	var wg sync.WaitGroup
	// server: answers every request with its message id, and sends a
	// stream of numbered notifications meanwhile
	wg.Go(func() {
		for {
			r, err := s.Recv(ctx)
			if err != nil {
				return
			}
			if _, ok := r.Msg.(*proto.AskLastTransaction); ok {
				r.Reply(ctx, &proto.AnswerLastTransaction{Tid: zodb.Tid(r.MsgID)})
			}
		}
	})
	wg.Go(func() {
		for i := 1; i <= notifs; i++ {
			if err := s.Notify(ctx, &proto.InvalidateObjects{Tid: zodb.Tid(i)}); err != nil {
				t.Errorf("notify %d: %v", i, err)
				return
			}
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // let the link go idle now and then
			}
		}
	})
	// client: a receiver, and askers with and without deadlines
	recvDone := make(chan error, 1)
	go func() {
		next := zodb.Tid(1)
		for next <= notifs {
			r, err := c.Recv(ctx)
			if err != nil {
				recvDone <- err
				return
			}
			m, ok := r.Msg.(*proto.InvalidateObjects)
			if !ok || m.Tid != next {
				t.Errorf("received %#v, want notification %d", r.Msg, next)
				recvDone <- nil
				return
			}
			next++
		}
		recvDone <- nil
	}()
	var awg sync.WaitGroup
	for k := 0; k < askers; k++ {
		awg.Go(func() {
			for i := 0; i < perAsk; i++ {
				actx := context.Background()
				if (i+k)%2 == 0 {
					var acancel context.CancelFunc
					actx, acancel = context.WithTimeout(ctx, timeout)
					defer acancel()
				}
				call, err := c.Start(actx, &proto.AskLastTransaction{})
				if err != nil {
					t.Errorf("asker %d: %v", k, err)
					return
				}
				a, err := call.Wait(actx)
				if err != nil {
					t.Errorf("asker %d, request %d: %v", k, i, err)
					return
				}
				if got := a.(*proto.AnswerLastTransaction).Tid; got != zodb.Tid(call.MsgID()) {
					t.Errorf("asker %d: answer %v to request %d", k, got, call.MsgID())
				}
				call.Release()
				if i%40 == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			}
		})
	}
	awg.Wait()
	if err := <-recvDone; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	c.Close()
	s.Close()
	wg.Wait()
}

// TestSyncGivingUp: a Sync whose context ends before the Pong comes leaves
// the late Pong to the link alone (-race: no access to the abandoned call).
func TestSyncGivingUp(t *testing.T) {
	ctx := testCtx(t)
	c, s := pair(t)
	release := make(chan struct{})
	go func() {
		<-release // Recv answers Pings: none is answered before
		for {
			if _, err := s.Recv(ctx); err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			if _, err := c.Recv(ctx); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		sctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		if err := c.Sync(sctx); err == nil && i == 0 {
			t.Fatalf("sync returned before its Pong")
		}
		cancel()
		if i == 0 {
			close(release)
		}
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}
