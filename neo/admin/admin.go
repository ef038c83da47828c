// Package admin is the NEO admin node, neoctl's peer.
//
// An admin node finds the primary master among the configured masters
// (following NotPrimaryMaster redirections), identifies to it as ADMIN and
// keeps its own copy of what the master tells: the node list
// (NotifyNodeInformation), the partition table (SendPartitionTable,
// NotifyPartitionChanges) and the cluster state (AnswerClusterState,
// NotifyClusterInformation). When the connection is lost it looks for the
// primary again, unless the cluster was stopping: then Run returns.
//
// It listens for neoctl, which sends requests without identifying. Questions
// about nodes, the partition table, the cluster state, the primary and the
// cluster's health are answered from the admin's copy; orders and the
// questions only the master can answer are relayed to the master and its
// answer (or Error) is relayed back with neoctl's message id. Without a
// primary master every request is refused with Error(NOT_READY, "Not
// connected to a primary master.") and the connection closed, as NEO/py's
// admin does.
//
// The admin also watches the cluster's health (see monitor.go): "neoctl
// print summary" reports it, together with the health of the backup
// clusters whose admins report to this one (Config.MonitorBackup); when
// this cluster is itself a backup, the admin reports to the upstream
// cluster's admin; with Config.MonitorEmail, changes are mailed (email.go).
//
// Files: admin.go (the node, the master connection), state.go (the node
// list), serve.go (neoctl requests), monitor.go, email.go.
package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
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

	// MonitorBackup names the backup clusters whose admins report to this
	// one (NEO/py's --monitor-backup), for "neoctl print summary".
	MonitorBackup []string
	// MonitorMaxLag is how many seconds a backup cluster may lag behind
	// this one before the summary warns (--monitor-maxlag).
	MonitorMaxLag float64
	// MonitorEmail lists the recipients of e-mail notifications
	// (--monitor-email); none: no e-mail.
	MonitorEmail []string
	SMTP         string // the SMTP server, HOST[:PORT] (--smtp); "": localhost
	SMTPTLS      bool   // use STARTTLS (--smtp-tls)
	SMTPAuth     string // USER:PASS to log in (--smtp-auth); "": none
}

// notConnected is NEO/py's answer to neoctl when there is no primary.
const notConnected = "Not connected to a primary master."

// Admin is an admin node.
type Admin struct {
	cfg     Config
	ln      *neonet.Listener
	addr    proto.Address // announced to the master
	dialer  *neonet.Dialer
	logBase *slog.Logger
	logNID  atomic.Int32 // the node id in log records

	mu            sync.Mutex
	master        *neonet.Link // nil while not connected to the primary
	primary       proto.NodeID
	nid           proto.NodeID
	nodes         nodeTable
	pt            *pt.Table // nil before the first SendPartitionTable
	clusterState  proto.Opt[proto.ClusterState]
	stateNotified bool // a NotifyClusterInformation came since the connection
	knownMasters  []string

	backups        []*backupMonitor // Config.MonitorBackup
	healthSignal   chan struct{}    // healthChanged
	upstreamAddr   string           // the upstream cluster's admin, if this is a backup cluster
	upstreamSignal chan struct{}    // upstreamAddr changed

	mailSignal    chan struct{} // healthChanged, for the e-mail notifier
	mailFailure   string        // why the last e-mail notification failed
	emailFrom     string
	everConnected bool // connected to a primary master once

	onConnected    func()            // tests: called when serving neoctl with a new primary
	onBackupReport func(name string) // tests: called when a backup admin's report is applied
	onMail         func(error)       // tests: called after each e-mail delivery
}

// New checks cfg and binds the listener.
func New(ctx context.Context, cfg Config) (*Admin, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("admin: cluster name must be non-empty")
	}
	if len(cfg.Masters) == 0 {
		return nil, errors.New("admin: no master address")
	}
	for _, m := range cfg.Masters {
		if _, _, err := net.SplitHostPort(m); err != nil {
			return nil, fmt.Errorf("admin: master address %q: %w", m, err)
		}
	}
	if cfg.NodeID != proto.NoNode {
		if t, ok := cfg.NodeID.Type(); !ok || t != proto.Admin {
			return nil, fmt.Errorf("admin: node id %s is not an admin id", cfg.NodeID)
		}
	}
	bind := cfg.Bind
	if bind == "" {
		bind = "127.0.0.1:9999"
	}
	ln, err := neonet.ListenConfig{TLS: cfg.TLS, Net: cfg.Net}.Listen(ctx, bind)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: listen address %s: %w", ln.Addr(), err)
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: listen address %s: %w", ln.Addr(), err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	a := &Admin{
		cfg:          cfg,
		ln:           ln,
		addr:         proto.Address{Host: host, Port: uint16(pn)},
		dialer:       &neonet.Dialer{TLS: cfg.TLS, ConnectLimit: neonet.ConnectLimit, Net: cfg.Net},
		logBase:      logger,
		nid:          cfg.NodeID,
		knownMasters: append([]string(nil), cfg.Masters...),

		healthSignal:   make(chan struct{}, 1),
		upstreamSignal: make(chan struct{}, 1),
		mailSignal:     make(chan struct{}, 1),
	}
	if len(cfg.MonitorEmail) > 0 {
		a.emailFrom = emailFrom()
	}
	for _, name := range cfg.MonitorBackup {
		if a.backup(name) == nil {
			a.backups = append(a.backups, &backupMonitor{name: name})
		}
	}
	return a, nil
}

