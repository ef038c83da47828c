package main

import (
	"context"
	"log/slog"

	"github.com/neozodb/neo/neo/storage/backend/sqlite"
)

// resetDatabase is neostorage --reset for SQLite: it erases every table of
// the database (if the file exists) and returns; the next start creates an
// empty database. It refuses while a node serves the database.
func resetDatabase(ctx context.Context, database string, log *slog.Logger) error {
	if database == "" {
		log.Info("--reset: no database given, nothing to erase")
		return nil
	}
	path, tables, existed, err := sqlite.Erase(ctx, database)
	switch {
	case err != nil:
		return err
	case !existed:
		log.Info("--reset: the database does not exist, nothing to erase", "database", path)
	default:
		log.Info("--reset: database erased", "database", path, "tables", tables)
	}
	return nil
}
