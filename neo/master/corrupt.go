package master

import (
	"slices"

	"github.com/neozodb/neo/neo/proto"
)

// partitionCorrupted marks the cells a replica check found different
// CORRUPTED, so that clients stop reading them and their storage drops
// that copy (NEO/py keeps this behind an experimental option, off by
// default, and only logs the report; a replica known to be wrong must not
// be served, so here it is on). A partition never loses its last readable
// copy this way: when no other readable cell of a running storage would
// remain, the report is only logged and the operator decides.
func (c *Core) partitionCorrupted(m *proto.NotifyPartitionCorrupted) {
	c.log.Warn("partition reported corrupted", "partition", m.Partition, "storages", m.NIDs)
	p := int(m.Partition)
	if p >= c.pt.NP() {
		return
	}
	var changes []proto.CellChange
	keep := 0
	for _, cell := range c.pt.ReadableCells(p) {
		switch {
		case slices.Contains(m.NIDs, cell.NID):
			changes = append(changes, proto.CellChange{Partition: m.Partition, NID: cell.NID, State: proto.CellCorrupted})
		case c.nodeRunning(cell.NID):
			keep++
		}
	}
	if len(changes) == 0 {
		return
	}
	if keep == 0 {
		c.log.Error("every readable copy of the partition was reported corrupted: left as it is", "partition", m.Partition)
		return
	}
	c.broadcastPartitionChanges(changes)
}
