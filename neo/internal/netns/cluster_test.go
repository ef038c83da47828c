package netns_test

// A NEO cluster of processes, each node in a namespace of its own: the neo
// binary built from cmd/neo, and the committing client and the checker run
// by this test binary (helpers_test.go).

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/netns"
)

var (
	long     = flag.Bool("netns.long", false, "also run the partition tests with silent cuts, which wait for TCP to give up (2 to 4 min each)")
	showLogs = flag.Bool("netns.logs", false, "show the logs of every process, also when the test passes")
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		// The helper's name also comes first in its arguments, for ps.
		args := os.Args[1:]
		if len(args) > 0 && args[0] == name {
			args = args[1:]
		}
		os.Exit(runHelper(name, args))
	}
	flag.Parse()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// neoBinary builds cmd/neo once and returns its path.
func neoBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "neo-netns-bin-")
		if binErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("building cmd/neo needs the go command: %w", err)
			return
		}
		out, err := exec.Command(goTool, "build", "-o", filepath.Join(binDir, "neo"), "github.com/neozodb/neo/cmd/neo").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build cmd/neo: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "neo")
}

// testBinary is this test binary, which runs the helpers.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// proc is a process running in a namespace.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // of Wait, once done is closed
}

// startProc runs cmd; its standard error (and standard output, unless
// stdout is given) goes to a log file shown when the test fails.
func startProc(t *testing.T, name string, cmd *exec.Cmd, stdout io.Writer) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	p.logPath = filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	cmd.Stdout = logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() || *showLogs {
			b, _ := os.ReadFile(p.logPath)
			if len(b) > 6000 && !*showLogs {
				b = append([]byte("...\n"), b[len(b)-6000:]...)
			}
			t.Logf("--- log of %s (%s):\n%s", name, strings.Join(cmd.Args, " "), b)
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited tells whether the process ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// cluster is a NEO cluster with each node in its own namespace.
type cluster struct {
	t          *testing.T
	net        *netns.Network
	name       string
	dir        string
	partitions int
	masters    []*netns.Node
	storages   []*netns.Node
	admin      *netns.Node
	nodes      map[string]*proc // neo processes by node name
	mu         sync.Mutex
}

const (
	masterPort  = 2051
	storagePort = 2052
	adminPort   = 2053
)

func addr(n *netns.Node, port int) string {
	return netip.AddrPortFrom(n.Addr, uint16(port)).String()
}

// tcpSynRetries bounds, in every namespace, how long an attempt to connect
// across a cut takes to fail (net.ipv4.tcp_syn_retries: 2 is about 7 s
// instead of about 2 min), so that nodes go on trying others. Established
// links are bounded by the nodes themselves (TCP_USER_TIMEOUT, keep-alive).
const tcpSynRetries = "2"

// newCluster makes the namespaces: masters m1..mN, storages s1..sN, admin,
// and the extra names (clients).
func newCluster(t *testing.T, name string, masters, storages int, extra ...string) *cluster {
	t.Helper()
	netns.Require(t)
	if testing.Short() {
		t.Skip("partition tests run a cluster of processes; skipped with -short")
	}
	var names []string
	for i := 1; i <= masters; i++ {
		names = append(names, fmt.Sprintf("m%d", i))
	}
	for i := 1; i <= storages; i++ {
		names = append(names, fmt.Sprintf("s%d", i))
	}
	names = append(names, "admin")
	names = append(names, extra...)
	nw := netns.New(t, names...)
	if err := nw.Sysctl("net.ipv4.tcp_syn_retries", tcpSynRetries); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, net: nw, name: name, dir: t.TempDir(), partitions: 4, nodes: map[string]*proc{}}
	for i := 1; i <= masters; i++ {
		c.masters = append(c.masters, nw.Node(fmt.Sprintf("m%d", i)))
	}
	for i := 1; i <= storages; i++ {
		c.storages = append(c.storages, nw.Node(fmt.Sprintf("s%d", i)))
	}
	c.admin = nw.Node("admin")
	return c
}

// masterList is the masters option of the nodes (space-separated, as
// NEO/py's).
func (c *cluster) masterList() string {
	var l []string
	for _, m := range c.masters {
		l = append(l, addr(m, masterPort))
	}
	return strings.Join(l, " ")
}

// url is the neo:// URL naming the given masters (all when none given).
func (c *cluster) url(masters ...*netns.Node) string {
	if len(masters) == 0 {
		masters = c.masters
	}
	var l []string
	for _, m := range masters {
		l = append(l, addr(m, masterPort))
	}
	return "neo://" + c.name + "@" + strings.Join(l, ",")
}

