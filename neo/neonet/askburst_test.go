package neonet

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// A new link's first answer comes with notifications right behind it,
// before the owner started receiving (a client identifying with its
// master): the notifications wait for Recv, and a second request started
// beside the receiver gets its answer.
func TestFirstAnswerWithNotifications(t *testing.T) {
	for iter := 0; iter < 300; iter++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, s := pair(t)
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				r, err := s.Recv(ctx)
				if err != nil {
					return
				}
				switch r.Msg.(type) {
				case *proto.AskLastIDs:
					r.Reply(ctx, &proto.AnswerLastIDs{LastTid: 1})
					for i := 1; i <= iter%40; i++ {
						s.Notify(ctx, &proto.InvalidateObjects{Tid: zodb.Tid(i)})
					}
				case *proto.AskLastTransaction:
					r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 7})
				}
			}
		})
		if _, err := c.Ask(ctx, &proto.AskLastIDs{}); err != nil {
			t.Fatalf("iteration %d: first ask: %v", iter, err)
		}
		if iter%2 == 0 {
			time.Sleep(time.Duration(iter%3) * time.Millisecond)
		}
		wg.Go(func() {
			for {
				if _, err := c.Recv(ctx); err != nil {
					return
				}
			}
		})
		if iter%5 == 0 {
			time.Sleep(time.Duration(iter%4) * time.Millisecond)
		}
		a, err := c.Ask(ctx, &proto.AskLastTransaction{})
		if err != nil || a.(*proto.AnswerLastTransaction).Tid != 7 {
			t.Fatalf("iteration %d: second ask: %v %v", iter, a, err)
		}
		cancel()
		c.Close()
		s.Close()
		wg.Wait()
	}
}
