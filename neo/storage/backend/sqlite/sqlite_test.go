package sqlite

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"zombiezen.com/go/sqlite"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

const np = 4

var ctx = context.Background()

func openTest(t testing.TB, path string) *DB {
	t.Helper()
	db, err := Open(ctx, path, Options{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// newTest returns a database of node 1 with np readable partitions.
func newTest(t testing.TB) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "neo.sqlite")
	db := openTest(t, path)
	t.Cleanup(func() { db.Close() })
	must(t, db.SetConfig(ctx, backend.KeyNID, "1", true))
	var cells []proto.CellChange
	for p := uint32(0); p < np; p++ {
		cells = append(cells, proto.CellChange{Partition: p, NID: 1, State: proto.CellUpToDate})
	}
	must(t, db.ChangePartitionTable(ctx, 1, 0, cells, true, 0))
	return db, path
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func data(s string) (proto.Checksum, []byte) {
	return sha1.Sum([]byte(s)), []byte(s)
}

type store struct {
	oid        zodb.Oid
	data       string // "" with del: a record without data
	del        bool
	dataSerial zodb.Tid
}

// commit runs the whole commit path of one transaction.
func commit(t testing.TB, db *DB, ttid, tid zodb.Tid, stores ...store) {
	t.Helper()
	var objs []backend.TObject
	var oids []zodb.Oid
	for _, s := range stores {
		var id int64
		var err error
		if s.del {
			id, err = db.StoreData(ctx, ttid, s.oid, proto.Checksum{}, nil, 0, zodb.InvalidTid)
		} else if s.dataSerial != 0 {
			id, err = db.StoreData(ctx, ttid, s.oid, proto.Checksum{}, nil, 0, s.dataSerial)
		} else {
			h, d := data(s.data)
			id, err = db.StoreData(ctx, ttid, s.oid, h, d, 0, zodb.InvalidTid)
		}
		must(t, err)
		ds := zodb.InvalidTid
		if s.dataSerial != 0 {
			ds = s.dataSerial
		}
		objs = append(objs, backend.TObject{Oid: s.oid, DataID: id, DataSerial: ds})
		oids = append(oids, s.oid)
	}
	must(t, db.Vote(ctx, ttid, objs, &backend.TxnMeta{TTid: ttid, User: []byte("user"),
		Description: []byte(fmt.Sprintf("txn %d", tid)), Oids: oids}))
	must(t, db.Lock(ctx, ttid, tid, false))
	must(t, db.Unlock(ctx, ttid, tid))
}

func rawInt(t testing.TB, db *DB, q string, args ...any) []int64 {
	t.Helper()
	db.mu.Lock()
	defer db.mu.Unlock()
	var r []int64
	must(t, db.query(ctx, q, func(st *sqlite.Stmt) error {
		if st.ColumnIsNull(0) {
			r = append(r, -99)
		} else {
			r = append(r, st.ColumnInt64(0))
		}
		return nil
	}, args...))
	return r
}

// TestSchema compares the created schema with NEO/py's schema version 4
// as described in the protocol specification (§12.2).
func TestSchema(t *testing.T) {
	db, _ := newTest(t)
	type col struct {
		name, typ string
		notnull   bool
		pk        int
	}
	want := map[string]struct {
		cols         []col
		withoutRowid bool
	}{
		"config": {[]col{{"name", "TEXT", true, 1}, {"value", "TEXT", false, 0}}, true},
		"pt":     {[]col{{"partition", "INTEGER", true, 1}, {"nid", "INTEGER", true, 2}, {"tid", "INTEGER", true, 0}, {"pack", "INTEGER", false, 0}}, true},
		"pack":   {[]col{{"tid", "INTEGER", false, 1}, {"approved", "BOOLEAN", false, 0}, {"partial", "BOOLEAN", true, 0}, {"oids", "BLOB", false, 0}, {"pack_tid", "INTEGER", false, 0}}, false},
		"trans": {[]col{{"partition", "INTEGER", true, 1}, {"tid", "INTEGER", true, 2}, {"packed", "BOOLEAN", true, 0}, {"oids", "BLOB", true, 0},
			{"user", "BLOB", true, 0}, {"description", "BLOB", true, 0}, {"ext", "BLOB", true, 0}, {"ttid", "INTEGER", true, 0}}, true},
		"obj":  {[]col{{"partition", "INTEGER", true, 1}, {"oid", "INTEGER", true, 2}, {"tid", "INTEGER", true, 3}, {"data_id", "INTEGER", false, 0}, {"value_tid", "INTEGER", false, 0}}, true},
		"data": {[]col{{"id", "INTEGER", false, 1}, {"hash", "BLOB", true, 0}, {"compression", "INTEGER", true, 0}, {"value", "BLOB", true, 0}}, false},
		"ttrans": {[]col{{"partition", "INTEGER", true, 0}, {"tid", "INTEGER", false, 0}, {"packed", "BOOLEAN", true, 0}, {"oids", "BLOB", true, 0},
			{"user", "BLOB", true, 0}, {"description", "BLOB", true, 0}, {"ext", "BLOB", true, 0}, {"ttid", "INTEGER", true, 0}}, false},
		"tobj": {[]col{{"partition", "INTEGER", true, 0}, {"oid", "INTEGER", true, 2}, {"tid", "INTEGER", true, 1}, {"data_id", "INTEGER", false, 0}, {"value_tid", "INTEGER", false, 0}}, true},
	}
	wantIdx := map[string]string{"_obj_i1": "obj(partition,tid,oid)", "_obj_i2": "obj(data_id)"}

	db.mu.Lock()
	defer db.mu.Unlock()
	tables := map[string]string{}
	gotIdx := map[string]string{}
	must(t, db.query(ctx, "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'", func(st *sqlite.Stmt) error {
		switch st.ColumnText(0) {
		case "table":
			tables[st.ColumnText(1)] = st.ColumnText(3)
		case "index":
			gotIdx[st.ColumnText(1)] = st.ColumnText(2)
		}
		return nil
	}))
	if len(tables) != len(want) {
		t.Errorf("tables: got %v, want %d tables", tables, len(want))
	}
	for name, w := range want {
		sql, ok := tables[name]
		if !ok {
			t.Errorf("table %s missing", name)
			continue
		}
		if got := strings.Contains(sql, "WITHOUT ROWID"); got != w.withoutRowid {
			t.Errorf("table %s: WITHOUT ROWID %v, want %v", name, got, w.withoutRowid)
		}
		var cols []col
		must(t, db.query(ctx, "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)", func(st *sqlite.Stmt) error {
			cols = append(cols, col{st.ColumnText(0), st.ColumnText(1), st.ColumnInt64(2) != 0, int(st.ColumnInt64(3))})
			return nil
		}, name))
		if !reflect.DeepEqual(cols, w.cols) {
			t.Errorf("table %s columns:\ngot  %v\nwant %v", name, cols, w.cols)
		}
	}
	for name, w := range wantIdx {
		tbl, _, _ := strings.Cut(w, "(")
		if gotIdx[name] != tbl {
			t.Errorf("index %s on %q, want %s", name, gotIdx[name], tbl)
			continue
		}
		var cs []string
		must(t, db.query(ctx, "SELECT name FROM pragma_index_info(?) ORDER BY seqno", func(st *sqlite.Stmt) error {
			cs = append(cs, st.ColumnText(0))
			return nil
		}, name))
		if got := tbl + "(" + strings.Join(cs, ",") + ")"; got != w {
			t.Errorf("index %s: %s, want %s", name, got, w)
		}
	}
	for name := range gotIdx {
		if _, ok := wantIdx[name]; !ok {
			t.Errorf("unexpected index %s", name)
		}
	}
	if v, _, _ := db.config(ctx, "version"); v != "4" {
		t.Errorf("config version %q", v)
	}
	if v, _, _ := db.config(ctx, "name"); v != "test" {
		t.Errorf("config name %q", v)
	}
}

func TestDedupIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sqlite")
	db, err := Open(ctx, path, Options{Name: "x", Dedup: true})
	must(t, err)
	defer db.Close()
	if got := rawInt(t, db, "SELECT \"unique\" FROM pragma_index_list('data') WHERE name='_data_i1'"); !reflect.DeepEqual(got, []int64{1}) {
		t.Fatalf("_data_i1 unique: %v", got)
	}
	must(t, db.ChangePartitionTable(ctx, 1, 0, []proto.CellChange{{Partition: 0, NID: 1, State: proto.CellUpToDate}}, true, 0))
	h, d := data("same")
	a, err := db.StoreData(ctx, 10, 1, h, d, 0, zodb.InvalidTid)
	must(t, err)
	b, err := db.StoreData(ctx, 10, 2, h, d, 0, zodb.InvalidTid)
	must(t, err)
	if a != b {
		t.Errorf("dedup: data ids %d and %d", a, b)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.sqlite")
	db := openTest(t, path)

	if _, err := Open(ctx, path, Options{Name: "test"}); err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Errorf("second open: %v", err)
	}
	must(t, db.Close())

	if _, err := Open(ctx, path, Options{Name: "other"}); !errors.Is(err, backend.ErrClusterName) {
		t.Errorf("other cluster: %v", err)
	}

	db = openTest(t, path)
	must(t, db.SetConfig(ctx, "version", "3", true))
	must(t, db.Close())
	if _, err := Open(ctx, path, Options{Name: "test"}); !errors.Is(err, backend.ErrSchemaVersion) || !strings.Contains(err.Error(), "3") {
		t.Errorf("version 3: %v", err)
	}

	for _, bad := range []string{
		"file:" + path + "?foo=1",
		"file:" + path + "?synchronous=1&synchronous=2",
		"file:" + path + "?cksumvfs=1",
		"file:" + path + "?synchronous=1;DROP",
	} {
		if _, err := Open(ctx, bad, Options{Name: "test"}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestURIPragmas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "u.sqlite")
	db, err := Open(ctx, "file:"+path+"?synchronous=OFF&cache_size=-1234&journal_mode=truncate", Options{Name: "n"})
	must(t, err)
	defer db.Close()
	if got := rawInt(t, db, "PRAGMA synchronous"); got[0] != 0 {
		t.Errorf("synchronous %v", got)
	}
	if got := rawInt(t, db, "PRAGMA cache_size"); got[0] != -1234 {
		t.Errorf("cache_size %v", got)
	}
	p, _, err := parseDatabase("~/x.sqlite")
	must(t, err)
	if strings.HasPrefix(p, "~") || !strings.HasSuffix(p, "/x.sqlite") {
		t.Errorf("~ not expanded: %s", p)
	}
}

func TestPTTidEncoding(t *testing.T) {
	for _, c := range []struct {
		own   bool
		state proto.CellState
		repl  zodb.Tid
		tid   int64
	}{
		{false, proto.CellOutOfDate, 0, 0},
		{false, proto.CellUpToDate, 0, -1},
		{false, proto.CellFeeding, 0, -2},
		{false, proto.CellCorrupted, 0, -3},
		{true, proto.CellUpToDate, 0, -1},
		{true, proto.CellOutOfDate, 0, 0},
		{true, proto.CellOutOfDate, 0x03c0ffee00000001, 0x03c0ffee00000001},
	} {
		got := backend.EncodePTTid(c.own, c.state, c.repl)
		if got != c.tid {
			t.Errorf("encode %+v: %d", c, got)
		}
		s, r, err := backend.DecodePTTid(got)
		if err != nil || s != c.state || r != c.repl {
			t.Errorf("decode %d: %v %v %v", got, s, r, err)
		}
	}
	if _, _, err := backend.DecodePTTid(-4); err == nil {
		t.Error("decode -4: no error")
	}
}

func TestPartitionTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pt.sqlite")
	db := openTest(t, path)
	defer db.Close()
	must(t, db.SetConfig(ctx, backend.KeyNID, "1", true))
	must(t, db.ChangePartitionTable(ctx, 5, 1, []proto.CellChange{
		{Partition: 0, NID: 1, State: proto.CellUpToDate},
		{Partition: 0, NID: 2, State: proto.CellFeeding},
		{Partition: 1, NID: 1, State: proto.CellOutOfDate},
		{Partition: 1, NID: 2, State: proto.CellUpToDate},
	}, true, 0x77))
	if db.NP() != 2 {
		t.Fatalf("np %d", db.NP())
	}
	must(t, db.SetReplicated(ctx, 1, 0x1234))
	must(t, db.SetReplicated(ctx, 0, 0x1234)) // readable: ignored
	pt, err := db.PartitionTable(ctx)
	must(t, err)
	want := []backend.Cell{
		{Partition: 0, NID: 1, State: proto.CellUpToDate, HasPack: true},
		{Partition: 0, NID: 2, State: proto.CellFeeding},
		{Partition: 1, NID: 1, State: proto.CellOutOfDate, Replicated: 0x1234, Pack: 0x77, HasPack: true},
		{Partition: 1, NID: 2, State: proto.CellUpToDate},
	}
	if !reflect.DeepEqual(pt, want) {
		t.Errorf("pt:\ngot  %+v\nwant %+v", pt, want)
	}
	if got := rawInt(t, db, "SELECT tid FROM pt ORDER BY partition, nid"); !reflect.DeepEqual(got, []int64{-1, -2, 0x1234, -1}) {
		t.Errorf("raw pt.tid %v", got)
	}
	// Incremental: progress survives an update to OUT_OF_DATE again; a
	// discarded cell goes; a new node id rewrites own cells.
	must(t, db.ChangePartitionTable(ctx, 6, 1, []proto.CellChange{
		{Partition: 1, NID: 1, State: proto.CellOutOfDate},
		{Partition: 0, NID: 2, State: proto.CellDiscarded},
	}, false, 0))
	if got := rawInt(t, db, "SELECT tid FROM pt ORDER BY partition, nid"); !reflect.DeepEqual(got, []int64{-1, 0x1234, -1}) {
		t.Errorf("raw pt.tid after change %v", got)
	}
	if v, _, _ := db.Config(ctx, "ptid"); v != "6" {
		t.Errorf("ptid %q", v)
	}
	if v, _, _ := db.Config(ctx, "replicas"); v != "1" {
		t.Errorf("replicas %q", v)
	}
	must(t, db.SetConfig(ctx, backend.KeyNID, "3", true))
	if got := rawInt(t, db, "SELECT nid FROM pt ORDER BY partition, nid"); !reflect.DeepEqual(got, []int64{3, 2, 3}) {
		t.Errorf("nids after new nid %v", got)
	}
	// reset replaces everything
	must(t, db.ChangePartitionTable(ctx, 7, 0, []proto.CellChange{{Partition: 0, NID: 3, State: proto.CellUpToDate}}, true, 0))
	if got := rawInt(t, db, "SELECT COUNT(*) FROM pt"); got[0] != 1 {
		t.Errorf("rows after reset %v", got)
	}
}

func load(t *testing.T, db *DB, oid zodb.Oid, at, before zodb.Tid) (*backend.Object, error) {
	t.Helper()
	o := &backend.Object{}
	err := db.Load(ctx, oid, at, before, o)
	return o, err
}

func TestMVCC(t *testing.T) {
	db, _ := newTest(t)
	X := zodb.InvalidTid
	commit(t, db, 8, 12, store{oid: 1, data: "a1"}, store{oid: 2, data: "b1"})
	commit(t, db, 20, 24, store{oid: 1, data: "a2"})
	commit(t, db, 28, 32, store{oid: 1, del: true})
	commit(t, db, 40, 44, store{oid: 1, dataSerial: 24})

	for _, c := range []struct {
		oid        zodb.Oid
		at, before zodb.Tid
		serial     zodb.Tid
		next       zodb.Tid
		data       string
		nodata     bool
		dataSerial zodb.Tid
		err        error
	}{
		{oid: 1, at: X, before: X, serial: 44, next: X, data: "a2", dataSerial: 24},
		{oid: 1, at: 12, before: X, serial: 12, next: 24, data: "a1", dataSerial: X},
		{oid: 1, at: 24, before: X, serial: 24, next: 32, data: "a2", dataSerial: X},
		{oid: 1, at: 32, before: X, serial: 32, next: 44, nodata: true, dataSerial: X},
		{oid: 1, at: X, before: 24, serial: 12, next: 24, data: "a1", dataSerial: X},
		{oid: 1, at: X, before: 25, serial: 24, next: 32, data: "a2", dataSerial: X},
		{oid: 1, at: X, before: 1 << 62, serial: 44, next: X, data: "a2", dataSerial: 24},
		{oid: 2, at: X, before: 13, serial: 12, next: X, data: "b1", dataSerial: X},
		{oid: 1, at: 13, before: X, err: backend.ErrOidNotFound},
		{oid: 1, at: X, before: 12, err: backend.ErrOidNotFound},
		{oid: 3, at: X, before: X, err: backend.ErrOidDoesNotExist},
		{oid: 7, at: 12, before: X, err: backend.ErrOidDoesNotExist},
	} {
		name := fmt.Sprintf("oid %d at %d before %d", c.oid, c.at, c.before)
		o, err := load(t, db, c.oid, c.at, c.before)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		h, _ := data(c.data)
		if c.nodata {
			h = proto.Checksum{}
		}
		if o.Serial != c.serial || o.NextSerial != c.next || string(o.Data) != c.data || o.HasData == c.nodata ||
			o.Checksum != h || o.DataSerial != c.dataSerial || o.Compression != 0 {
			t.Errorf("%s: got %+v", name, o)
		}
	}

	// metadata, history, lists
	m, err := db.Transaction(ctx, 24, false)
	must(t, err)
	if string(m.User) != "user" || string(m.Description) != "txn 24" || m.TTid != 20 || !reflect.DeepEqual(m.Oids, []zodb.Oid{1}) || m.Packed {
		t.Errorf("transaction 24: %+v", m)
	}
	if _, err := db.Transaction(ctx, 25, true); !errors.Is(err, backend.ErrTidNotFound) {
		t.Errorf("transaction 25: %v", err)
	}
	h, err := db.History(ctx, 1, 1, 2)
	must(t, err)
	if !reflect.DeepEqual(h, []backend.HistoryEntry{{Serial: 32, Size: 0}, {Serial: 24, Size: 2}}) {
		t.Errorf("history %v", h)
	}
	if _, err := db.History(ctx, 9, 0, 10); !errors.Is(err, backend.ErrOidNotFound) {
		t.Errorf("history of 9: %v", err)
	}
	tids, err := db.TIDs(ctx, 1, 10, []uint32{0, 1, 2, 3})
	must(t, err)
	if !reflect.DeepEqual(tids, []zodb.Tid{32, 24, 12}) {
		t.Errorf("TIDs %v", tids)
	}
	tids, err = db.TIDsFrom(ctx, 0, 13, 100, -1) // partition 0: 12, 24, 32, 44
	must(t, err)
	if !reflect.DeepEqual(tids, []zodb.Tid{24, 32, 44}) {
		t.Errorf("TIDsFrom %v", tids)
	}
	xs, err := db.ObjectsFrom(ctx, 1, 24, 100, 2, 10) // oid 1 is in partition 1
	must(t, err)
	if !reflect.DeepEqual(xs, []zodb.Xid{{Oid: 1, At: 32}, {Oid: 1, At: 44}}) {
		t.Errorf("ObjectsFrom %v", xs)
	}
	if ft, ok, err := db.FinalTid(ctx, 20); err != nil || !ok || ft != 24 {
		t.Errorf("FinalTid(20) = %v %v %v", ft, ok, err)
	}
	if ls, ok, err := db.LastSerial(ctx, 1); err != nil || !ok || ls != 44 {
		t.Errorf("LastSerial(1) = %v %v %v", ls, ok, err)
	}
	if lt, lo, ok, err := db.LastIDs(ctx, 0); err != nil || !ok || lt != 44 || lo != 0 {
		t.Errorf("LastIDs(0) = %v %v %v %v", lt, lo, ok, err)
	}
	if ft, err := db.FirstTid(ctx, 3); err != nil || ft != zodb.TidMax {
		t.Errorf("FirstTid(3) = %v %v", ft, err)
	}
}

func TestOIDsFrom(t *testing.T) {
	db, _ := newTest(t)
	// partition 1: oids 1, 5, 9, 13; 5 deleted at 20
	commit(t, db, 10, 12, store{oid: 1, data: "x"}, store{oid: 5, data: "y"}, store{oid: 9, data: "z"}, store{oid: 13, data: "w"})
	commit(t, db, 20, 20, store{oid: 5, del: true})
	for _, c := range []struct {
		length int
		min    zodb.Oid
		tid    zodb.Tid
		oids   []zodb.Oid
		next   zodb.Oid
		ok     bool
	}{
		{10, 0, 100, []zodb.Oid{1, 9, 13}, 0, false},
		{2, 0, 100, []zodb.Oid{1}, 9, true},
		{2, 0, 12, []zodb.Oid{1, 5}, 9, true},
		{4, 5, 12, []zodb.Oid{5, 9, 13}, 0, false},
		{10, 0, 11, nil, 0, false},
	} {
		oids, next, ok, err := db.OIDsFrom(ctx, 1, c.length, c.min, c.tid)
		must(t, err)
		if !reflect.DeepEqual(oids, c.oids) || next != c.next || ok != c.ok {
			t.Errorf("OIDsFrom(%d, %d, %d) = %v %v %v", c.length, c.min, c.tid, oids, next, ok)
		}
	}
}

func TestDataIDs(t *testing.T) {
	db, path := newTest(t)
	for i, oid := range []zodb.Oid{1, 5, 2, 3, 7, 4} {
		h, d := data(fmt.Sprint("d", i))
		id, err := db.StoreData(ctx, 10, oid, h, d, 0, zodb.InvalidTid)
		must(t, err)
		p := uint32(oid % np)
		lo, hi := backend.DataIDRange(p)
		if id < lo || id >= hi {
			t.Errorf("oid %d: data id %#x outside partition %d", oid, id, p)
		}
	}
	got := rawInt(t, db, "SELECT id FROM data ORDER BY id")
	want := []int64{0, 1 << 48, 1<<48 + 1, 2 << 48, 3 << 48, 3<<48 + 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("data ids %#x, want %#x", got, want)
	}
	// Not voted: a crash loses the data; reopening allocates from the max.
	must(t, db.Commit(ctx))
	db.crash()
	db = openTest(t, path)
	defer db.Close()
	h, d := data("again")
	id, err := db.StoreData(ctx, 11, 9, h, d, 0, zodb.InvalidTid)
	must(t, err)
	if id != 1<<48+2 {
		t.Errorf("next id in partition 1: %#x", id)
	}
	// compression flag and hash are stored as given
	h, d = data("zzz")
	id, err = db.StoreData(ctx, 11, 2, h, d, 1, zodb.InvalidTid)
	must(t, err)
	if got := rawInt(t, db, "SELECT compression FROM data WHERE id=?", id); got[0] != 1 {
		t.Errorf("compression %v", got)
	}
	if _, err := db.StoreData(ctx, 11, 2, h, d, 2, zodb.InvalidTid); err == nil {
		t.Error("compression 2 accepted")
	}
	if _, err := db.StoreData(ctx, 11, 2, h, nil, 0, 999); !errors.Is(err, backend.ErrUndoData) {
		t.Errorf("undo to missing revision: %v", err)
	}
}

func TestCrashAndAbort(t *testing.T) {
	db, path := newTest(t)
	commit(t, db, 10, 12, store{oid: 1, data: "base"})

	// ttid 20: voted and locked; ttid 30: voted only; ttid 40: stored then
	// aborted; ttid 50: unlocked but not yet committed (deferred).
	vote := func(ttid zodb.Tid, oid zodb.Oid, s string) int64 {
		h, d := data(s)
		id, err := db.StoreData(ctx, ttid, oid, h, d, 0, zodb.InvalidTid)
		must(t, err)
		must(t, db.Vote(ctx, ttid, []backend.TObject{{Oid: oid, DataID: id, DataSerial: zodb.InvalidTid}},
			&backend.TxnMeta{TTid: ttid, Oids: []zodb.Oid{oid}}))
		return id
	}
	vote(20, 2, "locked")
	must(t, db.Lock(ctx, 20, 25, false))
	vote(30, 3, "voted")
	h, d := data("aborted")
	aid, err := db.StoreData(ctx, 40, 5, h, d, 0, zodb.InvalidTid)
	must(t, err)
	aid2 := vote(45, 6, "aborted after vote")
	must(t, db.Abort(ctx, 40))
	must(t, db.Abort(ctx, 45))
	vote(50, 7, "unlocked")
	must(t, db.Lock(ctx, 50, 54, false))
	must(t, db.Unlock(ctx, 50, 54))
	if o, err := load(t, db, 7, zodb.InvalidTid, zodb.InvalidTid); err != nil || o.Serial != 54 {
		t.Fatalf("unlocked txn not visible before commit: %v %v", o, err)
	}
	db.crash()

	db = openTest(t, path)
	defer db.Close()
	u, err := db.Unfinished(ctx)
	must(t, err)
	want := map[zodb.Tid]zodb.Tid{20: 25, 30: zodb.InvalidTid, 50: 54}
	if !reflect.DeepEqual(u, want) {
		t.Errorf("unfinished after crash: %v, want %v", u, want)
	}
	if m, err := db.Transaction(ctx, 25, true); err != nil || m.TTid != 20 {
		t.Errorf("locked transaction 25 in ttrans: %v %v", m, err)
	}
	for _, id := range []int64{aid, aid2} {
		if got := rawInt(t, db, "SELECT COUNT(*) FROM data WHERE id=?", id); got[0] != 0 {
			t.Errorf("data %#x of an aborted transaction left", id)
		}
	}
	if got := rawInt(t, db, "SELECT COUNT(*) FROM tobj WHERE tid IN (40, 45)"); got[0] != 0 {
		t.Errorf("tobj rows of aborted transactions left")
	}
	if _, err := load(t, db, 7, zodb.InvalidTid, zodb.InvalidTid); !errors.Is(err, backend.ErrOidDoesNotExist) {
		t.Errorf("uncommitted unlock survived a crash: %v", err)
	}
	// verification replays the locked transaction
	must(t, db.Unlock(ctx, 50, 54))
	must(t, db.Unlock(ctx, 20, 25))
	must(t, db.Abort(ctx, 30))
	must(t, db.Close())
	db = openTest(t, path)
	defer db.Close()
	u, err = db.Unfinished(ctx)
	must(t, err)
	if len(u) != 0 {
		t.Errorf("unfinished after replay: %v", u)
	}
	for oid, serial := range map[zodb.Oid]zodb.Tid{1: 12, 2: 25, 7: 54} {
		if o, err := load(t, db, oid, zodb.InvalidTid, zodb.InvalidTid); err != nil || o.Serial != serial {
			t.Errorf("oid %d after replay: %+v %v", oid, o, err)
		}
	}
	if got := rawInt(t, db, "SELECT COUNT(*) FROM data"); got[0] != 3 {
		t.Errorf("%d data rows, want 3", got[0])
	}
	// DropUnfinished removes everything temporary
	vote(60, 8, "dropped")
	must(t, db.DropUnfinished(ctx))
	if got := rawInt(t, db, "SELECT (SELECT COUNT(*) FROM tobj)+(SELECT COUNT(*) FROM ttrans)+(SELECT COUNT(*) FROM data)"); got[0] != 3 {
		t.Errorf("after DropUnfinished: %v", got)
	}
}

func TestPackOrderCommit(t *testing.T) {
	db, _ := newTest(t)
	commit(t, db, 10, 12, store{oid: 1, data: "a"})
	must(t, db.Vote(ctx, 20, nil, &backend.TxnMeta{TTid: 20, Description: []byte("IStorage.pack"),
		Pack: &backend.PackOrder{Partial: true, Oids: []zodb.Oid{1, 5}, PackTid: 12}}))
	must(t, db.Lock(ctx, 20, 24, true))
	must(t, db.Unlock(ctx, 20, 24))
	m, err := db.Transaction(ctx, 24, false)
	must(t, err)
	want := &backend.PackOrder{Approved: proto.Some(true), Partial: true, Oids: []zodb.Oid{1, 5}, PackTid: 12}
	if m.Pack == nil || !reflect.DeepEqual(m.Pack, want) {
		t.Errorf("pack order %+v", m.Pack)
	}
	if got := rawInt(t, db, "SELECT tid FROM pack"); !reflect.DeepEqual(got, []int64{24}) {
		t.Errorf("pack ids %v", got)
	}
}

func TestUndoInfo(t *testing.T) {
	db, _ := newTest(t)
	X := zodb.InvalidTid
	commit(t, db, 10, 10, store{oid: 1, data: "v10"})
	commit(t, db, 20, 20, store{oid: 1, data: "v20"})
	commit(t, db, 30, 30, store{oid: 1, dataSerial: 10}) // undo of 20
	commit(t, db, 40, 40, store{oid: 2, data: "other"})
	commit(t, db, 50, 50, store{oid: 1, data: "v50"})
	for _, c := range []struct {
		name            string
		ltid, undo, cur zodb.Tid
		found           bool
		err             error
		want            backend.Undo
	}{
		{"creation, changed since", X, 10, X, true, nil, backend.Undo{Current: 50, UndoTo: X}},
		{"latest", X, 50, X, true, nil, backend.Undo{Current: 50, UndoTo: 30, IsCurrent: true}},
		{"undo of undo follows back-pointer", X, 30, X, true, nil, backend.Undo{Current: 50, UndoTo: 20}},
		{"snapshot before 50", 41, 30, X, true, nil, backend.Undo{Current: 30, UndoTo: 20, IsCurrent: true}},
		{"snapshot before 50: undo 10 equivalent to 30", 41, 10, X, true, nil, backend.Undo{Current: 30, UndoTo: X, IsCurrent: true}},
		{"pending store", X, 50, 60, true, nil, backend.Undo{Current: 60, UndoTo: 30}},
		{"did not write oid", X, 40, X, false, nil, backend.Undo{}},
		{"not in snapshot", 45, 50, X, true, backend.ErrOidNotFound, backend.Undo{}},
	} {
		u, found, err := db.UndoInfo(ctx, 1, c.ltid, c.undo, c.cur)
		if !errors.Is(err, c.err) || found != c.found || (c.err == nil && u != c.want) {
			t.Errorf("%s: %+v %v %v, want %+v %v %v", c.name, u, found, err, c.want, c.found, c.err)
		}
	}
}

func TestChecksums(t *testing.T) {
	db, _ := newTest(t)
	// partition 0 of np=4: tids 4, 8, 300
	commit(t, db, 4, 4, store{oid: 4, data: "a"}, store{oid: 8, data: "b"})
	commit(t, db, 8, 8, store{oid: 4, data: "c"})
	commit(t, db, 300, 300, store{oid: 12, data: "d"})
	hex20 := func(s string) proto.Checksum {
		var c proto.Checksum
		b, err := hex.DecodeString(s)
		must(t, err)
		copy(c[:], b)
		return c
	}
	// SHA-1 of the ASCII strings "4,8,300", "4,8" etc. computed
	// independently (Python hashlib).
	for _, c := range []struct {
		length   int
		min, max zodb.Tid
		count    int
		digest   string
		last     zodb.Tid
	}{
		{10, 0, 1000, 3, "5e14e005e85f4ad60c2db3e4b2e0d07d9bfc1830", 300},
		{2, 0, 1000, 2, "7327971cbb9267c040a7ec442991cb99435e9542", 8},
		{10, 301, 1000, 0, "", 0},
	} {
		n, d, last, err := db.CheckTIDRange(ctx, 0, c.length, c.min, c.max)
		must(t, err)
		want := proto.Checksum{}
		if c.digest != "" {
			want = hex20(c.digest)
		}
		if n != c.count || d != want || last != c.last {
			t.Errorf("CheckTIDRange(%d, %d, %d) = %d %x %d", c.length, c.min, c.max, n, d, last)
		}
	}
	// serial range: records (tid, oid) of partition 0 ordered: (4,4) (4,8) (8,4) (300,12)
	a, err := db.CheckSerialRange(ctx, 0, 10, 4, 1000, 8)
	must(t, err)
	want := &proto.AnswerCheckSerialRange{Count: 3, TidChecksum: hex20("5e14e005e85f4ad60c2db3e4b2e0d07d9bfc1830"), MaxTid: 300,
		OidChecksum: hex20("a2ad05f1c9bdbdeda058816306918768ffb1c660"), MaxOid: 12}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("CheckSerialRange = %+v, want %+v", a, want)
	}
	a, err = db.CheckSerialRange(ctx, 0, 10, 301, 1000, 0)
	must(t, err)
	if !reflect.DeepEqual(a, &proto.AnswerCheckSerialRange{}) {
		t.Errorf("empty CheckSerialRange = %+v", a)
	}
}

