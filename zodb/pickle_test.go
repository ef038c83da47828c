package zodb

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
)

// fsListing is the part of the reference X.fs.json listings used here.
type fsListing struct {
	Transactions []struct {
		Tid     string `json:"tid"`
		Time    string `json:"time"`
		Records []struct {
			Oid     string  `json:"oid"`
			Pos     int64   `json:"pos"`
			DataLen int64   `json:"data_len"`
			Class   string  `json:"class"`
			Refs    [][]any `json:"refs"`
			Deleted bool    `json:"deleted"`
		} `json:"records"`
	} `json:"transactions"`
}

// TestPickleGolden checks PickleClass and PickleRefs, and the tid time
// strings, against what ZODB/py reported for every record of every
// reference FileStorage. Record data is taken straight from the file
// (42-byte data header, then plen bytes).
func TestPickleGolden(t *testing.T) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	listings, _ := filepath.Glob(filepath.Join(dir, "*.fs.json"))
	if len(listings) == 0 {
		t.Fatalf("no *.fs.json in %s", dir)
	}
	nrec := 0
	for _, lpath := range listings {
		fspath := strings.TrimSuffix(lpath, ".json")
		t.Run(filepath.Base(fspath), func(t *testing.T) {
			raw, err := os.ReadFile(lpath)
			if err != nil {
				t.Fatal(err)
			}
			var l fsListing
			if err := json.Unmarshal(raw, &l); err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(fspath)
			if err != nil {
				t.Fatal(err)
			}
			for _, txn := range l.Transactions {
				tid, err := ParseTid(txn.Tid)
				if err != nil {
					t.Fatal(err)
				}
				if got := tid.TimeString(); got != txn.Time {
					t.Errorf("tid %v: time %q, want %q", tid, got, txn.Time)
				}
				for _, r := range txn.Records {
					if r.DataLen == 0 {
						continue // backpointer: data lives elsewhere
					}
					plen := int64(binary.BigEndian.Uint64(file[r.Pos+34:]))
					if plen != r.DataLen {
						t.Fatalf("%s@%v: plen %d != %d", r.Oid, tid, plen, r.DataLen)
					}
					data := file[r.Pos+42 : r.Pos+42+plen]
					nrec++
					if got := PickleClass(data); got != r.Class {
						t.Errorf("%s@%v: class %q, want %q", r.Oid, tid, got, r.Class)
					}
					refs, err := PickleRefs(data)
					if err != nil {
						t.Errorf("%s@%v: refs: %v", r.Oid, tid, err)
						continue
					}
					var want []string
					for _, ref := range r.Refs {
						want = append(want, ref[0].(string))
					}
					var got []string
					for _, oid := range refs {
						got = append(got, oid.String())
					}
					if strings.Join(got, ",") != strings.Join(want, ",") {
						t.Errorf("%s@%v: refs %v, want %v", r.Oid, tid, got, want)
					}
				}
			}
		})
	}
	if nrec == 0 {
		t.Fatal("no record checked")
	}
	t.Logf("%d records checked", nrec)
}
