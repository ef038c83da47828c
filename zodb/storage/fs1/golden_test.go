package fs1

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
)

func dataDir() string { return testdir.Dir("ZODB_TESTDATA", "zodb") }

// goldenFiles returns every *.fs of the reference data.
func goldenFiles(t testing.TB) []string {
	t.Helper()
	v, err := filepath.Glob(filepath.Join(dataDir(), "*.fs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(v) == 0 {
		t.Fatalf("no *.fs in %s", dataDir())
	}
	return v
}

type goldFile struct {
	Size         *int64    `json:"size"`
	Transactions []goldTxn `json:"transactions"`
	ReadOnlyView *struct {
		LastTid   string `json:"last_tid"`
		ValidSize int64  `json:"valid_size"`
	} `json:"readonly_view"`
}

type goldTxn struct {
	Tid            string    `json:"tid"`
	Status         string    `json:"status"`
	Pos            int64     `json:"pos"`
	Tlen           int64     `json:"tlen"`
	End            int64     `json:"end"`
	UserHex        string    `json:"user_hex"`
	DescriptionHex string    `json:"description_hex"`
	ExtensionHex   string    `json:"extension_hex"`
	Records        []goldRec `json:"records"`
}

type goldRec struct {
	Oid         string  `json:"oid"`
	Serial      string  `json:"serial"`
	Pos         int64   `json:"pos"`
	Prev        int64   `json:"prev"`
	Tloc        int64   `json:"tloc"`
	DataLen     int64   `json:"data_len"`
	Backpointer *int64  `json:"backpointer"`
	DataTxn     *string `json:"data_txn"`
	Deleted     bool    `json:"deleted"`
	DataSize    *int    `json:"data_size"`
	DataSha1    *string `json:"data_sha1"`
}

type goldCurrent struct {
	LastTid string `json:"last_tid"`
	Len     int    `json:"len"`
	Size    int64  `json:"size"`
	Objects map[string]struct {
		Serial   string `json:"serial"`
		DataSha1 string `json:"data_sha1"`
		DataSize int    `json:"data_size"`
		Pos      int64  `json:"pos"`
		Error    string `json:"error"`
	} `json:"objects"`
}

type goldIndex struct {
	Pos     int64       `json:"pos"`
	Entries [][2]any    `json:"-"`
	Raw     [][]any     `json:"entries"`
	_       json.Number `json:"-"`
}

func readJSON(t testing.TB, path string, v any) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return true
}

func sha1hex(b []byte) string {
	h := sha1.Sum(b)
	return hex.EncodeToString(h[:])
}

func mustTid(t testing.TB, s string) zodb.Tid {
	t.Helper()
	tid, err := zodb.ParseTid(s)
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

func mustOid(t testing.TB, s string) zodb.Oid {
	t.Helper()
	oid, err := zodb.ParseOid(s)
	if err != nil {
		t.Fatal(err)
	}
	return oid
}

// TestGoldenLowLevel checks the raw headers of every transaction and record
// of every reference file against X.fs.json.
func TestGoldenLowLevel(t *testing.T) {
	for _, path := range goldenFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			var gold goldFile
			if !readJSON(t, path+".json", &gold) {
				t.Fatalf("%s.json missing", name)
			}
			f, size, _, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if gold.Size != nil && *gold.Size != size {
				t.Fatalf("size %d, json says %d", size, *gold.Size)
			}
			if gold.ReadOnlyView != nil {
				size = gold.ReadOnlyView.ValidSize // the json has the committed part
			}
			it := NewIter(f, size)
			i := 0
			for ; ; i++ {
				err := it.NextTxn()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("txn #%d: %v", i, err)
				}
				if i >= len(gold.Transactions) {
					t.Fatalf("more transactions than the json's %d", len(gold.Transactions))
				}
				g, th := gold.Transactions[i], it.Txn
				if th.Tid != mustTid(t, g.Tid) || string(rune(th.Status)) != g.Status || th.Pos != g.Pos || th.Len != g.Tlen || th.NextPos() != g.End ||
					hex.EncodeToString(th.User) != g.UserHex || hex.EncodeToString(th.Description) != g.DescriptionHex || hex.EncodeToString(th.Extension) != g.ExtensionHex {
					t.Fatalf("txn #%d at %d: got %+v, want %+v", i, th.Pos, th, g)
				}
				j := 0
				for ; ; j++ {
					err := it.NextData()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("txn at %d record #%d: %v", th.Pos, j, err)
					}
					if j >= len(g.Records) {
						t.Fatalf("txn at %d: more records than %d", th.Pos, len(g.Records))
					}
					checkGoldRec(t, f, it.Data, g.Records[j])
				}
				if j != len(g.Records) {
					t.Fatalf("txn at %d: %d records, want %d", th.Pos, j, len(g.Records))
				}
			}
			if i != len(gold.Transactions) {
				t.Fatalf("%d transactions, want %d", i, len(gold.Transactions))
			}
		})
	}
}

