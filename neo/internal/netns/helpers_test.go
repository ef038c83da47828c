package netns_test

// Programs run inside the namespaces: the test binary executes itself with
// helperEnv naming one of them (see TestMain).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/neozodb/neo/neo/client" // neo:// driver
	"github.com/neozodb/neo/zodb"
)

const helperEnv = "NEO_NETNS_TEST_HELPER"

var helpers = map[string]func(args []string) error{
	"probe":  probeMain,
	"echo":   echoMain,
	"hold":   holdMain,
	"commit": commitMain,
	"verify": verifyMain,
}

// runHelper runs the helper named and returns the exit status.
func runHelper(name string, args []string) int {
	h := helpers[name]
	if h == nil {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		return 2
	}
	if err := h(args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// probeMain: probe ADDR TIMEOUT — one byte sent to an echo server and read
// back within TIMEOUT; prints "ok" or the error.
func probeMain(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: probe ADDR TIMEOUT")
	}
	timeout, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("tcp", args[0], timeout)
	if err == nil {
		defer c.Close()
		c.SetDeadline(deadline)
		if _, err = c.Write([]byte{'x'}); err == nil {
			_, err = io.ReadFull(c, make([]byte, 1))
		}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			fmt.Println("timeout")
		} else {
			fmt.Println("error:", err)
		}
		return nil
	}
	fmt.Println("ok")
	return nil
}

// echoMain: echo ADDR — echoes every connection until killed; prints
// "listening" once it listens.
func echoMain(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: echo ADDR")
	}
	l, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// holdMain: hold ADDR — connects, prints "connected", then reads until
// the connection ends and prints "closed: " and why.
func holdMain(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: hold ADDR")
	}
	c, err := net.Dial("tcp", args[0])
	if err != nil {
		return err
	}
	fmt.Println("connected")
	_, err = io.Copy(io.Discard, c)
	fmt.Println("closed:", err)
	return nil
}

// commitMain: commit URL PAUSE — commits until SIGTERM, one transaction
// every PAUSE at most, and prints one line per outcome:
//
//	ack <n> <tid> <oid>=<data> ...   the transaction was acknowledged
//	fail <n> <error>                 it failed (the next one goes on)
//	fail 0 open: <error>             no connection to a primary master yet
//
// Each transaction creates two objects and updates a counter object (the
// same one in every transaction), so that a lost or reordered commit shows
// in the counter's history as well as in missing objects.
func commitMain(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: commit URL PAUSE")
	}
	pause, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	out := bufio.NewWriter(os.Stdout)
	// A master that is not (or not yet) the primary of a running cluster
	// makes Open fail; each failure is told, and Open is tried again.
	var stor *zodb.Storage
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		stor, err = zodb.Open(octx, args[0], nil)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(out, "fail 0 open: %v\n", oneLine(err))
		out.Flush()
	}
	defer stor.Close()
	var counter zodb.Oid
	var counterSerial zodb.Tid
	reload := false
	for n := 1; ctx.Err() == nil; n++ {
		started := time.Now()
		if reload {
			// The outcome of the failed transaction is not known: it
			// may have committed the counter.
			counterSerial, err = currentSerial(ctx, stor, counter)
			if err != nil {
				fmt.Fprintf(out, "fail %d reload counter: %v\n", n, oneLine(err))
				out.Flush()
				sleepCtx(ctx, pause)
				continue
			}
			reload = false
		}
		objs, tid, err := commitOnce(ctx, stor, n, &counter, counterSerial)
		if ctx.Err() != nil {
			break // outcome unknown: not reported
		}
		if err != nil {
			fmt.Fprintf(out, "fail %d %v\n", n, oneLine(err))
			reload = counter != 0
		} else {
			counterSerial = tid
			fmt.Fprintf(out, "ack %d %s", n, tid)
			for _, o := range objs {
				fmt.Fprintf(out, " %s=%s", o.oid, o.data)
			}
			fmt.Fprintln(out)
		}
		out.Flush()
		sleepCtx(ctx, pause-time.Since(started))
	}
	return nil
}

type object struct {
	oid  zodb.Oid
	data string
}

