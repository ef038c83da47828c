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

func (c *Core) packAnswerOrders(*node, *proto.AnswerPackOrders) {}
