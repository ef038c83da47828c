package main

// Process tests: the real binary, built once, run as neo simple and as
// separate master, storage and admin processes (called by NEO/py's names
// through symbolic links), killed and restarted.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/zodb"
)

var (
	binOnce sync.Once
	binDir  string // holds neo and its NEO/py names
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// neoBinary builds cmd/neo once (with the race detector when the tests
// run with it) and returns the directory holding neo, neomaster,
// neostorage, neoadmin, neoctl and neosimple.
func neoBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("process tests build and run the binary; skipped with -short")
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "neo-bin-")
		if binErr != nil {
			return
		}
		args := []string{"build", "-o", filepath.Join(binDir, "neo")}
		if raceEnabled {
			args = append(args, "-race")
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("the go command, to build the binary under test: %w", err)
			return
		}
		out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		for alias := range aliases {
			if err := os.Symlink("neo", filepath.Join(binDir, alias)); err != nil {
				binErr = err
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// proc is a process of the binary under test.
type proc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // of Wait, once done is closed
}

// start runs prog (a name in neoBinary's directory) with args; its
// standard error goes to a log file shown when the test fails.
func start(t *testing.T, name, prog string, args ...string) *proc {
	t.Helper()
	return startWithStdout(t, name, prog, nil, args...)
}

func startWithStdout(t *testing.T, name, prog string, stdout io.Writer, args ...string) *proc {
	t.Helper()
	dir := neoBinary(t)
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.logPath = filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(dir, prog), args...)
	p.cmd.Stderr = logf
	if stdout != nil {
		p.cmd.Stdout = stdout
	} else {
		p.cmd.Stdout = logf
	}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			kept := keepLog(t, name, b)
			if len(b) > 8000 {
				b = append([]byte("...\n"), b[len(b)-8000:]...)
			}
			t.Logf("--- log of %s (%s), whole in %s:\n%s", name, strings.Join(p.cmd.Args, " "), kept, b)
		}
	})
	return p
}

// keepLog copies the log of a process of a failed test where it outlives
// the test, and returns the path.
func keepLog(t *testing.T, name string, b []byte) string {
	dir := filepath.Join(os.TempDir(), "neo-process-test-logs", t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err.Error()
	}
	path := filepath.Join(dir, name+".log")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err.Error()
	}
	return path
}

// exitWithin waits for the process to end and returns its exit status.
func (p *proc) exitWithin(d time.Duration) (int, error) {
	select {
	case <-p.done:
	case <-time.After(d):
		return -1, fmt.Errorf("%s still running %v later", p.name, d)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1, fmt.Errorf("%s killed by %v", p.name, ws.Signal())
		}
		return ee.ExitCode(), nil
	}
	if p.err != nil {
		return -1, p.err
	}
	return 0, nil
}

// stopWith sends sig and requires exit status 0 within a few seconds.
func (p *proc) stopWith(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
	p.requireExit0()
}

func (p *proc) requireExit0() {
	p.t.Helper()
	code, err := p.exitWithin(15 * time.Second)
	if err != nil {
		p.t.Fatal(err)
	}
	if code != 0 {
		p.t.Fatalf("%s exited with status %d", p.name, code)
	}
}

func (p *proc) kill() {
	p.t.Helper()
	p.cmd.Process.Kill()
	<-p.done
}

// ctlRun runs neoctl and returns its standard output.
func ctlRun(t *testing.T, admin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(neoBinary(t), "neoctl"), append([]string{"-a", admin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("neoctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v; last: %s", what, timeout, state)
		}
		<-tick.C
	}
}

