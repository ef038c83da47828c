package client

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
)

// A client reads every partition from the same storage, among the
// readable cells, while another client may prefer another one; a storage
// that failed lately comes last.
func TestReadPreference(t *testing.T) {
	s1, s2, s3 := proto.NewNodeID(proto.Storage, 1), proto.NewNodeID(proto.Storage, 2), proto.NewNodeID(proto.Storage, 3)
	up := proto.CellUpToDate
	var rows [][]proto.CellInfo
	for range 12 {
		rows = append(rows, []proto.CellInfo{{NID: s1, State: up}, {NID: s2, State: up}, {NID: s3, State: up}})
	}
	table := pt.FromRows(1, 2, rows)
	firsts := map[proto.NodeID]int{}
	rng := rand.New(rand.NewPCG(1, 2)) // fixed: the test does not depend on luck
	for range 60 {
		c := &Client{pt: table, failedAt: map[proto.NodeID]time.Time{}, readSeed: rng.Uint64()}
		first, _ := c.readCandidates(0)
		for p := range table.NP() {
			cells, _ := c.readCandidates(p)
			if len(cells) != 3 || cells[0] != first[0] {
				t.Fatalf("partition %d: candidates %v, partition 0: %v", p, cells, first)
			}
		}
		firsts[first[0]]++
		c.markFailed(first[0])
		if cells, _ := c.readCandidates(5); cells[0] == first[0] || cells[2] != first[0] {
			t.Fatalf("after %v failed: candidates %v", first[0], cells)
		}
	}
	for _, nid := range []proto.NodeID{s1, s2, s3} {
		if firsts[nid] < 5 {
			t.Errorf("storages preferred by 60 clients: %v", firsts)
		}
	}
}