// startNode runs neo with args in node n's namespace.
func (c *cluster) startNode(n *netns.Node, args ...string) {
	c.t.Helper()
	args = append(args, "--loglevel", "debug")
	p := startProc(c.t, n.Name, n.Command(neoBinary(c.t), args...), nil)
	c.mu.Lock()
	c.nodes[n.Name] = p
	c.mu.Unlock()
}

// start runs every node: a new cluster of c.partitions partitions with one
// replica, started by itself once every storage is there.
func (c *cluster) start() {
	c.t.Helper()
	for _, m := range c.masters {
		c.startNode(m, "master", "-c", c.name, "-b", addr(m, masterPort), "-m", c.masterList(),
			"-p", strconv.Itoa(c.partitions), "-r", "1", "--autostart", strconv.Itoa(len(c.storages)))
	}
	for _, s := range c.storages {
		c.startNode(s, "storage", "-c", c.name, "-b", addr(s, storagePort), "-m", c.masterList(),
			"-a", "SQLite", "-d", filepath.Join(c.dir, s.Name+".sqlite"))
	}
	c.startNode(c.admin, "admin", "-c", c.name, "-b", addr(c.admin, adminPort), "-m", c.masterList())
	c.waitFor(time.Minute, "cluster RUNNING", func() (bool, string) {
		out, err := c.ctl("print", "cluster")
		return err == nil && strings.TrimSpace(out) == "RUNNING", out + errString(err)
	})
	c.waitUpToDate(time.Minute, "every cell UP_TO_DATE")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ctl runs neoctl in the admin's namespace.
func (c *cluster) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := c.admin.CommandContext(ctx, neoBinary(c.t), append([]string{"ctl", "-a", addr(c.admin, adminPort)}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("neoctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// checkAlive fails the test if a node process ended.
func (c *cluster) checkAlive() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, p := range c.nodes {
		if done, err := p.exited(); done {
			c.t.Fatalf("node %s exited: %v", name, err)
		}
	}
}

// waitFor polls cond until it holds; nodes must stay alive meanwhile.
func (c *cluster) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.checkAlive()
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not reached within %v; last: %s", what, timeout, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cells is the partition table as neoctl prints it: one row per
// partition, storage name (S1, ...) → cell state.
type cells []map[string]string

func (c *cluster) partitionTable() (cells, string, error) {
	out, err := c.ctl("print", "pt", "0", strconv.Itoa(c.partitions))
	if err != nil {
		return nil, out, err
	}
	var pt cells
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "|")
		row := map[string]string{}
		for _, cell := range f[1:] {
			nid, state, ok := strings.Cut(strings.TrimSpace(cell), " - ")
			if ok {
				row[nid] = state
			}
		}
		pt = append(pt, row)
	}
	if len(pt) != c.partitions {
		return nil, out, fmt.Errorf("%d rows in neoctl print pt, want %d", len(pt), c.partitions)
	}
	return pt, out, nil
}

// waitUpToDate waits until every partition has a cell on every storage,
// all UP_TO_DATE.
func (c *cluster) waitUpToDate(timeout time.Duration, what string) {
	c.t.Helper()
	c.waitFor(timeout, what, func() (bool, string) {
		pt, out, err := c.partitionTable()
		if err != nil {
			return false, err.Error()
		}
		for _, row := range pt {
			if len(row) != len(c.storages) {
				return false, out
			}
			for _, st := range row {
				if st != "UP_TO_DATE" {
					return false, out
				}
			}
		}
		return true, out
	})
}

// storageID returns the node id (S1, ...) neoctl gives the storage at n.
func (c *cluster) storageID(n *netns.Node) string {
	c.t.Helper()
	out, err := c.ctl("print", "node", "storage")
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) >= 3 && strings.TrimSpace(f[2]) == addr(n, storagePort) {
			return strings.TrimSpace(f[0])
		}
	}
	c.t.Fatalf("storage %s not in neoctl print node:\n%s", addr(n, storagePort), out)
	return ""
}

// cellsOf returns the states of the cells of storage id.
func cellsOf(pt cells, id string) []string {
	var states []string
	for _, row := range pt {
		if st, ok := row[id]; ok {
			states = append(states, st)
		}
	}
	return states
}

// committer is the committing client process (commitMain).
type committer struct {
	p      *proc
	mu     sync.Mutex
	acks   []string // ack lines
	fails  []string // fail lines
	other  []string
	readWG sync.WaitGroup
}

// startCommitter runs commitMain in node n's namespace against url.
func startCommitter(t *testing.T, name string, n *netns.Node, url string) *committer {
	t.Helper()
	cmd := n.Command(testBinary(t), "commit", url, "20ms")
	cmd.Env = append(os.Environ(), helperEnv+"=commit")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &committer{}
	c.p = startProc(t, name, cmd, pw)
	pw.Close()
	c.readWG.Add(1)
	go func() {
		defer c.readWG.Done()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			switch {
			case strings.HasPrefix(line, "ack "):
				c.acks = append(c.acks, line)
			case strings.HasPrefix(line, "fail "):
				c.fails = append(c.fails, line)
			default:
				c.other = append(c.other, line)
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.p.kill(); c.readWG.Wait() })
	return c
}

