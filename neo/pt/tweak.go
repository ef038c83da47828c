package pt

import (
	"errors"
	"sort"

	"github.com/neozodb/neo/neo/proto"
)

// ErrNoNodes is returned by Tweak when no storage would be left.
var ErrNoNodes = errors.New("Can't remove all nodes.")

// Tweak computes the changes that spread the partitions over nodes minus
// exclude, with NumReplicas+1 readable copies per partition where there are
// enough nodes. For a new table (PTid 0) the cells are created UP_TO_DATE;
// otherwise new cells are OUT_OF_DATE (they will be replicated) and cells
// that move away stay FEEDING until enough copies are readable elsewhere.
// Cells of excluded nodes are left as they are. The table itself is not
// changed: pass the result to Commit.
//
// The placement follows NEO/py's: partitions are dealt to k slots in turn
// (each partition to r consecutive slots), and each node gets one slot,
// preferring one that contains everything it already holds (so that
// tweaking twice changes nothing), else the one that makes it lose the
// fewest readable cells. Topology (devpath) is not taken into account.
func (t *Table) Tweak(nodes, exclude []proto.NodeID) ([]proto.CellChange, error) {
	excluded := map[proto.NodeID]bool{}
	for _, n := range exclude {
		excluded[n] = true
	}
	set := map[proto.NodeID]bool{}
	for _, n := range nodes {
		if !excluded[n] {
			set[n] = true
		}
	}
	part := sortedIDs(set)
	k := len(part)
	if k == 0 {
		return nil, ErrNoNodes
	}
	np := len(t.rows)
	r := min(t.NumReplicas+1, k)

	slots := make([]map[int]bool, k)
	for i := range slots {
		slots[i] = map[int]bool{}
	}
	i := 0
	for p := 0; p < np; p++ {
		for j := 0; j < r; j++ {
			slots[i%k][p] = true
			i++
		}
	}

	assign := t.assignKeeping(part, slots)
	if assign == nil {
		assign = t.assignByCost(part, slots)
	}
	return t.applyAssignment(part, slots, assign, excluded, r), nil
}

// assignKeeping matches every node to a slot holding all partitions the
// node has in non-FEEDING cells; nil if there is no such matching.
func (t *Table) assignKeeping(nodes []proto.NodeID, slots []map[int]bool) []int {
	fits := make([][]int, len(nodes))
	for ni, n := range nodes {
		for si, s := range slots {
			ok := true
			for p, row := range t.rows {
				for _, c := range row {
					if c.NID == n && c.State != proto.CellFeeding && !s[p] {
						ok = false
					}
				}
			}
			if ok {
				fits[ni] = append(fits[ni], si)
			}
		}
		if len(fits[ni]) == 0 {
			return nil
		}
	}
	assign := make([]int, len(nodes))
	used := make([]bool, len(slots))
	var dfs func(ni int) bool
	dfs = func(ni int) bool {
		if ni == len(nodes) {
			return true
		}
		for _, si := range fits[ni] {
			if used[si] {
				continue
			}
			used[si] = true
			assign[ni] = si
			if dfs(ni + 1) {
				return true
			}
			used[si] = false
		}
		return false
	}
	if !dfs(0) {
		return nil
	}
	return assign
}

type cost struct{ readable, other int }

func (a cost) less(b cost) bool {
	return a.readable < b.readable || a.readable == b.readable && a.other < b.other
}

// assignByCost gives each node the free slot that loses it the fewest
// cells, serving first the nodes with most to lose from a bad choice.
func (t *Table) assignByCost(nodes []proto.NodeID, slots []map[int]bool) []int {
	costs := make([][]cost, len(nodes))
	for ni, n := range nodes {
		costs[ni] = make([]cost, len(slots))
		for si, s := range slots {
			var c cost
			for p, row := range t.rows {
				if s[p] {
					continue
				}
				for _, cell := range row {
					if cell.NID == n {
						if cell.Readable() {
							c.readable++
						} else {
							c.other++
						}
					}
				}
			}
			costs[ni][si] = c
		}
	}
	spread := func(ni int) cost {
		best, worst := costs[ni][0], costs[ni][0]
		for _, c := range costs[ni] {
			if c.less(best) {
				best = c
			}
			if worst.less(c) {
				worst = c
			}
		}
		return cost{worst.readable - best.readable, worst.other - best.other}
	}
	order := make([]int, len(nodes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return spread(order[b]).less(spread(order[a])) })
	assign := make([]int, len(nodes))
	used := make([]bool, len(slots))
	for _, ni := range order {
		best := -1
		for si := range slots {
			if !used[si] && (best < 0 || costs[ni][si].less(costs[ni][best])) {
				best = si
			}
		}
		used[best] = true
		assign[ni] = best
	}
	return assign
}

// applyAssignment turns an assignment of slots to nodes into cell changes.
func (t *Table) applyAssignment(nodes []proto.NodeID, slots []map[int]bool, assign []int, excluded map[proto.NodeID]bool, r int) []proto.CellChange {
	fresh := t.PTid == 0
	newState := proto.CellOutOfDate
	if fresh {
		newState = proto.CellUpToDate
	}
	mine := map[proto.NodeID]map[int]bool{}
	for ni, n := range nodes {
		mine[n] = slots[assign[ni]]
	}
	var changes []proto.CellChange
	for p, row := range t.rows {
		readable := 0
		has := map[proto.NodeID]bool{}
		for _, c := range row {
			has[c.NID] = true
			if s := mine[c.NID]; s != nil && s[p] {
				if c.State == proto.CellFeeding {
					changes = append(changes, proto.CellChange{Partition: uint32(p), NID: c.NID, State: proto.CellUpToDate})
				}
				if c.Readable() {
					readable++
				}
			}
		}
		for _, n := range nodes {
			if mine[n][p] && !has[n] {
				changes = append(changes, proto.CellChange{Partition: uint32(p), NID: n, State: newState})
				if fresh {
					readable++
				}
			}
		}
		for _, c := range row {
			s := mine[c.NID]
			if excluded[c.NID] || s != nil && s[p] {
				continue
			}
			if c.Readable() && readable < r {
				readable++
				if c.State != proto.CellFeeding {
					changes = append(changes, proto.CellChange{Partition: uint32(p), NID: c.NID, State: proto.CellFeeding})
				}
				continue
			}
			changes = append(changes, proto.CellChange{Partition: uint32(p), NID: c.NID, State: proto.CellDiscarded})
		}
	}
	return changes
}