// log returns the logger, with the node's id ("nid") once the master gave
// one ("A?" before).
func (a *Admin) log() *slog.Logger {
	nid := proto.NodeID(a.logNID.Load())
	name := "A?"
	if nid != proto.NoNode {
		name = nid.String()
	}
	return a.logBase.With("nid", name)
}

// Addr returns the real listen address.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Run serves until ctx ends (it then returns nil) or until the primary
// master goes away while the cluster is stopping (nil too). It closes the
// listener and every connection before returning.
func (a *Admin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		a.ln.Close()
		wg.Wait()
	}()
	acceptErr := make(chan error, 1)
	wg.Go(func() {
		if err := a.acceptLoop(ctx, &wg); err != nil {
			acceptErr <- err
			cancel()
		}
	})
	wg.Go(func() { a.followUpstream(ctx) })
	if len(a.cfg.MonitorEmail) > 0 {
		wg.Go(func() { a.notifyByMail(ctx) })
	}
	for {
		link, err := a.connectToPrimary(ctx)
		if err == nil {
			a.followPrimary(ctx, link)
		}
		if ctx.Err() != nil {
			select {
			case err := <-acceptErr:
				return err
			default:
				return nil
			}
		}
		a.mu.Lock()
		stopping := a.clusterState.Ok && a.clusterState.V == proto.ClusterStopping
		a.clusterState = proto.Opt[proto.ClusterState]{}
		a.mu.Unlock()
		a.healthChanged()
		if stopping {
			a.log().Info("primary master gone while the cluster was stopping: exiting")
			return nil
		}
		a.log().Error("primary master is down")
	}
}

// connectToPrimary cycles through the known masters until one accepts the
// admin as primary; NotPrimaryMaster redirects to the primary it names.
// It fails only when ctx ends.
func (a *Admin) connectToPrimary(ctx context.Context) (*neonet.Link, error) {
	a.log().Info("connecting to a primary master node")
	index := -1
	next := ""
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		addr := next
		next = ""
		a.mu.Lock()
		if addr == "" {
			index = (index + 1) % len(a.knownMasters)
			addr = a.knownMasters[index]
		}
		nid := a.nid
		a.mu.Unlock()

		link, err := a.dialer.Dial(ctx, addr)
		if err != nil {
			a.log().Debug("cannot connect to master", "addr", addr, "err", err)
			continue
		}
		ans, err := link.Ask(ctx, &proto.RequestIdentification{
			NodeType:    proto.Admin,
			NID:         nid,
			Address:     proto.Some(a.addr),
			ClusterName: a.cfg.Cluster,
			Extra:       proto.Dict{{Key: "backup", Value: a.backupNames()}},
		})
		if err != nil {
			link.Close()
			next = a.notPrimary(ctx, link)
			a.log().Debug("master refused identification", "addr", addr, "err", err)
			continue
		}
		acc, ok := ans.(*proto.AcceptIdentification)
		if !ok || acc.NodeType != proto.Master {
			a.log().Warn("peer is not a master", "addr", addr, "answer", fmt.Sprintf("%T", ans))
			link.Close()
			continue
		}
		if acc.YourNID == proto.NoNode {
			a.log().Error("master gave no node id", "addr", addr)
			link.Close()
			continue
		}
		a.mu.Lock()
		a.nid = acc.YourNID
		a.primary = acc.NID
		a.nodes.reset()
		a.stateNotified = false
		a.mu.Unlock()
		a.logNID.Store(int32(acc.YourNID))
		a.log().Info("connected to a primary master node", "addr", addr, "primary", acc.NID)
		return link, nil
	}
}

