package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/btree"
	"github.com/neozodb/neo/zodb/storagetest"
)

// neopy runs the NEO/py client helper testdata/neopy_client.py. The test
// needs Python 3 with NEO/py's client (neoppod's neo package), ZODB 5 and
// their dependencies importable: NEOPY_PYTHONPATH is put in PYTHONPATH and
// NEOPY_PYTHON names the interpreter (default python3). On Debian:
// apt-get install python3-persistent python3-btrees python3-transaction
// python3-zc.lockfile python3-zodbpickle python3-msgpack python3-six
// python3-zope.interface, and the sources of neoppod, ZODB 5.8 and ZConfig
// on NEOPY_PYTHONPATH.
type neopy struct {
	python string
	env    []string
	script string
}

func neopyClient(t *testing.T) *neopy {
	t.Helper()
	path := os.Getenv("NEOPY_PYTHONPATH")
	if path == "" {
		t.Skip("NEO/py client not available: set NEOPY_PYTHONPATH to where Python finds neo.client and ZODB (and NEOPY_PYTHON to the interpreter)")
	}
	python := os.Getenv("NEOPY_PYTHON")
	if python == "" {
		python = "python3"
	}
	script, err := filepath.Abs(filepath.Join("testdata", "neopy_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	py := &neopy{python: python, env: append(os.Environ(), "PYTHONPATH="+path), script: script}
	cmd := exec.Command(python, "-c", "import neo.client.Storage, ZODB")
	cmd.Env = py.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("NEOPY_PYTHONPATH=%s: NEO/py's client does not import: %v\n%s", path, err, out)
	}
	return py
}

func (py *neopy) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, py.python, append([]string{py.script}, args...)...)
	cmd.Env = py.env
	return cmd
}

// run runs the helper to its end and returns its standard output.
func (py *neopy) run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr strings.Builder
	cmd := py.command(ctx, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("NEO/py client %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case int:
		return int64(v), true
	}
	return 0, false
}