func TestReplicationAndTruncate(t *testing.T) {
	db, _ := newTest(t)
	h, d := data("rep")
	must(t, db.StoreTransaction(ctx, &backend.TxnMeta{Tid: 8, TTid: 7, Oids: []zodb.Oid{4}, Extension: []byte("e")}))
	must(t, db.StoreObject(ctx, &backend.Object{Oid: 4, Serial: 8, HasData: true, Checksum: h, Data: d, DataSerial: zodb.InvalidTid}))
	must(t, db.StoreObject(ctx, &backend.Object{Oid: 8, Serial: 8, HasData: true, Checksum: h, Data: d, DataSerial: zodb.InvalidTid}))
	if got := rawInt(t, db, "SELECT COUNT(*) FROM data"); got[0] != 2 {
		t.Errorf("%d data rows, want 2 (no dedup)", got[0])
	}
	commit(t, db, 12, 12, store{oid: 4, data: "later"}, store{oid: 1, data: "p1"})
	must(t, db.SetConfig(ctx, backend.KeyTruncateTid, zodb.Tid(8).String(), true))
	must(t, db.Truncate(ctx, 8))
	if _, ok, _ := db.Config(ctx, backend.KeyTruncateTid); ok {
		t.Error("truncate_tid left")
	}
	if o, err := load(t, db, 4, zodb.InvalidTid, zodb.InvalidTid); err != nil || o.Serial != 8 || o.NextSerial != zodb.InvalidTid {
		t.Errorf("after truncate: %+v %v", o, err)
	}
	if _, err := load(t, db, 1, zodb.InvalidTid, zodb.InvalidTid); !errors.Is(err, backend.ErrOidDoesNotExist) {
		t.Errorf("oid 1 after truncate: %v", err)
	}
	if got := rawInt(t, db, "SELECT COUNT(*) FROM data"); got[0] != 2 {
		t.Errorf("%d data rows after truncate, want 2", got[0])
	}
	must(t, db.DeleteObject(ctx, 8, 8))
	must(t, db.DeleteTransaction(ctx, 8))
	must(t, db.DropPartitions(ctx, []uint32{0}))
	if got := rawInt(t, db, "SELECT (SELECT COUNT(*) FROM obj)+(SELECT COUNT(*) FROM trans)+(SELECT COUNT(*) FROM data)"); got[0] != 0 {
		t.Errorf("rows left after drop: %v", got)
	}
}

