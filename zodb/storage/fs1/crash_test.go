package fs1

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// TestTornTail cuts a copy of reference files at every offset inside their
// last transaction, and marks it unfinished: a read-only open ignores the
// tail and writes nothing, a read-write open cuts it off into Data.fs.tr0
// and goes on committing.
func TestTornTail(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"undo.fs", "metadata.fs"} {
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join(dataDir(), name))
			if err != nil {
				t.Fatal(err)
			}
			x, _, err := BuildIndex(bytes.NewReader(orig), int64(len(orig)))
			if err != nil {
				t.Fatal(err)
			}
			last, err := ReadTxnHeaderBefore(bytes.NewReader(orig), int64(len(orig)), int64(len(orig)), 0)
			if err != nil {
				t.Fatal(err)
			}
			prev, err := ReadTxnHeaderBefore(bytes.NewReader(orig), last.Pos, int64(len(orig)), 0)
			if err != nil {
				t.Fatal(err)
			}
			var idx bytes.Buffer
			x.WriteTo(&idx)

			var images [][]byte
			for cut := last.Pos + 1; cut < int64(len(orig)); cut++ {
				images = append(images, orig[:cut])
			}
			voted := bytes.Clone(orig)
			voted[last.Pos+16] = 'c'
			images = append(images, voted)

			dir := t.TempDir()
			path := filepath.Join(dir, "Data.fs")
			for i, img := range images {
				for _, f := range []string{"", ".index", ".tr0", ".lock"} {
					os.Remove(path + f)
				}
				if err := os.WriteFile(path, img, 0o666); err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					// a stale index of the whole file: must be ignored
					os.WriteFile(path+".index", idx.Bytes(), 0o666)
				}
				s, err := Open(ctx, path, &zodb.DriverOptions{ReadOnly: true})
				if err != nil {
					t.Fatalf("image %d (%d bytes): read-only open: %v", i, len(img), err)
				}
				if s.index.TopPos != last.Pos || s.lastTid != prev.Tid {
					t.Fatalf("image %d: read-only view ends at %d tid %v, want %d %v", i, s.index.TopPos, s.lastTid, last.Pos, prev.Tid)
				}
				s.Close()
				if now, _ := os.ReadFile(path); !bytes.Equal(now, img) {
					t.Fatalf("image %d: read-only open changed the file", i)
				}
				if _, err := os.Stat(path + ".tr0"); err == nil {
					t.Fatalf("image %d: read-only open wrote .tr0", i)
				}
				// read-write opens sync: check the header offsets and
				// a sample of the others, to stay fast
				if i > 40 && i%11 != 0 && i != len(images)-1 {
					continue
				}

				s, err = Open(ctx, path, nil)
				if err != nil {
					t.Fatalf("image %d: read-write open: %v", i, err)
				}
				now, _ := os.ReadFile(path)
				tr, _ := os.ReadFile(path + ".tr0")
				if !bytes.Equal(now, img[:last.Pos]) || !bytes.Equal(tr, img[last.Pos:]) {
					t.Fatalf("image %d: after truncation file %d bytes, .tr0 %d bytes", i, len(now), len(tr))
				}
				s.noSync = true
				txn, err := s.Begin(ctx, zodb.TxnMeta{})
				if err == nil {
					err = txn.Store(ctx, 0, prevSerial(t, s, 0), []byte("new data"))
				}
				if err == nil {
					_, err = txn.Vote(ctx)
				}
				if err == nil {
					_, err = txn.Finish(ctx)
				}
				if err != nil {
					t.Fatalf("image %d: commit after truncation: %v", i, err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openRO(t, path)
				if data, _, _, err := s.Load(ctx, zodb.Xid{Oid: 0, At: zodb.TidMax}); err != nil || string(data) != "new data" {
					t.Fatalf("image %d: reopen: %q %v", i, data, err)
				}
				s.Close()
			}
		})
	}
}

func prevSerial(t testing.TB, s *FileStorage, oid zodb.Oid) zodb.Tid {
	t.Helper()
	_, serial, _, err := s.Load(context.Background(), zodb.Xid{Oid: oid, At: zodb.TidMax})
	var e *zodb.NoObjectError
	if errors.As(err, &e) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return serial
}

// TestCorruptMiddle damages a transaction in the middle of a file: opening
// fails with an error naming the offset.
func TestCorruptMiddle(t *testing.T) {
	ctx := context.Background()
	orig, err := os.ReadFile(filepath.Join(dataDir(), "undo.fs"))
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(orig)
	it := NewIter(r, int64(len(orig)))
	var mid *TxnHeader
	for i := 0; i < 4; i++ {
		if err := it.NextTxn(); err != nil {
			t.Fatal(err)
		}
		mid = it.Txn
	}
	for _, tc := range []struct {
		name string
		off  int64 // from the transaction start
		val  byte
	}{
		{"status", 16, 'x'},
		{"trailer", mid.Len + 7, 0xff},
		{"data tloc", mid.HeaderLen() + 31, 0x01},
		{"data plen", mid.HeaderLen() + 41, 0x01},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := bytes.Clone(orig)
			img[mid.Pos+tc.off] ^= tc.val
			path := filepath.Join(t.TempDir(), "Data.fs")
			os.WriteFile(path, img, 0o666)
			_, err := Open(ctx, path, &zodb.DriverOptions{ReadOnly: true})
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Pos < mid.Pos || fe.Pos > mid.NextPos() {
				t.Fatalf("open: %v, want a format error in the transaction at %d", err, mid.Pos)
			}
			if _, err := Open(ctx, path, nil); err == nil {
				t.Fatalf("read-write open succeeded")
			}
			if now, _ := os.ReadFile(path); !bytes.Equal(now, img) {
				t.Fatalf("failed open changed the file")
			}
		})
	}
}

var _ = io.EOF
