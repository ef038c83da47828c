package master

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

// LinkID names a connection for the core. The network layer gives every
// accepted link a new, never reused, non-zero id.
type LinkID uint64

// Event is what the core is told: one of the Ev* types.
type Event interface{ isEvent() }

// EvRecv is a request or notification received on a link. The first
// packet of a new link is its RequestIdentification.
type EvRecv struct {
	Link  LinkID
	MsgID uint32
	Msg   proto.Msg
}

// EvAnswer is the answer to a request the core sent with an Ask action
// (Tag identifies it). Err is set instead of Msg when no answer came (the
// link went down); an Error packet received as the answer is in Msg.
type EvAnswer struct {
	Link LinkID
	Tag  uint64
	Msg  proto.Msg
	Err  error
}

// EvLinkDown tells that a link is down: nothing more comes from it and
// nothing more can be sent on it.
type EvLinkDown struct {
	Link LinkID
}

// EvStop asks the master to stop as neoctl's "set cluster STOPPING" does,
// e.g. when its process is told to terminate.
type EvStop struct{}

// EvTick lets the core see time pass when nothing else happens.
type EvTick struct{}

// EvDialed ends a connection attempt asked with ActDial: Link is the new
// link (0 when Err tells why it failed).
type EvDialed struct {
	Tag  uint64
	Link LinkID
	Err  error
}

func (EvRecv) isEvent()     {}
func (EvAnswer) isEvent()   {}
func (EvLinkDown) isEvent() {}
func (EvStop) isEvent()     {}
func (EvTick) isEvent()     {}
func (EvDialed) isEvent()   {}

// Action is what the core asks the network layer to do: one of the Act*
// types. Actions on one link must be carried out in the order given.
type Action interface{ isAction() }

// ActSend sends a notification (a packet with the link's next message id).
type ActSend struct {
	Link LinkID
	Msg  proto.Msg
}

// ActReply answers the request MsgID received on Link.
type ActReply struct {
	Link  LinkID
	MsgID uint32
	Msg   proto.Msg
}

// ActAsk sends a request; its answer comes back as EvAnswer with Tag.
type ActAsk struct {
	Link LinkID
	Msg  proto.Msg
	Tag  uint64
}

// ActAbort answers the request MsgID (with an Error, usually) and closes
// the link once that is sent, as NEO/py's abort.
type ActAbort struct {
	Link  LinkID
	MsgID uint32
	Msg   proto.Msg
}

// ActClose closes a link at once; what was already queued on it is sent
// first.
type ActClose struct {
	Link LinkID
}

// ActDial connects to another master; EvDialed with Tag tells the result.
type ActDial struct {
	Addr string
	Tag  uint64
}

// ActStopListening closes the listener: no new link comes.
type ActStopListening struct{}

// ActExit ends the master: Run returns Err (nil for a normal stop) once
// the remaining links are closed.
type ActExit struct {
	Err error
}

func (ActSend) isAction()          {}
func (ActReply) isAction()         {}
func (ActAsk) isAction()           {}
func (ActAbort) isAction()         {}
func (ActClose) isAction()         {}
func (ActStopListening) isAction() {}
func (ActDial) isAction()          {}
func (ActExit) isAction()          {}

// coreConfig is what the core needs of the master's configuration.
type coreConfig struct {
	Cluster    string
	Addr       proto.Address // own listening address
	Masters    []proto.Address
	Partitions int
	Replicas   int
	Autostart  int
	NodeID     proto.NodeID
	Logger     *slog.Logger
}

// peer is the core's view of a link.
type peer struct {
	id      LinkID
	node    *node // nil until identified
	asking  int   // requests sent on it and not answered yet
	closing bool  // aborted or closed by us: ignore what still comes
	// outgoing: a link this master opened to another master (node is
	// that master, identified or not yet)
	outgoing bool
}

// ask is a request sent by the core, waiting for its answer.
type ask struct {
	link  LinkID
	phase uint64 // c.phase when it was sent
	op    uint64 // c.operation when it was sent
	ttid  zodb.Tid
	old   *oldPackRequest // AskPackOrders for an old pack request
}

// delayedRequest is a request whose processing waits (NEO/py's
// DelayEvent): AskBeginTransaction while storages are starting, FailedVote.
type delayedRequest struct {
	link  LinkID
	msgID uint32
	msg   proto.Msg
}

