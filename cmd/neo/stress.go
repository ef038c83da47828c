package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"

	"github.com/neozodb/neo/neo/stress"
)

const stressUsage = `[--cycles N] [--seed S] [--clients N] [--storages N] [--replicas N] [--masters N] [--partitions N]

Starts a cluster of its own in this process (SQLite databases in a temporary
directory), runs clients doing read-modify-write transactions on counters and
append lists while a fault loop kills and restarts storages (and the primary
master when there are several), and cuts and heals links between nodes; then
reads everything back and checks the recorded history: every acknowledged
commit must be there, and the history must be serializable in tid order and
agree with real time. The fault schedule is reproducible from --seed (one is
chosen and printed when none is given). The last line on standard output is
"cycles=N faults=K acked=A lost=L anomalies=X"; the exit status is 0 only
when lost=0 and anomalies=0.
`

// stressArgs parses the command line of neo stress.
func stressArgs(e *env, args []string) (stress.Options, error) {
	var o stress.Options
	fs := newFlagSet(e, stressUsage)
	fs.IntVar(&o.Cycles, "cycles", 3, "fault cycles")
	seed := fs.String("seed", "", "seed of the fault schedule (default: random, printed)")
	fs.IntVar(&o.Clients, "clients", 3, "client nodes")
	fs.IntVar(&o.Storages, "storages", 2, "storage nodes")
	fs.IntVar(&o.Replicas, "replicas", 1, "extra copies of each partition")
	fs.IntVar(&o.Masters, "masters", 1, "master nodes")
	fs.IntVar(&o.Partitions, "partitions", 4, "partitions")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return o, err
		}
		return o, &usageError{err.Error()}
	}
	if len(pos) != 0 {
		return o, usagef("unexpected arguments: %q", pos)
	}
	if o.Cycles < 0 || o.Clients < 1 || o.Storages < 1 || o.Replicas < 0 || o.Masters < 1 || o.Partitions < 1 {
		return o, usagef("--cycles must not be negative; --clients, --storages, --masters and --partitions must be positive")
	}
	if o.Replicas >= o.Storages {
		return o, usagef("--replicas must be less than --storages")
	}
	if *seed == "" {
		o.Seed = rand.Int64()
	} else if _, err := fmt.Sscan(*seed, &o.Seed); err != nil {
		return o, usagef("--seed %q: not an integer", *seed)
	}
	return o, nil
}

func runStress(ctx context.Context, e *env, args []string) error {
	o, err := stressArgs(e, args)
	if err != nil {
		return err
	}
	o.Log = e.stderr
	fmt.Fprintf(e.stderr, "%s: seed %d\n", e.prog, o.Seed)
	res, err := stress.Run(ctx, o)
	fmt.Fprintln(e.stdout, res.String())
	if err != nil || res.Lost != 0 || res.Anomalies != 0 {
		for _, d := range res.Details {
			fmt.Fprintln(e.stderr, d)
		}
	}
	if err != nil {
		return err
	}
	if res.Lost != 0 || res.Anomalies != 0 {
		return errors.New("the history check failed")
	}
	return nil
}
