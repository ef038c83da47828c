package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/neozodb/neo/zodb"
)

const benchUsage = `[-n OBJECTS] [--size BYTES] [--commits N] [--samples N] [--duration D] URL

Measures a running storage (a neo:// cluster, or any URL zodb.Open takes)
through the Go client, after filling it with OBJECTS new objects, and prints
one line per figure. A raw TCP ping-pong on loopback is measured in the same
run as the physical reference, within this process and with another process
(this program again, with --echo-server), as a client and a storage node
are. It writes OBJECTS objects and more: run it against a scratch cluster
(neo simple), not one holding data you care about.

Figures: latency (median, p99) of serial loads of objects the client never
read, twice (first and second read of each object, each time with a new
client), of commits of 1 and 10 objects (with the time spent in each commit
phase), of commits from 8 clients at once and of loadBefore (the revision
before the current one); loads per second of 1, 4 and 16 clients loading
distinct objects in parallel for --duration; records per second of an
iteration over the whole database; and the ratio of the load latency to
each raw round trip.
`

// benchArgs is the command line of neo bench.
type benchArgs struct {
	url      string
	objects  int           // objects filled
	size     int           // bytes per object
	batch    int           // objects per fill transaction
	commits  int           // transactions per commit figure
	samples  int           // loads per latency figure (at most objects)
	duration time.Duration // per parallel-load figure
	raw      int           // round trips of the raw reference
	echo     bool          // serve the other end of a cross-process ping-pong
	echoCmd  []string      // runs an echo server for the cross-process ping-pong (none: not measured)
}

func parseBench(e *env, args []string) (*benchArgs, error) {
	b := &benchArgs{}
	fs := newFlagSet(e, benchUsage)
	fs.IntVar(&b.objects, "n", 100000, "number of objects to fill the storage with")
	fs.IntVar(&b.size, "size", 100, "size of each object in bytes")
	fs.IntVar(&b.batch, "batch", 1000, "objects per transaction when filling")
	fs.IntVar(&b.commits, "commits", 300, "transactions for each commit figure")
	fs.IntVar(&b.samples, "samples", 10000, "loads for each latency figure")
	fs.DurationVar(&b.duration, "duration", 2*time.Second, "duration of each parallel-load figure")
	fs.IntVar(&b.raw, "raw", 20000, "round trips of the raw TCP reference")
	fs.BoolVar(&b.echo, "echo-server", false, "print a loopback address and echo what one connection to it sends (the other end of the cross-process reference)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if b.echo {
		if len(pos) != 0 {
			return nil, usagef("--echo-server takes no URL")
		}
		return b, nil
	}
	if len(pos) != 1 {
		return nil, usagef("want one URL, got %d arguments", len(pos))
	}
	b.url = pos[0]
	if b.objects < 1 || b.size < 0 || b.batch < 1 || b.commits < 1 || b.samples < 1 || b.duration <= 0 || b.raw < 1 {
		return nil, usagef("-n, --batch, --commits, --samples, --raw and --duration must be positive")
	}
	return b, nil
}

// latencies summarizes a set of durations.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

func (l latencies) String() string {
	return fmt.Sprintf("median %v p99 %v (n=%d)", round(l.pct(0.5)), round(l.pct(0.99)), len(l))
}

func round(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d > 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}

