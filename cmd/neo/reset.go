package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"zombiezen.com/go/sqlite"
)

// resetDatabase is neostorage --reset for SQLite: it erases every table of
// the database (if the file exists) and returns; the next start creates an
// empty database. It refuses while a node serves the database (the node's
// lock, see lockDatabase).
func resetDatabase(ctx context.Context, database string, log *slog.Logger) error {
	if database == "" {
		log.Info("--reset: no database given, nothing to erase")
		return nil
	}
	path, err := sqlitePath(database)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		log.Info("--reset: the database does not exist, nothing to erase", "database", path)
		return nil
	}
	lock, err := lockDatabase(path)
	if err != nil {
		return err
	}
	defer lock.Close()
	conn, err := sqlite.OpenConn(path, sqlite.OpenReadWrite)
	if err != nil {
		return fmt.Errorf("reset %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetInterrupt(ctx.Done())
	var tables []string
	st, err := conn.Prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
	if err != nil {
		return fmt.Errorf("reset %s: %w", path, err)
	}
	for {
		row, err := st.Step()
		if err != nil {
			return fmt.Errorf("reset %s: list tables: %w", path, err)
		}
		if !row {
			break
		}
		tables = append(tables, st.ColumnText(0))
	}
	st.Finalize()
	exec := func(q string) error {
		st, _, err := conn.PrepareTransient(q)
		if err != nil {
			return fmt.Errorf("reset %s: %s: %w", path, q, err)
		}
		defer st.Finalize()
		if _, err := st.Step(); err != nil {
			return fmt.Errorf("reset %s: %s: %w", path, q, err)
		}
		return nil
	}
	if err := exec("BEGIN IMMEDIATE"); err != nil {
		return err
	}
	for _, t := range tables {
		if err := exec(`DROP TABLE "` + strings.ReplaceAll(t, `"`, `""`) + `"`); err != nil {
			exec("ROLLBACK")
			return err
		}
	}
	if err := exec("COMMIT"); err != nil {
		return err
	}
	if err := exec("VACUUM"); err != nil {
		return err
	}
	log.Info("--reset: database erased", "database", path, "tables", len(tables))
	return nil
}

// sqlitePath is the file named by the database option: a path (~ expanded)
// or a "file:" URI.
func sqlitePath(database string) (string, error) {
	if !strings.HasPrefix(database, "file:") {
		return expandUser(database), nil
	}
	u, err := url.Parse(database)
	if err != nil {
		return "", fmt.Errorf("database %q: %w", database, err)
	}
	if u.Path != "" {
		return u.Path, nil
	}
	return u.Opaque, nil
}

// lockDatabase takes the exclusive lock a storage node holds on its
// database while it runs (NEO/py's: the abstract UNIX socket
// "\x00neostorage:<st_dev>:<st_ino>", also taken by package sqlite).
func lockDatabase(path string) (net.Listener, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l, err := net.Listen("unix", fmt.Sprintf("@neostorage:%d:%d", st.Dev, st.Ino))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s is in use by a running storage node", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return l, nil
}