// commitOnce commits transaction n: the counter (created by the first
// transaction) and two new objects.
func commitOnce(ctx context.Context, stor *zodb.Storage, n int, counter *zodb.Oid, counterSerial zodb.Tid) ([]object, zodb.Tid, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	oids, err := stor.NewOids(ctx, 3)
	if err != nil {
		return nil, 0, fmt.Errorf("new oids: %w", err)
	}
	if *counter == 0 {
		*counter = oids[2]
	}
	objs := []object{
		{oids[0], fmt.Sprintf("t%d.a", n)},
		{oids[1], fmt.Sprintf("t%d.b", n)},
		{*counter, fmt.Sprintf("counter.%d", n)},
	}
	txn, err := stor.Begin(ctx, zodb.TxnMeta{Description: []byte(fmt.Sprintf("transaction %d", n))})
	if err != nil {
		return nil, 0, fmt.Errorf("begin: %w", err)
	}
	abort := func(what string, err error) ([]object, zodb.Tid, error) {
		actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		txn.Abort(actx)
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	for i, o := range objs {
		serial := zodb.Tid(0)
		if i == 2 {
			serial = counterSerial
		}
		if err := txn.Store(ctx, o.oid, serial, []byte(o.data)); err != nil {
			return abort("store "+o.oid.String(), err)
		}
	}
	if _, err := txn.Vote(ctx); err != nil {
		return abort("vote", err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("finish: %w", err)
	}
	return objs, tid, nil
}

func currentSerial(ctx context.Context, stor *zodb.Storage, oid zodb.Oid) (zodb.Tid, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	head, err := stor.LastTid(ctx)
	if err != nil {
		return 0, err
	}
	_, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: head})
	var noObject *zodb.NoObjectError
	if errors.As(err, &noObject) {
		return 0, nil // the transaction creating it failed
	}
	return serial, err
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// ack is one acknowledged transaction, as commitMain prints it.
type ack struct {
	n    int
	tid  zodb.Tid
	objs []object
}

func parseAck(line string) (ack, error) {
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "ack" {
		return ack{}, fmt.Errorf("not an ack line: %q", line)
	}
	var a ack
	var err error
	if a.n, err = strconv.Atoi(f[1]); err != nil {
		return ack{}, fmt.Errorf("ack line %q: %w", line, err)
	}
	if a.tid, err = zodb.ParseTid(f[2]); err != nil {
		return ack{}, fmt.Errorf("ack line %q: %w", line, err)
	}
	for _, kv := range f[3:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return ack{}, fmt.Errorf("ack line %q: bad object %q", line, kv)
		}
		oid, err := zodb.ParseOid(k)
		if err != nil {
			return ack{}, fmt.Errorf("ack line %q: %w", line, err)
		}
		a.objs = append(a.objs, object{oid, v})
	}
	return a, nil
}

// verifyMain: verify URL FILE — FILE holds ack lines; through a new
// read-only client, every object of every acknowledged transaction must
// load, at that transaction's tid, with its data and that tid as serial;
// the objects a transaction created (all but the counter) must still be
// there at the head. Prints "verified N transactions".
func verifyMain(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: verify URL FILE")
	}
	b, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	var acks []ack
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		a, err := parseAck(line)
		if err != nil {
			return err
		}
		acks = append(acks, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stor, err := zodb.Open(ctx, args[0], &zodb.OpenOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer stor.Close()
	head, err := stor.LastTid(ctx)
	if err != nil {
		return fmt.Errorf("last tid: %w", err)
	}
	var bad []string
	check := func(a ack, o object, at zodb.Tid) {
		data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: o.oid, At: at})
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("transaction %d (%s): load %s at %s: %v", a.n, a.tid, o.oid, at, err))
		case string(data) != o.data || serial != a.tid:
			bad = append(bad, fmt.Sprintf("transaction %d (%s): load %s at %s: %q serial %s, want %q serial %s",
				a.n, a.tid, o.oid, at, data, serial, o.data, a.tid))
		}
	}
	// One client commits one transaction after the other: their tids
	// increase.
	for i := 1; i < len(acks); i++ {
		if acks[i].n > acks[i-1].n && acks[i].tid <= acks[i-1].tid {
			bad = append(bad, fmt.Sprintf("transaction %d got tid %s, not after %s of transaction %d",
				acks[i].n, acks[i].tid, acks[i-1].tid, acks[i-1].n))
		}
	}
	for _, a := range acks {
		if a.tid > head {
			bad = append(bad, fmt.Sprintf("transaction %d: tid %s after the last tid %s", a.n, a.tid, head))
			continue
		}
		for i, o := range a.objs {
			check(a, o, a.tid)
			if i < len(a.objs)-1 {
				check(a, o, head)
			}
		}
	}
	// The counter at the head is the last acknowledged transaction's
	// value, or that of a later one whose outcome the client did not learn.
	if n := len(acks); n > 0 && len(acks[n-1].objs) > 0 {
		last := acks[n-1]
		counter := last.objs[len(last.objs)-1]
		data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: counter.oid, At: head})
		var at int
		switch _, perr := fmt.Sscanf(string(data), "counter.%d", &at); {
		case err != nil:
			bad = append(bad, fmt.Sprintf("counter %s at the head: %v", counter.oid, err))
		case perr != nil || serial < last.tid || at < last.n:
			bad = append(bad, fmt.Sprintf("counter %s at the head: %q serial %s, want transaction %d (%s) or later",
				counter.oid, data, serial, last.n, last.tid))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... %d more", len(bad)-20))
		}
		return fmt.Errorf("%d acknowledged transactions, last tid %s:\n%s", len(acks), head, strings.Join(bad, "\n"))
	}
	fmt.Printf("verified %d transactions, last tid %s\n", len(acks), head)
	return nil
}