// Core is the primary master as a state machine: Step takes an event and
// returns the actions it decided, with no I/O of its own. It is not safe for
// concurrent use: a single goroutine owns it.
//
// Invariants kept by Core:
//   - a node is identified iff it has a link (node.link != 0), and that
//     link's peer points back to it;
//   - the partition table's ptid grows by exactly one per
//     NotifyPartitionChanges sent (pt.Table.Commit);
//   - committed tids only grow, and a final tid is ≡ its ttid mod np.
type Core struct {
	cfg     coreConfig
	log     *slog.Logger
	baseLog *slog.Logger // log without the node id

	now      time.Time // time of the event being handled
	lastMono float64   // last value of monotonicTime

	state proto.ClusterState
	self  *node
	nodes []*node // every known node, self included
	peers map[LinkID]*peer

	pt      *pt.Table
	ptExtra map[proto.NodeID]bool // storages added to the table's nodes without cells yet

	startupAllowed bool
	// minPTid is the partition table under which a storage last locked a
	// transaction (answered AskLockInformation): after a failure, recovery
	// does not start from a storage's older table, whose cells may claim
	// data that storage missed (§6.4 as NEO/py would allow it). A newer
	// table no storage locked under may be lost with the storages it was
	// sent to (they answered no lock, so they had not stored it): the
	// older one then loses no transaction. neoctl start lifts it.
	minPTid     proto.PTid
	truncateTid zodb.Tid // zodb.InvalidTid: none
	backupTid   zodb.Tid // zodb.InvalidTid: not in backup mode

	phase     uint64 // incremented on every cluster state change
	operation uint64 // incremented whenever operation stops
	nextTag   uint64
	asks      map[uint64]ask

	rec *recovery
	ver *verification

	// election and secondary role (election.go)
	role         int
	electionTS   float64 // when this master last entered the primary role
	primary      *node   // secondary: the master believed primary
	primaryLink  LinkID  // secondary: the link to it (0: none yet)
	primaryTried map[proto.Address]bool
	dials        map[uint64]*node // connection attempts in progress, by tag
	dialing      map[*node]bool

	// service
	tm             *txnManager
	lastTid        zodb.Tid // last committed tid
	readiness      int
	readyDict      map[proto.NodeID]int
	startingSet    map[proto.NodeID]bool
	blockBegin     bool // STOPPING: no new transaction (NEO/py's dummy starting entry)
	delayed        []delayedRequest
	packs          *packManager
	oldPacks       []*oldPackRequest
	exiting        bool
	stopDeadline   time.Time      // STOPPING: when the wait for the masters not told ends (zero: not waiting yet)
	stopTold       map[*node]bool // STOPPING: masters told that the cluster stops
	forceShutdown  bool           // STOPPING: no longer operational, stop without waiting
	runningDelayed bool
	updatable      map[cellKey]bool // cells allowed to become UP_TO_DATE (§7.6)
	afterAnswer    func()           // run after an admin request is answered

	out []Action
}

func newCore(cfg coreConfig, now time.Time) *Core {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	c := &Core{
		cfg:         cfg,
		log:         logger,
		now:         now,
		peers:       map[LinkID]*peer{},
		asks:        map[uint64]ask{},
		truncateTid: zodb.InvalidTid,
		backupTid:   zodb.InvalidTid,
		readyDict:   map[proto.NodeID]int{},
		startingSet: map[proto.NodeID]bool{},
		ptExtra:     map[proto.NodeID]bool{},
		packs:       newPackManager(),
		dials:       map[uint64]*node{},
		dialing:     map[*node]bool{},
		stopTold:    map[*node]bool{},
	}
	c.baseLog = logger
	c.tm = newTxnManager(c)
	for _, a := range cfg.Masters {
		if a == cfg.Addr || a.Port == 0 || c.nodeByAddr(a) != nil {
			// Port 0 names no master (e.g. the own bind address
			// before the port was picked).
			continue
		}
		c.nodes = append(c.nodes, &node{typ: proto.Master, addr: proto.Some(a), state: proto.NodeDown})
	}
	c.self = &node{typ: proto.Master, addr: proto.Some(cfg.Addr), nid: cfg.NodeID}
	c.nodes = append([]*node{c.self}, c.nodes...)
	// Entering the primary role (§6.1).
	if c.self.nid == proto.NoNode {
		c.self.nid = c.newNodeID(proto.NoNode, c.self.addr, proto.Master)
	}
	c.self.state = proto.NodeRunning
	c.log = c.baseLog.With("nid", c.self.nid.String())
	c.electionTS = c.monotonicTime()
	c.startRecovery()
	return c
}

