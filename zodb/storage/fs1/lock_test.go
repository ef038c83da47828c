package fs1

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// TestLockAgainstOtherProcess checks that a writer in another process
// locking Data.fs.lock as ZODB/py does (zc.lockfile: flock, exclusive,
// non-blocking) keeps us out, and that our lock keeps it out.
func TestLockAgainstOtherProcess(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: cannot run a ZODB/py-style locker")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "Data.fs")
	// The locker takes the lock like zc.lockfile, prints what happened, and
	// holds the lock until its standard input closes.
	const locker = `
import fcntl, sys
f = open(sys.argv[1], 'a+')
try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    print('busy', flush=True)
    sys.exit(0)
print('locked', flush=True)
sys.stdin.read()
`
	run := func() (string, func()) {
		cmd := exec.Command(python, "-c", locker, path+".lock")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		return strings.TrimSpace(line), func() { stdin.Close(); cmd.Wait() }
	}

	// Our writer holds the lock: the other process cannot take it.
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, stop := run()
	stop()
	if got != "busy" {
		t.Errorf("other process while we write: %q, want busy", got)
	}
	s.Close()

	// The other process holds it: we cannot open for writing, but can read.
	got, stop = run()
	defer stop()
	if got != "locked" {
		t.Fatalf("other process: %q, want locked", got)
	}
	if _, err := Open(ctx, path, nil); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("read-write open while another process writes: %v", err)
	}
	ro, err := Open(ctx, path, &zodb.DriverOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open: %v", err)
	}
	ro.Close()
}