func TestFailedOperationKeepsDeferredWork(t *testing.T) {
	db, path := newTest(t)
	commit(t, db, 8, 12, store{oid: 1, data: "kept"}) // unlock commit deferred
	h, d := data("x")
	id, err := db.StoreData(ctx, 20, 2, h, d, 0, zodb.InvalidTid)
	must(t, err)
	dup := []backend.TObject{{Oid: 2, DataID: id, DataSerial: zodb.InvalidTid}, {Oid: 2, DataID: id, DataSerial: zodb.InvalidTid}}
	if err := db.Vote(ctx, 20, dup, nil); err == nil {
		t.Fatal("vote of a duplicate oid accepted")
	}
	must(t, db.Commit(ctx))
	db.crash()
	db = openTest(t, path)
	defer db.Close()
	if o, err := load(t, db, 1, zodb.InvalidTid, zodb.InvalidTid); err != nil || string(o.Data) != "kept" {
		t.Errorf("unlocked transaction lost by a failed vote: %+v %v", o, err)
	}
	if got := rawInt(t, db, "SELECT COUNT(*) FROM tobj"); got[0] != 0 {
		t.Errorf("failed vote left %d tobj rows", got[0])
	}
}

func TestDeferredCommit(t *testing.T) {
	db, path := newTest(t)
	committed := make(chan struct{}, 1)
	db.mu.Lock()
	db.deferredCommitted = func() {
		select {
		case committed <- struct{}{}:
		default:
		}
	}
	db.mu.Unlock()
	commit(t, db, 8, 12, store{oid: 1, data: "soon durable"})
	// Another connection sees the transaction once the deferred commit ran.
	for {
		<-committed
		c, err := sqlite.OpenConn(path, sqlite.OpenReadOnly)
		must(t, err)
		st := c.Prep("SELECT COUNT(*) FROM obj")
		row, err := st.Step()
		n := st.ColumnInt64(0)
		st.Reset()
		c.Close()
		must(t, err)
		if row && n == 1 {
			return
		}
	}
}

