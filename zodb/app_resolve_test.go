package zodb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"

	"github.com/neozodb/neo/transaction"
	"github.com/neozodb/neo/zodb"
)

// zodbref.Counter of the reference data merges like Length, on its
// 'value' attribute.
func init() {
	zodb.RegisterConflictResolver("zodbref.Counter", func(old, committed, new any) (any, error) {
		get := func(st any) (int64, error) {
			d, ok := st.(*zodb.PyDict)
			if !ok {
				return 0, errors.New("state is not a dict")
			}
			v, _ := d.Get("value")
			n, ok := v.(int64)
			if !ok {
				return 0, errors.New("value is not an int")
			}
			return n, nil
		}
		o, err1 := get(old)
		c, err2 := get(committed)
		n, err3 := get(new)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, err
		}
		d := zodb.NewPyDict()
		for _, it := range new.(*zodb.PyDict).Items() {
			d.Set(it.Key, it.Value)
		}
		d.Set("value", c+n-o)
		return d, nil
	})
}

// fsJSON is the part of X.fs.json used here.
type fsJSON struct {
	Transactions []struct {
		Tid         string `json:"tid"`
		Description string `json:"description"`
		Records     []struct {
			Oid   string `json:"oid"`
			Class string `json:"class"`
		} `json:"records"`
	} `json:"transactions"`
}

// TestAppResolveGolden redoes the conflict resolutions of the reference
// data: for every record of a transaction described as resolved, the
// revisions before it are the one both transactions started from (old)
// and the one committed first; the state the resolving transaction
// wanted is rebuilt from the difference, and resolution must give the
// record ZODB wrote, byte for byte.
func TestAppResolveGolden(t *testing.T) {
	ctx := context.Background()
	checked := 0
	for _, path := range goldenFiles(t) {
		if _, err := os.Stat(path + ".json"); err != nil {
			continue
		}
		var fsj fsJSON
		readJSON(t, path+".json", &fsj)
		var stor *zodb.Storage
		// history of each oid: tids of its revisions in order
		hist := map[string][]string{}
		for _, txn := range fsj.Transactions {
			for _, r := range txn.Records {
				hist[r.Oid] = append(hist[r.Oid], txn.Tid)
			}
			if !strings.Contains(txn.Description, "resolved") {
				continue
			}
			for _, r := range txn.Records {
				if !zodb.HasConflictResolver(r.Class) {
					continue
				}
				revs := hist[r.Oid]
				if len(revs) < 3 {
					t.Errorf("%s: %s: resolved with %d revisions", path, r.Oid, len(revs))
					continue
				}
				if stor == nil {
					var err error
					if stor, err = zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true}); err != nil {
						t.Fatal(err)
					}
					defer stor.Close()
				}
				load := func(tid string) []byte {
					oid, _ := zodb.ParseOid(r.Oid)
					at, _ := zodb.ParseTid(tid)
					data, _, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: at})
					if err != nil {
						t.Fatal(err)
					}
					return data
				}
				old, committed, resolved := load(revs[len(revs)-3]), load(revs[len(revs)-2]), load(revs[len(revs)-1])
				newRec, err := wanted(old, committed, resolved)
				if err != nil {
					t.Errorf("%s %s: %v", path, r.Oid, err)
					continue
				}
				oid, _ := zodb.ParseOid(r.Oid)
				got, err := zodb.ResolveConflict(ctx, oid, old, committed, newRec)
				if err != nil {
					t.Errorf("%s %s: %v", path, r.Oid, err)
				} else if !bytes.Equal(got, resolved) {
					t.Errorf("%s %s (%s): resolved\ngot  %q\nwant %q", path, r.Oid, r.Class, got, resolved)
				}
				checked++
			}
		}
	}
	if checked < 2 {
		t.Errorf("%d resolved records checked, want the Length and the Counter ones", checked)
	}
}

// wanted rebuilds the record the resolving transaction stored: old plus
// what it added (resolved - committed), for integer states and states
// with an integer 'value'.
func wanted(old, committed, resolved []byte) ([]byte, error) {
	desc, so, err := zodb.DecodeRecord(old)
	if err != nil {
		return nil, err
	}
	_, sc, _ := zodb.DecodeRecord(committed)
	_, sr, _ := zodb.DecodeRecord(resolved)
	switch o := so.(type) {
	case int64:
		return zodb.EncodeRecord(desc, o+sr.(int64)-sc.(int64))
	case *zodb.PyDict:
		v := func(st any) int64 { x, _ := st.(*zodb.PyDict).Get("value"); return x.(int64) }
		o.Set("value", v(so)+v(sr)-v(sc))
		return zodb.EncodeRecord(desc, o)
	}
	return nil, fmt.Errorf("cannot rebuild the new state from %s", zodb.PyRepr(so))
}

