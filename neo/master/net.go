package master

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// The network layer: one goroutine accepts links, each link has a reader
// (its Recv loop, feeding events) and a writer (carrying out the core's
// actions for it, in order, so that a slow peer holds back nobody else);
// the goroutine of Run owns the core and is the only one to touch it.

// flushTimeout bounds how long, when the master stops, the last packets
// queued for a peer may take to be written.
const flushTimeout = 5 * time.Second

// netLink is a link as the network layer keeps it.
type netLink struct {
	id   LinkID
	link *neonet.Link

	mu       sync.Mutex
	queue    []Action
	wake     chan struct{} // 1-buffered: queue changed or reader ended
	readDone bool          // the reader ended: the link is down
	requests map[uint32]*neonet.Request
	lastNote *neonet.Request // last notification received (for an abort)
}

func (nl *netLink) push(a Action) {
	nl.mu.Lock()
	nl.queue = append(nl.queue, a)
	nl.mu.Unlock()
	nl.signal()
}

func (nl *netLink) signal() {
	select {
	case nl.wake <- struct{}{}:
	default:
	}
}

// server is the state of one Run.
type server struct {
	m      *Master
	ctx    context.Context // ends when Run must return at once
	events chan Event
	dialer *neonet.Dialer
	wg     sync.WaitGroup
	nextID atomic.Uint64

	mu    sync.Mutex
	links map[LinkID]*netLink
}

func (s *server) post(ev Event) {
	select {
	case s.events <- ev:
	case <-s.ctx.Done():
	}
}

func (s *server) acceptLoop() {
	defer s.wg.Done()
	for {
		l, err := s.m.ln.Accept(s.ctx)
		if err != nil {
			return
		}
		nl := s.newLink(l)
		s.m.log.Debug("link accepted", "link", nl.id, "remote", l.RemoteAddr())
		s.wg.Add(2)
		go s.readLoop(nl)
		go s.writeLoop(nl)
	}
}

// dialTimeout bounds a connection attempt to another master.
const dialTimeout = 10 * time.Second

// dial connects to another master for the core.
func (s *server) dial(a ActDial) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	defer cancel()
	l, err := s.dialer.Dial(ctx, a.Addr)
	if err != nil {
		s.post(EvDialed{Tag: a.Tag, Err: err})
		return
	}
	nl := s.newLink(l)
	// The reader starts after the core learnt about the link, so that
	// what comes on it follows EvDialed.
	s.post(EvDialed{Tag: a.Tag, Link: nl.id})
	s.wg.Add(2)
	go s.readLoop(nl)
	go s.writeLoop(nl)
}

func (s *server) newLink(l *neonet.Link) *netLink {
	nl := &netLink{
		id:       LinkID(s.nextID.Add(1)),
		link:     l,
		wake:     make(chan struct{}, 1),
		requests: map[uint32]*neonet.Request{},
	}
	s.mu.Lock()
	s.links[nl.id] = nl
	s.mu.Unlock()
	return nl
}

func (s *server) readLoop(nl *netLink) {
	defer s.wg.Done()
	defer func() {
		nl.mu.Lock()
		nl.readDone = true
		nl.mu.Unlock()
		nl.signal()
		s.post(EvLinkDown{Link: nl.id})
	}()
	for {
		req, err := nl.link.Recv(s.ctx)
		if err != nil {
			if s.ctx.Err() == nil {
				s.m.log.Debug("link down", "link", nl.id, "error", err)
			}
			return
		}
		nl.mu.Lock()
		if info, ok := proto.Info(req.Msg.MsgCode()); ok && info.Kind == proto.KindRequest {
			nl.requests[req.MsgID] = req
		} else {
			nl.lastNote = req
		}
		nl.mu.Unlock()
		s.post(EvRecv{Link: nl.id, MsgID: req.MsgID, Msg: req.Msg})
	}
}