func TestCanceledContext(t *testing.T) {
	db, _ := newTest(t)
	commit(t, db, 8, 12, store{oid: 1, data: "a"})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.Load(cctx, 1, zodb.InvalidTid, zodb.InvalidTid, &backend.Object{}); err == nil {
		t.Error("load with a canceled context succeeded")
	}
	if _, err := load(t, db, 1, zodb.InvalidTid, zodb.InvalidTid); err != nil {
		t.Errorf("load after a canceled one: %v", err)
	}
}

// TestCanceledWriteKeepsDeferredWork: a write given a canceled context
// fails alone, without touching the transaction that holds unlocked
// transactions whose commit is deferred. (SQLite rolls back the whole
// transaction when a write is interrupted while it runs, which a context
// ended by another goroutine could do at any time: inside a transaction,
// statements are therefore not interruptible.)
func TestCanceledWriteKeepsDeferredWork(t *testing.T) {
	db, path := newTest(t)
	commit(t, db, 8, 12, store{oid: 1, data: "kept"}) // unlock commit deferred
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	h, d := data("x")
	if _, err := db.StoreData(cctx, 20, 2, h, d, 0, zodb.InvalidTid); err == nil {
		t.Fatal("store with a canceled context succeeded")
	}
	if err := db.Abort(cctx, 20); err == nil {
		t.Fatal("abort with a canceled context succeeded")
	}
	must(t, db.Commit(ctx))
	db.crash()
	db = openTest(t, path)
	defer db.Close()
	if o, err := load(t, db, 1, zodb.InvalidTid, zodb.InvalidTid); err != nil || string(o.Data) != "kept" {
		t.Errorf("unlocked transaction lost by a canceled write: %+v %v", o, err)
	}
}

