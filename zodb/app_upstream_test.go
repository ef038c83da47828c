package zodb_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
)

// TestAppUpstreamPickles decodes every record of zodbtools' test
// databases, written by ZODB on Python 2 (protocols 1, 2 and 3) and 3.
// Records of Python 3 must encode back to the same bytes.
func TestAppUpstreamPickles(t *testing.T) {
	dir, ok := testdir.Shared("zodb/upstream-zodbtools")
	if !ok {
		t.Skip("zodbtools' test data not found beside the project (../shared/testdata/zodb/upstream-zodbtools)")
	}
	var files []string
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Name() == "data.fs" {
			files = append(files, path)
		}
		return nil
	})
	if len(files) == 0 {
		t.Fatalf("no data.fs under %s", dir)
	}
	ctx := context.Background()
	for _, path := range files {
		rel, _ := filepath.Rel(dir, path)
		t.Run(rel, func(t *testing.T) {
			py3 := strings.Contains(rel, "py3")
			stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer stor.Close()
			it := stor.Iterate(ctx, 0, zodb.TidMax)
			n := 0
			for {
				_, dit, err := it.NextTxn(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				for {
					rec, err := dit.NextData(ctx)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if rec.Data == nil {
						continue
					}
					n++
					desc, state, err := zodb.DecodeRecord(rec.Data)
					if err != nil {
						t.Errorf("%v@%v: %v", rec.Oid, rec.Tid, err)
						continue
					}
					re, err := zodb.EncodeRecord(desc, state)
					if err != nil {
						t.Errorf("%v@%v: encode: %v", rec.Oid, rec.Tid, err)
						continue
					}
					if py3 {
						if !bytes.Equal(re, rec.Data) {
							t.Errorf("%v@%v: encoded again:\ngot  %q\nwant %q", rec.Oid, rec.Tid, re, rec.Data)
						}
						continue
					}
					// Python 2 records: written with protocol 3, same values
					desc2, state2, err := zodb.DecodeRecord(re)
					if err != nil || !zodb.PyEqual(desc, desc2) || !zodb.PyEqual(state, state2) {
						t.Errorf("%v@%v: protocol 3 round trip: %v\n%s\n%s", rec.Oid, rec.Tid, err, zodb.PyRepr(state), zodb.PyRepr(state2))
					}
				}
			}
			if n == 0 {
				t.Error("no records")
			}
			t.Logf("%d records", n)
		})
	}
}