// writeLoop carries out the actions for one link until it is closed or
// down.
func (s *server) writeLoop(nl *netLink) {
	defer s.wg.Done()
	defer func() {
		nl.link.Close()
		s.mu.Lock()
		delete(s.links, nl.id)
		s.mu.Unlock()
	}()
	for {
		nl.mu.Lock()
		queue := nl.queue
		nl.queue = nil
		down := nl.readDone
		nl.mu.Unlock()
		if len(queue) == 0 {
			if down {
				return
			}
			select {
			case <-nl.wake:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		for _, a := range queue {
			if !s.do(nl, a) {
				return
			}
		}
	}
}

// do carries out one action; false when the link is closed.
func (s *server) do(nl *netLink, a Action) bool {
	ctx := s.ctx
	l := nl.link
	var err error
	switch a := a.(type) {
	case ActSend:
		err = l.Notify(ctx, a.Msg)
	case ActReply:
		nl.mu.Lock()
		delete(nl.requests, a.MsgID)
		nl.mu.Unlock()
		err = l.Send(ctx, a.MsgID, a.Msg)
	case ActAsk:
		call, err := l.Start(ctx, a.Msg)
		if err != nil {
			s.post(EvAnswer{Link: nl.id, Tag: a.Tag, Err: err})
			return true
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			msg, err := call.Wait(s.ctx)
			var perr *proto.Error
			if errors.As(err, &perr) {
				msg, err = perr, nil
			}
			s.post(EvAnswer{Link: nl.id, Tag: a.Tag, Msg: msg, Err: err})
		}()
	case ActAbort:
		nl.mu.Lock()
		req := nl.requests[a.MsgID]
		delete(nl.requests, a.MsgID)
		if req == nil && nl.lastNote != nil && nl.lastNote.MsgID == a.MsgID {
			req = nl.lastNote
		}
		nl.mu.Unlock()
		if req != nil {
			err = req.Abort(ctx, a.Msg)
		} else {
			err = l.Send(ctx, a.MsgID, a.Msg)
		}
		if err != nil {
			s.m.log.Debug("abort", "link", nl.id, "error", err)
		}
		l.Close()
		return false
	case ActClose:
		l.Close()
		return false
	}
	if err != nil {
		s.m.log.Debug("send failed", "link", nl.id, "error", err)
	}
	return true
}

func (s *server) apply(actions []Action) (exit bool, exitErr error) {
	for _, a := range actions {
		switch a := a.(type) {
		case ActSend:
			s.toLink(a.Link, a)
		case ActReply:
			s.toLink(a.Link, a)
		case ActAsk:
			if !s.toLink(a.Link, a) {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					s.post(EvAnswer{Link: a.Link, Tag: a.Tag, Err: neonet.ErrLinkDown})
				}()
			}
		case ActAbort:
			s.toLink(a.Link, a)
		case ActClose:
			s.toLink(a.Link, a)
		case ActDial:
			s.wg.Add(1)
			go s.dial(a)
		case ActStopListening:
			s.m.ln.Close()
		case ActExit:
			exit, exitErr = true, a.Err
		}
	}
	return exit, exitErr
}

func (s *server) toLink(id LinkID, a Action) bool {
	s.mu.Lock()
	nl := s.links[id]
	s.mu.Unlock()
	if nl == nil {
		return false
	}
	nl.push(a)
	return true
}

// Run serves the cluster until ctx ends (nil), the cluster is stopped (nil)
// or the master fails (an error). It closes everything it opened before
// returning.
func (m *Master) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	s := &server{m: m, ctx: runCtx, events: make(chan Event, 256), links: map[LinkID]*netLink{},
		dialer: &neonet.Dialer{TLS: m.cfg.TLS, Net: m.cfg.Net, ConnectLimit: neonet.ConnectLimit}}
	core := newCore(m.ccfg, time.Now())
	m.log = m.log.With("nid", core.NodeID().String())
	m.log.Info("master", "addr", m.Addr(), "cluster", m.cfg.Cluster)

	s.wg.Add(1)
	go s.acceptLoop()
	defer func() {
		m.ln.Close()
		s.mu.Lock()
		for _, nl := range s.links {
			nl.link.Close()
		}
		s.mu.Unlock()
		cancel()
		s.wg.Wait()
	}()

	defer m.setStatus(Status{NodeID: core.NodeID()})
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	exit, exitErr := s.apply(core.Start())
	m.setStatus(core.status())
	for !exit {
		var ev Event
		select {
		case ev = <-s.events:
		case <-ticker.C:
			ev = EvTick{}
		case <-ctx.Done():
			m.log.Info("stopping", "reason", context.Cause(ctx))
			return nil
		}
		exit, exitErr = s.apply(core.Step(time.Now(), ev))
		m.setStatus(core.status())
	}
	// Let the last packets go out before closing.
	m.ln.Close()
	s.mu.Lock()
	for _, nl := range s.links {
		nl.push(ActClose{Link: nl.id})
	}
	s.mu.Unlock()
	deadline := time.NewTimer(flushTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		n := len(s.links)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-s.events:
		case <-deadline.C:
			return exitErr
		case <-ctx.Done():
			return exitErr
		case <-time.After(10 * time.Millisecond):
		}
	}
	return exitErr
}
