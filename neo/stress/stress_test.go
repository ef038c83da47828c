package stress

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/histcheck"
)

var (
	soakCycles = flag.Int("stress.cycles", 0, "run a soak of this many fault cycles (TestSoak)")
	soakSeed   = flag.Int64("stress.seed", 1, "seed of TestSoak")
	soakOpt    = flag.String("stress.cluster", "clients=4,storages=3,replicas=1,masters=1", "TestSoak's cluster (not parsed beyond these keys)")
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
	res, err := run(ctx, Options{Cycles: 1, Seed: 3, Clients: 2, Storages: 2, Replicas: 1, Log: testLog{t}}, tamper)
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

func slicesDelete(v []string, s string) []string {
	var w []string
	for _, x := range v {
		if x != s {
			w = append(w, x)
		}
	}
	return w
}

func TestResultString(t *testing.T) {
	r := Result{Cycles: 3, Faults: 7, Acked: 120, Lost: 1, Anomalies: 2}
	if got, want := r.String(), "cycles=3 faults=7 acked=120 lost=1 anomalies=2"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}