// notPrimary reads what a refusing master sent before closing (link must
// be down): NotPrimaryMaster adds masters to the known list and may name
// the primary, whose address is returned.
func (a *Admin) notPrimary(ctx context.Context, link *neonet.Link) string {
	next := ""
	for {
		r, err := link.Recv(ctx)
		if err != nil {
			return next
		}
		npm, ok := r.Msg.(*proto.NotPrimaryMaster)
		if !ok {
			continue
		}
		a.mu.Lock()
		for _, m := range npm.KnownMasters {
			s := m.String()
			if !slices.Contains(a.knownMasters, s) {
				a.knownMasters = append(a.knownMasters, s)
			}
		}
		a.mu.Unlock()
		// NEO/py sends the index of the primary in KnownMasters (nil if
		// unknown); index 0 cannot be told from nil in proto's NodeID type, so
		// it is taken as unknown and the masters are tried in turn.
		if i := int(npm.Primary); i > 0 && i < len(npm.KnownMasters) {
			if p := npm.KnownMasters[i]; p != a.addr {
				next = p.String()
			}
		}
	}
}

// backupNames are the monitored backup clusters, announced to the master.
func (a *Admin) backupNames() []string {
	names := []string{}
	for _, b := range a.backups {
		names = append(names, b.name)
	}
	return names
}

// followPrimary processes what the primary master sends until the link
// goes down or ctx ends. The admin serves neoctl once it knows the cluster
// state and has processed what the master sent at identification.
func (a *Admin) followPrimary(ctx context.Context, link *neonet.Link) {
	var wg sync.WaitGroup
	defer func() {
		link.Close()
		wg.Wait()
		a.mu.Lock()
		a.master = nil
		a.primary = proto.NoNode
		a.nid = proto.NoNode
		a.mu.Unlock()
		a.logNID.Store(0)
	}()
	wg.Go(func() { a.receiveFromMaster(ctx, link) })

	ans, err := link.Ask(ctx, &proto.AskClusterState{})
	if err != nil {
		a.log().Error("asking the cluster state", "err", err)
		return
	}
	if cs, ok := ans.(*proto.AnswerClusterState); ok {
		a.mu.Lock()
		if !a.stateNotified { // else a newer state was notified
			a.clusterState = cs.State
		}
		a.mu.Unlock()
		a.healthChanged()
	}
	if err := link.Sync(ctx); err != nil {
		a.log().Error("syncing with the master", "err", err)
		return
	}
	a.mu.Lock()
	a.master = link
	a.everConnected = true
	a.mu.Unlock()
	a.healthChanged()
	if a.onConnected != nil {
		a.onConnected()
	}
	select {
	case <-link.Done():
		a.log().Info("connection to the primary master lost", "err", link.Err())
	case <-ctx.Done():
	}
}

// receiveFromMaster applies the master's notifications in order. A packet
// that makes no sense closes the link (the admin then reconnects).
func (a *Admin) receiveFromMaster(ctx context.Context, link *neonet.Link) {
	for {
		r, err := link.Recv(ctx)
		if err != nil {
			return
		}
		if err := a.handleMaster(ctx, r); err != nil {
			a.log().Error("bad packet from the primary master", "err", err)
			r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", err.Error()))
			return
		}
	}
}

func (a *Admin) handleMaster(ctx context.Context, r *neonet.Request) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch m := r.Msg.(type) {
	case *proto.NotifyNodeInformation:
		if err := a.nodes.update(m, a.pt); err != nil {
			return err
		}
		// Masters named by the master are tried when looking for the
		// primary again.
		for _, n := range m.Nodes {
			if n.Type == proto.Master && n.Addr.Ok && n.State != proto.NodeUnknown {
				if s := n.Addr.V.String(); !slices.Contains(a.knownMasters, s) {
					a.knownMasters = append(a.knownMasters, s)
				}
			}
		}
		a.healthChanged()
	case *proto.SendPartitionTable:
		var ptid proto.PTid
		if m.PTid.Ok {
			ptid = m.PTid.V
		}
		a.pt = pt.FromRows(ptid, m.NumReplicas, m.Rows)
		a.healthChanged()
	case *proto.NotifyPartitionChanges:
		if a.pt == nil {
			return errors.New("partition changes before any partition table")
		}
		if err := a.pt.Update(m, false); err != nil {
			return err
		}
		a.healthChanged()
	case *proto.NotifyClusterInformation:
		a.clusterState = proto.Some(m.State)
		a.stateNotified = true
		a.healthChanged()
	case *proto.NotifyUpstreamAdmin:
		// This is a backup cluster: report to the upstream cluster's admin.
		if addr := m.Address.String(); addr != a.upstreamAddr {
			a.upstreamAddr = addr
			select {
			case a.upstreamSignal <- struct{}{}:
			default:
			}
		}
	case *proto.FlushLog:
		// Nothing buffered: records are written as they are made.
	case *proto.Error:
		a.log().Warn("error from the primary master", "code", m.Code, "message", m.Message)
	default:
		return fmt.Errorf("unexpected packet %T", r.Msg)
	}
	return nil
}
