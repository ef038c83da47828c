package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
)

const demoUsage = `[-v] [--data DIR]

Shows a NEO cluster at work, end to end: starts "neo simple" (this binary)
as a separate process with two SQLite storages holding every partition twice
(--replicas 1), commits an object through the Go client to the URL it
printed, reads it back with a second client, then stops the cluster with
SIGTERM and checks that it exits cleanly. The cluster's logs go to
DIR/simple.log (-v: to standard error).
`

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, demoUsage)
	verbose := fs.Bool("v", false, "show the cluster's logs on standard error")
	dataDir := fs.String("data", "", "directory for the databases and the log (default: a temporary one, removed at the end)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &usageError{err.Error()}
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "neo-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program: %w", err)
	}
	out := e.stdout
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	simpleArgs := []string{"simple", "--cluster", "demo", "--data", dir, "--replicas", "1", "s1", "s2"}
	say("$ neo %s", strings.Join(simpleArgs, " "))
	cmd := exec.Command(exe, simpleArgs...)
	var logf *os.File
	if *verbose {
		cmd.Stderr = e.stderr
	} else {
		if logf, err = os.Create(filepath.Join(dir, "simple.log")); err != nil {
			return err
		}
		defer logf.Close()
		cmd.Stderr = logf
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start neo simple: %w", err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			return errors.New("neo simple did not stop within 30s after SIGTERM; killed")
		}
	}
	logHint := func(err error) error {
		if logf != nil {
			return fmt.Errorf("%w (cluster log: %s)", err, logf.Name())
		}
		return err
	}
	defer stop()

	var url string
	select {
	case l, ok := <-lines:
		if !ok {
			err := <-exited
			stopped = true
			return logHint(fmt.Errorf("neo simple exited without printing its URL: %v", err))
		}
		url = l
	case <-time.After(2 * time.Minute):
		return logHint(errors.New("the cluster did not reach RUNNING within 2 minutes"))
	case <-ctx.Done():
		return ctx.Err()
	}
	say("%s", url)

	// Commit through one client...
	greeting := fmt.Sprintf("hello from NEO, %s", time.Now().UTC().Format(time.RFC3339))
	tid, err := demoCommit(ctx, url, greeting)
	if err != nil {
		return logHint(err)
	}
	say("committed root['greeting'] = %q in transaction %v", greeting, tid)

	// ... read back through another.
	got, serial, err := demoRead(ctx, url)
	if err != nil {
		return logHint(err)
	}
	say("read back by a second client: root['greeting'] = %q (serial %v)", got, serial)
	if got != greeting || serial != tid {
		return logHint(fmt.Errorf("read back %q at %v, want %q at %v", got, serial, greeting, tid))
	}

	say("$ kill -TERM <neo simple>")
	if err := stop(); err != nil {
		return logHint(fmt.Errorf("neo simple: %w", err))
	}
	say("neo simple stopped the cluster and exited with status 0")

	// Both databases hold the transaction (every partition twice).
	for _, name := range []string{"s1", "s2"} {
		path := filepath.Join(dir, name+".sqlite")
		db, err := sqlite.Open(ctx, path, sqlite.Options{Name: "demo"})
		if err != nil {
			return err
		}
		serial, ok, err := db.LastSerial(ctx, 0)
		db.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if !ok || serial != tid {
			return fmt.Errorf("%s: root at %v, want %v", path, serial, tid)
		}
		say("%s.sqlite holds the root object at %v", name, serial)
	}
	return nil
}

// demoCommit sets root["greeting"] in a new transaction.
func demoCommit(ctx context.Context, url, greeting string) (zodb.Tid, error) {
	stor, err := zodb.Open(ctx, url, nil)
	if err != nil {
		return 0, err
	}
	db, err := zodb.NewDB(stor, nil)
	if err != nil {
		stor.Close()
		return 0, err
	}
	defer db.Close()
	defer stor.Close()
	txn, tctx := transaction.New(ctx)
	conn, err := db.Open(tctx)
	if err != nil {
		txn.Abort(tctx)
		return 0, err
	}
	r, err := conn.Root(tctx)
	if err != nil {
		txn.Abort(tctx)
		return 0, err
	}
	root, ok := r.(*zodb.PersistentMapping)
	if !ok {
		txn.Abort(tctx)
		return 0, fmt.Errorf("root is %T, not a PersistentMapping", r)
	}
	root.Set("greeting", greeting)
	if err := txn.Commit(tctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return stor.LastTid(ctx)
}

// demoRead reads root["greeting"] and the root's serial with a new client.
func demoRead(ctx context.Context, url string) (string, zodb.Tid, error) {
	stor, err := zodb.Open(ctx, url, &zodb.OpenOptions{ReadOnly: true})
	if err != nil {
		return "", 0, err
	}
	defer stor.Close()
	head, err := stor.LastTid(ctx)
	if err != nil {
		return "", 0, err
	}
	data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: 0, At: head})
	if err != nil {
		return "", 0, fmt.Errorf("load root: %w", err)
	}
	m := zodb.NewPersistentMapping()
	_, state, err := zodb.DecodeRecord(data)
	if err != nil {
		return "", 0, fmt.Errorf("root record: %w", err)
	}
	if err := m.PySetState(state); err != nil {
		return "", 0, fmt.Errorf("root record: %w", err)
	}
	v, _ := m.Get("greeting")
	s, ok := v.(string)
	if !ok {
		return "", 0, fmt.Errorf("root['greeting'] is %T, not a string", v)
	}
	return s, serial, nil
}
