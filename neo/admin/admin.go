// Package admin is the NEO admin node: it follows the primary master (node
// list, partition table, cluster state) and serves neoctl, answering its
// questions from what it follows and relaying its orders to the master.
package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// Config is the configuration of an admin node.
type Config struct {
	Cluster string         // cluster name (required)
	Bind    string         // listen address host:port; port 0 picks one
	Masters []string       // addresses of the cluster's masters
	NodeID  proto.NodeID   // proto.NoNode: assigned by the master
	TLS     *tls.Config    // nil: plain TCP
	Net     neonet.Network // nil: TCP
	Logger  *slog.Logger   // nil: slog.Default()
}

// Admin is an admin node.
type Admin struct {
	cfg Config
	ln  *neonet.Listener
}

// New checks cfg and binds the listener.
func New(ctx context.Context, cfg Config) (*Admin, error) {
	return nil, errors.New("admin: not implemented")
}

// Addr returns the real listen address.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Run serves until ctx ends or the cluster stops.
func (a *Admin) Run(ctx context.Context) error {
	return errors.New("admin: not implemented")
}