// counts returns the number of acknowledged and failed transactions.
func (c *committer) counts() (acks, fails int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acks), len(c.fails)
}

// waitAcks waits until n more transactions than now were acknowledged.
func (c *committer) waitAcks(cl *cluster, n int, timeout time.Duration, what string) {
	cl.t.Helper()
	base, _ := c.counts()
	cl.waitFor(timeout, what, func() (bool, string) {
		if done, err := c.p.exited(); done {
			cl.t.Fatalf("committing client %s exited: %v", c.p.name, err)
		}
		a, f := c.counts()
		return a >= base+n, fmt.Sprintf("%d acknowledged (%d before), %d failed; last failure: %s", a, base, f, c.lastFail())
	})
}

// waitFails waits until n more transactions than now failed.
func (c *committer) waitFails(cl *cluster, n int, timeout time.Duration, what string) {
	cl.t.Helper()
	_, base := c.counts()
	cl.waitFor(timeout, what, func() (bool, string) {
		if done, err := c.p.exited(); done {
			cl.t.Fatalf("committing client %s exited: %v", c.p.name, err)
		}
		a, f := c.counts()
		return f >= base+n, fmt.Sprintf("%d failed (%d before), %d acknowledged", f, base, a)
	})
}

func (c *committer) lastFail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fails) == 0 {
		return "none"
	}
	return c.fails[len(c.fails)-1]
}

// stop ends the client (SIGTERM: it ends after the transaction under way)
// and returns its ack lines.
func (c *committer) stop(t *testing.T) []string {
	t.Helper()
	c.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.p.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("committing client %s did not stop", c.p.name)
	}
	c.readWG.Wait()
	if c.p.err != nil {
		t.Errorf("committing client %s: %v", c.p.name, c.p.err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("client %s: %d transactions acknowledged, %d failed", c.p.name, len(c.acks), len(c.fails))
	for i, f := range c.fails {
		if i == 10 {
			t.Logf("  ... %d more", len(c.fails)-10)
			break
		}
		t.Logf("  %s", f)
	}
	if len(c.other) > 0 {
		t.Errorf("client %s printed unexpected lines: %q", c.p.name, c.other)
	}
	return append([]string(nil), c.acks...)
}

// verify reads back, through a new client process in node n's namespace,
// every acknowledged transaction.
func (c *cluster) verify(n *netns.Node, acks []string) {
	c.t.Helper()
	file := filepath.Join(c.t.TempDir(), "acks")
	if err := os.WriteFile(file, []byte(strings.Join(acks, "\n")+"\n"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := n.CommandContext(ctx, testBinary(c.t), "verify", c.url(), file)
	cmd.Env = append(os.Environ(), helperEnv+"=verify")
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("read back %d acknowledged transactions: %v\n%s", len(acks), err, out)
	}
	c.t.Logf("%s", bytes.TrimSpace(out))
}

// primary returns the master that neoctl reports as primary, and the other
// one (the cluster has two).
func (c *cluster) primary(m1, m2 *netns.Node) (primary, other *netns.Node) {
	c.t.Helper()
	id, err := c.ctl("print", "primary")
	if err != nil {
		c.t.Fatal(err)
	}
	id = strings.TrimSpace(id)
	out, err := c.ctl("print", "node", "master")
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) < 3 || strings.TrimSpace(f[0]) != id {
			continue
		}
		switch strings.TrimSpace(f[2]) {
		case addr(m1, masterPort):
			return m1, m2
		case addr(m2, masterPort):
			return m2, m1
		}
	}
	c.t.Fatalf("primary master %q not found in neoctl print node:\n%s", id, out)
	return nil, nil
}

// log returns what node n's process logged so far.
func (c *cluster) log(n *netns.Node) string {
	c.t.Helper()
	c.mu.Lock()
	p := c.nodes[n.Name]
	c.mu.Unlock()
	if p == nil {
		c.t.Fatalf("no process for node %s", n.Name)
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

// stopStorage stops storage n with neoctl kill and waits for its process
// to end with status 0.
func (c *cluster) stopStorage(n *netns.Node) {
	c.t.Helper()
	id := c.storageID(n)
	if _, err := c.ctl("kill", id); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	p := c.nodes[n.Name]
	delete(c.nodes, n.Name)
	c.mu.Unlock()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		c.t.Fatalf("storage %s still runs a minute after neoctl kill %s", n.Name, id)
	}
	if p.err != nil {
		c.t.Fatalf("storage %s stopped by neoctl kill: %v", n.Name, p.err)
	}
}