// freeAddr returns a loopback address with a port free at the time, for a
// node started later. The port is taken below the kernel's range of
// ephemeral ports when it can be: a port of that range, free now, may be
// given to an outgoing connection before the node binds it (a NEO/py
// storage then died with "Address already in use").
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	if low := ephemeralLow(); low > 2048 {
		for range 100 {
			port := 1024 + rand.IntN(low-1024)
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err == nil {
				l.Close()
				return l.Addr().String()
			}
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ephemeralLow returns the first port of the kernel's range of ephemeral
// ports, or 0 if unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}

// partitionTable asks the admin node for the partition table.
func partitionTable(ctx context.Context, admin string) (*proto.AnswerPartitionList, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := neonet.Dial(ctx, admin, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	ans, err := l.Ask(ctx, &proto.AskPartitionList{})
	if err != nil {
		return nil, err
	}
	pt, ok := ans.(*proto.AnswerPartitionList)
	if !ok {
		return nil, fmt.Errorf("answer %T", ans)
	}
	return pt, nil
}

// allUpToDate tells whether every cell of the table is UP_TO_DATE and
// every row has replicas+1 cells.
func allUpToDate(pt *proto.AnswerPartitionList, replicas int) (bool, string) {
	if len(pt.Rows) == 0 {
		return false, "no partition table"
	}
	var b strings.Builder
	ok := true
	for i, row := range pt.Rows {
		fmt.Fprintf(&b, "%d:", i)
		if len(row) != replicas+1 {
			ok = false
		}
		for _, c := range row {
			fmt.Fprintf(&b, " %v(%v)", c.NID, c.State)
			if c.State != proto.CellUpToDate {
				ok = false
			}
		}
		b.WriteString("; ")
	}
	return ok, b.String()
}

// objects is what a test committed: oid → data.
type objects map[zodb.Oid][]byte

// commitNew commits n new objects in one transaction and returns them.
func commitNew(ctx context.Context, stor *zodb.Storage, n int, tag string) (objects, error) {
	oids, err := stor.NewOids(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("%s: new oids: %w", tag, err)
	}
	txn, err := stor.Begin(ctx, zodb.TxnMeta{User: []byte("process test"), Description: []byte(tag)})
	if err != nil {
		return nil, fmt.Errorf("%s: begin: %w", tag, err)
	}
	batch := objects{}
	for _, oid := range oids {
		batch[oid] = []byte(fmt.Sprintf("%s object %v", tag, oid))
		if err := txn.Store(ctx, oid, 0, batch[oid]); err != nil {
			txn.Abort(context.Background())
			return nil, fmt.Errorf("%s: store %v: %w", tag, oid, err)
		}
	}
	if _, err := txn.Vote(ctx); err != nil {
		txn.Abort(context.Background())
		return nil, fmt.Errorf("%s: vote: %w", tag, err)
	}
	if _, err := txn.Finish(ctx); err != nil {
		return nil, fmt.Errorf("%s: finish: %w", tag, err)
	}
	return batch, nil
}

// commitObjects commits n new objects in one transaction, through a client
// of its own, and records them.
func commitObjects(t *testing.T, url string, objs objects, n int, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stor, err := zodb.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	batch, err := commitNew(ctx, stor, n, tag)
	if err != nil {
		t.Fatal(err)
	}
	for oid, data := range batch {
		objs[oid] = data
	}
}

// committer commits, through one client, transactions of a few new
// objects until finished, and keeps what was acknowledged.
type committer struct {
	cancel   context.CancelFunc
	done     chan struct{}
	tolerant bool // failed transactions are counted, not fatal
	mu       sync.Mutex
	objs     objects
	n        int
	failed   []error
	err      error
}

// startCommitter starts committing; a tolerant committer goes on after a
// failed transaction (as an application retries), else it stops.
func startCommitter(url string, tolerant bool) *committer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &committer{cancel: cancel, done: make(chan struct{}), objs: objects{}, tolerant: tolerant}
	go func() {
		defer close(c.done)
		c.err = c.run(ctx, url)
	}()
	return c
}

func (c *committer) run(ctx context.Context, url string) error {
	stor, err := zodb.Open(ctx, url, nil)
	if err != nil {
		return err
	}
	defer stor.Close()
	for i := 0; ctx.Err() == nil; i++ {
		err := c.commitOne(ctx, stor, i)
		if err == nil || ctx.Err() != nil {
			continue
		}
		if !c.tolerant {
			return err
		}
		c.mu.Lock()
		c.failed = append(c.failed, err)
		c.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (c *committer) commitOne(ctx context.Context, stor *zodb.Storage, i int) error {
	batch, err := commitNew(ctx, stor, 5, fmt.Sprintf("background %d", i))
	if err != nil {
		return err
	}
	c.mu.Lock()
	for oid, d := range batch {
		c.objs[oid] = d
	}
	c.n++
	c.mu.Unlock()
	return nil
}

func (c *committer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// waitCommits waits until n transactions were acknowledged.
func (c *committer) waitCommits(t *testing.T, n int) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("%d background commits", n), func() (bool, string) {
		select {
		case <-c.done:
			t.Fatalf("background committer stopped: %v", c.err)
		default:
		}
		got := c.count()
		return got >= n, fmt.Sprintf("%d commits", got)
	})
}

// finish stops the committer and adds what it committed to objs.
func (c *committer) finish(t *testing.T, objs objects) {
	t.Helper()
	c.cancel()
	<-c.done
	if c.err != nil && !errors.Is(c.err, context.Canceled) {
		t.Errorf("background committer: %v", c.err)
	}
	for oid, d := range c.objs {
		objs[oid] = d
	}
	t.Logf("background committer: %d transactions, %d failed", c.n, len(c.failed))
	for _, err := range c.failed {
		t.Logf("  failed: %v", err)
	}
}

// checkObjects reads every object back through a new client.
func checkObjects(t *testing.T, url string, objs objects) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stor, err := zodb.Open(ctx, url, &zodb.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	head, err := stor.LastTid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for oid, want := range objs {
		data, _, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: head})
		if err != nil {
			t.Fatalf("load %v: %v", oid, err)
		}
		if !bytes.Equal(data, want) {
			t.Fatalf("load %v: %q, want %q", oid, data, want)
		}
	}
}

// readURL reads the one line neo simple prints.
func readURL(t *testing.T, r io.Reader, p *proc) (string, *bufio.Scanner) {
	t.Helper()
	sc := bufio.NewScanner(r)
	line := make(chan string, 1)
	go func() {
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			code, err := p.exitWithin(5 * time.Second)
			t.Fatalf("neo simple printed no URL (exit %d, %v)", code, err)
		}
		return l, sc
	case <-time.After(2 * time.Minute):
		t.Fatal("neo simple printed no URL within 2 minutes")
	}
	return "", nil
}