func runBench(ctx context.Context, e *env, args []string) error {
	b, err := parseBench(e, args)
	if err != nil {
		return err
	}
	if b.echo {
		return echoServer(ctx, e.stdout)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.echoCmd = []string{self, "bench", "--echo-server"}
	return bench(ctx, b, e.stdout)
}

// bench runs every measurement of neo bench and prints its lines to w.
func bench(ctx context.Context, b *benchArgs, w io.Writer) error {
	rng := rand.New(rand.NewPCG(1, 2))
	payload := func() []byte {
		p := make([]byte, b.size)
		for i := range p {
			p[i] = byte(rng.Uint32()) // incompressible
		}
		return p
	}
	open := func() (*zodb.Storage, error) { return zodb.Open(ctx, b.url, nil) }
	openRO := func() (*zodb.Storage, error) { return zodb.Open(ctx, b.url, &zodb.OpenOptions{ReadOnly: true}) }

	raw, err := rawPingPong(ctx, b.raw)
	if err != nil {
		return fmt.Errorf("raw TCP reference: %w", err)
	}
	fmt.Fprintf(w, "raw TCP ping-pong 64 B, loopback: %v\n", raw)
	var rawProc latencies
	if len(b.echoCmd) > 0 {
		rawProc, err = crossProcessPingPong(ctx, b.echoCmd, b.raw)
		if err != nil {
			return fmt.Errorf("raw TCP reference with another process: %w", err)
		}
		fmt.Fprintf(w, "raw TCP ping-pong 64 B, loopback, with another process: %v\n", rawProc)
	}

	// Fill.
	stor, err := open()
	if err != nil {
		return err
	}
	defer func() {
		if stor != nil {
			stor.Close()
		}
	}()
	serial := map[zodb.Oid]zodb.Tid{} // current serial of each object
	var oids []zodb.Oid
	t0 := time.Now()
	ntxn := 0
	var fillPhases commitPhases
	for len(oids) < b.objects {
		n := min(b.batch, b.objects-len(oids))
		batch, err := stor.NewOids(ctx, n)
		if err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		objs := make(map[zodb.Oid][]byte, n)
		for _, oid := range batch {
			objs[oid] = payload()
		}
		tid, err := commit(ctx, stor, objs, serial, &fillPhases)
		if err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		for _, oid := range batch {
			serial[oid] = tid
		}
		oids = append(oids, batch...)
		ntxn++
	}
	d := time.Since(t0)
	fmt.Fprintf(w, "fill: %d objects of %d B in %d transactions: %v (%.0f objects/s; %v)\n",
		len(oids), b.size, ntxn, d.Round(time.Millisecond), float64(len(oids))/d.Seconds(), fillPhases)

	// Serial loads of distinct objects with a fresh client: none is cached.
	fresh := func() error {
		stor.Close()
		stor, err = open()
		return err
	}
	if err := fresh(); err != nil {
		return err
	}
	head, err := stor.LastTid(ctx)
	if err != nil {
		return err
	}
	order := slices.Clone(oids)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	serialLoads := func() (latencies, error) {
		var lat latencies
		for _, oid := range order[:min(b.samples, len(order))] {
			t := time.Now()
			if _, _, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: head}); err != nil {
				return nil, fmt.Errorf("load %v: %w", oid, err)
			}
			lat = append(lat, time.Since(t))
		}
		return lat, nil
	}
	// The first pass finds the storages' caches cold (as after the fill,
	// which wrote through them, mostly); the second one, with another
	// fresh client, warm.
	coldLoad, err := serialLoads()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "load, serial, uncached (first read of each object): %v\n", coldLoad)
	if err := fresh(); err != nil {
		return err
	}
	load, err := serialLoads()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "load, serial, uncached by the client (second read): %v\n", load)

	// Commits of 1 and 10 objects, each a new revision of a filled object.
	var changed []zodb.Oid // objects with an older revision, for loadBefore
	isChanged := map[zodb.Oid]bool{}
	next := 0
	pick := func() zodb.Oid {
		oid := order[next%len(order)]
		next++
		return oid
	}
	for _, per := range []int{1, 10} {
		var lat latencies
		var ph commitPhases
		t0 := time.Now()
		for range b.commits {
			objs := map[zodb.Oid][]byte{}
			for len(objs) < min(per, len(order)) {
				objs[pick()] = payload()
			}
			t := time.Now()
			tid, err := commit(ctx, stor, objs, serial, &ph)
			if err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			lat = append(lat, time.Since(t))
			for oid := range objs {
				if !isChanged[oid] && len(changed) < b.samples {
					changed = append(changed, oid)
					isChanged[oid] = true
				}
				serial[oid] = tid
			}
		}
		d := time.Since(t0)
		fmt.Fprintf(w, "commit %d object(s) of %d B: %v, %.0f transactions/s (%.0f objects/s; in all %v)\n",
			per, b.size, lat, float64(b.commits)/d.Seconds(), float64(b.commits*per)/d.Seconds(), ph)
	}

	// Commits from several clients at once, each of one new object.
	const committers = 8
	each := max(1, b.commits/committers)
	plat, d, err := parallelCommits(ctx, open, committers, each, payload)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "commit 1 new object of %d B, %d parallel clients: %v, %.0f transactions/s\n",
		b.size, committers, plat, float64(committers*each)/d.Seconds())

	// loadBefore: the revision before the current one, with a fresh client.
	if err := fresh(); err != nil {
		return err
	}
	var before latencies
	for _, oid := range changed {
		t := time.Now()
		if _, _, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: serial[oid] - 1}); err != nil {
			return fmt.Errorf("loadBefore %v: %w", oid, err)
		}
		before = append(before, time.Since(t))
	}
	fmt.Fprintf(w, "loadBefore, serial, uncached: %v\n", before)

	// Parallel loads, each client its own connection to the cluster.
	for _, nc := range []int{1, 4, 16} {
		ops, wrapped, err := parallelLoads(ctx, b, openRO, order, nc)
		if err != nil {
			return err
		}
		note := ""
		if wrapped {
			note = " (clients loaded some objects twice: cached loads included; use a larger -n)"
		}
		fmt.Fprintf(w, "load, %d parallel client(s): %.0f loads/s%s\n", nc, ops, note)
	}

	// Read everything back by iteration.
	if err := fresh(); err != nil {
		return err
	}
	t0 = time.Now()
	nobj, err := readAll(ctx, stor)
	if err != nil {
		return err
	}
	d = time.Since(t0)
	fmt.Fprintf(w, "read all (iteration): %d records in %v, %.0f objects/s\n", nobj, d.Round(time.Millisecond), float64(nobj)/d.Seconds())

	fmt.Fprintf(w, "ratio load/raw (medians, second read): %.1f", float64(load.pct(0.5))/float64(raw.pct(0.5)))
	if rawProc != nil {
		fmt.Fprintf(w, "; to the ping-pong with another process: %.1f", float64(load.pct(0.5))/float64(rawProc.pct(0.5)))
	}
	fmt.Fprintln(w)
	return nil
}

