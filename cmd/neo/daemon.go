package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/neozodb/neo/neo/config"
	"github.com/neozodb/neo/neo/proto"
)

// daemonArgs is a daemon's command line, checked.
type daemonArgs struct {
	opts *config.Options
	log  logFlags
	bind string       // opts.Bind with the port NEO/py adds to a bare host (0)
	nid  proto.NodeID // from --nid, or proto.NoNode
}

// parseDaemon reads the command line of a master, storage or admin node:
// NEO/py's options (package config, with neo.conf) plus the log flags.
func parseDaemon(kind string, args []string, stderr io.Writer) (*daemonArgs, error) {
	lf, rest, err := stripLogFlags(args)
	if err != nil {
		return nil, err
	}
	o, pos, err := config.Load(kind, rest, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	if len(pos) > 0 {
		return nil, usagef("unexpected argument %q", pos[0])
	}
	d := &daemonArgs{opts: o, log: lf}
	if d.bind, err = config.ParseAddress(o.Bind, 0); err != nil {
		return nil, usagef("--bind: %s", err)
	}
	if o.NID != "" {
		if d.nid, err = parseNID(o.NID, kind); err != nil {
			return nil, usagef("--nid: %s", err)
		}
	}
	switch kind {
	case "master":
		if o.Backup || o.UpstreamCluster != "" || len(o.UpstreamMasters) > 0 {
			return nil, errors.New("backup mode (--backup, --upstream-cluster, --upstream-masters) is not implemented by this master")
		}
		if o.Partitions <= 0 {
			return nil, usagef("--partitions must be positive, not %d", o.Partitions)
		}
		if o.Replicas < 0 {
			return nil, usagef("--replicas must not be negative, not %d", o.Replicas)
		}
		if o.Autostart < 0 {
			return nil, usagef("--autostart must not be negative, not %d", o.Autostart)
		}
	case "storage":
		if err := checkAdapter(o.Adapter); err != nil {
			return nil, err
		}
		if o.NewNID {
			return nil, errors.New("--new-nid is not implemented by this storage")
		}
	}
	return d, nil
}

// parseNID reads a node id as neoctl prints it ("S1", "M2"...) and checks
// that it is one of the node's kind.
func parseNID(s, kind string) (proto.NodeID, error) {
	id, err := proto.ParseNodeID(s)
	if err != nil {
		return proto.NoNode, err
	}
	want := map[string]proto.NodeType{"master": proto.Master, "storage": proto.Storage, "admin": proto.Admin}[kind]
	if t, ok := id.Type(); !ok || t != want {
		return proto.NoNode, fmt.Errorf("%s is not the id of a %s node", s, kind)
	}
	return id, nil
}

// checkAdapter accepts the storage backends of this build.
func checkAdapter(name string) error {
	switch strings.ToLower(name) {
	case "sqlite":
		return nil
	case "mysql", "importer":
		return fmt.Errorf("adapter %s is not available in this build (only SQLite is): use --adapter SQLite", name)
	}
	return fmt.Errorf("unknown adapter %q (NEO adapters: SQLite, MySQL, Importer; this build has SQLite)", name)
}

// nodeStopGrace is how long a node may take to stop once asked to before
// the process gives up on it.
const nodeStopGrace = 10 * time.Second

// runNode runs a node until it returns. Once ctx is done the node has
// nodeStopGrace to return, else runNode returns an error (the process then
// exits, leaving the node's goroutine to die with it).
func runNode(ctx context.Context, log *slog.Logger, name string, run func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("stopping the " + name)
	t := time.NewTimer(nodeStopGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%s: %w within %v", name, errNodeStuck, nodeStopGrace)
	}
}

func runDaemon(ctx context.Context, e *env, kind string, args []string) error {
	d, err := parseDaemon(kind, args, e.stderr)
	if err != nil {
		return err
	}
	o := d.opts
	logw, closeLog, err := logOutput(o.Logfile, e.stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	log := newLogger(logw, d.log.level)
	tlsConf, err := loadTLS(o.CA, o.Cert, o.Key)
	if err != nil {
		return err
	}
	if o.DynamicMasterList != "" {
		log.Warn("--dynamic-master-list is ignored by this node")
	}
	switch kind {
	case "master":
		return runMaster(ctx, d, tlsConf, log)
	case "storage":
		return runStorage(ctx, d, tlsConf, log)
	case "admin":
		if len(o.MonitorBackup) > 0 || len(o.MonitorEmail) > 0 {
			log.Warn("monitoring options (--monitor-backup, --monitor-email...) are ignored by this admin")
		}
		return runAdmin(ctx, d, tlsConf, log)
	}
	return fmt.Errorf("unknown node kind %q", kind)
}
