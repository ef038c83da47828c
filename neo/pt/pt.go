// Package pt is NEO's partition table, shared by the master (which decides
// it), storages and clients (which follow it).
//
// The table has NP rows, one per partition; a row holds at most one cell per
// storage, each with a state. An object belongs to partition oid mod NP, a
// transaction's metadata to partition tid mod NP (Partition is the one place
// that knows this). Cells that are UP_TO_DATE or FEEDING are readable; every
// cell of a row, whatever its state, receives writes.
//
// Every change gets a new ptid: the master increments it by exactly one per
// NotifyPartitionChanges; storages require exactly old+1, clients and
// admins only a larger one.
package pt

import (
	"fmt"
	"sort"

	"github.com/neozodb/neo/neo/proto"
)

// Cell is one copy of a partition on a storage.
type Cell struct {
	NID   proto.NodeID
	State proto.CellState
}

// Readable tells whether reads may go to the cell.
func (c Cell) Readable() bool {
	return c.State == proto.CellUpToDate || c.State == proto.CellFeeding
}

// Table is a partition table. The zero value is not usable: see New and
// FromRows. A Table is not safe for concurrent use; its owner locks.
type Table struct {
	PTid        proto.PTid // 0: no table yet (a new cluster)
	NumReplicas int        // extra copies wanted per partition
	rows        [][]Cell
}

// New returns an empty table (no cell, ptid 0) of np partitions.
func New(np, numReplicas int) *Table {
	return &Table{NumReplicas: numReplicas, rows: make([][]Cell, np)}
}

// FromRows builds a table from its wire form (SendPartitionTable,
// AnswerPartitionTable).
func FromRows(ptid proto.PTid, numReplicas uint32, rows [][]proto.CellInfo) *Table {
	t := New(len(rows), int(numReplicas))
	t.PTid = ptid
	for p, row := range rows {
		for _, c := range row {
			t.rows[p] = append(t.rows[p], Cell{c.NID, c.State})
		}
	}
	return t
}

// NP returns the number of partitions.
func (t *Table) NP() int { return len(t.rows) }

// Partition returns the partition of an oid or a tid (as a uint64).
func Partition(x uint64, np int) int { return int(x % uint64(np)) }

// Partition returns the partition of an oid or tid in this table.
func (t *Table) Partition(x uint64) int { return Partition(x, len(t.rows)) }

// Row returns the cells of partition p (not a copy: do not modify).
func (t *Table) Row(p int) []Cell { return t.rows[p] }

// Rows returns the table in wire form.
func (t *Table) Rows() [][]proto.CellInfo {
	out := make([][]proto.CellInfo, len(t.rows))
	for p, row := range t.rows {
		out[p] = make([]proto.CellInfo, len(row))
		for i, c := range row {
			out[p][i] = proto.CellInfo{NID: c.NID, State: c.State}
		}
	}
	return out
}

// Clone returns a deep copy.
func (t *Table) Clone() *Table {
	c := &Table{PTid: t.PTid, NumReplicas: t.NumReplicas, rows: make([][]Cell, len(t.rows))}
	for p, row := range t.rows {
		c.rows[p] = append([]Cell(nil), row...)
	}
	return c
}

// Cell returns the cell of nid in partition p.
func (t *Table) Cell(p int, nid proto.NodeID) (Cell, bool) {
	for _, c := range t.rows[p] {
		if c.NID == nid {
			return c, true
		}
	}
	return Cell{}, false
}

// Nodes returns the storages having at least one cell, sorted.
func (t *Table) Nodes() []proto.NodeID {
	seen := map[proto.NodeID]bool{}
	for _, row := range t.rows {
		for _, c := range row {
			seen[c.NID] = true
		}
	}
	return sortedIDs(seen)
}