// commitPhases accumulates the time spent in each phase of commits.
type commitPhases struct{ begin, store, vote, finish time.Duration }

func (p commitPhases) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", d.Seconds()*1000) }
	return fmt.Sprintf("begin %s, stores %s, vote %s, finish %s", ms(p.begin), ms(p.store), ms(p.vote), ms(p.finish))
}

// commit writes objs in one transaction, each over its serial (0: new), and
// returns the tid. ph, if not nil, accumulates the time of each phase.
func commit(ctx context.Context, stor *zodb.Storage, objs map[zodb.Oid][]byte, serial map[zodb.Oid]zodb.Tid, ph *commitPhases) (zodb.Tid, error) {
	if ph == nil {
		ph = &commitPhases{}
	}
	t := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d += now.Sub(t)
		t = now
	}
	txn, err := stor.Begin(ctx, zodb.TxnMeta{User: []byte("neo bench")})
	if err != nil {
		return 0, err
	}
	lap(&ph.begin)
	for oid, data := range objs {
		if err := txn.Store(ctx, oid, serial[oid], data); err != nil {
			txn.Abort(ctx)
			return 0, err
		}
	}
	lap(&ph.store)
	if _, err := txn.Vote(ctx); err != nil {
		txn.Abort(ctx)
		return 0, err
	}
	lap(&ph.vote)
	tid, err := txn.Finish(ctx)
	lap(&ph.finish)
	return tid, err
}

// parallelCommits runs nc clients committing n transactions each, of one
// new object, and returns the latencies of all commits and the time they
// took together (the clients connected first).
func parallelCommits(ctx context.Context, open func() (*zodb.Storage, error), nc, n int, payload func() []byte) (latencies, time.Duration, error) {
	stors := make([]*zodb.Storage, nc)
	defer func() {
		for _, s := range stors {
			if s != nil {
				s.Close()
			}
		}
	}()
	for i := range stors {
		s, err := open()
		if err != nil {
			return nil, 0, err
		}
		stors[i] = s
	}
	data := make([][]byte, nc) // payload is not safe for concurrent use
	for i := range data {
		data[i] = payload()
	}
	lats := make([]latencies, nc)
	errs := make([]error, nc)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, s := range stors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				t := time.Now()
				oid, err := s.NewOid(ctx)
				if err == nil {
					_, err = commit(ctx, s, map[zodb.Oid][]byte{oid: data[i]}, nil, nil)
				}
				if err != nil {
					errs[i] = fmt.Errorf("parallel commit: %w", err)
					return
				}
				lats[i] = append(lats[i], time.Since(t))
			}
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	var all latencies
	for i := range nc {
		if errs[i] != nil {
			return nil, 0, errs[i]
		}
		all = append(all, lats[i]...)
	}
	return all, d, nil
}

