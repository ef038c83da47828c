// Package stress runs a NEO cluster in the calling process under faults and
// checks that no acknowledged commit is lost and that the histories its
// clients record are serializable (package histcheck).
//
// Run starts masters, storages (SQLite databases in a temporary directory
// it removes), an admin node and clients, all over one faultnet.Network, so
// that the links between any two nodes can be cut or blackholed. While the
// clients increment counters, append tokens to lists and read them, a fault
// loop driven by a math/rand generator seeded with Options.Seed (the schedule
// of faults is reproducible from the seed; their timing against the clients'
// operations is not) does, per cycle:
//
//   - kill a storage abruptly (links cut at once, Run stopped, database
//     closed) and restart it on the same database;
//   - cut or blackhole the links between random pairs of nodes
//     (master↔storage, client↔storage, master↔master), then heal them;
//   - with several masters, kill the primary master and restart it;
//
// waiting after each fault until the cluster is operational again, as the
// admin node reports it. At the end every fault is healed, Run waits until
// every cell is UP_TO_DATE, reads the final state with a fresh client and
// checks the history.
//
// The command `neo stress` maps its flags one to one to Options:
// --cycles, --seed, --clients, --storages, --replicas, --masters (and
// --partitions).
package stress

import (
	"context"
	"fmt"
	"io"
)

// Options describe a stress run. Zero values take the defaults.
type Options struct {
	Cycles     int   // fault cycles; default 3
	Seed       int64 // seed of the fault schedule and of the clients' choices; 0: 1
	Clients    int   // client goroutines, each with its own client node; default 3
	Storages   int   // storage nodes; default 2
	Replicas   int   // extra copies of each partition (0 is allowed)
	Masters    int   // master nodes; default 1
	Partitions int   // partitions of the table; default 4
	// Log receives the progress of the run (faults, waits, the check's
	// findings); nil: none.
	Log io.Writer
}

// Result is what a run did and found.
type Result struct {
	Cycles    int // fault cycles completed
	Faults    int // faults injected
	Acked     int // commits acknowledged to the clients
	Lost      int // acknowledged commits missing from the final state
	Anomalies int // other anomalies found by the history check
	// Details describe each lost commit and anomaly, and why the run
	// stopped early if it did.
	Details []string
}

// String returns "cycles=N faults=K acked=A lost=L anomalies=X".
func (r Result) String() string {
	return fmt.Sprintf("cycles=%d faults=%d acked=%d lost=%d anomalies=%d", r.Cycles, r.Faults, r.Acked, r.Lost, r.Anomalies)
}

// Run runs a stress test as opt describes. It returns an error when the
// cluster lost a commit, showed an anomaly, or could not be brought back to
// an operational state; the Result tells what was done until then.
func Run(ctx context.Context, opt Options) (Result, error) {
	return Result{}, fmt.Errorf("stress: not implemented yet")
}
