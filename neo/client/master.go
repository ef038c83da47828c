package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

// sessionAskTimeout bounds the wait for the master's answer that makes a
// session ready.
const sessionAskTimeout = 5 * time.Second

// errNoMaster tells that the client is not connected to the primary master.
var errNoMaster = errors.New("not connected to the primary master")

// runMaster keeps a session with the primary master until Close.
func (c *Client) runMaster() {
	masters := slices.Clone(c.cfg.Masters)
	next := 0
	for c.ctx.Err() == nil {
		next = (next%len(masters) + len(masters)) % len(masters)
		addr := masters[next]
		next++
		link, redirect, err := c.identifyMaster(addr)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.setMasterErr(fmt.Errorf("master %s: %w", addr, err))
			c.log.Debug("master not reached", "addr", addr, "err", err)
			if redirect != nil {
				for _, a := range redirect.KnownMasters {
					if s := a.String(); !slices.Contains(masters, s) {
						masters = append(masters, s)
					}
				}
				// Primary is an index in KnownMasters (see neo/proto: index 0
				// cannot be told from "unknown"; then the next master is tried).
				if i := int(redirect.Primary); redirect.Primary != proto.NoNode && i >= 0 && i < len(redirect.KnownMasters) {
					if j := slices.Index(masters, redirect.KnownMasters[i].String()); j >= 0 {
						next = j
					}
				}
			}
			continue
		}
		err = c.session(link)
		if c.ctx.Err() != nil {
			return
		}
		c.setMasterErr(fmt.Errorf("master %s: %w", addr, err))
		c.log.Warn("connection to the primary master lost", "addr", addr, "err", err)
		next-- // try the same master first
	}
}

func (c *Client) setMasterErr(err error) {
	c.mu.Lock()
	c.masterErr = err
	c.mu.Unlock()
}