func checkGoldRec(t *testing.T, r io.ReaderAt, dh *DataHeader, g goldRec) {
	t.Helper()
	back := int64(-1)
	if g.Backpointer != nil {
		back = *g.Backpointer
	}
	gotBack := int64(-1)
	if dh.DataLen == 0 {
		gotBack = dh.BackPos
	}
	if dh.Oid != mustOid(t, g.Oid) || dh.Tid != mustTid(t, g.Serial) || dh.Pos != g.Pos || dh.PrevPos != g.Prev || dh.TxnPos != g.Tloc || dh.DataLen != g.DataLen || gotBack != back {
		t.Fatalf("record at %d: got %+v, want %+v", dh.Pos, dh, g)
	}
	data, dataTid, err := LoadData(r, dh)
	if err != nil {
		t.Fatalf("record at %d: %v", dh.Pos, err)
	}
	wantDataTid := zodb.Tid(0)
	if g.DataTxn != nil {
		wantDataTid = mustTid(t, *g.DataTxn)
	}
	if dataTid != wantDataTid {
		t.Fatalf("record at %d: data tid %v, want %v", dh.Pos, dataTid, wantDataTid)
	}
	if (data == nil) != g.Deleted {
		t.Fatalf("record at %d: deleted=%v, want %v", dh.Pos, data == nil, g.Deleted)
	}
	if !g.Deleted && (len(data) != *g.DataSize || sha1hex(data) != *g.DataSha1) {
		t.Fatalf("record at %d: data size %d sha1 %s, want %d %s", dh.Pos, len(data), sha1hex(data), *g.DataSize, *g.DataSha1)
	}
}

func openRO(t testing.TB, path string) *FileStorage {
	t.Helper()
	s, err := Open(context.Background(), path, &zodb.DriverOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestGoldenStorage checks the storage view of every reference file:
// iteration against X.fs.json, Load of every object against
// X.fs.current.json, LastTid.
func TestGoldenStorage(t *testing.T) {
	ctx := context.Background()
	for _, path := range goldenFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			var gold goldFile
			readJSON(t, path+".json", &gold)
			s := openRO(t, path)
			if fi, err := os.Stat(path + ".index"); err == nil && fi.Size() > 0 {
				// the driver never writes in read-only mode
				defer func(mt any) {
					fi2, err := os.Stat(path + ".index")
					if err != nil || fi2.ModTime() != fi.ModTime() {
						t.Errorf("read-only open touched the index")
					}
				}(nil)
			}
			// committed transactions: the json lists the 'c' one too
			var want []goldTxn
			for _, g := range gold.Transactions {
				if g.Status != "c" {
					want = append(want, g)
				}
			}
			it := s.Iterate(ctx, 0, zodb.TidMax)
			i := 0
			for ; ; i++ {
				info, dit, err := it.NextTxn(ctx)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if i >= len(want) {
					t.Fatalf("too many transactions")
				}
				g := want[i]
				if info.Tid != mustTid(t, g.Tid) || string(rune(info.Status)) != g.Status ||
					hex.EncodeToString(info.User) != g.UserHex || hex.EncodeToString(info.Description) != g.DescriptionHex || hex.EncodeToString(info.Extension) != g.ExtensionHex {
					t.Fatalf("txn #%d: got %+v, want %+v", i, info, g)
				}
				for j := 0; ; j++ {
					d, err := dit.NextData(ctx)
					if err == io.EOF {
						if j != len(g.Records) {
							t.Fatalf("txn %v: %d records, want %d", info.Tid, j, len(g.Records))
						}
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					r := g.Records[j]
					wantDataTid := zodb.Tid(0)
					if r.DataTxn != nil {
						wantDataTid = mustTid(t, *r.DataTxn)
					}
					if d.Oid != mustOid(t, r.Oid) || d.Tid != mustTid(t, r.Serial) || d.DataTid != wantDataTid || (d.Data == nil) != r.Deleted {
						t.Fatalf("txn %v record #%d: got %v %v %v deleted=%v, want %+v", info.Tid, j, d.Oid, d.Tid, d.DataTid, d.Data == nil, r)
					}
					if d.Data != nil && sha1hex(d.Data) != *r.DataSha1 {
						t.Fatalf("txn %v record #%d: data differs", info.Tid, j)
					}
				}
			}
			if i != len(want) {
				t.Fatalf("%d transactions, want %d", i, len(want))
			}

			var cur goldCurrent
			if !readJSON(t, path+".current.json", &cur) {
				return // undo-voted.fs: see TestUndoVoted
			}
			last, _ := s.LastTid(ctx)
			if last != mustTid(t, cur.LastTid) {
				t.Errorf("LastTid %v, want %v", last, cur.LastTid)
			}
			if s.index.Len() != cur.Len {
				t.Errorf("%d objects, want %d", s.index.Len(), cur.Len)
			}
			for oidS, o := range cur.Objects {
				oid := mustOid(t, oidS)
				data, serial, next, err := s.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
				if o.Error != "" {
					var e *zodb.NoDataError
					if o.Error != "POSKeyError" || !errors.As(err, &e) || e.DeletedAt == 0 {
						t.Fatalf("load %v: %v, want %s", oid, err, o.Error)
					}
					continue
				}
				if err != nil {
					t.Fatalf("load %v: %v", oid, err)
				}
				if serial != mustTid(t, o.Serial) || next != 0 || len(data) != o.DataSize || sha1hex(data) != o.DataSha1 {
					t.Fatalf("load %v: serial %v next %v size %d, want %+v", oid, serial, next, len(data), o)
				}
			}
		})
	}
}

