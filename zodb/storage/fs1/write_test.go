package fs1

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// copyTxn restores one transaction of an iteration into dst.
func copyTxn(ctx context.Context, dst *FileStorage, info *zodb.TxnInfo, dit zodb.IDataIterator) error {
	txn, err := dst.Begin(ctx, zodb.TxnMeta{Tid: info.Tid, Status: info.Status, User: info.User, Description: info.Description, Extension: info.Extension})
	if err != nil {
		return err
	}
	for {
		d, err := dit.NextData(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			txn.Abort(ctx)
			return err
		}
		if err := txn.Restore(ctx, d.Oid, d.Data, d.DataTid); err != nil {
			txn.Abort(ctx)
			return err
		}
	}
	if _, err := txn.Vote(ctx); err != nil {
		txn.Abort(ctx)
		return err
	}
	_, err = txn.Finish(ctx)
	return err
}

// copyStorage copies src into a new file at dst with Iterate + Restore,
// and returns the written bytes.
func copyStorage(t testing.TB, src, dst string) []byte {
	t.Helper()
	ctx := context.Background()
	s := openRO(t, src)
	d, err := Open(ctx, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.noSync = true // keep the test fast
	it := s.Iterate(ctx, 0, zodb.TidMax)
	for {
		info, dit, err := it.NextTxn(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := copyTxn(ctx, d, info, dit); err != nil {
			t.Fatalf("copy %v: %v", info.Tid, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestoreCopy copies every reference file transaction by transaction
// with Restore. The copy is byte for byte the original, except in files
// written by pack: pack writes the records of packed transactions with
// prev = 0, while restore links every record to the previous revision of
// its object (as ZODB's restore does); those files must then differ only
// in prev fields of packed transactions.
func TestRestoreCopy(t *testing.T) {
	for _, path := range goldenFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(t.TempDir(), "Data.fs")
			got := copyStorage(t, path, dst)
			s := openRO(t, path)
			orig = orig[:s.index.TopPos] // committed part
			if bytes.Equal(got, orig) {
				return
			}
			if rc := readManifest(t).Files[name].RestoreCheck; rc != nil && rc.ByteIdentical {
				t.Fatalf("copy differs, and ZODB's restore of its dump is byte-identical")
			}
			if len(got) != len(orig) {
				t.Fatalf("copy is %d bytes, original %d", len(got), len(orig))
			}
			// Only prev fields of records in packed transactions may differ.
			f, _, _, err := OpenFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			allowed := map[int64]bool{}
			it := NewIter(bytes.NewReader(orig), int64(len(orig)))
			for it.NextTxn() == nil {
				for it.NextData() == nil {
					if it.Txn.Status == zodb.TxnPacked && it.Data.PrevPos == 0 {
						for i := int64(16); i < 24; i++ {
							allowed[it.Data.Pos+i] = true
						}
					}
				}
			}
			var diffs []string
			for i := range got {
				if got[i] != orig[i] && !allowed[int64(i)] {
					diffs = append(diffs, fmt.Sprint(i))
				}
			}
			if len(diffs) > 0 {
				t.Fatalf("copy differs at offsets %s", strings.Join(diffs[:min(len(diffs), 20)], " "))
			}
			t.Logf("%s: copy differs from the original only in prev fields of packed records", name)
		})
	}
}

// TestReplay commits again, with Store, Delete and Undo as an application
// does, every transaction of the reference files that were not packed, and
// checks that the file written is byte for byte the one ZODB wrote: same
// records, prev links, backpointers of undo, deletion records.
func TestReplay(t *testing.T) {
	ctx := context.Background()
	for _, path := range goldenFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			src := openRO(t, path)
			orig = orig[:src.index.TopPos]
			dst := filepath.Join(t.TempDir(), "Data.fs")
			d, err := Open(ctx, dst, nil)
			if err != nil {
				t.Fatal(err)
			}
			d.noSync = true
			defer d.Close()
			r := bytes.NewReader(orig)
			it := NewIter(r, int64(len(orig)))
			for {
				err := it.NextTxn()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				th := it.Txn
				if th.Status != zodb.TxnComplete {
					t.Skipf("transaction %v has status %q: not replayable", th.Tid, byte(th.Status))
				}
				var recs []*DataHeader
				for it.NextData() == nil {
					recs = append(recs, it.Data)
				}
				txn, err := d.Begin(ctx, zodb.TxnMeta{Tid: th.Tid, User: th.User, Description: th.Description, Extension: th.Extension})
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case bytes.HasPrefix(th.Description, []byte("undo")) && len(recs) > 0:
					// the undone transaction holds the revision the
					// first record replaces
					ph, err := ReadDataHeader(r, recs[0].PrevPos, recs[0].Pos)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := txn.Undo(ctx, ph.Tid); err != nil {
						t.Fatalf("%v: undo %v: %v", th.Tid, ph.Tid, err)
					}
				default:
					for _, dh := range recs {
						var serial zodb.Tid
						if dh.PrevPos != 0 {
							ph, err := ReadDataHeader(r, dh.PrevPos, dh.Pos)
							if err != nil {
								t.Fatal(err)
							}
							serial = ph.Tid
						}
						if dh.IsDeletion() {
							err = txn.Delete(ctx, dh.Oid, serial)
						} else {
							data, _, err2 := LoadData(r, dh)
							if err2 != nil {
								t.Fatal(err2)
							}
							err = txn.Store(ctx, dh.Oid, serial, data)
						}
						if err != nil {
							t.Fatalf("%v: %v", th.Tid, err)
						}
					}
				}
				if _, err := txn.Vote(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := txn.Finish(ctx); err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(dst)
				if !bytes.Equal(got, orig[:th.NextPos()]) {
					t.Fatalf("transaction %v (%q) written differently from ZODB", th.Tid, th.Description)
				}
			}
		})
	}
}