func TestConcurrentLoadsAndCommits(t *testing.T) {
	db, _ := newTest(t)
	commit(t, db, 4, 4, store{oid: 1, data: "4"})
	const n = 20
	done := make(chan error, 2)
	go func() {
		for i := 1; i <= n; i++ {
			tid := zodb.Tid(4 * (i + 1))
			var objs []backend.TObject
			h, d := data(fmt.Sprint(uint64(tid)))
			id, err := db.StoreData(ctx, tid, 1, h, d, 0, zodb.InvalidTid)
			if err == nil {
				objs = append(objs, backend.TObject{Oid: 1, DataID: id, DataSerial: zodb.InvalidTid})
				err = db.Vote(ctx, tid, objs, &backend.TxnMeta{TTid: tid, Oids: []zodb.Oid{1}})
			}
			if err == nil {
				err = db.Lock(ctx, tid, tid, false)
			}
			if err == nil {
				err = db.Unlock(ctx, tid, tid)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		o := &backend.Object{}
		for i := 0; i < 200; i++ {
			// a load at 4 always sees the first revision
			if err := db.Load(ctx, 1, zodb.InvalidTid, 5, o); err != nil || o.Serial != 4 || string(o.Data) != "4" {
				done <- fmt.Errorf("load before 5: %+v %v", o, err)
				return
			}
			if err := db.Load(ctx, 1, zodb.InvalidTid, zodb.InvalidTid, o); err != nil || string(o.Data) != fmt.Sprint(uint64(o.Serial)) {
				done <- fmt.Errorf("latest load: %+v %v", o, err)
				return
			}
		}
		done <- nil
	}()
	for range 2 {
		must(t, <-done)
	}
}

func TestPack(t *testing.T) {
	setup := func(t *testing.T) *DB {
		db, _ := newTest(t)
		commit(t, db, 10, 10, store{oid: 1, data: "1@10"}, store{oid: 5, data: "5@10"}, store{oid: 9, data: "9@10"})
		commit(t, db, 20, 20, store{oid: 1, data: "1@20"}, store{oid: 5, del: true})
		commit(t, db, 30, 30, store{oid: 1, del: true})
		commit(t, db, 40, 40, store{oid: 1, data: "1@40"})
		return db
	}
	serials := func(db *DB, oid zodb.Oid) []int64 {
		return rawInt(t, db, "SELECT tid FROM obj WHERE partition=1 AND oid=? ORDER BY tid", oid)
	}
	t.Run("whole partition", func(t *testing.T) {
		db := setup(t)
		_, more, err := db.Pack(ctx, 1, 30, nil, 0, 100)
		must(t, err)
		if more {
			t.Error("more after a complete pass")
		}
		if got := serials(db, 1); !reflect.DeepEqual(got, []int64{40}) {
			t.Errorf("oid 1: %v", got)
		}
		if got := serials(db, 5); got != nil {
			t.Errorf("oid 5: %v", got)
		}
		if got := serials(db, 9); !reflect.DeepEqual(got, []int64{10}) {
			t.Errorf("oid 9: %v", got)
		}
		if got := rawInt(t, db, "SELECT COUNT(*) FROM data"); got[0] != 2 {
			t.Errorf("%d data rows, want 2", got[0])
		}
	})
	t.Run("at 20, by chunks", func(t *testing.T) {
		db := setup(t)
		next, more, err := db.Pack(ctx, 1, 20, nil, 0, 2)
		must(t, err)
		if !more || next != 6 {
			t.Errorf("next %v more %v", next, more)
		}
		_, more, err = db.Pack(ctx, 1, 20, nil, next, 2)
		must(t, err)
		if more {
			t.Error("more at the end")
		}
		if got := serials(db, 1); !reflect.DeepEqual(got, []int64{20, 30, 40}) {
			t.Errorf("oid 1: %v", got)
		}
		if got := serials(db, 5); got != nil {
			t.Errorf("oid 5: %v", got)
		}
	})
	t.Run("partial", func(t *testing.T) {
		db := setup(t)
		_, _, err := db.Pack(ctx, 1, 40, []zodb.Oid{5}, 0, 0)
		must(t, err)
		if got := serials(db, 1); len(got) != 4 {
			t.Errorf("oid 1 packed by a partial pack of oid 5: %v", got)
		}
		if got := serials(db, 5); got != nil {
			t.Errorf("oid 5: %v", got)
		}
	})
}

func TestPackOrders(t *testing.T) {
	db, _ := newTest(t)
	for _, id := range []zodb.Tid{8, 12, 13} {
		must(t, db.Vote(ctx, id, nil, &backend.TxnMeta{TTid: id, Pack: &backend.PackOrder{PackTid: id - 1}}))
		must(t, db.Lock(ctx, id, id, false))
		must(t, db.Unlock(ctx, id, id))
	}
	changed, err := db.SignPackOrders(ctx, []zodb.Tid{8, 99}, []zodb.Tid{12})
	must(t, err)
	if !reflect.DeepEqual(changed, []zodb.Tid{8, 12}) {
		t.Errorf("changed %v", changed)
	}
	orders, err := db.PackOrders(ctx, 9, []uint32{0})
	must(t, err)
	want := []backend.PackOrderID{{ID: 12, PackOrder: backend.PackOrder{Approved: proto.Some(false), PackTid: 11}}}
	if !reflect.DeepEqual(orders, want) {
		t.Errorf("orders %+v", orders)
	}
	orders, err = db.PackOrders(ctx, 0, []uint32{0, 1})
	must(t, err)
	if len(orders) != 3 || orders[0].Approved != proto.Some(true) || orders[2].Approved.Ok {
		t.Errorf("orders %+v", orders)
	}
	must(t, db.SetPartitionPacked(ctx, 2, 8))
	pt, err := db.PartitionTable(ctx)
	must(t, err)
	if pt[2].Pack != 8 || !pt[2].HasPack {
		t.Errorf("cell 2: %+v", pt[2])
	}
}