// identifyMaster connects to addr and identifies. A master that is not the
// primary answers NotPrimaryMaster, returned as redirect.
func (c *Client) identifyMaster(addr string) (*neonet.Link, *proto.NotPrimaryMaster, error) {
	ctx := c.ctx
	link, err := c.dialer.Dial(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	nid := c.nid
	c.mu.Unlock()
	extra := proto.Dict{}
	if c.cfg.ReadOnly {
		extra = proto.Dict{{Key: "read_only", Value: true}}
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := link.Ask(actx, &proto.RequestIdentification{
		NodeType:    proto.Client,
		NID:         nid,
		ClusterName: c.cfg.Cluster,
		Extra:       extra,
	})
	if err != nil {
		// A secondary master sends NotPrimaryMaster, then closes.
		var redirect *proto.NotPrimaryMaster
		if errors.Is(err, neonet.ErrLinkDown) {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			if req, rerr := link.Recv(rctx); rerr == nil {
				redirect, _ = req.Msg.(*proto.NotPrimaryMaster)
			}
			cancel()
		}
		link.Close()
		if redirect != nil {
			return nil, redirect, fmt.Errorf("not the primary master")
		}
		return nil, nil, fmt.Errorf("identification: %w", err)
	}
	acc, ok := m.(*proto.AcceptIdentification)
	if !ok || acc.NodeType != proto.Master || acc.YourNID == proto.NoNode {
		link.Close()
		return nil, nil, fmt.Errorf("identification: unexpected answer %#v", m)
	}
	c.mu.Lock()
	c.nid = acc.YourNID
	c.idTime = proto.Opt[float64]{}
	c.nniTime = 0
	c.gotPT = make(chan struct{})
	c.master = link
	c.sessionNum++
	closed := c.closed.Load()
	c.mu.Unlock()
	if closed {
		link.Close()
		return nil, nil, zodb.ErrClosed
	}
	return link, nil, nil
}

// session serves one connection to the primary master until it goes down.
func (c *Client) session(link *neonet.Link) error {
	recvDone := make(chan error, 1)
	go func() { recvDone <- c.recvMaster(link) }()
	end := func(err error) error {
		link.Close()
		rerr := <-recvDone
		c.mu.Lock()
		if c.master == link {
			c.master = nil
		}
		select {
		case <-c.ready:
			c.ready = make(chan struct{})
		default:
		}
		c.notifyLocked()
		c.mu.Unlock()
		c.evMu.Lock()
		c.sessionReady = false
		c.evMu.Unlock()
		if err == nil {
			err = rerr
		}
		return err
	}

	// Ready once the partition table is operational.
	for {
		c.mu.Lock()
		gotPT, changed := c.gotPT, c.changed
		operational := false
		why := "no partition table yet"
		select {
		case <-gotPT:
			operational = c.pt != nil && c.pt.Operational(c.isRunningLocked)
			if !operational {
				why = c.notOperationalLocked()
			}
		default:
		}
		if !operational {
			c.masterErr = fmt.Errorf("session with the primary master: waiting for an operational partition table: %s", why)
		}
		c.mu.Unlock()
		if operational {
			break
		}
		select {
		case <-changed:
		case <-gotPT:
		case err := <-recvDone:
			recvDone <- err
			return end(err)
		case <-c.ctx.Done():
			return end(c.ctx.Err())
		}
	}
	c.setMasterErr(errors.New("session with the primary master: waiting for the answer to AskLastTransaction"))
	// The master answers at once; an answer that does not come in a few
	// seconds ends the session, which starts again on a new link, rather
	// than leaving the client unusable.
	actx, acancel := context.WithTimeout(c.ctx, sessionAskTimeout)
	m, err := link.Ask(actx, &proto.AskLastTransaction{})
	acancel()
	if err != nil {
		return end(fmt.Errorf("last transaction: %w", err))
	}
	a, ok := m.(*proto.AnswerLastTransaction)
	if !ok {
		return end(fmt.Errorf("last transaction: unexpected answer %T", m))
	}
	c.startEvents(a.Tid)
	c.mu.Lock()
	close(c.ready)
	c.mu.Unlock()
	c.log.Debug("connected to the primary master", "last_tid", a.Tid)
	err = <-recvDone
	recvDone <- err
	return end(err)
}

// notOperationalLocked describes, for error messages, why the partition
// table is not operational: the partitions without a readable cell on a
// running storage, with the states known of their storages.
func (c *Client) notOperationalLocked() string {
	if c.pt == nil {
		return "no partition table"
	}
	var b strings.Builder
	for p := 0; p < c.pt.NP(); p++ {
		ok := false
		for _, cell := range c.pt.ReadableCells(p) {
			if c.isRunningLocked(cell.NID) {
				ok = true
			}
		}
		if ok {
			continue
		}
		fmt.Fprintf(&b, " partition %d:", p)
		for _, cell := range c.pt.Row(p) {
			st := "unknown node"
			if n := c.nodes[cell.NID]; n != nil {
				st = n.state.String()
			}
			fmt.Fprintf(&b, " %v %v (%s)", cell.NID, cell.State, st)
		}
		if b.Len() > 300 {
			b.WriteString(" ...")
			break
		}
	}
	return fmt.Sprintf("ptid %d;%s", c.pt.PTid, b.String())
}

func (c *Client) isRunningLocked(nid proto.NodeID) bool {
	n := c.nodes[nid]
	return n != nil && n.state == proto.NodeRunning
}

// waitReady waits until a session with the primary master is ready.
func (c *Client) waitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		ready := c.ready
		c.mu.Unlock()
		select {
		case <-ready:
			return nil
		case <-c.ctx.Done():
			return zodb.ErrClosed
		case <-ctx.Done():
			c.mu.Lock()
			err := c.masterErr
			c.mu.Unlock()
			if err != nil {
				return fmt.Errorf("%w: %w (last: %v)", errNoMaster, ctx.Err(), err)
			}
			return fmt.Errorf("%w: %w", errNoMaster, ctx.Err())
		}
	}
}

