package pt

import (
	"strings"
	"testing"

	"github.com/neozodb/neo/neo/proto"
)

func sid(n int32) proto.NodeID { return proto.NewNodeID(proto.Storage, n) }

// picture draws the table one line per row, one letter per node (in nodes
// order): U, O, F, C or '.'.
func picture(t *Table, nodes []proto.NodeID) string {
	var lines []string
	for p := range t.NP() {
		var b strings.Builder
		for _, n := range nodes {
			c, ok := t.Cell(p, n)
			switch {
			case !ok:
				b.WriteByte('.')
			case c.State == proto.CellUpToDate:
				b.WriteByte('U')
			case c.State == proto.CellOutOfDate:
				b.WriteByte('O')
			case c.State == proto.CellFeeding:
				b.WriteByte('F')
			case c.State == proto.CellCorrupted:
				b.WriteByte('C')
			}
		}
		lines = append(lines, b.String())
	}
	return strings.Join(lines, " ")
}

func mustTweak(t *testing.T, tab *Table, nodes, exclude []proto.NodeID) []proto.CellChange {
	t.Helper()
	ch, err := tab.Tweak(nodes, exclude)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Commit(ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestTweakNew(t *testing.T) {
	nodes := []proto.NodeID{sid(1), sid(2), sid(3), sid(4), sid(5)}
	tab := New(10, 1)
	mustTweak(t, tab, nodes, nil)
	// The optimal layout NEO/py documents for np=10, nr=1, 5 nodes.
	want := "UU... ..UU. U...U .UU.. ...UU UU... ..UU. U...U .UU.. ...UU"
	if got := picture(tab, nodes); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if tab.PTid != 1 {
		t.Errorf("ptid = %d, want 1", tab.PTid)
	}
	all := func(proto.NodeID) bool { return true }
	if !tab.Operational(all) {
		t.Error("not operational")
	}
	// Tweaking again with the same nodes changes nothing.
	if ch, _ := tab.Tweak(nodes, nil); len(ch) != 0 {
		t.Errorf("second tweak: %v", ch)
	}
}

func TestTweakAddAndRemoveNode(t *testing.T) {
	nodes := []proto.NodeID{sid(1), sid(2)}
	tab := New(4, 1)
	mustTweak(t, tab, nodes, nil)
	if got := picture(tab, nodes); got != "UU UU UU UU" {
		t.Fatal(got)
	}
	// A third storage: it gets OUT_OF_DATE cells; cells moving away stay
	// FEEDING while the row has fewer than 2 readable copies elsewhere.
	nodes = append(nodes, sid(3))
	mustTweak(t, tab, nodes, nil)
	for p := range tab.NP() {
		readable := len(tab.ReadableCells(p))
		if readable < 2 {
			t.Errorf("row %d: %d readable cells", p, readable)
		}
	}
	if !strings.Contains(picture(tab, nodes), "O") {
		t.Errorf("no OUT_OF_DATE cell for the new node: %s", picture(tab, nodes))
	}
	// Excluding a node builds the rest around it, leaving its cells.
	ch, err := tab.Tweak(nodes, []proto.NodeID{sid(3)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ch {
		if c.NID == sid(3) {
			t.Errorf("excluded node changed: %v", c)
		}
	}
	if _, err := tab.Tweak(nodes, nodes); err != ErrNoNodes {
		t.Errorf("excluding every node: %v", err)
	}
}

func TestOutdate(t *testing.T) {
	nodes := []proto.NodeID{sid(1), sid(2)}
	tab := New(2, 1)
	mustTweak(t, tab, nodes, nil)
	running := func(n proto.NodeID) bool { return n == sid(1) }
	if _, err := tab.Commit(tab.Outdate(running, sid(2))); err != nil {
		t.Fatal(err)
	}
	if got := picture(tab, nodes); got != "UO UO" {
		t.Errorf("after losing S2: %s", got)
	}
	// Now S1 goes too: it was the last readable copy, so it is protected.
	none := func(proto.NodeID) bool { return false }
	if ch := tab.Outdate(none, sid(1)); len(ch) != 0 {
		t.Errorf("last copy outdated: %v", ch)
	}
	if tab.Operational(none) || !tab.Operational(running) {
		t.Error("operational")
	}
}

func TestUpdatePtidRule(t *testing.T) {
	tab := New(1, 0)
	tab.PTid = 5
	msg := &proto.NotifyPartitionChanges{PTid: 7, Changes: []proto.CellChange{{Partition: 0, NID: sid(1), State: proto.CellUpToDate}}}
	if err := tab.Update(msg, true); err == nil {
		t.Error("storage accepted ptid 7 after 5")
	}
	if err := tab.Update(msg, false); err != nil {
		t.Error(err)
	}
	if err := tab.Update(msg, false); err == nil {
		t.Error("client accepted the same ptid twice")
	}
	bad := &proto.NotifyPartitionChanges{PTid: 8, Changes: []proto.CellChange{{Partition: 3, NID: sid(1)}}}
	if err := tab.Update(bad, true); err == nil || tab.PTid != 7 {
		t.Errorf("out of range partition: %v, ptid %d", err, tab.PTid)
	}
	rows := tab.Rows()
	back := FromRows(tab.PTid, 0, rows)
	if picture(back, []proto.NodeID{sid(1)}) != "U" || back.PTid != 7 {
		t.Error("FromRows(Rows()) differs")
	}
	if Partition(13, 12) != 1 || back.Partition(5) != 0 {
		t.Error("partition formula")
	}
}