// NodeID returns the master's own node id.
func (c *Core) NodeID() proto.NodeID { return c.self.nid }

// status tells the role and state for Master.Status.
func (c *Core) status() Status {
	return Status{Running: !c.exiting, Primary: c.role == rolePrimary && !c.exiting, NodeID: c.self.nid, State: c.state}
}

// ClusterState returns the current cluster state.
func (c *Core) ClusterState() proto.ClusterState { return c.state }

// Start returns the actions of the initial state: connecting to the other
// masters, if any.
func (c *Core) Start() []Action {
	c.electionDial()
	return c.flush()
}

// Step handles one event at time now and returns the resulting actions.
func (c *Core) Step(now time.Time, ev Event) []Action {
	c.now = now
	if c.exiting {
		return nil
	}
	switch ev := ev.(type) {
	case EvRecv:
		c.recv(ev)
	case EvAnswer:
		c.answer(ev)
	case EvLinkDown:
		c.linkDown(ev.Link)
	case EvStop:
		if c.role == roleSecondary {
			c.exit()
		} else if c.state != proto.ClusterStopping {
			c.log.Info("stop requested")
			c.beginShutdown()
		}
	case EvTick:
	case EvDialed:
		c.dialed(ev)
	}
	c.progress()
	c.electionDial()
	c.secondaryDial()
	return c.flush()
}

func (c *Core) flush() []Action {
	out := c.out
	c.out = nil
	return out
}

// progress advances the phase that waits for conditions (recovery,
// verification, shutdown) until nothing more can be done now.
func (c *Core) progress() {
	for !c.exiting && c.role == rolePrimary {
		switch {
		case c.state == proto.ClusterRecovering && c.rec != nil:
			if !c.recoveryCheck() {
				return
			}
		case c.state == proto.ClusterVerifying && c.ver != nil:
			if !c.verifyStep() {
				return
			}
		case c.state == proto.ClusterStopping:
			c.shutdownStep()
			return
		default:
			return
		}
	}
}

// monotonicTime is NEO/py's master monotonic time (§3.7): the clock,
// or 1 ms more than the previous value when the clock did not move.
func (c *Core) monotonicTime() float64 {
	t := float64(c.now.UnixNano()) / 1e9
	if t > c.lastMono {
		c.lastMono = t
	} else {
		c.lastMono += 1e-3
	}
	return c.lastMono
}

// --- sending ---

func (c *Core) send(n *node, m proto.Msg) {
	if n == nil || n.link == 0 {
		return
	}
	if p := c.peers[n.link]; p != nil && p.closing {
		return
	}
	c.out = append(c.out, ActSend{Link: n.link, Msg: m})
}

func (c *Core) sendLink(l LinkID, m proto.Msg) {
	c.out = append(c.out, ActSend{Link: l, Msg: m})
}

func (c *Core) reply(l LinkID, msgID uint32, m proto.Msg) {
	c.out = append(c.out, ActReply{Link: l, MsgID: msgID, Msg: m})
}

// abort answers and closes the link; nothing more is handled from it.
func (c *Core) abort(l LinkID, msgID uint32, m proto.Msg) {
	c.out = append(c.out, ActAbort{Link: l, MsgID: msgID, Msg: m})
	if p := c.peers[l]; p != nil {
		p.closing = true
	}
}

// closeLink closes a link; the peer's loss is handled when the network
// layer reports the link down.
func (c *Core) closeLink(l LinkID) {
	c.out = append(c.out, ActClose{Link: l})
	if p := c.peers[l]; p != nil {
		p.closing = true
	}
}

// ask sends a request to n, remembering what it is about.
func (c *Core) ask(n *node, m proto.Msg, ttid zodb.Tid) {
	if n == nil || n.link == 0 {
		return
	}
	c.nextTag++
	c.asks[c.nextTag] = ask{link: n.link, phase: c.phase, op: c.operation, ttid: ttid}
	if p := c.peers[n.link]; p != nil {
		p.asking++
	}
	c.out = append(c.out, ActAsk{Link: n.link, Msg: m, Tag: c.nextTag})
}