// TestGoldenLoadHistory loads every revision recorded in X.fs.json at its
// serial, and just before it, and checks History.
func TestGoldenLoadHistory(t *testing.T) {
	ctx := context.Background()
	for _, path := range goldenFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			var gold goldFile
			readJSON(t, path+".json", &gold)
			s := openRO(t, path)
			type rev struct {
				tid     zodb.Tid
				deleted bool
				sha     string
				plen    int64
			}
			// revisions reachable by the prev chain from the latest record
			byPos := map[int64]goldRec{}
			latest := map[zodb.Oid]int64{}
			for _, g := range gold.Transactions {
				if g.Status == "c" || g.Status == "u" {
					continue
				}
				for _, r := range g.Records {
					byPos[r.Pos] = r
					latest[mustOid(t, r.Oid)] = r.Pos
				}
			}
			revs := map[zodb.Oid][]rev{}
			for oid, pos := range latest {
				for pos != 0 {
					r := byPos[pos]
					sha := ""
					if r.DataSha1 != nil {
						sha = *r.DataSha1
					}
					revs[oid] = append([]rev{{mustTid(t, r.Serial), r.Deleted, sha, r.DataLen}}, revs[oid]...)
					pos = r.Prev
				}
			}
			for oid, rv := range revs {
				for i, r := range rv {
					var next zodb.Tid
					if i+1 < len(rv) {
						next = rv[i+1].tid
					}
					data, serial, nextSerial, err := s.Load(ctx, zodb.Xid{Oid: oid, At: r.tid})
					if r.deleted {
						var e *zodb.NoDataError
						if !errors.As(err, &e) || e.DeletedAt != r.tid {
							t.Fatalf("load %v@%v: %v, want NoDataError deleted at %v", oid, r.tid, err, r.tid)
						}
					} else if err != nil || serial != r.tid || nextSerial != next || sha1hex(data) != r.sha {
						t.Fatalf("load %v@%v: serial %v next %v err %v, want next %v", oid, r.tid, serial, nextSerial, err, next)
					}
				}
				_, _, _, err := s.Load(ctx, zodb.Xid{Oid: oid, At: rv[0].tid - 1})
				var e *zodb.NoDataError
				if !errors.As(err, &e) || e.DeletedAt != 0 {
					t.Fatalf("load %v before creation: %v", oid, err)
				}
				h, err := s.History(ctx, oid, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(h) != len(rv) {
					t.Fatalf("history %v: %d entries, want %d", oid, len(h), len(rv))
				}
				for i, e := range h {
					r := rv[len(rv)-1-i]
					if e.Tid != r.tid || int64(e.Size) != r.plen {
						t.Fatalf("history %v #%d: %v size %d, want %v %d", oid, i, e.Tid, e.Size, r.tid, r.plen)
					}
				}
				if h1, _ := s.History(ctx, oid, 1); len(h1) != 1 {
					t.Fatalf("history size 1: %d entries", len(h1))
				}
			}
			_, _, _, err := s.Load(ctx, zodb.Xid{Oid: 1 << 60, At: zodb.TidMax})
			var e *zodb.NoObjectError
			if !errors.As(err, &e) {
				t.Fatalf("load of unknown oid: %v", err)
			}
		})
	}
}

