package stress

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// clusterState is what the admin node tells of the cluster.
type clusterState struct {
	state   proto.ClusterState
	nodes   []proto.NodeInfo
	primary proto.NodeID
	rows    [][]proto.CellInfo
}

func (s *clusterState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %v, primary %v;", s.state, s.primary)
	for _, n := range s.nodes {
		addr := "-"
		if n.Addr.Ok {
			addr = n.Addr.V.String()
		}
		fmt.Fprintf(&b, " %v %v %s %v;", n.Type, n.NID, addr, n.State)
	}
	b.WriteString(" pt:")
	for i, row := range s.rows {
		fmt.Fprintf(&b, " %d:", i)
		for _, c := range row {
			fmt.Fprintf(&b, "%v-%.1s", c.NID, c.State)
		}
	}
	return b.String()
}

// brief returns the primary and the partition table.
func (s *clusterState) brief() string {
	var b strings.Builder
	fmt.Fprintf(&b, "primary %v %s; pt", s.primary, s.primaryAddr())
	for i, row := range s.rows {
		fmt.Fprintf(&b, " %d:", i)
		for _, c := range row {
			fmt.Fprintf(&b, "%v-%.1s", c.NID, c.State)
		}
	}
	for _, n := range s.nodes {
		if n.Type == proto.Storage && n.State != proto.NodeRunning {
			fmt.Fprintf(&b, "; %v %v", n.NID, n.State)
		}
	}
	b.WriteString("; ids")
	for _, n := range s.nodes {
		if n.Type == proto.Storage && n.Addr.Ok {
			fmt.Fprintf(&b, " %v=%s", n.NID, n.Addr.V.String())
		}
	}
	return b.String()
}

// nodeByAddr returns the node listening on addr.
func (s *clusterState) nodeByAddr(addr string) (proto.NodeInfo, bool) {
	for _, n := range s.nodes {
		if n.Addr.Ok && n.Addr.V.String() == addr {
			return n, true
		}
	}
	return proto.NodeInfo{}, false
}

// primaryAddr returns the address of the primary master, "" if unknown.
func (s *clusterState) primaryAddr() string {
	if s.primary == proto.NoNode {
		return ""
	}
	for _, n := range s.nodes {
		if n.Type == proto.Master && n.NID == s.primary && n.Addr.Ok {
			return n.Addr.V.String()
		}
	}
	return ""
}

// monitor asks the admin node for the cluster's state. It is used by the
// fault loop only.
type monitor struct {
	c    *cluster
	link *neonet.Link
}

func (m *monitor) close() {
	if m.link != nil {
		m.link.Close()
		m.link = nil
	}
}

// ask returns the current state, as the admin knows it.
func (m *monitor) ask(ctx context.Context) (*clusterState, error) {
	if m.link != nil && m.link.Err() != nil {
		m.close()
	}
	if m.link == nil {
		d := neonet.Dialer{Net: m.c.net.Endpoint("monitor")}
		l, err := d.Dial(ctx, m.c.admin.addr)
		if err != nil {
			return nil, fmt.Errorf("admin %s: %w", m.c.admin.addr, err)
		}
		m.link = l
	}
	st, err := m.askOn(ctx)
	if err != nil {
		// The admin closes the link when it has no primary master.
		m.close()
	}
	return st, err
}

func (m *monitor) askOn(ctx context.Context) (*clusterState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st := &clusterState{}
	a, err := m.link.Ask(ctx, &proto.AskClusterState{})
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	cs, ok := a.(*proto.AnswerClusterState)
	if !ok {
		return nil, fmt.Errorf("cluster state: answered %T", a)
	}
	if !cs.State.Ok {
		return nil, fmt.Errorf("cluster state: not known yet")
	}
	st.state = cs.State.V
	a, err = m.link.Ask(ctx, &proto.AskNodeList{})
	if err != nil {
		return nil, fmt.Errorf("node list: %w", err)
	}
	nl, ok := a.(*proto.AnswerNodeList)
	if !ok {
		return nil, fmt.Errorf("node list: answered %T", a)
	}
	st.nodes = nl.Nodes
	a, err = m.link.Ask(ctx, &proto.AskPrimary{})
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	p, ok := a.(*proto.AnswerPrimary)
	if !ok {
		return nil, fmt.Errorf("primary: answered %T", a)
	}
	st.primary = p.PrimaryNID
	a, err = m.link.Ask(ctx, &proto.AskPartitionList{NID: proto.NoNode})
	if err != nil {
		return nil, fmt.Errorf("partition list: %w", err)
	}
	pl, ok := a.(*proto.AnswerPartitionList)
	if !ok {
		return nil, fmt.Errorf("partition list: answered %T", a)
	}
	st.rows = pl.Rows
	return st, nil
}

// pollInterval is how often wait asks the admin.
const pollInterval = 20 * time.Millisecond

// wait asks the admin until ok accepts the state, or until timeout.
func (m *monitor) wait(ctx context.Context, timeout time.Duration, what string, ok func(*clusterState) bool) (*clusterState, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last *clusterState
	var lastErr error
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		st, err := m.ask(ctx)
		if err == nil {
			if ok(st) {
				m.c.logf("  %s: %s", what, st.brief())
				return st, nil
			}
			last = st
		} else {
			lastErr = err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			msg := fmt.Sprintf("%s: not reached within %v", what, timeout)
			if last != nil {
				msg += "; last state: " + last.String()
			}
			if lastErr != nil {
				msg += "; last error: " + lastErr.Error()
			}
			return last, fmt.Errorf("%s", msg)
		}
	}
}

// operational tells that the cluster is RUNNING and every storage that runs
// is RUNNING.
func (c *cluster) operational(st *clusterState) bool {
	if st.state != proto.ClusterRunning {
		return false
	}
	for _, n := range c.stors {
		if !n.running() {
			continue
		}
		ni, ok := st.nodeByAddr(n.addr)
		if !ok || ni.State != proto.NodeRunning {
			return false
		}
	}
	return true
}

// healthy tells that the cluster is operational with every cell
// UP_TO_DATE.
func (c *cluster) healthy(st *clusterState) bool {
	if !c.operational(st) || len(st.rows) == 0 {
		return false
	}
	for _, row := range st.rows {
		if len(row) < c.replicas+1 {
			return false
		}
		for _, cell := range row {
			if cell.State != proto.CellUpToDate {
				return false
			}
		}
	}
	return true
}