// protocolError answers Error(PROTOCOL_ERROR) and closes the link.
func (c *Core) protocolError(l LinkID, msgID uint32, format string, args ...any) {
	c.log.Warn("protocol error", "link", l, "error", fmt.Sprintf(format, args...))
	c.abort(l, msgID, proto.Err(proto.ProtocolError, format, args...))
}

func denied(format string, args ...any) *proto.Error {
	return proto.Err(proto.Denied, format, args...)
}

func ack(format string, args ...any) *proto.Error {
	return proto.Err(proto.Ack, format, args...)
}

// --- dispatch ---

func (c *Core) recv(ev EvRecv) {
	p := c.peers[ev.Link]
	if p == nil {
		p = &peer{id: ev.Link}
		c.peers[ev.Link] = p
	}
	if p.closing {
		return
	}
	if p.outgoing {
		c.fromMaster(p, ev)
		return
	}
	if p.node == nil {
		if ri, ok := ev.Msg.(*proto.RequestIdentification); ok {
			if c.role == roleSecondary {
				c.secondaryIdentify(p, ev.MsgID, ri)
				return
			}
			if c.stoppingIdentify(p, ev.MsgID, ri) {
				return
			}
			c.identify(p, ev.MsgID, ri)
			return
		}
		c.unexpected(ev)
		return
	}
	n := p.node
	// Requests any identified node may send (NEO/py's MasterHandler).
	switch m := ev.Msg.(type) {
	case *proto.RequestIdentification:
		c.unexpected(ev)
		return
	case *proto.AskClusterState:
		c.reply(ev.Link, ev.MsgID, &proto.AnswerClusterState{State: proto.Some(c.state)})
		return
	case *proto.AskLastIDs:
		if n.typ == proto.Client && n.readOnly {
			c.readOnly(ev)
			return
		}
		c.reply(ev.Link, ev.MsgID, &proto.AnswerLastIDs{LastTid: c.tm.lastTID(), LastOid: c.tm.lastOid, FirstTid: c.tm.firstTid})
		return
	case *proto.AskLastTransaction:
		c.reply(ev.Link, ev.MsgID, &proto.AnswerLastTransaction{Tid: c.lastTid})
		return
	case *proto.AskRecovery:
		c.reply(ev.Link, ev.MsgID, c.answerRecovery())
		return
	case *proto.NotifyNodeInformation, *proto.FlushLog:
		if _, ok := m.(*proto.FlushLog); ok && n.typ == proto.Admin {
			c.flushLog(n)
		}
		return
	}
	switch n.typ {
	case proto.Storage:
		c.storageRecv(n, ev)
	case proto.Client:
		c.clientRecv(n, ev)
	case proto.Admin:
		c.adminRecv(n, ev)
	default:
		c.unexpected(ev)
	}
}

// unexpected handles a packet that the node may not send now, as NEO/py
// does for a packet its handler has no method for: Error(PROTOCOL_ERROR)
// naming the handler, and abort.
func (c *Core) unexpected(ev EvRecv) {
	var n *node
	if p := c.peers[ev.Link]; p != nil {
		n = p.node
	}
	c.log.Warn("unexpected packet", "link", ev.Link, "packet", fmt.Sprintf("%T", ev.Msg))
	c.protocolError(ev.Link, ev.MsgID, "unexpected packet: no handler found in %s", c.handlerName(n))
}

// handlerName is the name of the NEO/py handler class in charge of n.
func (c *Core) handlerName(n *node) string {
	if n == nil {
		return "IdentificationHandler"
	}
	switch n.typ {
	case proto.Storage:
		switch c.state {
		case proto.ClusterRecovering:
			return "RecoveryManager"
		case proto.ClusterVerifying:
			return "VerificationManager"
		}
		return "StorageServiceHandler"
	case proto.Client:
		if n.readOnly {
			return "ClientReadOnlyServiceHandler"
		}
		return "ClientServiceHandler"
	case proto.Admin:
		return "AdministrationHandler"
	case proto.Master:
		if c.state == proto.ClusterRecovering {
			return "ElectionHandler"
		}
		return "SecondaryHandler"
	}
	return "EventHandler"
}

