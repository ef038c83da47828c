// Package storage is the NEO storage node: it keeps a part of the cluster's
// data (the cells the partition table gives it) in a backend database and
// serves it to clients and other storage nodes, following the primary
// master's orders.
package storage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
)

// Config is the configuration of a storage node.
type Config struct {
	Cluster string          // cluster name (required)
	Bind    string          // listen address host:port; port 0: ephemeral, the real address is announced
	Masters []string        // addresses of the cluster's masters
	NodeID  proto.NodeID    // proto.NoNode: the one stored in the backend, or chosen by the master
	Backend backend.Backend // opened (and closed after Run) by the caller
	TLS     *tls.Config     // nil: plain TCP
	Net     neonet.Network  // nil: TCP
	Logger  *slog.Logger    // nil: slog.Default()
}

// Storage is a storage node.
type Storage struct {
	cfg Config
	ln  *neonet.Listener
	log *slog.Logger
}

// New checks cfg and binds the listener.
func New(ctx context.Context, cfg Config) (*Storage, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("storage: cluster name is required")
	}
	if len(cfg.Masters) == 0 {
		return nil, errors.New("storage: no master address")
	}
	if cfg.Backend == nil {
		return nil, errors.New("storage: no backend")
	}
	lc := neonet.ListenConfig{TLS: cfg.TLS, Net: cfg.Net}
	ln, err := lc.Listen(ctx, cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("storage: listen %s: %w", cfg.Bind, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Storage{cfg: cfg, ln: ln, log: log}, nil
}

// Addr returns the real listen address.
func (s *Storage) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends or the master tells the node to stop (nil), or
// until it fails. It closes everything it opened, but not the backend.
func (s *Storage) Run(ctx context.Context) error {
	defer s.ln.Close()
	<-ctx.Done()
	return nil
}
