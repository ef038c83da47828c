package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// monitorTimeout bounds how long the admin waits for the master's last ids
// when neoctl asks for the cluster's health (NEO/py's MONITOR_TIMEOUT).
const monitorTimeout = 60 * time.Second

// acceptLoop accepts neoctl connections until ctx ends; wg owns the
// goroutines serving them.
func (a *Admin) acceptLoop(ctx context.Context, wg *sync.WaitGroup) {
	for {
		l, err := a.ln.Accept(ctx)
		if err != nil {
			return
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
		// Only the admins of monitored backup clusters may identify, and
		// this admin monitors none.
		msg := "reject non-admin node"
		if m.NodeType == proto.Admin {
			msg = fmt.Sprintf("unknown backup cluster %q", m.ClusterName)
		}
		r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", msg))
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

// monitorInformation computes the health summary neoctl's "print summary"
// shows: cluster state, cell states, storages down, and, when operational,
// the last tid (backup tid in backup mode) freshly asked to the master.
func (a *Admin) monitorInformation(ctx context.Context, master *neonet.Link) *proto.AnswerMonitorInformation {
	a.mu.Lock()
	state := a.clusterState
	counts, down := ptSummary(a.pt, &a.nodes)
	a.mu.Unlock()

	operational := state.Ok && (state.V == proto.ClusterRunning || state.V == proto.ClusterBackingUp)
	tid := zodb.InvalidTid
	if operational {
		mctx, cancel := context.WithTimeout(ctx, monitorTimeout)
		tid = a.lastTid(mctx, master, state.V)
		cancel()
	}

	var b strings.Builder
	b.WriteString(state.String())
	if len(counts) > 0 {
		states := make([]proto.CellState, 0, len(counts))
		for s := range counts {
			states = append(states, s)
		}
		slices.Sort(states)
		for i, s := range states {
			if i == 0 {
				b.WriteString("; ")
			} else {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s=%d", s, counts[s])
		}
	}
	if down > 0 {
		fmt.Fprintf(&b, "; DOWN=%d", down)
	}
	if tid != zodb.InvalidTid {
		fmt.Fprintf(&b, "; ltid=%016x (%s)", uint64(tid), ctl.TidDatetime(tid))
	}

	ans := &proto.AnswerMonitorInformation{Warnings: []proto.Opt[string]{}, Problems: []proto.Opt[string]{}, Summary: b.String()}
	switch {
	case down > 0 || !operational:
		ans.Problems = append(ans.Problems, proto.Opt[string]{})
	case len(counts) != 1 || counts[proto.CellUpToDate] == 0:
		ans.Warnings = append(ans.Warnings, proto.Opt[string]{})
	}
	return ans
}

// lastTid asks the master the last tid, or the backup tid in backup mode;
// InvalidTid if it cannot be had.
func (a *Admin) lastTid(ctx context.Context, master *neonet.Link, state proto.ClusterState) zodb.Tid {
	if state == proto.ClusterBackingUp {
		ans, err := master.Ask(ctx, &proto.AskRecovery{})
		if err != nil {
			a.log().Warn("asking the backup tid", "err", err)
			return zodb.InvalidTid
		}
		rec, ok := ans.(*proto.AnswerRecovery)
		if !ok {
			return zodb.InvalidTid
		}
		return rec.BackupTid
	}
	ans, err := master.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil {
		a.log().Warn("asking the last tid", "err", err)
		return zodb.InvalidTid
	}
	if lt, ok := ans.(*proto.AnswerLastTransaction); ok {
		return lt.Tid
	}
	return zodb.InvalidTid
}