func (c *Core) answer(ev EvAnswer) {
	a, ok := c.asks[ev.Tag]
	if !ok {
		return
	}
	delete(c.asks, ev.Tag)
	p := c.peers[ev.Link]
	if p == nil || p.node == nil {
		return
	}
	p.asking--
	if ev.Err != nil || p.closing {
		return
	}
	n := p.node
	if p.outgoing {
		if m, ok := ev.Msg.(*proto.AcceptIdentification); ok {
			c.outgoingAccepted(p, m)
		} else if e, ok := ev.Msg.(*proto.Error); ok && e.Code == proto.ProtocolError && e.Message == "address conflict" {
			// Another name of this master's own address in the
			// configured masters: never try it again.
			c.log.Info("configured master is this one", "addr", n.addr)
			c.detachPeer(p)
			c.removeNode(n)
		} else {
			c.log.Info("master refused identification", "addr", n.addr, "answer", fmt.Sprintf("%v", ev.Msg))
			c.closeLink(ev.Link)
		}
		return
	}
	if e, ok := ev.Msg.(*proto.Error); ok {
		c.log.Warn("error answer", "node", n.nid, "code", e.Code, "message", e.Message)
		if e.Code == proto.ProtocolError || e.Code == proto.NotReady {
			c.closeLink(ev.Link)
		}
		return
	}
	switch m := ev.Msg.(type) {
	case *proto.AnswerRecovery:
		c.recoveryAnswerRecovery(n, a, m)
	case *proto.AnswerPartitionTable:
		c.recoveryAnswerPartitionTable(n, a, m)
	case *proto.AnswerPackOrders:
		if a.old != nil {
			if a.op == c.operation {
				c.oldPackAnswer(a.old, n, m)
			}
			return
		}
		c.verifyAnswer(n, a, m)
	case *proto.AnswerLockedTransactions, *proto.AnswerFinalTID, *proto.AnswerLastIDs:
		c.verifyAnswer(n, a, m)
	case *proto.AnswerInformationLocked:
		if a.op == c.operation {
			if t := c.tm.txns[m.TTid]; t != nil && t.lockPTid > c.minPTid {
				c.minPTid = t.lockPTid
			}
			c.tm.lock(m.TTid, n.nid)
		}
	default:
		c.log.Warn("unexpected answer", "node", n.nid, "msg", fmt.Sprintf("%T", m))
	}
}

func (c *Core) linkDown(l LinkID) {
	p := c.peers[l]
	if p == nil {
		return
	}
	delete(c.peers, l)
	for tag, a := range c.asks {
		if a.link == l {
			delete(c.asks, tag)
		}
	}
	if p.outgoing && p.node != nil {
		c.outgoingDown(p)
		return
	}
	n := p.node
	if n == nil || n.link != l {
		return
	}
	n.link = 0
	c.nodeLost(n)
}

// nodeLost handles the loss of an identified node's link.
func (c *Core) nodeLost(n *node) {
	c.log.Info("node lost", "node", n.nid, "type", n.typ)
	switch n.typ {
	case proto.Admin:
		c.removeNode(n)
	case proto.Client:
		c.clientLost(n)
	case proto.Master:
		n.state = proto.NodeDown
		c.broadcastNodes([]*node{n})
	case proto.Storage:
		c.storageLost(n)
	}
}

func (c *Core) ptidOpt() proto.Opt[proto.PTid] {
	if c.pt.PTid == 0 {
		return proto.Opt[proto.PTid]{}
	}
	return proto.Some(c.pt.PTid)
}

func (c *Core) answerRecovery() *proto.AnswerRecovery {
	return &proto.AnswerRecovery{PTid: c.ptidOpt(), BackupTid: zodb.InvalidTid, TruncateTid: c.truncateTid}
}

func (c *Core) sendPartitionTable(n *node) {
	c.send(n, &proto.SendPartitionTable{PTid: c.ptidOpt(), NumReplicas: uint32(c.pt.NumReplicas), Rows: c.pt.Rows()})
}

// changeClusterState switches the cluster state and tells every identified
// node (§6.3).
func (c *Core) changeClusterState(s proto.ClusterState) {
	if c.state == s && c.phase != 0 {
		return
	}
	c.log.Info("cluster state", "state", s)
	c.state = s
	c.phase++
	for _, n := range c.nodes {
		if n.identified() {
			c.send(n, &proto.NotifyClusterInformation{State: s})
		}
	}
}
