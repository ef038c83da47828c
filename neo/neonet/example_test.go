package neonet_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// A node serving links: each link gets a goroutine that receives its
// requests in order and answers them.
func ExampleListen() {
	var wg sync.WaitGroup
	defer wg.Wait() // every goroutine below ends once ctx is cancelled
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := neonet.Listen(ctx, "127.0.0.1:0", nil) // or a TLSConfig
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	wg.Go(func() {
		for {
			l, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer l.Close()
				for {
					r, err := l.Recv(ctx)
					if err != nil {
						return // link down
					}
					switch r.Msg.(type) {
					case *proto.AskLastTransaction:
						r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 0x03f4a1b2c3d4e5f6})
					default:
						r.Abort(ctx, proto.Err(proto.ProtocolError, "unexpected %T", r.Msg))
					}
				}
			})
		}
	})

	// The other side: dial, keep receiving (notifications, pings), ask.
	l, err := neonet.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	wg.Go(func() {
		for {
			if _, err := l.Recv(ctx); err != nil {
				return
			}
		}
	})
	a, err := l.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil {
		var perr *proto.Error
		if errors.As(err, &perr) {
			log.Fatalf("peer refused: %s", perr.Message)
		}
		log.Fatal(err)
	}
	fmt.Printf("%x\n", uint64(a.(*proto.AnswerLastTransaction).Tid))
	// Output: 3f4a1b2c3d4e5f6
}