// simpleProc runs neo simple and returns the URL it printed.
func simpleProc(t *testing.T, name string, args ...string) (*proc, string, <-chan string) {
	t.Helper()
	pr, pw := io.Pipe()
	p := startWithStdout(t, name, "neo", pw, append([]string{"simple"}, args...)...)
	go func() { <-p.done; pw.Close() }()
	url, sc := readURL(t, pr, p)
	rest := make(chan string, 1) // what it prints after the URL
	go func() {
		var b strings.Builder
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		rest <- b.String()
	}()
	return p, url, rest
}

func testSimple(t *testing.T, host string) {
	data := t.TempDir()
	args := []string{"--cluster", "ptest", "--bind", net.JoinHostPort(host, "0"),
		"--data", data, "--partitions", "4", "--replicas", "1", "s1", "s2"}
	p, url, rest := simpleProc(t, "neo-simple", args...)
	prefix := "neo://ptest@" + net.JoinHostPort(host, "")
	if !strings.HasPrefix(url, prefix) {
		t.Fatalf("URL %q, want %sPORT", url, prefix)
	}
	objs := objects{}
	commitObjects(t, url, objs, 50, "first")
	commitObjects(t, url, objs, 50, "second")
	checkObjects(t, url, objs)
	// Another process (here: the test) may open a database while its
	// storage node runs.
	for _, name := range []string{"s1", "s2"} {
		ctx := context.Background()
		db, err := sqlite.Open(ctx, filepath.Join(data, name+".sqlite"), sqlite.Options{Name: "ptest", NoLock: true})
		if err != nil {
			t.Errorf("open the database of %s while it runs: %v", name, err)
			continue
		}
		cells, err := db.PartitionTable(ctx)
		if err != nil || len(cells) == 0 {
			t.Errorf("partition table in the database of %s: %v, %v", name, cells, err)
		}
		db.Close()
	}
	p.stopWith(syscall.SIGTERM)
	if extra := <-rest; extra != "" {
		t.Errorf("neo simple printed more than its URL on stdout: %q", extra)
	}

	// The same databases again: the cluster comes back with its data.
	p, url, _ = simpleProc(t, "neo-simple-again", args...)
	checkObjects(t, url, objs)
	commitObjects(t, url, objs, 10, "third")
	checkObjects(t, url, objs)
	p.stopWith(syscall.SIGINT)
}