func TestResolveLength(t *testing.T) {
	ctx := context.Background()
	rec := func(v any) []byte {
		b, err := zodb.EncodeRecord(zodb.PyGlobal{Module: "BTrees.Length", Name: "Length"}, v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	huge, _ := new(big.Int).SetString("9223372036854775807", 10)
	for _, tc := range []struct{ old, committed, new, want any }{
		{int64(5), int64(8), int64(7), int64(10)},
		{int64(5), int64(3), int64(4), int64(2)},
		{int64(0), huge, int64(1), new(big.Int).Add(huge, big.NewInt(1))},
	} {
		got, err := zodb.ResolveConflict(ctx, 1, rec(tc.old), rec(tc.committed), rec(tc.new))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, rec(tc.want)) {
			t.Errorf("%v %v %v: got %q, want %q", tc.old, tc.committed, tc.new, got, rec(tc.want))
		}
	}
	if _, err := zodb.ResolveConflict(ctx, 1, rec(int64(1)), rec("x"), rec(int64(2))); err == nil {
		t.Error("resolved a non-integer Length")
	}
	other, _ := zodb.EncodeRecord(zodb.PyGlobal{Module: "persistent.mapping", Name: "PersistentMapping"}, zodb.NewPyDict())
	if _, err := zodb.ResolveConflict(ctx, 1, other, other, other); err == nil {
		t.Error("resolved a class without resolver")
	}
}

// TestAppResolveThroughDB: two transactions change a Length at once; with
// ResolveConflict as the storage's resolver both commit and the changes
// add up.
func TestAppResolveThroughDB(t *testing.T) {
	ctx0 := context.Background()
	stor, err := zodb.Open(ctx0, "mem://", &zodb.OpenOptions{Resolver: zodb.ResolveConflict})
	if err != nil {
		t.Fatal(err)
	}
	defer stor.Close()
	db, err := zodb.NewDB(stor, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// a Length made by hand, its class unknown here: it loads as Broken
	var lengthOid zodb.Oid
	if err := inTxn(t, db, func(ctx context.Context, conn *zodb.Connection, root *zodb.PersistentMapping) {}); err != nil {
		t.Fatal(err)
	}
	{
		oid, _ := stor.NewOid(ctx0)
		lengthOid = oid
		rec, _ := zodb.EncodeRecord(zodb.PyGlobal{Module: "BTrees.Length", Name: "Length"}, int64(10))
		stxn, err := stor.Begin(ctx0, zodb.TxnMeta{})
		if err != nil {
			t.Fatal(err)
		}
		if err := stxn.Store(ctx0, oid, 0, rec); err != nil {
			t.Fatal(err)
		}
		if _, err := stxn.Vote(ctx0); err != nil {
			t.Fatal(err)
		}
		if _, err := stxn.Finish(ctx0); err != nil {
			t.Fatal(err)
		}
	}
	add := func(ctx context.Context, conn *zodb.Connection, n int64) {
		obj, err := conn.Get(ctx, lengthOid)
		if err != nil {
			t.Fatal(err)
		}
		b := obj.(*zodb.Broken)
		b.State = b.State.(int64) + n
		b.PModify()
	}
	txn1, ctx1 := transaction.New(ctx0)
	conn1, err := db.Open(ctx1)
	if err != nil {
		t.Fatal(err)
	}
	add(ctx1, conn1, 5)
	txn2, ctx2 := transaction.New(ctx0)
	conn2, err := db.Open(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	add(ctx2, conn2, 7)
	if err := txn1.Commit(ctx1); err != nil {
		t.Fatal(err)
	}
	if err := txn2.Commit(ctx2); err != nil {
		t.Fatalf("second commit: %v (want resolved)", err)
	}
	txn3, ctx3 := transaction.New(ctx0)
	defer txn3.Abort(ctx3)
	conn3, err := db.Open(ctx3)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := conn3.Get(ctx3, lengthOid)
	if err != nil {
		t.Fatal(err)
	}
	if v := obj.(*zodb.Broken).State; v != int64(22) {
		t.Errorf("Length = %v after resolution, want 22", v)
	}
}