// parallelLoads runs nc clients loading distinct objects for b.duration
// and returns the total loads per second.
func parallelLoads(ctx context.Context, b *benchArgs, open func() (*zodb.Storage, error), oids []zodb.Oid, nc int) (float64, bool, error) {
	stors := make([]*zodb.Storage, nc)
	defer func() {
		for _, s := range stors {
			if s != nil {
				s.Close()
			}
		}
	}()
	for i := range stors {
		s, err := open()
		if err != nil {
			return 0, false, err
		}
		stors[i] = s
	}
	head, err := stors[0].LastTid(ctx)
	if err != nil {
		return 0, false, err
	}
	var (
		total   atomic.Int64
		wrapped atomic.Bool
		wg      sync.WaitGroup
		errMu   sync.Mutex
		first   error
	)
	deadline := time.Now().Add(b.duration)
	t0 := time.Now()
	for i, s := range stors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for k := i; time.Now().Before(deadline); k += nc {
				if k >= len(oids) {
					k %= len(oids)
					wrapped.Store(true)
				}
				if _, _, _, err := s.Load(ctx, zodb.Xid{Oid: oids[k], At: head}); err != nil {
					errMu.Lock()
					if first == nil {
						first = fmt.Errorf("parallel load %v: %w", oids[k], err)
					}
					errMu.Unlock()
					return
				}
				n++
			}
			total.Add(int64(n))
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	if first != nil {
		return 0, false, first
	}
	return float64(total.Load()) / d.Seconds(), wrapped.Load(), nil
}

// readAll iterates over every transaction and counts the records.
func readAll(ctx context.Context, stor *zodb.Storage) (int, error) {
	head, err := stor.LastTid(ctx)
	if err != nil {
		return 0, err
	}
	it := stor.Iterate(ctx, 0, head)
	n := 0
	for {
		_, dit, err := it.NextTxn(ctx)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("iterate: %w", err)
		}
		for {
			_, err := dit.NextData(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return n, fmt.Errorf("iterate: %w", err)
			}
			n++
		}
	}
}

// rawPingPong measures round trips of 64 bytes over a loopback TCP
// connection: the floor under any request of a NEO client.
func rawPingPong(ctx context.Context, rounds int) (latencies, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	echoDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			echoDone <- err
			return
		}
		echoDone <- echo(c)
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-echoDone
		return nil, err
	}
	lat := pingPong(c, rounds)
	c.Close()
	if err := <-echoDone; err != nil {
		return nil, err
	}
	if len(lat) < rounds {
		return nil, errors.New("connection broken")
	}
	return lat, nil
}

// echo sends back what c sends, 64 bytes at a time, until c closes.
func echo(c net.Conn) error {
	defer c.Close()
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil // the client closed
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
}

// pingPong sends 64 bytes and reads them back, rounds times or until the
// connection breaks, and returns the round-trip times.
func pingPong(c net.Conn, rounds int) latencies {
	buf := make([]byte, 64)
	lat := make(latencies, 0, rounds)
	for range rounds {
		t := time.Now()
		if _, err := c.Write(buf); err != nil {
			break
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			break
		}
		lat = append(lat, time.Since(t))
	}
	return lat
}

// echoServer is neo bench --echo-server: it prints its loopback address
// and echoes one connection.
func echoServer(ctx context.Context, stdout io.Writer) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintln(stdout, ln.Addr().String())
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	return echo(c)
}

// crossProcessPingPong measures the raw ping-pong with the echo server
// that the command echoCmd runs in another process (this program with
// --echo-server), which prints its address.
func crossProcessPingPong(ctx context.Context, echoCmd []string, rounds int) (latencies, error) {
	cmd := exec.CommandContext(ctx, echoCmd[0], echoCmd[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("echo server: %w", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", strings.TrimSpace(addr))
	if err != nil {
		return nil, err
	}
	lat := pingPong(c, rounds)
	c.Close()
	if len(lat) < rounds {
		return nil, errors.New("connection broken")
	}
	return lat, nil
}