// TestSimple starts neo simple with two storages holding every partition
// twice, commits through the Go client, reads back and stops it.
func TestSimple(t *testing.T) { testSimple(t, "127.0.0.1") }

// TestSimpleIPv6 is TestSimple on the IPv6 loopback.
func TestSimpleIPv6(t *testing.T) {
	requireIPv6(t)
	testSimple(t, "::1")
}

func requireIPv6(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	l.Close()
}

// TestNodesAsProcesses runs each node in a process of its own, under
// NEO/py's program names: a new cluster started with neoctl, a storage
// killed (SIGKILL) while commits go on, restarted on its database and
// brought back up to date by replication, then checked by reading
// everything from it alone; neoctl kill and SIGTERM stop nodes with exit
// status 0.
func TestNodesAsProcesses(t *testing.T) {
	const cluster = "proc"
	dir := t.TempDir()
	masterAddr := freeAddr(t, "127.0.0.1")
	adminAddr := freeAddr(t, "127.0.0.1")
	url := "neo://" + cluster + "@" + masterAddr

	m := start(t, "master", "neomaster", "-c", cluster, "-b", masterAddr, "--partitions=4", "-r", "1", "--loglevel=debug")
	// Storage 1 binds port 0 (it announces the one it gets, another one
	// after its restart); storage 2 a port the test knows, to find its id.
	s2Addr := freeAddr(t, "127.0.0.1")
	storageArgs := func(name, bind string) []string {
		return []string{"--cluster=" + cluster, "--masters", masterAddr, "-b", bind,
			"-a", "SQLite", "-d", filepath.Join(dir, name+".sqlite"), "--loglevel", "debug"}
	}
	s1 := start(t, "storage1", "neostorage", storageArgs("s1", "127.0.0.1")...)
	s2 := start(t, "storage2", "neostorage", storageArgs("s2", s2Addr)...)
	adminLog := filepath.Join(dir, "admin.log")
	a := start(t, "admin", "neoadmin", "-c", cluster, "-m", masterAddr, "-b", adminAddr, "-l", adminLog)

	// A new cluster waits for neoctl start once its storages are there.
	eventually(t, time.Minute, "two pending storages", func() (bool, string) {
		out, err := ctlRun(t, adminAddr, "print", "node")
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, nl := range parseNodes(out) {
			if nl.typ == "STORAGE" {
				n++
			}
		}
		return n == 2, out
	})
	if _, err := ctlRun(t, adminAddr, "start"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "cluster RUNNING", func() (bool, string) {
		out, err := ctlRun(t, adminAddr, "print", "cluster")
		if err != nil {
			return false, err.Error()
		}
		return strings.TrimSpace(out) == "RUNNING", out
	})
	ctx := context.Background()
	waitUpToDate := func(what string) {
		t.Helper()
		eventually(t, 2*time.Minute, what, func() (bool, string) {
			pt, err := partitionTable(ctx, adminAddr)
			if err != nil {
				return false, err.Error()
			}
			return allUpToDate(pt, 1)
		})
	}
	waitUpToDate("every cell UP_TO_DATE")

	objs := objects{}
	commitObjects(t, url, objs, 40, "before kill")

	// A client keeps committing while storage 1 is killed and comes back:
	// every commit must succeed (the other storage has every partition).
	bg := startCommitter(url, false)
	bg.waitCommits(t, 3)
	s1.kill()
	bg.waitCommits(t, bg.count()+5)
	for i := range 5 {
		commitObjects(t, url, objs, 40, fmt.Sprintf("storage 1 down %d", i))
	}
	checkObjects(t, url, objs)
	// Storage 1 missed transactions: its cells are out of date.
	eventually(t, time.Minute, "cells of the killed storage OUT_OF_DATE", func() (bool, string) {
		pt, err := partitionTable(ctx, adminAddr)
		if err != nil {
			return false, err.Error()
		}
		ok, state := allUpToDate(pt, 1)
		return !ok && len(pt.Rows) > 0, state
	})

	s1 = start(t, "storage1-restarted", "neostorage", storageArgs("s1", "127.0.0.1:0")...)
	waitUpToDate("storage 1 back UP_TO_DATE")
	if out, err := ctlRun(t, adminAddr, "print", "pt"); err != nil {
		t.Error(err)
	} else {
		t.Logf("neoctl print pt:\n%s", out)
	}
	bg.waitCommits(t, bg.count()+5)
	bg.finish(t, objs)
	commitObjects(t, url, objs, 40, "storage 1 back")

	// Stop storage 2 by neoctl: the data must all come from storage 1.
	nodes, err := ctlRun(t, adminAddr, "print", "node")
	if err != nil {
		t.Fatal(err)
	}
	s2id := ""
	for _, nl := range parseNodes(nodes) {
		if nl.typ == "STORAGE" && nl.addr == s2Addr {
			s2id = nl.id
		}
	}
	if s2id == "" {
		t.Fatalf("storage 2 (%s) not in neoctl print node:\n%s", s2Addr, nodes)
	}
	if _, err := ctlRun(t, adminAddr, "kill", s2id); err != nil {
		t.Fatal(err)
	}
	s2.requireExit0()
	checkObjects(t, url, objs)

	s1.stopWith(syscall.SIGTERM)
	a.stopWith(syscall.SIGTERM)
	m.stopWith(syscall.SIGINT)
	if b, err := os.ReadFile(adminLog); err != nil || !strings.Contains(string(b), "admin listening") {
		t.Errorf("admin's -l log file: %v\n%s", err, b)
	}
}