// TestNEOpyClient: NEO/py's client (what Zope sites use) commits into and
// reads from a cluster of ours, beside the Go client: what each writes the
// other reads, and a NEO/py client with a connection open sees the Go
// client's commits (invalidations). Then NEO/py's neoctl and ours print the
// same through our admin node.
func TestNEOpyClient(t *testing.T) {
	py := neopyClient(t)
	admin := freeAddr(t, "127.0.0.1")
	p, url, _ := simpleProc(t, "neo-simple", "--cluster", "pyt", "--bind", "127.0.0.1:0", "--admin", admin,
		"--data", t.TempDir(), "--partitions", "4", "--replicas", "1", "s1", "s2")
	defer p.stopWith(syscall.SIGTERM)
	masters := strings.TrimPrefix(url, "neo://pyt@")

	// NEO/py commits: a mapping, then 5 changes of it and of a BTree.
	var pyTids []zodb.Tid
	for _, line := range strings.Split(strings.TrimSpace(py.run(t, masters, "pyt", "write", "py", "5")), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || f[0] != "tid" {
			t.Fatalf("NEO/py client printed %q", line)
		}
		tid, err := zodb.ParseTid(f[1])
		if err != nil {
			t.Fatal(err)
		}
		pyTids = append(pyTids, tid)
	}
	if len(pyTids) != 6 {
		t.Fatalf("NEO/py client committed %d transactions, want 6", len(pyTids))
	}

	// The Go client sees them all, and the objects as NEO/py wrote them.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stor, err := zodb.Open(ctx, url, &zodb.OpenOptions{Resolver: zodb.ResolveConflict})
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	if head, err := stor.LastTid(ctx); err != nil || head != pyTids[5] {
		t.Fatalf("Go client's head %v (%v), want NEO/py's last commit %v", head, err, pyTids[5])
	}
	var seen []zodb.Tid
	it := stor.Iterate(ctx, 0, zodb.TidMax)
	for {
		txn, _, err := it.NextTxn(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, txn.Tid)
	}
	if len(seen) < 6 || !reflect.DeepEqual(seen[len(seen)-6:], pyTids) {
		t.Errorf("Go client iterates %v, want NEO/py's commits %v last", seen, pyTids)
	}
	db, err := zodb.NewDB(stor, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	inTxn := func(commit bool, f func(ctx context.Context, root *zodb.PersistentMapping)) {
		t.Helper()
		inRoot(t, ctx, db, commit, f)
	}
	child := func(ctx context.Context, root *zodb.PersistentMapping, key string) *zodb.PersistentMapping {
		t.Helper()
		v, ok := root.Get(key)
		m, isMap := v.(*zodb.PersistentMapping)
		if !ok || !isMap {
			t.Fatalf("root[%q] is %T", key, v)
		}
		if err := m.PActivate(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
	inTxn(false, func(ctx context.Context, root *zodb.PersistentMapping) {
		m := child(ctx, root, "py")
		n, _ := m.Get("n")
		who, _ := m.Get("who")
		text, _ := m.Get("text")
		if i, ok := asInt(n); !ok || i != 5 || who != "python" {
			t.Errorf("NEO/py's object read by Go: n=%#v who=%#v", n, who)
		}
		if s, ok := text.(string); !ok || len(s) != 13000 {
			t.Errorf("NEO/py's text (compressed by NEO/py) read by Go: %T of %d bytes", text, len(text.(string)))
		}
	})

	// A NEO/py client keeps a connection open while Go commits.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	watch := py.command(wctx, masters, "pyt", "watch", "go", "3")
	var werr strings.Builder
	watch.Stderr = &werr
	wout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(wout)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("NEO/py watcher: %q %v\n%s", sc.Text(), watch.Wait(), werr.String())
	}
	for n := int64(1); n <= 3; n++ {
		inTxn(true, func(ctx context.Context, root *zodb.PersistentMapping) {
			if n == 1 {
				m := zodb.NewPersistentMapping()
				m.Set("who", "go")
				m.Set("n", n)
				root.Set("go", m)
				return
			}
			m := child(ctx, root, "go")
			m.Set("n", n)
		})
		tid, err := stor.LastTid(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The watcher sees each commit before the next one is made.
		want := "seen " + strconv.FormatInt(n, 10)
		if !sc.Scan() || sc.Text() != want {
			t.Fatalf("NEO/py watcher after Go's commit %v of n=%d: %q, want %q\n%s", tid, n, sc.Text(), want, werr.String())
		}
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("NEO/py watcher: %v\n%s", err, werr.String())
	}

	// A new NEO/py client reads what Go wrote and what it wrote itself.
	var got map[string]any
	if err := json.Unmarshal([]byte(py.run(t, masters, "pyt", "read", "go")), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]any{"n": 3.0, "who": "go"}) {
		t.Errorf("NEO/py reads Go's object as %v", got)
	}
	if err := json.Unmarshal([]byte(py.run(t, masters, "pyt", "read", "py")), &got); err != nil {
		t.Fatal(err)
	}
	tree := map[string]any{}
	for i := range 5 {
		tree["k00"+string(rune('0'+i))] = float64(i)
	}
	if !reflect.DeepEqual(got, map[string]any{"n": 5.0, "who": "python", "text": 13000.0, "tree": tree}) {
		t.Errorf("NEO/py reads its own object as %v", got)
	}

	// NEO/py clients and ours add to one BTrees.Length at the same time:
	// conflicts are resolved by each client (NEO/py's by BTrees, ours by
	// zodb's resolver), none is lost.
	py.run(t, masters, "pyt", "count", "counter", "1")
	const pyClients, perClient = 3, 30
	counted := make(chan error, pyClients)
	for range pyClients {
		go func() {
			cmd := py.command(ctx, masters, "pyt", "count", "counter", strconv.Itoa(perClient))
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v\n%s", err, out)
			}
			counted <- err
		}()
	}
	length := func(root *zodb.PersistentMapping) *btree.Length {
		t.Helper()
		v, _ := root.Get("counter")
		l, ok := v.(*btree.Length)
		if !ok {
			t.Fatalf("root['counter'] is %T", v)
		}
		return l
	}
	for range perClient {
		inTxn(true, func(ctx context.Context, root *zodb.PersistentMapping) {
			if err := length(root).Change(ctx, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
	for range pyClients {
		if err := <-counted; err != nil {
			t.Fatalf("NEO/py client counting: %v", err)
		}
	}
	// Read by a new client (the others may still be applying the last
	// invalidations).
	inRoot(t, ctx, openDB(t, ctx, url, &zodb.OpenOptions{ReadOnly: true}), false, func(ctx context.Context, root *zodb.PersistentMapping) {
		v, err := length(root).Value(ctx)
		if want := int64(1 + (pyClients+1)*perClient); err != nil || v != want {
			t.Errorf("counter %d (%v), want %d", v, err, want)
		}
	})

	// NEO/py's neoctl and ours print the same through our admin node.
	for _, cmd := range [][]string{
		{"print", "cluster"}, {"print", "node"}, {"print", "pt"}, {"print", "pt", "1", "3"},
		{"print", "ids"}, {"print", "summary"}, {"print", "primary"}, {"tweak", "-n"},
		{"tweak", "-n", "S1"}, {"check"}, {"print", "foo"}, {"set", "--address", admin, "cluster", "RUNNING"},
	} {
		args := append([]string{"-a", admin}, cmd...)
		pyCmd := exec.Command(py.python, append([]string{"-c", "import sys; from neo.scripts.neoctl import main; sys.argv[0] = 'neoctl'; main()"}, args...)...)
		pyCmd.Env = py.env
		want, _ := pyCmd.CombinedOutput()
		goCmd := exec.Command(filepath.Join(neoBinary(t), "neoctl"), args...)
		out, _ := goCmd.CombinedOutput()
		if string(out) != string(want) || goCmd.ProcessState.ExitCode() != pyCmd.ProcessState.ExitCode() {
			t.Errorf("neoctl %q prints (exit status %d)\n%s\nNEO/py's neoctl (exit status %d)\n%s",
				cmd, goCmd.ProcessState.ExitCode(), out, pyCmd.ProcessState.ExitCode(), want)
		}
	}
}

// openDB opens a Go client on url and a DB over it, both closed at the end
// of the test.
func openDB(t *testing.T, ctx context.Context, url string, opt *zodb.OpenOptions) *zodb.DB {
	t.Helper()
	stor, err := zodb.Open(ctx, url, opt)
	if err != nil {
		t.Fatal(err)
	}
	db, err := zodb.NewDB(stor, nil)
	if err != nil {
		stor.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(); stor.Close() })
	return db
}

// inRoot runs f on the root mapping of a connection of db, in a transaction
// committed if commit, else aborted.
func inRoot(t *testing.T, ctx context.Context, db *zodb.DB, commit bool, f func(ctx context.Context, root *zodb.PersistentMapping)) {
	t.Helper()
	txn, tctx := transaction.New(ctx)
	conn, err := db.Open(tctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := conn.Root(tctx)
	if err != nil {
		t.Fatal(err)
	}
	root, ok := r.(*zodb.PersistentMapping)
	if !ok {
		t.Fatalf("root is %T", r)
	}
	f(tctx, root)
	if !commit {
		txn.Abort(tctx)
		return
	}
	if err := txn.Commit(tctx); err != nil {
		t.Fatalf("Go commit: %v", err)
	}
}

// pyNode is a NEO/py node process.
type pyNode struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// node starts a NEO/py node (neomaster, neostorage, neoadmin) with args;
// it is stopped at the end of the test.
func (py *neopy) node(t *testing.T, name string, args ...string) *pyNode {
	t.Helper()
	cmd := exec.Command(py.python, append([]string{"-c",
		"import sys; from neo.scripts." + name + " import main; sys.argv[0] = '" + name + "'; main()"}, args...)...)
	cmd.Env = py.env
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &pyNode{t: t, name: name, cmd: cmd, log: logf.Name(), done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			if b, err := os.ReadFile(n.log); err == nil {
				t.Logf("log of NEO/py's %s kept in %s", name, keepLog(t, strings.TrimSuffix(filepath.Base(n.log), ".log"), b))
			}
		}
	})
	return n
}

// stop stops the node by SIGTERM and waits for it.
func (n *pyNode) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		n.kill()
		n.t.Errorf("NEO/py %s did not stop on SIGTERM (log %s)", n.name, n.log)
	}
}

// kill kills the node (SIGKILL) and waits for it.
func (n *pyNode) kill() {
	n.cmd.Process.Kill()
	<-n.done
}

// TestNEOpyDatabase: a database filled by NEO/py's storage (SQLite
// backend) is served as is by our storage node, under the same command
// lines and neo.conf (the programs swapped), and goes back to NEO/py's
// with what was committed meanwhile. Our Go client also reads from NEO/py's cluster.
func TestNEOpyDatabase(t *testing.T) {
	py := neopyClient(t)
	neoBinary(t)
	dir := t.TempDir()
	master, storage := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	// One neo.conf for both implementations.
	conf := filepath.Join(dir, "neo.conf")
	if err := os.WriteFile(conf, []byte("[DEFAULT]\ncluster: swap\nmasters: "+master+"\nreplicas: 0\npartitions: 4\n\n"+
		"[master]\nbind: "+master+"\nautostart: 1\n\n"+
		"[storage]\nbind: "+storage+"\nadapter: SQLite\ndatabase: "+filepath.Join(dir, "s1.sqlite")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// NEO/py under Python 3 still wants its required options on the
	// command line (its config reader marks them required with a Python 2
	// truth method): given both ways.
	masterArgs := []string{"-f", conf, "-s", "master", "-c", "swap"}
	storageArgs := []string{"-f", conf, "-s", "storage", "-c", "swap", "-d", filepath.Join(dir, "s1.sqlite")}
	url := "neo://swap@" + master
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	head := func() zodb.Tid {
		t.Helper()
		stor, err := zodb.Open(ctx, url, &zodb.OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer stor.Close()
		h, err := stor.LastTid(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	lastTid := func(out string) zodb.Tid {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		tid, err := zodb.ParseTid(strings.TrimPrefix(lines[len(lines)-1], "tid "))
		if err != nil {
			t.Fatalf("NEO/py client printed %q: %v", out, err)
		}
		return tid
	}
	read := func(key string) string {
		t.Helper()
		return strings.TrimSpace(py.run(t, master, "swap", "read", key))
	}

	// NEO/py's cluster: NEO/py's client writes, ours reads.
	pm := py.node(t, "neomaster", masterArgs...)
	ps := py.node(t, "neostorage", storageArgs...)
	tid1 := lastTid(py.run(t, master, "swap", "write", "py", "5"))
	if h := head(); h != tid1 {
		t.Fatalf("Go client on NEO/py's cluster: head %v, want %v", h, tid1)
	}
	want1 := read("py")
	ps.stop()
	pm.stop()

	// Our nodes on the same database and command lines.
	m := start(t, "master", "neomaster", masterArgs...)
	s := start(t, "storage", "neostorage", storageArgs...)
	if h := head(); h != tid1 {
		t.Fatalf("our cluster on NEO/py's database: head %v, want %v", h, tid1)
	}
	if got := read("py"); got != want1 {
		t.Fatalf("NEO/py client through our nodes reads %s, want %s", got, want1)
	}
	tid2 := lastTid(py.run(t, master, "swap", "write", "py2", "3"))
	want2 := read("py2")
	s.stopWith(syscall.SIGTERM)
	m.stopWith(syscall.SIGTERM)

	// NEO/py's nodes again, with what ours committed.
	py.node(t, "neomaster", masterArgs...)
	py.node(t, "neostorage", storageArgs...)
	if h := head(); h != tid2 {
		t.Fatalf("NEO/py's cluster after ours: head %v, want %v", h, tid2)
	}
	if got := read("py2"); got != want2 {
		t.Errorf("NEO/py's nodes serve what ours committed as %s, want %s", got, want2)
	}
	if got := read("py"); got != want1 {
		t.Errorf("NEO/py's nodes serve their own first commits as %s, want %s", got, want1)
	}
}

// TestNEOpyMixedCluster: one of NEO/py's storages and one of ours hold
// every partition in a cluster whose master is NEO/py's or ours (and the
// admin node of the other): commits from NEO/py's client and from ours go to both storages;
// each storage, killed (SIGKILL) and restarted, catches up by replicating
// from the other (NEO/py's replication protocol on both sides), and then
// serves everything alone.
func TestNEOpyMixedCluster(t *testing.T) {
	for _, pyMaster := range []bool{true, false} {
		name := "GoMaster"
		if pyMaster {
			name = "NEOpyMaster"
		}
		t.Run(name, func(t *testing.T) { testNEOpyMixedCluster(t, pyMaster) })
	}
}

func testNEOpyMixedCluster(t *testing.T, pyMaster bool) {
	py := neopyClient(t)
	neoBinary(t)
	dir := t.TempDir()
	master, admin := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	pyAddr, goAddr := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	masterArgs := []string{"--cluster", "mix", "--bind", master, "--masters", master,
		"--partitions", "4", "--replicas", "1", "--autostart", "2"}
	storageArgs := func(bind, db string) []string {
		return []string{"--cluster", "mix", "--bind", bind, "--masters", master,
			"--adapter", "SQLite", "--database", filepath.Join(dir, db)}
	}
	adminArgs := []string{"--cluster", "mix", "--bind", admin, "--masters", master}
	// The admin node is of the other implementation than the master's
	// (and our neoctl talks to it).
	if pyMaster {
		py.node(t, "neomaster", masterArgs...)
		start(t, "admin", "neoadmin", adminArgs...)
	} else {
		start(t, "master", "neomaster", masterArgs...)
		py.node(t, "neoadmin", adminArgs...)
	}
	pyS := py.node(t, "neostorage", storageArgs(pyAddr, "py.sqlite")...)
	goS := start(t, "storage", "neostorage", storageArgs(goAddr, "go.sqlite")...)
	url := "neo://mix@" + master

	// upToDate waits until the partition table has every cell UP_TO_DATE.
	upToDate := func() {
		t.Helper()
		eventually(t, time.Minute, "every cell UP_TO_DATE", func() (bool, string) {
			out, err := ctlRun(t, admin, "print", "pt")
			if err != nil {
				return false, err.Error()
			}
			// "S1 R UUUU": a storage's cells, one letter per partition
			rows := 0
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) == 3 && strings.HasPrefix(f[0], "S") {
					rows++
					if strings.Trim(f[2], "U") != "" {
						return false, out
					}
				}
			}
			return rows == 2, out
		})
	}
	// goWrite commits n new objects through our client and returns them.
	goWrite := func(objs objects, n int, tag string) {
		t.Helper()
		commitObjects(t, url, objs, n, tag)
	}
	pyRead := func(key string) string {
		t.Helper()
		return strings.TrimSpace(py.run(t, master, "mix", "read", key))
	}
	check := func(objs objects, want map[string]string) {
		t.Helper()
		checkObjects(t, url, objs)
		for key, w := range want {
			if got := pyRead(key); got != w {
				t.Errorf("NEO/py client reads %s as %s, want %s", key, got, w)
			}
		}
	}

	upToDate()
	objs := objects{}
	py.run(t, master, "mix", "write", "a", "3")
	goWrite(objs, 20, "first")
	want := map[string]string{"a": pyRead("a")}

	// NEO/py's storage lost: ours goes on alone; back, it catches up.
	pyS.kill()
	py.run(t, master, "mix", "write", "b", "2")
	goWrite(objs, 20, "second")
	want["b"] = pyRead("b")
	check(objs, want)
	pyS = py.node(t, "neostorage", storageArgs(pyAddr, "py.sqlite")...)
	upToDate()

	// Our storage lost: NEO/py's serves alone, everything included what
	// it replicated from ours; back, ours catches up.
	goS.kill()
	check(objs, want)
	py.run(t, master, "mix", "write", "c", "2")
	goWrite(objs, 20, "third")
	want["c"] = pyRead("c")
	goS = start(t, "storage-again", "neostorage", storageArgs(goAddr, "go.sqlite")...)
	upToDate()

	// NEO/py's storage lost again: ours serves alone what it replicated.
	pyS.kill()
	check(objs, want)
}

// TestNEOpyConformance runs the storage conformance suite through our Go
// client against clusters of NEO/py's nodes (a master and two SQLite
// storages holding every partition twice), as the neo/client package runs
// it against ours.
func TestNEOpyConformance(t *testing.T) {
	py := neopyClient(t)
	seq := 0
	newURL := func(t testing.TB) string {
		seq++
		tt := t.(*testing.T)
		dir := tt.TempDir()
		master := freeAddr(tt, "127.0.0.1")
		name := "conf" + strconv.Itoa(seq)
		py.node(tt, "neomaster", "--cluster", name, "--bind", master, "--masters", master,
			"--partitions", "4", "--replicas", "1", "--autostart", "2")
		for _, s := range []string{"s1", "s2"} {
			py.node(tt, "neostorage", "--cluster", name, "--bind", freeAddr(tt, "127.0.0.1"), "--masters", master,
				"--adapter", "SQLite", "--database", filepath.Join(dir, s+".sqlite"))
		}
		return "neo://" + name + "@" + master + "?compress=false"
	}
	storagetest.Run(t, newURL, storagetest.SharedHandles(), storagetest.NoTxnStatus())
}
