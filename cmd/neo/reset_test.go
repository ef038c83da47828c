package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
)

func TestResetDatabase(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	path := filepath.Join(t.TempDir(), "s.sqlite")
	db, err := sqlite.Open(ctx, path, sqlite.Options{Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.ChangePartitionTable(ctx, 1, 0, []proto.CellChange{{Partition: 0, NID: proto.NewNodeID(proto.Storage, 1), State: proto.CellUpToDate}}, true, 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// A running node holds the database: --reset refuses.
	if err := resetDatabase(ctx, path, log); err == nil || !strings.Contains(err.Error(), "in use by a running storage node") {
		t.Errorf("reset of a database in use: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := resetDatabase(ctx, "file:"+path+"?synchronous=FULL", log); err != nil {
		t.Fatal(err)
	}
	// Erased: a node of another cluster can now use it, and it has no
	// partition table.
	db, err = sqlite.Open(ctx, path, sqlite.Options{Name: "new"})
	if err != nil {
		t.Fatalf("open after reset: %v", err)
	}
	defer db.Close()
	cells, err := db.PartitionTable(ctx)
	if err != nil || len(cells) != 0 {
		t.Errorf("partition table after reset: %v %v", cells, err)
	}
	// Nothing to erase is not an error.
	if err := resetDatabase(ctx, filepath.Join(t.TempDir(), "none.sqlite"), log); err != nil {
		t.Error(err)
	}
}

// signalHandler is a slog handler that signals each record's message.
type signalHandler struct{ msgs chan string }

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.msgs <- r.Message:
	default:
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// TestOpenWait: --wait retries while another node holds the database.
func TestOpenWait(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.sqlite")
	holder, err := sqlite.Open(ctx, path, sqlite.Options{Name: "c"})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := openSQLite(ctx, path, sqlite.Options{Name: "c"}, 0, quiet); err == nil || !strings.Contains(err.Error(), "locked") {
		holder.Close()
		t.Fatalf("open of a held database without --wait: %v", err)
	}
	h := signalHandler{make(chan string, 1)}
	type result struct {
		db  *sqlite.DB
		err error
	}
	res := make(chan result, 1)
	go func() {
		db, err := openSQLite(ctx, path, sqlite.Options{Name: "c"}, 60, slog.New(h))
		res <- result{db, err}
	}()
	if msg := <-h.msgs; !strings.Contains(msg, "retrying") {
		t.Errorf("log: %q", msg)
	}
	holder.Close()
	r := <-res
	if r.err != nil {
		t.Fatalf("open with --wait once the holder closed: %v", r.err)
	}
	r.db.Close()
}
