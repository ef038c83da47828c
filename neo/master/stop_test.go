package master

import (
	"testing"

	"github.com/neozodb/neo/neo/proto"
)

func (h *harness) exited() bool {
	for _, a := range h.global {
		if _, ok := a.(ActExit); ok {
			return true
		}
	}
	return false
}

// A primary that stops (§6.11) while a known master is not identified with
// it (e.g. still reconnecting after the election) waits a little for it:
// that master, identifying then, is told STOPPING and exits instead of
// taking over once the primary is gone.
func TestStopTellsLateSecondary(t *testing.T) {
	m2 := proto.Address{Host: "127.0.0.1", Port: 10001}
	for _, late := range []bool{true, false} {
		name := "secondary identifies during the stop"
		if !late {
			name = "secondary never comes"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarnessWithMasters(t, m2)
			d := h.takeDial()
			h.step(EvDialed{Tag: d.Tag, Err: errTest})
			storages, admin := h.startNewCluster(1)
			h.global = nil
			h.request(admin, 20, &proto.SetClusterState{State: proto.ClusterStopping})
			wantError(t, h.mustFind(admin, &proto.Error{}), proto.Ack, "Cluster state changed")
			h.step(EvTick{})
			h.mustFind(storages[0], &proto.NotifyNodeInformation{})
			if h.exited() {
				t.Fatalf("the primary exited with a master not told: %v", h.global)
			}
			// Other nodes are not served any more.
			cl := h.connect(clientRI())
			wantError(t, h.abortOf(cl, h.take(cl)), proto.NotReady, "Retry Later")
			if !late {
				h.now = h.now.Add(stopGrace)
				h.step(EvTick{})
				if !h.exited() {
					t.Fatalf("the primary still waits after %v: %v", stopGrace, h.global)
				}
				return
			}
			ri := &proto.RequestIdentification{NodeType: proto.Master, Address: proto.Some(m2), ClusterName: "test", Extra: proto.Dict{}}
			l := h.connect(ri)
			acts := h.expect(l, &proto.AcceptIdentification{}, &proto.NotifyClusterInformation{}, ActClose{})
			if st := msgOf(acts[1]).(*proto.NotifyClusterInformation).State; st != proto.ClusterStopping {
				t.Fatalf("told %v", st)
			}
			if !h.exited() {
				t.Fatalf("every master told, the primary does not exit: %v", h.global)
			}
		})
	}
}

// A master electing that gets STOPPING from the master it identified with
// exits, even before that master's AcceptIdentification was handled (the
// answer and the notification reach the core in either order).
func TestElectingMasterTold(t *testing.T) {
	m2 := proto.Address{Host: "127.0.0.1", Port: 10001}
	h := newHarnessWithMasters(t, m2)
	d := h.takeDial()
	h.nextLink++
	l := h.nextLink
	h.step(EvDialed{Tag: d.Tag, Link: l})
	h.mustFind(l, &proto.RequestIdentification{})
	h.step(EvRecv{Link: l, MsgID: 3, Msg: &proto.NotifyClusterInformation{State: proto.ClusterStopping}})
	if !h.exited() {
		t.Fatalf("electing master told STOPPING did not exit: %v", h.global)
	}
}

// The master that loses the election keeps the link it opened to the
// winner and identifies there (the winner accepts it), rather than dialing
// again, which neonet throttles.
func TestLoserKeepsElectionLink(t *testing.T) {
	m2 := proto.Address{Host: "127.0.0.1", Port: 10001}
	h := newHarnessWithMasters(t, m2)
	d := h.takeDial()
	h.nextLink++
	out := h.nextLink
	h.step(EvDialed{Tag: d.Tag, Link: out})
	a := h.mustFind(out, &proto.RequestIdentification{}).(ActAsk)
	h.take(out)
	// The winner challenges this master.
	ri := &proto.RequestIdentification{NodeType: proto.Master, Address: proto.Some(m2), ClusterName: "test",
		IDTimestamp: proto.Some(h.c.electionTS - 1), Extra: proto.Dict{}}
	h.connect(ri)
	if h.c.role != roleSecondary {
		t.Fatalf("still primary")
	}
	if acts := h.take(out); len(acts) != 0 {
		t.Fatalf("election link: %v", acts)
	}
	for _, x := range h.global {
		if _, ok := x.(ActDial); ok {
			t.Fatalf("dials the winner again: %v", h.global)
		}
	}
	h.step(EvAnswer{Link: out, Tag: a.Tag, Msg: &proto.AcceptIdentification{NodeType: proto.Master, NID: proto.NewNodeID(proto.Master, 1), YourNID: proto.NewNodeID(proto.Master, 2)}})
	if !h.c.primaryIdentified() {
		t.Fatalf("not identified with the primary")
	}
	h.step(EvRecv{Link: out, MsgID: 4, Msg: &proto.NotifyClusterInformation{State: proto.ClusterRunning}})
	if h.c.ClusterState() != proto.ClusterRunning {
		t.Fatalf("state %v", h.c.ClusterState())
	}
}

// A configured master address with port 0 names no master: nothing is
// dialed, and the stop does not wait for it.
func TestMasterPortZeroIgnored(t *testing.T) {
	h := newHarnessWithMasters(t, proto.Address{Host: "127.0.0.1", Port: 0})
	for _, a := range h.global {
		if _, ok := a.(ActDial); ok {
			t.Fatalf("dials %v", a)
		}
	}
	_, admin := h.startNewCluster(1)
	h.request(admin, 20, &proto.SetClusterState{State: proto.ClusterStopping})
	h.step(EvTick{})
	if !h.exited() {
		t.Fatalf("the stop waits: %v", h.global)
	}
}
