package sqlite

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/neo/storage/backend"
)

func TestErase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "neo.sqlite")
	if _, _, existed, err := Erase(ctx, path); err != nil || existed {
		t.Fatalf("erase of a missing database: existed %v, %v", existed, err)
	}
	db := openTest(t, path)
	must(t, db.SetConfig(ctx, backend.KeyNID, "1", true))
	if _, _, _, err := Erase(ctx, path); !errors.Is(err, ErrInUse) {
		t.Fatalf("erase of a database in use: %v, want ErrInUse", err)
	}
	must(t, db.Close())
	if _, tables, existed, err := Erase(ctx, "file:"+path); err != nil || !existed || tables == 0 {
		t.Fatalf("erase: %d tables, existed %v, %v", tables, existed, err)
	}
	db = openTest(t, path)
	defer db.Close()
	if _, ok, err := db.Config(ctx, backend.KeyNID); err != nil || ok {
		t.Fatalf("after erase, nid is still set (%v)", err)
	}
}