// TestGoldenIndex reads every X.fs.index, compares it with X.fs.index.json
// and with an index built by scanning, and writes it back byte for byte.
func TestGoldenIndex(t *testing.T) {
	for _, path := range goldenFiles(t) {
		if _, err := os.Stat(path + ".index"); err != nil {
			continue
		}
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(path + ".index")
			if err != nil {
				t.Fatal(err)
			}
			x, err := DecodeIndex(raw)
			if err != nil {
				t.Fatal(err)
			}
			var gold goldIndex
			if !readJSON(t, path+".index.json", &gold) {
				t.Fatalf("%s.index.json missing", name)
			}
			if x.TopPos != gold.Pos || x.Len() != len(gold.Raw) {
				t.Fatalf("pos %d len %d, want %d %d", x.TopPos, x.Len(), gold.Pos, len(gold.Raw))
			}
			for _, e := range gold.Raw {
				oid := mustOid(t, e[0].(string))
				want, _ := strconv.ParseInt(string(e[1].(json.Number)), 10, 64)
				if got, ok := x.Get(oid); !ok || got != want {
					t.Fatalf("%v: %d, want %d", oid, got, want)
				}
			}
			var buf bytes.Buffer
			if _, err := x.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), raw) {
				t.Fatalf("written index differs from ZODB's (%d vs %d bytes)", buf.Len(), len(raw))
			}
			f, size, _, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			y, _, err := BuildIndex(f, size)
			if err != nil {
				t.Fatal(err)
			}
			if !y.Equal(x) {
				t.Fatalf("index built by scanning differs: %v", diffIndex(x, y))
			}
			if err := VerifyIndex(f, x); err != nil {
				t.Fatal(err)
			}
		})
	}
}

type manifest struct {
	Extra struct {
		Pack map[string]struct {
			GC         bool    `json:"gc"`
			PackTid    string  `json:"pack_tid"`
			PackTime   float64 `json:"pack_time_seconds"`
			PackedFrom string  `json:"packed_from"`
		} `json:"pack"`
	} `json:"extra"`
	Files map[string]struct {
		RestoreCheck *struct {
			ByteIdentical bool `json:"byte_identical"`
		} `json:"restore_check"`
		ReadOnlyView *struct {
			LastTid   string `json:"last_tid"`
			ValidSize int64  `json:"valid_size"`
		} `json:"zodb_readonly_view"`
	} `json:"files"`
}

func readManifest(t testing.TB) *manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir(), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// copyFile copies src into dir and returns the new path.
func copyFile(t testing.TB, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, b, 0o666); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestUndoVoted opens the image taken between vote and finish.
//
// ZODB's read-only view reports as last tid the tid of the unfinished
// transaction (its scan records the tid before it sees status 'c'); we
// deliberately report the last committed one: that transaction may still
// be finished by its writer, and a tid must not be reported before its data
// is there. The valid size is the same.
func TestUndoVoted(t *testing.T) {
	ctx := context.Background()
	m := readManifest(t)
	found := 0
	for name, f := range m.Files {
		if f.ReadOnlyView == nil {
			continue
		}
		found++
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(dataDir(), name)
			var gold goldFile
			readJSON(t, src+".json", &gold)
			lastCommitted := mustTid(t, gold.Transactions[len(gold.Transactions)-1].Tid)
			rf, size, _, err := OpenFile(src)
			if err != nil {
				t.Fatal(err)
			}
			defer rf.Close()
			th, err := ReadTxnHeader(rf, f.ReadOnlyView.ValidSize, size, 0)
			if err != nil {
				t.Fatal(err)
			}
			if th.Status != zodb.TxnInprogress || th.Tid != mustTid(t, f.ReadOnlyView.LastTid) {
				t.Fatalf("expected ZODB's reported last tid to be the unfinished transaction's")
			}
			s := openRO(t, src)
			if s.index.TopPos != f.ReadOnlyView.ValidSize {
				t.Errorf("valid size %d, want %d", s.index.TopPos, f.ReadOnlyView.ValidSize)
			}
			if last, _ := s.LastTid(ctx); last != lastCommitted {
				t.Errorf("last tid %v, want %v", last, lastCommitted)
			}

			// read-write: the tail is cut and saved
			dir := t.TempDir()
			p := copyFile(t, src, dir, "Data.fs")
			orig, _ := os.ReadFile(p)
			w, err := Open(ctx, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if w.index.TopPos != f.ReadOnlyView.ValidSize {
				t.Errorf("rw: valid size %d", w.index.TopPos)
			}
			w.Close()
			now, _ := os.ReadFile(p)
			tr, err := os.ReadFile(p + ".tr0")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(now, orig[:f.ReadOnlyView.ValidSize]) || !bytes.Equal(tr, orig[f.ReadOnlyView.ValidSize:]) {
				t.Fatalf("truncation: file %d bytes, .tr0 %d bytes", len(now), len(tr))
			}
		})
	}
	if found == 0 {
		t.Fatal("manifest has no zodb_readonly_view entry")
	}
}