// nodeLine is one line of neoctl print node: id, type, address, state.
type nodeLine struct{ id, typ, addr, state string }

// parseNodes reads neoctl print node's table ("S1 | STORAGE | host:port |
// RUNNING | id timestamp").
func parseNodes(out string) []nodeLine {
	var nodes []nodeLine
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) < 4 {
			continue
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		nodes = append(nodes, nodeLine{f[0], f[1], f[2], f[3]})
	}
	return nodes
}

// raceEnabled: the tests run with the race detector, and so does the
// binary they build (race_test.go).
var raceEnabled = false

// TestDemo runs neo demo, the README's first command.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	p := startWithStdout(t, "neo-demo", "neo", &out, "demo", "--data", t.TempDir())
	code, err := p.exitWithin(2 * time.Minute)
	if err != nil || code != 0 {
		t.Fatalf("neo demo: exit %d, %v\n%s", code, err, out.String())
	}
	for _, want := range []string{"neo://demo@127.0.0.1:", "committed root['greeting']", "read back by a second client",
		"exited with status 0", "s1.sqlite holds the root object", "s2.sqlite holds the root object"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStopByNeoctl: neoctl set cluster STOPPING makes every node process
// exit by itself with status 0 (a new cluster here started by --autostart,
// and the nodes configured through neo.conf), on IPv4 and IPv6.
func TestStopByNeoctl(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testStopByNeoctl(t, "127.0.0.1") })
	t.Run("IPv6", func(t *testing.T) {
		requireIPv6(t)
		testStopByNeoctl(t, "::1")
	})
}