// masterLink returns the link of the ready session.
func (c *Client) masterLink(ctx context.Context) (*neonet.Link, error) {
	for {
		if err := c.waitReady(ctx); err != nil {
			return nil, err
		}
		c.mu.Lock()
		link, changed := c.master, c.changed
		c.mu.Unlock()
		if link != nil && link.Err() == nil {
			return link, nil
		}
		// The session is ending: wait for the next one.
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", errNoMaster, ctx.Err())
		case <-c.ctx.Done():
			return nil, zodb.ErrClosed
		}
	}
}

// askMaster sends req to the primary master. A request that could not be
// sent because the master went away is sent again to the next one: only
// requests that may be repeated go through askMaster.
func (c *Client) askMaster(ctx context.Context, req proto.Msg) (proto.Msg, error) {
	for attempt := 0; ; attempt++ {
		link, err := c.masterLink(ctx)
		if err != nil {
			return nil, err
		}
		m, err := link.Ask(ctx, req)
		if err != nil && attempt < 2 && errors.Is(err, neonet.ErrLinkDown) && peerError(err) == nil && ctx.Err() == nil && !c.closed.Load() {
			continue
		}
		return m, err
	}
}

// recvMaster handles what the master sends until the link goes down.
func (c *Client) recvMaster(link *neonet.Link) error {
	for {
		req, err := link.Recv(c.ctx)
		if err != nil {
			return err
		}
		switch m := req.Msg.(type) {
		case *proto.NotifyNodeInformation:
			c.updateNodes(m)
		case *proto.SendPartitionTable:
			if !m.PTid.Ok {
				c.log.Warn("master sent no partition table")
				continue
			}
			t := pt.FromRows(m.PTid.V, m.NumReplicas, m.Rows)
			c.mu.Lock()
			c.pt = t
			select {
			case <-c.gotPT:
			default:
				close(c.gotPT)
			}
			c.notifyLocked()
			c.mu.Unlock()
		case *proto.NotifyPartitionChanges:
			c.mu.Lock()
			if c.pt != nil {
				if err := c.pt.Update(m, false); err != nil {
					c.log.Warn("partition table change refused", "ptid", m.PTid, "err", err)
				}
				c.notifyLocked()
			}
			c.mu.Unlock()
		case *proto.InvalidateObjects:
			c.invalidate(m)
		case *proto.NotifyClusterInformation:
			c.log.Debug("cluster state", "state", m.State)
		default:
			c.log.Debug("ignored packet from the master", "packet", fmt.Sprintf("%T", m))
		}
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// updateNodes applies NotifyNodeInformation.
func (c *Client) updateNodes(m *proto.NotifyNodeInformation) {
	var doomed []*storageLink
	c.mu.Lock()
	first := !c.idTime.Ok
	if m.Timestamp <= c.nniTime && c.nniTime != 0 {
		c.log.Warn("node information not newer than the previous one", "timestamp", m.Timestamp)
	}
	c.nniTime = m.Timestamp
	seen := map[proto.NodeID]bool{}
	for _, ni := range m.Nodes {
		c.log.Debug("node", "nid", ni.NID, "type", ni.Type, "addr", ni.Addr, "state", ni.State)
		if ni.NID == proto.NoNode {
			continue
		}
		seen[ni.NID] = true
		if ni.NID == c.nid {
			c.idTime = ni.IDTime
		}
		if ni.State == proto.NodeUnknown {
			delete(c.nodes, ni.NID)
			if s := c.storages[ni.NID]; s != nil {
				doomed = append(doomed, s)
				delete(c.storages, ni.NID)
			}
			continue
		}
		n := c.nodes[ni.NID]
		if n == nil {
			n = &nodeInfo{}
			c.nodes[ni.NID] = n
		}
		n.typ, n.state, n.idTime = ni.Type, ni.State, ni.IDTime
		if ni.Addr.Ok {
			n.addr = ni.Addr.V.String()
		}
		if ni.State != proto.NodeRunning {
			if s := c.storages[ni.NID]; s != nil {
				doomed = append(doomed, s)
				delete(c.storages, ni.NID)
			}
		}
	}
	if first && c.idTime.Ok {
		// The first list after identification is complete.
		for nid := range c.nodes {
			if !seen[nid] {
				delete(c.nodes, nid)
			}
		}
	}
	c.notifyLocked()
	c.mu.Unlock()
	for _, s := range doomed {
		s.close()
	}
}

// Commit events.
//
// The master sends InvalidateObjects to every client but the committer,
// which learns its tid from AnswerTransactionFinished. Events must reach the
// watch channel in tid order, so invalidations are held while the session
// is not ready (until the last tid is known) and while a commit of this
// client is finishing (its tid may come before theirs); they are given out
// by whoever releases them, under evMu.

// invalidate handles InvalidateObjects from the master.
func (c *Client) invalidate(m *proto.InvalidateObjects) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	if !c.sessionReady || c.finishing {
		c.held = append(c.held, ownCommit{m.Tid, m.Oids})
		return
	}
	c.emit(m.Tid, m.Oids)
}

// emit gives a commit event to the watchers. evMu is held.
func (c *Client) emit(tid zodb.Tid, oids []zodb.Oid) {
	last := zodb.Tid(c.lastTid.Load())
	if last != zodb.InvalidTid && tid <= last {
		return // already given
	}
	if c.watchq != nil {
		ev := &zodb.CommitEvent{Tid: tid, Changed: slices.Clone(oids)}
		select {
		case c.watchq <- ev:
		case <-c.ctx.Done():
			return
		}
	}
	c.lastTid.Store(uint64(tid))
}

func (c *Client) emitError(err error) {
	if c.watchq == nil {
		return
	}
	select {
	case c.watchq <- &zodb.EventError{Err: err}:
	case <-c.ctx.Done():
	}
}

// releaseHeld gives the held invalidations, in tid order, with the own
// commit own (if not nil) among them. evMu is held.
func (c *Client) releaseHeld(own *ownCommit) {
	if own != nil {
		c.held = append(c.held, *own)
	}
	held := c.held
	c.held = nil
	slices.SortStableFunc(held, func(a, b ownCommit) int {
		switch {
		case a.tid < b.tid:
			return -1
		case a.tid > b.tid:
			return 1
		}
		return 0
	})
	for _, h := range held {
		c.emit(h.tid, h.changed)
	}
}

// startEvents makes the session ready for events: last is the master's
// last tid. Transactions committed while the client was not connected are
// looked up on the storages and given as events; if that fails, the
// watchers get an EventError.
func (c *Client) startEvents(last zodb.Tid) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	prev := zodb.Tid(c.lastTid.Load())
	switch {
	case prev == zodb.InvalidTid:
		c.lastTid.Store(uint64(last))
	case last > prev:
		if err := c.catchUp(prev, last); err != nil {
			c.log.Warn("transactions committed while disconnected could not be listed", "err", err)
			c.emitError(fmt.Errorf("transactions after %v: %w", prev, err))
			c.lastTid.Store(uint64(last))
		}
	case last < prev:
		c.emitError(fmt.Errorf("the cluster's last transaction went back from %v to %v", prev, last))
		c.lastTid.Store(uint64(last))
	}
	// What was held was sent after the last tid was known, or is
	// already covered by it.
	c.sessionReady = true
	if !c.finishing {
		c.releaseHeld(nil)
	}
}

// catchUp gives the events of the transactions in (prev, last].
func (c *Client) catchUp(prev, last zodb.Tid) error {
	ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
	defer cancel()
	it := c.newTxnIter(prev+1, last)
	for {
		info, oids, err := it.next(ctx)
		if err != nil {
			return err
		}
		if info == nil {
			return nil
		}
		c.emit(info.Tid, oids)
	}
}