func sortedIDs(m map[proto.NodeID]bool) []proto.NodeID {
	v := make([]proto.NodeID, 0, len(m))
	for id := range m {
		v = append(v, id)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v
}

// Filled tells whether every row has at least one cell.
func (t *Table) Filled() bool {
	for _, row := range t.rows {
		if len(row) == 0 {
			return false
		}
	}
	return len(t.rows) > 0
}

// Operational tells whether every partition has a readable cell on a
// running storage: the cluster can serve all data.
func (t *Table) Operational(running func(proto.NodeID) bool) bool {
	if len(t.rows) == 0 {
		return false
	}
	for _, row := range t.rows {
		ok := false
		for _, c := range row {
			if c.Readable() && running(c.NID) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// ReadableCells returns the readable cells of partition p.
func (t *Table) ReadableCells(p int) []Cell {
	var v []Cell
	for _, c := range t.rows[p] {
		if c.Readable() {
			v = append(v, c)
		}
	}
	return v
}

// set applies one change to the table.
func (t *Table) set(ch proto.CellChange) error {
	p := int(ch.Partition)
	if p < 0 || p >= len(t.rows) {
		return fmt.Errorf("partition %d out of range (np=%d)", p, len(t.rows))
	}
	row := t.rows[p]
	for i, c := range row {
		if c.NID == ch.NID {
			if ch.State == proto.CellDiscarded {
				t.rows[p] = append(row[:i:i], row[i+1:]...)
			} else {
				row[i].State = ch.State
			}
			return nil
		}
	}
	if ch.State != proto.CellDiscarded {
		t.rows[p] = append(row, Cell{ch.NID, ch.State})
	}
	return nil
}

// Update applies NotifyPartitionChanges received from the master. With
// strict (storages), the ptid must be exactly the next one; otherwise
// (clients, admins) any larger ptid is accepted. On error nothing changes.
func (t *Table) Update(msg *proto.NotifyPartitionChanges, strict bool) error {
	if strict && msg.PTid != t.PTid+1 || !strict && msg.PTid <= t.PTid {
		return fmt.Errorf("partition table: unexpected ptid %d after %d", msg.PTid, t.PTid)
	}
	c := t.Clone()
	for _, ch := range msg.Changes {
		if err := c.set(ch); err != nil {
			return fmt.Errorf("partition table: %w", err)
		}
	}
	c.PTid = msg.PTid
	c.NumReplicas = int(msg.NumReplicas)
	*t = *c
	return nil
}

// Commit applies changes decided by the master and returns the
// notification to broadcast, with the next ptid. Nothing is returned (nil)
// when there are no changes.
func (t *Table) Commit(changes []proto.CellChange) (*proto.NotifyPartitionChanges, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	msg := &proto.NotifyPartitionChanges{PTid: t.PTid + 1, NumReplicas: uint32(t.NumReplicas), Changes: changes}
	if err := t.Update(msg, true); err != nil {
		return nil, err
	}
	return msg, nil
}

// Outdate returns the changes that mark readable cells of storages that are
// not running as OUT_OF_DATE (FEEDING cells are dropped instead), as the
// master does when storages stop. A row whose readable cells are all on
// stopped storages keeps the cells of lost (if not NoNode) readable, so that
// a cluster whose last copy of a partition went away can restart with it.
func (t *Table) Outdate(running func(proto.NodeID) bool, lost proto.NodeID) []proto.CellChange {
	var changes []proto.CellChange
	for p, row := range t.rows {
		protected := lost
		for _, c := range row {
			if c.Readable() && running(c.NID) {
				protected = proto.NoNode
				break
			}
		}
		for _, c := range row {
			if !c.Readable() || running(c.NID) || c.NID == protected {
				continue
			}
			state := proto.CellOutOfDate
			if c.State == proto.CellFeeding {
				state = proto.CellDiscarded
			}
			changes = append(changes, proto.CellChange{Partition: uint32(p), NID: c.NID, State: state})
		}
	}
	return changes
}

// DropNode returns the changes that remove every cell of nid.
func (t *Table) DropNode(nid proto.NodeID) []proto.CellChange {
	var changes []proto.CellChange
	for p, row := range t.rows {
		for _, c := range row {
			if c.NID == nid {
				changes = append(changes, proto.CellChange{Partition: uint32(p), NID: nid, State: proto.CellDiscarded})
			}
		}
	}
	return changes
}
