package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"zombiezen.com/go/sqlite"
)

// ErrInUse tells that a running storage node holds the database (its lock:
// the abstract UNIX socket "\x00neostorage:<st_dev>:<st_ino>", as NEO/py).
var ErrInUse = errors.New("in use by a running storage node")

// Erase is a storage node's --reset: it drops every table of the database
// named by NEO/py's database option (the next Open creates an empty
// database). It takes the node's lock first, so it fails with ErrInUse
// while a node serves the database. A database file that does not exist
// is left alone (existed false).
func Erase(ctx context.Context, database string) (path string, tables int, existed bool, err error) {
	path, _, err = parseDatabase(database)
	if err != nil {
		return "", 0, false, err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return path, 0, false, nil
	}
	lock, err := lockFile(path)
	if err != nil {
		return path, 0, true, err
	}
	defer lock.Close()
	conn, err := sqlite.OpenConn(path, sqlite.OpenReadWrite)
	if err != nil {
		return path, 0, true, fmt.Errorf("sqlite: erase %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetInterrupt(ctx.Done())
	exec := func(q string) error {
		st, _, err := conn.PrepareTransient(q)
		if err != nil {
			return fmt.Errorf("sqlite: erase %s: %s: %w", path, q, err)
		}
		defer st.Finalize()
		if _, err := st.Step(); err != nil {
			return fmt.Errorf("sqlite: erase %s: %s: %w", path, q, err)
		}
		return nil
	}
	var names []string
	st, err := conn.Prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
	if err != nil {
		return path, 0, true, fmt.Errorf("sqlite: erase %s: %w", path, err)
	}
	for {
		row, err := st.Step()
		if err != nil {
			return path, 0, true, fmt.Errorf("sqlite: erase %s: list tables: %w", path, err)
		}
		if !row {
			break
		}
		names = append(names, st.ColumnText(0))
	}
	if err := exec("BEGIN IMMEDIATE"); err != nil {
		return path, 0, true, err
	}
	for _, t := range names {
		if err := exec(`DROP TABLE "` + strings.ReplaceAll(t, `"`, `""`) + `"`); err != nil {
			exec("ROLLBACK")
			return path, 0, true, err
		}
	}
	if err := exec("COMMIT"); err != nil {
		return path, 0, true, err
	}
	return path, len(names), true, exec("VACUUM")
}
