package stress

import (
	"context"
	"flag"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/histcheck"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// The soak: go test ./neo/stress -run TestSoak -stress.cycles=N [flags].
var (
	soakCycles   = flag.Int("stress.cycles", 0, "TestSoak: fault cycles (0: skip the soak)")
	soakSeed     = flag.Int64("stress.seed", 1, "TestSoak: seed")
	soakClients  = flag.Int("stress.clients", 4, "TestSoak: clients")
	soakStorages = flag.Int("stress.storages", 3, "TestSoak: storages")
	soakReplicas = flag.Int("stress.replicas", 1, "TestSoak: replicas")
	soakMasters  = flag.Int("stress.masters", 1, "TestSoak: masters")
)

// testLog writes the run's log to the test log.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Cycles: 2, Seed: 7, Clients: 3, Storages: 2, Replicas: 1, Log: testLog{t}})
	t.Logf("%s", res)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cycles != 2 || res.Faults < 4 || res.Acked == 0 {
		t.Fatalf("the run did too little: %s", res)
	}
}

// A storage that dropped an acknowledged write: the last acknowledged
// append is taken out of the final state read. Run must report it.
func TestLostCommitReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var dropped string
	tamper := func(h *histcheck.History, f histcheck.Final) {
		for i := len(h.Ops) - 1; i >= 0; i-- {
			op := &h.Ops[i]
			if op.Kind != histcheck.Append || op.Outcome != histcheck.OK {
				continue
			}
			fo := f[op.Obj]
			fo.Value.Tokens = slicesDelete(fo.Value.Tokens, op.Token)
			var revs []histcheck.Revision
			for _, rev := range fo.Revisions {
				if rev.Tid != op.Tid {
					rev.Value.Tokens = slicesDelete(rev.Value.Tokens, op.Token)
					revs = append(revs, rev)
				}
			}
			fo.Revisions = revs
			dropped = histcheck.Describe(h, i)
			return
		}
	}
	res, err := run(ctx, Options{Cycles: 1, Seed: 3, Clients: 2, Storages: 2, Replicas: 1, Log: testLog{t}}, hooks{tamper: tamper})
	t.Logf("%s", res)
	if dropped == "" {
		t.Fatalf("no acknowledged append to drop: %s", res)
	}
	if err == nil {
		t.Fatalf("a dropped commit (%s) is not reported", dropped)
	}
	if res.Lost != 1 {
		t.Fatalf("lost=%d, want 1 (%s): %v", res.Lost, dropped, err)
	}
	found := false
	for _, d := range res.Details {
		if strings.Contains(d, dropped) && strings.Contains(d, "lost commit") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no detail names %s: %q", dropped, res.Details)
	}
}

// droppingBackend loses the write of one transaction: at its unlock, its
// data is thrown away instead of committed, while the node goes on as if
// it had been.
type droppingBackend struct {
	backend.Backend
	*dropCount
}

// dropCount counts the unlocks of a storage across its restarts.
type dropCount struct {
	mu      sync.Mutex
	unlocks int
	dropAt  int // which unlock to drop (1: the first)
	dropped zodb.Tid
	done    chan struct{} // closed once dropped
}

func (b droppingBackend) Unlock(ctx context.Context, ttid, tid zodb.Tid) error {
	b.mu.Lock()
	b.unlocks++
	drop := b.unlocks == b.dropAt
	if drop {
		b.dropped = tid
		close(b.done)
	}
	b.mu.Unlock()
	if drop {
		return b.Backend.Abort(ctx, ttid)
	}
	return b.Backend.Unlock(ctx, ttid, tid)
}

// A storage that drops an acknowledged write: the checks find it. Seed 9
// kills S2 in its only cycle, so that S1 is not restarted (replication
// would repair it: a restarted storage catches up from the others).
func TestStorageDropsWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dropper := &dropCount{dropAt: 5, done: make(chan struct{})} // the 1st is the objects' creation
	wrap := func(stor string, b backend.Backend) backend.Backend {
		if stor != "S1" {
			return b
		}
		return droppingBackend{Backend: b, dropCount: dropper}
	}
	dropped := func(ctx context.Context) error {
		select {
		case <-dropper.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var log strings.Builder
	res, err := run(ctx, Options{Cycles: 1, Seed: 9, Clients: 3, Storages: 2, Replicas: 1, Log: io.MultiWriter(testLog{t}, &log)},
		hooks{wrapBackend: wrap, underLoad: dropped})
	t.Logf("%s", res)
	if !strings.Contains(log.String(), "cycle 1: kill S2") {
		t.Fatalf("the schedule of seed 9 changed: S1 is killed (and repaired)")
	}
	dropper.mu.Lock()
	tid := dropper.dropped
	dropper.mu.Unlock()
	// The one dropped write is found by the replica comparison; when the
	// clients read S1 after it, the counter's total may report it again
	// (it cannot tell which increment is missing), and their stale reads
	// are anomalies: at least one loss, never none.
	if err == nil || res.Lost < 1 {
		t.Fatalf("the write of %v dropped by S1 is not reported as a lost commit: %s, %v", tid, res, err)
	}
	found := false
	for _, d := range res.Details {
		if strings.Contains(d, "lost commit") && strings.Contains(d, tid.String()) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no detail names the lost revision %v: %q", tid, res.Details)
	}
}

func slicesDelete(v []string, s string) []string {
	var w []string
	for _, x := range v {
		if x != s {
			w = append(w, x)
		}
	}
	return w
}

func TestSoak(t *testing.T) {
	if *soakCycles <= 0 {
		t.Skip("soak not asked for: run with -stress.cycles=N")
	}
	opt := Options{Cycles: *soakCycles, Seed: *soakSeed, Clients: *soakClients, Storages: *soakStorages,
		Replicas: *soakReplicas, Masters: *soakMasters, Log: testLog{t}}
	res, err := Run(context.Background(), opt)
	t.Logf("%s", res)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cycles != opt.Cycles {
		t.Fatalf("%d cycles of %d", res.Cycles, opt.Cycles)
	}
}

// Several masters: the primary is killed in every cycle.
func TestMasters(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the run with several masters is skipped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Cycles: 2, Seed: 11, Clients: 2, Storages: 2, Replicas: 1, Masters: 2, Log: testLog{t}})
	t.Logf("%s", res)
	if err != nil {
		t.Fatal(err)
	}
	if res.Faults < 6 {
		t.Fatalf("no master killed: %s", res)
	}
}

func TestResultString(t *testing.T) {
	r := Result{Cycles: 3, Faults: 7, Acked: 120, Lost: 1, Anomalies: 2}
	if got, want := r.String(), "cycles=3 faults=7 acked=120 lost=1 anomalies=2"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}
