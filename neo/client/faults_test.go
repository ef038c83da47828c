package client_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storagetest"
)

// TestCountersUnderFaults: clients increment a shared counter, resolving
// their conflicts, while the links between them and one of the two
// storages are cut and healed at random. No increment is lost or counted
// twice, and every client sees the commits in tid order.
func TestCountersUnderFaults(t *testing.T) {
	const clients, increments = 3, 15
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1, Partitions: 3})
	ctx := testCtx(t)
	var stors []*zodb.Storage
	var watches []chan zodb.Event
	for i := range clients {
		s := c.Open(t, fmt.Sprintf("C%d", i+1), &zodb.OpenOptions{Resolver: storagetest.CounterResolver})
		ch := make(chan zodb.Event, clients*increments+16)
		s.AddWatch(ch)
		t.Cleanup(func() { s.DelWatch(ch) })
		stors = append(stors, s)
		watches = append(watches, ch)
	}
	oid, err := stors[0].NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, stors[0], oid, 0, storagetest.Counter(0))

	stop := make(chan struct{})
	var faults sync.WaitGroup
	faults.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		s1 := c.StorageName(0)
		for {
			select {
			case <-stop:
				c.Net.HealAll()
				return
			default:
			}
			name := fmt.Sprintf("C%d", rng.IntN(clients)+1)
			c.Net.Cut(name, s1)
			loadAt(t, stors[0], oid, zodb.TidMax) // let some work happen
			c.Net.Heal(name, s1)
			loadAt(t, stors[0], oid, zodb.TidMax)
		}
	})

	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i, s := range stors {
		wg.Go(func() {
			for range increments {
				for attempt := 0; ; attempt++ {
					data, serial, _, err := s.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
					if err == nil {
						var v int64
						if v, err = storagetest.CounterValue(data); err == nil {
							_, err = tryCommit(ctx, s, oid, serial, storagetest.Counter(v+1))
						}
					}
					if err == nil {
						break
					}
					t.Logf("client %d: attempt %d: %v", i+1, attempt, err) // faults make some fail
					var ce *zodb.ConflictError
					if attempt > 20 || ctx.Err() != nil || (!errors.As(err, &ce) && attempt > 10) {
						errs[i] = fmt.Errorf("client %d: %w", i+1, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	faults.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The final value is read by a new client at the head it learned from
	// the master: a load at TidMax through a client that has not yet
	// applied the outdating of S1 (its master link is processed in the
	// background) may read S1, which missed the last commits.
	fresh := c.Open(t, "C9", nil)
	head, err := fresh.LastTid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, last := loadAt(t, fresh, oid, head)
	if v, err := storagetest.CounterValue(data); err != nil || v != clients*increments {
		t.Fatalf("counter %d (%v), want %d", v, err, clients*increments)
	}
	// Every client saw every commit, in order.
	for i, ch := range watches {
		var prev zodb.Tid
		n := 0
		for prev < last {
			select {
			case ev := <-ch:
				ce, ok := ev.(*zodb.CommitEvent)
				if !ok {
					t.Fatalf("client %d: event %v", i+1, ev)
				}
				if ce.Tid <= prev {
					t.Fatalf("client %d: event %v after %v", i+1, ce.Tid, prev)
				}
				prev = ce.Tid
				n++
			case <-ctx.Done():
				t.Fatalf("client %d: %d events, none for %v", i+1, n, last)
			}
		}
		if n != clients*increments+1 { // and the counter's creation
			t.Errorf("client %d: %d events, want %d", i+1, n, clients*increments+1)
		}
	}
}
