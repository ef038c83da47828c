package master

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// Config is the configuration of a master.
type Config struct {
	Cluster    string         // cluster name (required)
	Bind       string         // listen address host:port (IPv4 or [IPv6]); port 0 picks one
	Masters    []string       // addresses of all the cluster's masters (own may be included); they elect the primary (§6.2)
	Partitions int            // for a new cluster (NEO/py default 12)
	Replicas   int            // extra copies, for a new cluster (NEO/py default 0)
	Autostart  int            // >0: a new cluster starts by itself once this many storages are pending; 0: waits for neoctl start
	NodeID     proto.NodeID   // proto.NoNode: chosen by the master rules
	TLS        *tls.Config    // nil: plain TCP (else used for listening and dialing)
	Net        neonet.Network // nil: TCP
	Logger     *slog.Logger   // nil: slog.Default()
}

// DefaultPartitions is the number of partitions of a new cluster when
// Config.Partitions is 0.
const DefaultPartitions = 12

// Master is a master node: the primary, or a secondary ready to take over.
type Master struct {
	cfg  Config
	ccfg coreConfig
	addr proto.Address
	ln   *neonet.Listener
	log  *slog.Logger

	mu     sync.Mutex
	status Status
}

// Status is what a master tells about itself while it runs (Master.Status).
type Status struct {
	Running bool               // Run serves (false before Run and once it returned)
	Primary bool               // plays the primary role
	NodeID  proto.NodeID       // own node id
	State   proto.ClusterState // the cluster state it knows (as primary: drives)
}

// Status returns the master's role and cluster state as of the last event it
// handled. Several masters may play the primary role at once while they
// elect one; only one leaves RECOVERING.
func (m *Master) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

func (m *Master) setStatus(st Status) {
	m.mu.Lock()
	m.status = st
	m.mu.Unlock()
}

// New checks cfg and binds the listener. The master serves once Run is called.
func New(ctx context.Context, cfg Config) (*Master, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("master: cluster name is required")
	}
	if cfg.Bind == "" {
		return nil, errors.New("master: bind address is required")
	}
	if cfg.Partitions < 0 || cfg.Partitions >= 1<<32 {
		return nil, fmt.Errorf("master: invalid number of partitions %d", cfg.Partitions)
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Replicas < 0 {
		return nil, fmt.Errorf("master: invalid number of replicas %d", cfg.Replicas)
	}
	if cfg.Autostart < 0 {
		return nil, fmt.Errorf("master: invalid autostart %d", cfg.Autostart)
	}
	if cfg.NodeID != proto.NoNode {
		if t, ok := cfg.NodeID.Type(); !ok || t != proto.Master {
			return nil, fmt.Errorf("master: node id %s is not a master id", cfg.NodeID)
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	lc := neonet.ListenConfig{TLS: cfg.TLS, Net: cfg.Net}
	ln, err := lc.Listen(ctx, cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	addr, err := parseAddress(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("master: listen address: %w", err)
	}
	ccfg := coreConfig{
		Cluster:    cfg.Cluster,
		Addr:       addr,
		Partitions: cfg.Partitions,
		Replicas:   cfg.Replicas,
		Autostart:  cfg.Autostart,
		NodeID:     cfg.NodeID,
		Logger:     logger,
	}
	for _, a := range cfg.Masters {
		ma, err := parseAddress(a)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("master: masters: %w", err)
		}
		ccfg.Masters = append(ccfg.Masters, ma)
	}
	return &Master{cfg: cfg, ccfg: ccfg, addr: addr, ln: ln, log: logger}, nil
}

// Addr returns the address the master listens on (with the real port when
// Config.Bind asked for port 0).
func (m *Master) Addr() string { return m.addr.String() }

func parseAddress(s string) (proto.Address, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return proto.Address{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return proto.Address{}, fmt.Errorf("port of %q: %w", s, err)
	}
	return proto.Address{Host: host, Port: uint16(p)}, nil
}