// TestUpstreamZodbtools opens the Python-2-era files of zodbtools and
// compares iteration with the transactions, objects and data hashes of
// their zdump.raw.ok.
func TestUpstreamZodbtools(t *testing.T) {
	dir, ok := sharedUpstream()
	if !ok {
		t.Skipf("shared test data %s not present: upstream zodbtools files not checked", dir)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "data.fs"))
	if len(files) == 0 {
		t.Fatalf("no data.fs under %s", dir)
	}
	ctx := context.Background()
	for _, path := range files {
		rel, _ := filepath.Rel(dir, path)
		t.Run(rel, func(t *testing.T) {
			want, err := parseZdump(path[:len(path)-len("data.fs")] + "zdump.raw.ok")
			if err != nil {
				t.Fatal(err)
			}
			s := openRO(t, path)
			var got []string
			it := s.Iterate(ctx, 0, zodb.TidMax)
			for {
				info, dit, err := it.NextTxn(ctx)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("txn %v %q", info.Tid, string(rune(info.Status))))
				var objs []string
				for {
					d, err := dit.NextData(ctx)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					switch {
					case d.Data == nil:
						objs = append(objs, fmt.Sprintf("obj %v delete", d.Oid))
					case d.DataTid != 0:
						objs = append(objs, fmt.Sprintf("obj %v from %v", d.Oid, d.DataTid))
					default:
						objs = append(objs, fmt.Sprintf("obj %v %d sha1:%s", d.Oid, len(d.Data), sha1hex(d.Data)))
					}
				}
				slices.Sort(objs) // zodbdump sorts by oid
				got = append(got, objs...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("dump differs:\n got %q\nwant %q", got, want)
			}
			// the py2 index (protocol 1/2 pickles) is read and agrees
			x, err := LoadIndexFile(path + ".index")
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyIndex(s.file, x); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// parseZdump extracts the txn and obj header lines of a zodbdump raw file.
func parseZdump(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v []string
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		s := string(line)
		switch {
		case strings.HasPrefix(s, "txn "):
			v = append(v, s)
		case strings.HasPrefix(s, "obj "):
			f := strings.Fields(s)
			v = append(v, s)
			if len(f) == 4 && strings.HasPrefix(f[3], "sha1:") {
				n, err := strconv.Atoi(f[2])
				if err != nil || n+1 > len(b) {
					return nil, fmt.Errorf("%s: bad obj line %q", path, s)
				}
				b = b[n+1:]
			}
		}
	}
	return v, nil
}

func sharedUpstream() (string, bool) { return testdir.Shared("zodb/upstream-zodbtools") }

// TestIterateRange checks that Iterate returns exactly the transactions
// within [tidMin, tidMax], starting from either end of the file.
func TestIterateRange(t *testing.T) {
	ctx := context.Background()
	for _, path := range goldenFiles(t) {
		s := openRO(t, path)
		var all []zodb.Tid
		it := s.Iterate(ctx, 0, zodb.TidMax)
		for {
			info, _, err := it.NextTxn(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, info.Tid)
		}
		if len(all) == 0 {
			continue
		}
		step := max(1, len(all)/15)
		bounds := []zodb.Tid{0, zodb.TidMax}
		for i := 0; i < len(all); i += step {
			bounds = append(bounds, all[i], all[i]-1, all[i]+1)
		}
		bounds = append(bounds, all[len(all)-1], all[len(all)-1]+1)
		for _, lo := range bounds {
			for _, hi := range bounds {
				var want, got []zodb.Tid
				for _, tid := range all {
					if lo <= tid && tid <= hi {
						want = append(want, tid)
					}
				}
				it := s.Iterate(ctx, lo, hi)
				for {
					info, _, err := it.NextTxn(ctx)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, info.Tid)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: iterate %v..%v: %v, want %v", filepath.Base(path), lo, hi, got, want)
				}
			}
		}
	}
}
