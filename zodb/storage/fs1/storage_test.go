package fs1

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/neozodb/neo/zodb"
)

func commitData(t testing.TB, s *FileStorage, oid zodb.Oid, serial zodb.Tid, data string) zodb.Tid {
	t.Helper()
	ctx := context.Background()
	txn, err := s.Begin(ctx, zodb.TxnMeta{User: []byte("u"), Description: []byte("d")})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Store(ctx, oid, serial, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

func TestOpenFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "Data.fs")

	if _, err := Open(ctx, path, &zodb.DriverOptions{NoCreate: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NoCreate open of a missing file: %v", err)
	}
	if _, err := Open(ctx, path, &zodb.DriverOptions{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only open of a missing file: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed opens created the file")
	}

	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != Magic {
		t.Fatalf("new file: %q", b)
	}
	lock, _ := os.ReadFile(path + ".lock")
	if string(lock) != " "+strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("lock file content %q", lock)
	}

	// a second writer fails, a reader does not
	if _, err := Open(ctx, path, nil); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second read-write open: %v", err)
	}
	r := openRO(t, path)

	tid := commitData(t, s, 0, 0, "root")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// (a handle does not follow commits made through another one, as
	// with ZODB: a new reader sees them)
	if last, _ := openRO(t, path).LastTid(ctx); last != tid {
		t.Fatalf("new reader sees last tid %v, want %v", last, tid)
	}

	// the index saved on close is what a scan builds, and is used
	raw, err := os.ReadFile(path + ".index")
	if err != nil {
		t.Fatal(err)
	}
	f, size, _, _ := OpenFile(path)
	built, _, _ := BuildIndex(f, size)
	f.Close()
	var buf bytes.Buffer
	built.WriteTo(&buf)
	if !bytes.Equal(raw, buf.Bytes()) {
		t.Fatalf("saved index differs from a built one")
	}

	// the lock is released on close
	s, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if oids, _ := s.NewOids(ctx, 2); oids[0] != 1 || oids[1] != 2 {
		t.Fatalf("new oids %v, want 1 2", oids)
	}
	if _, err := r.Begin(ctx, zodb.TxnMeta{}); !errors.Is(err, zodb.ErrReadOnly) {
		t.Fatalf("begin on a read-only storage: %v", err)
	}
	if err := r.Pack(ctx, tid, true); !errors.Is(err, zodb.ErrReadOnly) {
		t.Fatalf("pack on a read-only storage: %v", err)
	}
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "Data.fs")
	for _, u := range []string{"file://" + path, path} {
		st, err := zodb.Open(ctx, u, nil)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		if _, ok := st.Driver().(*FileStorage); !ok {
			t.Fatalf("%s: driver %T", u, st.Driver())
		}
		st.Close()
	}
}

// TestSaneIndex checks that an index with a wrong position for a record
// of the last transaction is not used.
func TestInsaneIndex(t *testing.T) {
	ctx := context.Background()
	path := copyFile(t, filepath.Join(dataDir(), "undo.fs"), t.TempDir(), "Data.fs")
	x, err := LoadIndexFile(filepath.Join(dataDir(), "undo.fs.index"))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := x.Get(0)
	x.Set(0, 52) // the first revision of the root, not the last
	if err := x.SaveFile(path + ".index"); err != nil {
		t.Fatal(err)
	}
	s := openRO(t, path)
	if pos, _ := s.index.Get(0); pos != good {
		t.Fatalf("index used: root at %d, want %d", pos, good)
	}
	if _, err := checkIndexSanity(s.file, s.index.TopPos, x); err == nil {
		t.Fatalf("sanity check passed")
	}
	_ = ctx
}
