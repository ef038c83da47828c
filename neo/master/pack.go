package master

import (
	"sort"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// packOrder is a pack order known to the master (§10.5).
type packOrder struct {
	proto.PackOrder
	waiting []packWaiter // WaitForPack requests to answer when completed
}

type packWaiter struct {
	client *node
	link   LinkID
	msgID  uint32
}

// packManager keeps the pack orders: created by commits, learnt from
// storages during verification, signed (automatically) and completed.
type packManager struct {
	orders       map[zodb.Tid]*packOrder
	maxCompleted zodb.Tid // InvalidTid: unknown
}

func newPackManager() *packManager {
	pm := &packManager{}
	pm.reset()
	return pm
}

func (pm *packManager) reset() {
	pm.orders = map[zodb.Tid]*packOrder{}
	pm.maxCompleted = zodb.InvalidTid
}

// load merges orders returned by storages (AnswerPackOrders).
func (pm *packManager) load(orders []proto.PackOrder) {
	for _, o := range orders {
		p := pm.orders[o.PackID]
		if p == nil {
			pm.orders[o.PackID] = &packOrder{PackOrder: o}
			if pm.maxCompleted != zodb.InvalidTid && pm.maxCompleted > o.PackID {
				pm.maxCompleted = o.PackID - 1
			}
		} else if !p.Approved.Ok {
			p.Approved = o.Approved
		}
	}
}

// add records the pack order of a transaction being committed with tid;
// it tells whether the order is approved automatically (no order is still
// unsigned).
func (pm *packManager) add(tid zodb.Tid, info proto.PackInfo) bool {
	auto := true
	for _, p := range pm.orders {
		if !p.Approved.Ok {
			auto = false
			break
		}
	}
	o := proto.PackOrder{PackID: tid, Partial: info.Oids.Ok && len(info.Oids.V) > 0, Oids: info.Oids, PackTid: info.PackTid}
	if auto {
		o.Approved = proto.Some(true)
	}
	pm.orders[tid] = &packOrder{PackOrder: o}
	return auto
}

func (pm *packManager) sorted() []*packOrder {
	v := make([]*packOrder, 0, len(pm.orders))
	for _, p := range pm.orders {
		v = append(v, p)
	}
	sort.Slice(v, func(i, j int) bool { return v[i].PackID < v[j].PackID })
	return v
}

// ordersFrom answers a storage's AskPackOrders: the first approved order
// with an id ≥ min, if any.
func (pm *packManager) ordersFrom(min zodb.Tid) []proto.PackOrder {
	for _, p := range pm.sorted() {
		if p.PackID >= min && p.Approved.Ok && p.Approved.V {
			return []proto.PackOrder{p.PackOrder}
		}
	}
	return []proto.PackOrder{}
}

// approvedRejected returns the ids of signed orders from min on (the last
// completed id counting as approved).
func (pm *packManager) approvedRejected(min zodb.Tid) (approved, rejected []zodb.Tid) {
	approved, rejected = []zodb.Tid{}, []zodb.Tid{}
	if pm.maxCompleted != zodb.InvalidTid && pm.maxCompleted != 0 && min <= pm.maxCompleted {
		approved = append(approved, pm.maxCompleted)
	}
	for _, p := range pm.sorted() {
		if p.PackID < min || !p.Approved.Ok {
			continue
		}
		if p.Approved.V {
			approved = append(approved, p.PackID)
		} else {
			rejected = append(rejected, p.PackID)
		}
	}
	return approved, rejected
}

// completed forgets the orders up to id, answering who waited for them.
func (c *Core) packCompleted(id zodb.Tid) {
	pm := c.packs
	for _, p := range pm.sorted() {
		if p.PackID > id {
			break
		}
		delete(pm.orders, p.PackID)
		for _, w := range p.waiting {
			if w.client.link == w.link {
				c.reply(w.link, w.msgID, &proto.WaitedForPack{})
			}
		}
		if pm.maxCompleted == zodb.InvalidTid || pm.maxCompleted < p.PackID {
			pm.maxCompleted = p.PackID
		}
	}
}

// updateCompletedPack takes the smallest completed pack id over the
// storages having readable cells.
func (c *Core) updateCompletedPack() {
	min := zodb.InvalidTid
	for _, n := range c.readableStorages() {
		if n.completedPack == 0 {
			continue
		}
		if min == zodb.InvalidTid || n.completedPack < min {
			min = n.completedPack
		}
	}
	if min != zodb.InvalidTid {
		c.packCompleted(min)
	}
}

func (pm *packManager) waitForPack(n *node, msgID uint32, id zodb.Tid) bool {
	p := pm.orders[id]
	if p == nil {
		return false
	}
	p.waiting = append(p.waiting, packWaiter{client: n, link: n.link, msgID: msgID})
	return true
}

func (pm *packManager) clientLost(n *node) {
	for _, p := range pm.orders {
		w := p.waiting[:0]
		for _, x := range p.waiting {
			if x.client != n {
				w = append(w, x)
			}
		}
		p.waiting = w
	}
}

// oldPackRequest is a storage's AskPackOrders for orders older than the
// master remembers (NEO/py's RequestOld): the orders are first asked to
// storages with readable cells of every partition.
type oldPackRequest struct {
	caller   *node // the storage asking; nil once gone
	link     LinkID
	msgID    uint32
	packID   zodb.Tid
	offsets  map[int]bool           // partitions not answered for yet
	querying map[proto.NodeID][]int // storages asked, and for which partitions
	orders   []proto.PackOrder
}

// askPackOrders answers a storage's AskPackOrders: from memory, or after
// asking the storages for old orders.
func (c *Core) askPackOrders(n *node, ev EvRecv, min zodb.Tid) {
	pm := c.packs
	if pm.maxCompleted == zodb.InvalidTid || pm.maxCompleted < min {
		c.reply(ev.Link, ev.MsgID, &proto.AnswerPackOrders{Orders: pm.ordersFrom(min)})
		return
	}
	r := &oldPackRequest{caller: n, link: ev.Link, msgID: ev.MsgID, packID: min,
		offsets: map[int]bool{}, querying: map[proto.NodeID][]int{}}
	for p := 0; p < c.pt.NP(); p++ {
		r.offsets[p] = true
	}
	c.oldPacks = append(c.oldPacks, r)
	c.oldPackAsk(r)
}

// oldPackAsk asks storages for the partitions nobody is asked for yet.
func (c *Core) oldPackAsk(r *oldPackRequest) {
	readable := map[proto.NodeID][]int{}
	for p := range r.offsets {
		for _, cell := range c.pt.ReadableCells(p) {
			readable[cell.NID] = append(readable[cell.NID], p)
		}
	}
	todo := map[int]bool{}
	for p := range r.offsets {
		todo[p] = true
	}
	for _, ps := range r.querying {
		for _, p := range ps {
			delete(todo, p)
		}
	}
	for p := 0; p < c.pt.NP(); p++ {
		if !todo[p] {
			continue
		}
		var target *node
		for _, cell := range c.pt.ReadableCells(p) {
			if n := c.nodeByID(cell.NID); n != nil && n.identified() {
				if _, busy := r.querying[n.nid]; !busy {
					target = n
					break
				}
			}
		}
		if target == nil {
			continue // asked again when a storage is lost or answers
		}
		var mine []int
		for _, q := range readable[target.nid] {
			if todo[q] {
				mine = append(mine, q)
				delete(todo, q)
			}
		}
		r.querying[target.nid] = mine
		c.nextTag++
		c.asks[c.nextTag] = ask{link: target.link, phase: c.phase, op: c.operation, old: r}
		if p := c.peers[target.link]; p != nil {
			p.asking++
		}
		c.out = append(c.out, ActAsk{Link: target.link, Msg: &proto.AskPackOrders{MinPackID: r.packID}, Tag: c.nextTag})
	}
}

// oldPackAnswer takes a storage's answer for an old pack request.
func (c *Core) oldPackAnswer(r *oldPackRequest, n *node, m *proto.AnswerPackOrders) {
	if r.caller == nil {
		return
	}
	for _, p := range r.querying[n.nid] {
		delete(r.offsets, p)
	}
	delete(r.querying, n.nid)
	r.orders = append(r.orders, m.Orders...)
	if len(r.offsets) > 0 {
		c.oldPackAsk(r)
		return
	}
	c.removeOldPack(r)
	pm := c.packs
	pm.maxCompleted = r.packID - 1
	pm.load(r.orders)
	if r.caller.link == r.link {
		c.reply(r.link, r.msgID, &proto.AnswerPackOrders{Orders: pm.ordersFrom(r.packID)})
	}
	c.updateCompletedPack()
}

func (c *Core) removeOldPack(r *oldPackRequest) {
	for i, x := range c.oldPacks {
		if x == r {
			c.oldPacks = append(c.oldPacks[:i:i], c.oldPacks[i+1:]...)
			return
		}
	}
}

// oldPackStorageLost forgets requests of a lost storage and asks others
// what it was asked.
func (c *Core) oldPackStorageLost(n *node) {
	for _, r := range append([]*oldPackRequest(nil), c.oldPacks...) {
		if r.caller == n {
			r.caller = nil
			c.removeOldPack(r)
			continue
		}
		if _, ok := r.querying[n.nid]; ok {
			delete(r.querying, n.nid)
			c.oldPackAsk(r)
		}
	}
}