func testStopByNeoctl(t *testing.T, host string) {
	dir := t.TempDir()
	masterAddr := freeAddr(t, host)
	adminAddr := freeAddr(t, host)
	conf := filepath.Join(dir, "neo.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`[DEFAULT]
cluster = conf
masters = %s

[master]
bind = %s
partitions = 3
autostart = 1

[storage]
adapter = SQLite
database = %s
bind = %s

[admin]
bind = %s
`, masterAddr, masterAddr, filepath.Join(dir, "s.sqlite"), net.JoinHostPort(host, "0"), adminAddr)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m := start(t, "master", "neo", "master", "-f", conf)
	s := start(t, "storage", "neo", "storage", "--file="+conf)
	a := start(t, "admin", "neo", "admin", "-f", conf, "-s", "admin")
	eventually(t, time.Minute, "cluster RUNNING", func() (bool, string) {
		out, err := ctlRun(t, adminAddr, "print", "cluster")
		if err != nil {
			return false, err.Error()
		}
		return strings.TrimSpace(out) == "RUNNING", out
	})
	nodes, err := ctlRun(t, adminAddr, "print", "node")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("neoctl print node:\n%s", nodes)
	if n := len(parseNodes(nodes)); n != 3 {
		t.Errorf("%d nodes, want master, storage and admin", n)
	}
	objs := objects{}
	commitObjects(t, "neo://conf@"+masterAddr, objs, 5, "before stop")
	if _, err := ctlRun(t, adminAddr, "set", "cluster", "STOPPING"); err != nil {
		t.Fatal(err)
	}
	m.requireExit0()
	s.requireExit0()
	a.requireExit0()
}

// TestSimpleStoppedByNeoctl: neo simple ends with status 0 when its
// cluster is stopped through its admin node.
func TestSimpleStoppedByNeoctl(t *testing.T) {
	adminAddr := freeAddr(t, "127.0.0.1")
	p, url, _ := simpleProc(t, "neo-simple", "--admin", adminAddr, "--data", t.TempDir(), "s1", "s2")
	objs := objects{}
	commitObjects(t, url, objs, 5, "before stop")
	out, err := ctlRun(t, adminAddr, "print", "cluster")
	if err != nil || strings.TrimSpace(out) != "RUNNING" {
		t.Fatalf("neoctl print cluster: %q, %v", out, err)
	}
	if _, err := ctlRun(t, adminAddr, "set", "cluster", "STOPPING"); err != nil {
		t.Fatal(err)
	}
	p.requireExit0()
}

// TestKillOnlyStorage: the only storage is killed (SIGKILL) right after
// commits were acknowledged, before its deferred database commit; once it
// is back, the cluster recovers by itself and every acknowledged commit is
// there (locked transactions are finished from the database's temporary
// tables during verification).
func TestKillOnlyStorage(t *testing.T) {
	const cluster = "only"
	dir := t.TempDir()
	masterAddr := freeAddr(t, "127.0.0.1")
	adminAddr := freeAddr(t, "127.0.0.1")
	url := "neo://" + cluster + "@" + masterAddr
	m := start(t, "master", "neomaster", "-c", cluster, "-b", masterAddr, "-p", "3", "--autostart=1")
	storageArgs := []string{"-c", cluster, "-m", masterAddr, "-a", "SQLite", "-d", filepath.Join(dir, "s.sqlite")}
	s := start(t, "storage", "neostorage", storageArgs...)
	a := start(t, "admin", "neoadmin", "-c", cluster, "-m", masterAddr, "-b", adminAddr)
	running := func(what string) {
		t.Helper()
		eventually(t, time.Minute, what, func() (bool, string) {
			out, err := ctlRun(t, adminAddr, "print", "cluster")
			if err != nil {
				return false, err.Error()
			}
			return strings.TrimSpace(out) == "RUNNING", out
		})
	}
	running("cluster RUNNING")
	objs := objects{}
	for i := range 5 {
		commitObjects(t, url, objs, 20, fmt.Sprintf("batch %d", i))
	}
	s.kill()
	eventually(t, time.Minute, "cluster not operational without its storage", func() (bool, string) {
		out, err := ctlRun(t, adminAddr, "print", "cluster")
		if err != nil {
			return false, err.Error()
		}
		return strings.TrimSpace(out) != "RUNNING", out
	})
	s = start(t, "storage-restarted", "neostorage", storageArgs...)
	running("cluster RUNNING again")
	checkObjects(t, url, objs)
	commitObjects(t, url, objs, 20, "after restart")
	checkObjects(t, url, objs)
	s.stopWith(syscall.SIGTERM)
	a.stopWith(syscall.SIGTERM)
	m.stopWith(syscall.SIGTERM)
}

// TestKillMaster: the master is killed (SIGKILL) and restarted on its
// address; the storages and the admin reconnect, the cluster comes back
// by itself with its data, and a client that was open goes on committing.
func TestKillMaster(t *testing.T) {
	const cluster = "km"
	dir := t.TempDir()
	masterAddr := freeAddr(t, "127.0.0.1")
	adminAddr := freeAddr(t, "127.0.0.1")
	url := "neo://" + cluster + "@" + masterAddr
	masterArgs := []string{"-c", cluster, "-b", masterAddr, "-p", "4", "-r", "1", "--autostart=2"}
	m := start(t, "master", "neomaster", masterArgs...)
	var storages []*proc
	for _, name := range []string{"s1", "s2"} {
		storages = append(storages, start(t, name, "neostorage", "-c", cluster, "-m", masterAddr, "-a", "SQLite", "-d", filepath.Join(dir, name+".sqlite")))
	}
	a := start(t, "admin", "neoadmin", "-c", cluster, "-m", masterAddr, "-b", adminAddr)
	running := func(what string) {
		t.Helper()
		eventually(t, time.Minute, what, func() (bool, string) {
			out, err := ctlRun(t, adminAddr, "print", "cluster")
			if err != nil {
				return false, err.Error()
			}
			return strings.TrimSpace(out) == "RUNNING", out
		})
	}
	running("cluster RUNNING")
	objs := objects{}
	commitObjects(t, url, objs, 30, "before")
	// Transactions under way when the master dies may fail (the
	// application retries them); the next ones must succeed.
	bg := startCommitter(url, true)
	bg.waitCommits(t, 3)

	m.kill()
	m = start(t, "master-restarted", "neomaster", masterArgs...)
	running("cluster RUNNING after the master's restart")
	// The open client commits again once it found the new master.
	bg.waitCommits(t, bg.count()+3)
	bg.finish(t, objs)
	commitObjects(t, url, objs, 30, "after")
	checkObjects(t, url, objs)
	for _, s := range storages {
		s.stopWith(syscall.SIGTERM)
	}
	a.stopWith(syscall.SIGTERM)
	m.stopWith(syscall.SIGTERM)
}

// TestBenchSimple runs neo bench against neo simple with two storages
// holding every partition twice: every figure is printed.
func TestBenchSimple(t *testing.T) {
	p, url, _ := simpleProc(t, "neo-simple", "--data", t.TempDir(), "--replicas", "1", "s1", "s2")
	var out bytes.Buffer
	b := startWithStdout(t, "neo-bench", "neo", &out, "bench", "-n", "300", "--batch", "100", "--commits", "16",
		"--samples", "100", "--duration", "100ms", "--raw", "100", url)
	code, err := b.exitWithin(2 * time.Minute)
	if err != nil || code != 0 {
		t.Fatalf("neo bench: exit %d, %v\n%s", code, err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 14 || !strings.HasPrefix(lines[len(lines)-1], "ratio load/raw") ||
		!strings.Contains(out.String(), "raw TCP ping-pong 64 B, loopback, with another process: median") ||
		!strings.Contains(out.String(), "read all (iteration): 492 records") {
		t.Errorf("neo bench printed:\n%s", out.String())
	}
	t.Logf("neo bench:\n%s", out.String())
	p.stopWith(syscall.SIGTERM)
}

// TestMasterFailover: two masters elect a primary; the primary is killed
// (SIGKILL); the other takes over, the storages, the admin and a client
// follow it, and the data is all there.
func TestMasterFailover(t *testing.T) {
	const cluster = "fo"
	dir := t.TempDir()
	mAddrs := []string{freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")}
	masters := strings.Join(mAddrs, " ")
	adminAddr := freeAddr(t, "127.0.0.1")
	url := "neo://" + cluster + "@" + strings.Join(mAddrs, ",")
	mprocs := map[string]*proc{}
	for i, a := range mAddrs {
		mprocs[a] = start(t, fmt.Sprintf("master%d", i+1), "neomaster", "-c", cluster, "-m", masters, "-b", a,
			"-p", "4", "-r", "1", "-A", "2")
	}
	var others []*proc
	for _, name := range []string{"s1", "s2"} {
		others = append(others, start(t, name, "neostorage", "-c", cluster, "-m", masters, "-a", "SQLite",
			"-d", filepath.Join(dir, name+".sqlite")))
	}
	others = append(others, start(t, "admin", "neoadmin", "-c", cluster, "-m", masters, "-b", adminAddr))
	running := func(what string) {
		t.Helper()
		eventually(t, 2*time.Minute, what, func() (bool, string) {
			out, err := ctlRun(t, adminAddr, "print", "cluster")
			if err != nil {
				return false, err.Error()
			}
			return strings.TrimSpace(out) == "RUNNING", out
		})
	}
	// primary returns the address of the primary master.
	primary := func() string {
		t.Helper()
		id, err := ctlRun(t, adminAddr, "print", "primary")
		if err != nil {
			t.Fatal(err)
		}
		nodes, err := ctlRun(t, adminAddr, "print", "node")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range parseNodes(nodes) {
			if n.id == strings.TrimSpace(id) {
				return n.addr
			}
		}
		t.Fatalf("primary %q not in:\n%s", id, nodes)
		return ""
	}
	running("cluster RUNNING")
	objs := objects{}
	commitObjects(t, url, objs, 30, "first primary")
	bg := startCommitter(url, true)
	bg.waitCommits(t, 3)

	first := primary()
	mprocs[first].kill()
	delete(mprocs, first)
	running("cluster RUNNING with the other master")
	if p := primary(); p == first {
		t.Fatalf("primary still %s", p)
	}
	bg.waitCommits(t, bg.count()+3)
	bg.finish(t, objs)
	commitObjects(t, url, objs, 30, "second primary")
	checkObjects(t, url, objs)
	for _, p := range others {
		p.stopWith(syscall.SIGTERM)
	}
	for _, m := range mprocs {
		m.stopWith(syscall.SIGTERM)
	}
}

// TestSimpleMasters runs neo simple with three masters: the URL lists them
// all, and SIGTERM stops every node.
func TestSimpleMasters(t *testing.T) {
	p, url, _ := simpleProc(t, "neo-simple", "--masters", "3", "--data", t.TempDir(), "--replicas", "1", "s1", "s2")
	if n := strings.Count(url, ","); n != 2 {
		t.Fatalf("URL %q: want 3 masters", url)
	}
	objs := objects{}
	commitObjects(t, url, objs, 20, "three masters")
	checkObjects(t, url, objs)
	p.stopWith(syscall.SIGTERM)
}
