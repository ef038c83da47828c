package admin

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// acceptLoop accepts neoctl connections until ctx ends (nil) or the
// listener fails (its error); wg owns the goroutines serving them.
func (a *Admin) acceptLoop(ctx context.Context, wg *sync.WaitGroup) error {
	for {
		l, err := a.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("admin: accepting connections: %w", err)
		}
		wg.Go(func() { a.serveNeoctl(ctx, l) })
	}
}

// serveNeoctl handles the requests of one neoctl connection in order.
func (a *Admin) serveNeoctl(ctx context.Context, l *neonet.Link) {
	defer l.Close()
	for {
		r, err := l.Recv(ctx)
		if err != nil {
			return
		}
		if !a.handleNeoctl(ctx, r) {
			return
		}
	}
}

// masterLink returns the link to the primary master, nil if not connected.
func (a *Admin) masterLink() *neonet.Link {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.master
}

// handleNeoctl serves one request; false when the connection is to be
// closed.
func (a *Admin) handleNeoctl(ctx context.Context, r *neonet.Request) bool {
	master := a.masterLink()
	if master == nil {
		r.Abort(ctx, proto.Err(proto.NotReady, notConnected))
		return false
	}
	switch m := r.Msg.(type) {
	case *proto.AskPartitionList:
		return a.partitionList(ctx, r, m)
	case *proto.AskNodeList:
		a.mu.Lock()
		nodes := a.nodes.list(m.NodeType)
		a.mu.Unlock()
		r.Reply(ctx, &proto.AnswerNodeList{Nodes: nodes})
	case *proto.AskClusterState:
		a.mu.Lock()
		st := a.clusterState
		a.mu.Unlock()
		r.Reply(ctx, &proto.AnswerClusterState{State: st})
	case *proto.AskPrimary:
		a.mu.Lock()
		primary := a.primary
		a.mu.Unlock()
		r.Reply(ctx, &proto.AnswerPrimary{PrimaryNID: primary})
	case *proto.AskMonitorInformation:
		r.Reply(ctx, a.monitorInformation(ctx, master))
	case *proto.FlushLog:
		if err := master.Notify(ctx, &proto.FlushLog{}); err != nil {
			a.log().Warn("forwarding FlushLog to the master", "err", err)
		}
	case *proto.AddPendingNodes, *proto.AskLastIDs, *proto.AskLastTransaction,
		*proto.AskRecovery, *proto.CheckReplicas, *proto.Repair,
		*proto.SetClusterState, *proto.SetNodeState, *proto.SetNumReplicas,
		*proto.Truncate, *proto.TweakPartitionTable:
		return a.relay(ctx, master, r)
	case *proto.RequestIdentification:
		a.acceptBackupAdmin(ctx, r, m)
		return false
	case *proto.Error:
		a.log().Warn("error from neoctl", "code", m.Code, "message", m.Message)
	default:
		r.Abort(ctx, proto.Err(proto.ProtocolError, "unexpected packet %T from neoctl", r.Msg))
		return false
	}
	return true
}

// relay forwards a neoctl request to the master and the master's answer,
// or Error, back to neoctl. An Error(PROTOCOL_ERROR), or the loss of the
// master, closes the neoctl connection after it is told.
func (a *Admin) relay(ctx context.Context, master *neonet.Link, r *neonet.Request) bool {
	l := r.Link()
	lost := proto.Err(proto.ProtocolError, "connection to master lost")
	call, err := master.Start(ctx, r.Msg)
	if err != nil {
		r.Abort(ctx, lost)
		return false
	}
	// Stop waiting if neoctl goes away.
	waitCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		select {
		case <-l.Done():
			cancel()
		case <-waitCtx.Done():
		}
	})
	ans, err := call.Wait(waitCtx)
	if err != nil {
		var perr *proto.Error
		switch {
		case errors.As(err, &perr):
			if perr.Code == proto.ProtocolError {
				r.Abort(ctx, perr)
				return false
			}
			r.Reply(ctx, perr)
			return true
		case waitCtx.Err() != nil:
			return false // neoctl or the admin went away
		}
		r.Abort(ctx, lost)
		return false
	}
	r.Reply(ctx, ans)
	return true
}

// partitionList answers rows [MinOffset, MaxOffset) of the partition table
// (MaxOffset 0: up to the end). NEO/py sends an offset beyond the table as
// an Error notification, not as the answer: so does this admin.
func (a *Admin) partitionList(ctx context.Context, r *neonet.Request, m *proto.AskPartitionList) bool {
	a.mu.Lock()
	tab := a.pt
	var ans *proto.AnswerPartitionList
	bad := false
	if tab != nil {
		np := uint32(tab.NP())
		lo, hi := m.MinOffset, m.MaxOffset
		if hi == 0 {
			hi = np
		}
		ans = &proto.AnswerPartitionList{NumReplicas: uint32(tab.NumReplicas)}
		if tab.PTid != 0 {
			ans.PTid = proto.Some(tab.PTid)
		}
		if lo < hi {
			if hi > np {
				bad = true
			} else {
				ans.Rows = tab.Rows()[lo:hi]
			}
		}
		if ans.Rows == nil {
			ans.Rows = [][]proto.CellInfo{}
		}
	}
	a.mu.Unlock()
	switch {
	case tab == nil:
		r.Abort(ctx, proto.Err(proto.NotReady, "partition table not received yet"))
		return false
	case bad:
		r.Link().Notify(ctx, proto.Err(proto.ProtocolError, "invalid partition table offset"))
		return true
	}
	r.Reply(ctx, ans)
	return true
}
