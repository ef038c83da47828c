package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/neozodb/neo/neo/admin"
	"github.com/neozodb/neo/neo/master"
	"github.com/neozodb/neo/neo/storage"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
)

// errNodeStuck is returned by runNode when a node does not stop in time;
// its resources are then left to the end of the process.
var errNodeStuck = errors.New("node did not stop")

func runMaster(ctx context.Context, d *daemonArgs, tlsConf *tls.Config, log *slog.Logger) error {
	o := d.opts
	m, err := master.New(ctx, master.Config{
		Cluster:    o.Cluster,
		Bind:       d.bind,
		Masters:    o.Masters,
		Partitions: o.Partitions,
		Replicas:   o.Replicas,
		Autostart:  o.Autostart,
		NodeID:     d.nid,
		TLS:        tlsConf,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	log.Info("master listening", "cluster", o.Cluster, "addr", m.Addr())
	return runNode(ctx, log, "master", m.Run)
}

func runAdmin(ctx context.Context, d *daemonArgs, tlsConf *tls.Config, log *slog.Logger) error {
	o := d.opts
	a, err := admin.New(ctx, admin.Config{
		Cluster: o.Cluster,
		Bind:    d.bind,
		Masters: o.Masters,
		NodeID:  d.nid,
		TLS:     tlsConf,
		Logger:  log,
	})
	if err != nil {
		return err
	}
	log.Info("admin listening", "cluster", o.Cluster, "addr", a.Addr())
	return runNode(ctx, log, "admin", a.Run)
}

func runStorage(ctx context.Context, d *daemonArgs, tlsConf *tls.Config, log *slog.Logger) error {
	o := d.opts
	if o.Reset {
		return resetDatabase(ctx, o.Database, log)
	}
	if o.DisablePack || o.DisableDropPartitions {
		log.Warn("--disable-pack and --disable-drop-partitions are ignored by this storage")
	}
	db, err := openSQLite(ctx, o.Database, sqlite.Options{Name: o.Cluster, Dedup: o.Dedup}, o.Wait, log)
	if err != nil {
		return err
	}
	s, err := storage.New(ctx, storage.Config{
		Cluster: o.Cluster,
		Bind:    d.bind,
		Masters: o.Masters,
		NodeID:  d.nid,
		Backend: db,
		TLS:     tlsConf,
		Logger:  log,
	})
	if err != nil {
		db.Close()
		return err
	}
	log.Info("storage listening", "cluster", o.Cluster, "addr", s.Addr(), "database", o.Database)
	err = runNode(ctx, log, "storage", s.Run)
	if errors.Is(err, errNodeStuck) {
		return err // the node may still use the database
	}
	if cerr := db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close database: %w", cerr)
	}
	return err
}

// openSQLite opens a storage database, retrying for wait seconds (-1:
// forever) while it fails, as NEO/py's --wait does for its backends.
func openSQLite(ctx context.Context, database string, opt sqlite.Options, wait float64, log *slog.Logger) (*sqlite.DB, error) {
	deadline := time.Now().Add(time.Duration(wait * float64(time.Second)))
	for {
		db, err := sqlite.Open(ctx, database, opt)
		if err == nil {
			return db, nil
		}
		if wait == 0 || (wait > 0 && time.Now().After(deadline)) {
			return nil, err
		}
		log.Warn("database not available, retrying", "database", database, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second):
		}
	}
}
