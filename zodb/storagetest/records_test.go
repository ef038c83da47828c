package storagetest

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/storage/fs1"
)

// The pickler writes what ZODB writes: checked against records and
// transaction extensions of the reference databases.
func TestPicklerMatchesZODB(t *testing.T) {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	const pm, pl = MappingClass, "persistent.list.PersistentList"
	for _, tc := range []struct {
		file string
		tid  string
		oid  zodb.Oid // record of oid in transaction tid, or InvalidOid: the extension
		want []byte
	}{
		{"small.fs", "03f6ed9000000000", 0, Mapping(nil)},
		{"small.fs", "03f6ed900366b2aa", 0, Mapping(map[string]any{"items": Ref(1, pm), "list": Ref(2, pl), "nodes": Ref(3, pl)})},
		{"metadata.fs", "03f6ed9631ef23bb", zodb.InvalidOid, Pickle(Dict{
			{"x-ascii", "v"}, {"x-uni", "é☃"}, {"x-int", 42}, {"x-list", []any{1, "a", nil}}, {"x-bytes", []byte{0, 0xff}},
		})},
		{"metadata.fs", "03f6ed9640dc8477", zodb.InvalidOid, extension("7l38", "f0i8ci")},
	} {
		stor := openURL(t, "file://"+filepath.Join(dir, tc.file), &zodb.OpenOptions{ReadOnly: true, NoCreate: true})
		tid, err := zodb.ParseTid(tc.tid)
		if err != nil {
			t.Fatal(err)
		}
		txns := iterate(t, stor, tid, tid)
		if len(txns) != 1 {
			t.Fatalf("%s: no transaction %v", tc.file, tid)
		}
		got := txns[0].info.Extension
		if tc.oid != zodb.InvalidOid {
			got = nil
			for _, r := range txns[0].recs {
				if r.Oid == tc.oid {
					got = r.Data
				}
			}
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s %v oid %v:\nZODB wrote %q\nwe write   %q", tc.file, tid, tc.oid, got, tc.want)
		}
	}
}

func TestCounter(t *testing.T) {
	for _, n := range []int64{0, 1, 255, 256, 65535, 65536, -1, 1 << 31, -1 << 31, -1<<31 - 1, 1 << 62, -1 << 63} {
		v, err := CounterValue(Counter(n))
		if err != nil || v != n {
			t.Errorf("counter %d: decoded %d, %v", n, v, err)
		}
	}
	if _, err := CounterValue(Mapping(nil)); err == nil {
		t.Errorf("a mapping decoded as a counter")
	}
	if _, err := CounterResolver(t.Context(), 1, Counter(1), Mapping(nil), Counter(2)); err == nil {
		t.Errorf("resolver merged a mapping")
	}
}

func TestRefsFound(t *testing.T) {
	rec := Record("pkg.Node", Dict{{"a", Ref(5, "pkg.Node")}, {"l", []any{Ref(7, "pkg.Other"), Ref(5, "pkg.Node")}}, {"t", Tuple{Ref(9, "pkg.Node"), 1, "x", nil}}})
	refs, err := zodb.PickleRefs(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := []zodb.Oid{5, 7, 5, 9}
	if len(refs) != len(want) {
		t.Fatalf("refs %v, want %v", refs, want)
	}
	for i := range want {
		if refs[i] != want[i] {
			t.Fatalf("refs %v, want %v", refs, want)
		}
	}
}
