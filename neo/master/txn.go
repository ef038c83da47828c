package master

import (
	"errors"
	"fmt"
	"time"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// txn is a pending transaction (§8).
type txn struct {
	ttid      zodb.Tid
	client    *node // nil: orphaned (its client left during finish)
	readiness int   // storage readiness when it began
	failed    map[proto.NodeID]bool

	// set by prepare (AskFinishTransaction)
	tid        zodb.Tid // 0: not prepared
	oids       []zodb.Oid
	partitions []uint32 // of oids and deleted (InvalidatePartitions)
	msgID      uint32   // of AskFinishTransaction
	involved   map[proto.NodeID]bool
	locking    map[proto.NodeID]bool
	lockPTid   proto.PTid // the partition table when the locks were asked
	pack       bool       // carries an auto-approved pack order
	packInfo   proto.PackInfo

	// nodes to tell when it ends: storages (NotifyTransactionFinished),
	// clients waiting in AskFinalTID (the msg id of their request)
	notify map[proto.NodeID]uint32
}

// txnManager keeps the pending transactions, the commit queue and the tid
// and oid counters.
type txnManager struct {
	c        *Core
	txns     map[zodb.Tid]*txn
	queue    []zodb.Tid // ttids of prepared transactions, in increasing tid order
	lastOid  zodb.Oid
	firstTid zodb.Tid
	gotFirst bool // a transaction was committed since reset (firstTid set)
}

func newTxnManager(c *Core) *txnManager {
	tm := &txnManager{c: c}
	tm.reset()
	return tm
}

func (tm *txnManager) reset() {
	tm.txns = map[zodb.Tid]*txn{}
	tm.queue = nil
	tm.lastOid = 0
	tm.firstTid = zodb.TidMax
	tm.gotFirst = false
}

func (tm *txnManager) hasPending() bool { return len(tm.txns) > 0 }

func (tm *txnManager) setFirstTid(tid zodb.Tid) {
	if tid < tm.firstTid {
		tm.firstTid = tid
	}
}

func (tm *txnManager) setLastOid(oid zodb.Oid) {
	if oid != zodb.InvalidOid && oid > tm.lastOid {
		tm.lastOid = oid
	}
}

func (tm *txnManager) newOids(n uint32) []zodb.Oid {
	oids := make([]zodb.Oid, n)
	for i := range oids {
		tm.lastOid++
		oids[i] = tm.lastOid
	}
	return oids
}

// lastTID is NEO/py's getLastTID (§3.5): the greatest pending ttid or
// prepared tid, else the last committed tid.
func (tm *txnManager) lastTID() zodb.Tid {
	if len(tm.txns) == 0 {
		return tm.c.lastTid
	}
	var max zodb.Tid
	for ttid := range tm.txns {
		if ttid > max {
			max = ttid
		}
	}
	if n := len(tm.queue); n > 0 {
		if t := tm.txns[tm.queue[n-1]]; t != nil && t.tid > max {
			max = t.tid
		}
	}
	return max
}

// errConcurrentTid is NEO/py's message, sent as is in an Error packet.
//
//lint:ignore ST1005 the text is NEO/py's
var errConcurrentTid = errors.New("There can't be concurrent transactions when a TID is specified for any of them.")

// nextTID is NEO/py's _nextTID (§3.5): a tid from the clock, greater than
// every tid issued so far; with a ttid, ≡ ttid mod np.
func (tm *txnManager) nextTID(now time.Time, ttid zodb.Tid, np int) zodb.Tid {
	tid := zodb.TidFromTime(now)
	min := tm.lastTID()
	if tid <= min {
		if ttid != zodb.InvalidTid && ttid == min {
			return ttid
		}
		tid = addTID(min, 1)
	}
	if ttid != zodb.InvalidTid {
		want := int64(uint64(ttid) % uint64(np))
		delta := want - int64(uint64(tid)%uint64(np))
		if delta != 0 {
			tid = addTID(tid, delta)
			if tid <= min {
				tid = addTID(tid, int64(np))
			}
		}
	}
	return tid
}

// begin starts a transaction (§8.2); tid is InvalidTid unless the client
// asks for a specific one.
func (tm *txnManager) begin(client *node, readiness int, tid zodb.Tid) (zodb.Tid, error) {
	if tid == zodb.InvalidTid {
		if len(tm.txns) == 1 && len(tm.queue) == 1 {
			if t := tm.txns[tm.queue[0]]; t != nil && t.tid == 0 {
				return 0, errConcurrentTid
			}
		}
		tid = tm.nextTID(tm.c.now, zodb.InvalidTid, 0)
	} else if len(tm.txns) > 0 {
		return 0, errConcurrentTid
	} else if tid <= tm.c.lastTid {
		return 0, errors.New("new TID must be greater than the last committed one")
	} else {
		tm.queue = append(tm.queue, tid)
	}
	tm.txns[tid] = &txn{ttid: tid, client: client, readiness: readiness, notify: map[proto.NodeID]uint32{}}
	return tid, nil
}

func (tm *txnManager) get(ttid zodb.Tid) (*txn, error) {
	t := tm.txns[ttid]
	if t == nil {
		return nil, fmt.Errorf("unknown ttid %s", ttid)
	}
	return t, nil
}

func (tm *txnManager) inQueue(ttid zodb.Tid) bool {
	for _, x := range tm.queue {
		if x == ttid {
			return true
		}
	}
	return false
}

// remove forgets a transaction (aborted).
func (tm *txnManager) remove(ttid zodb.Tid) {
	for i, x := range tm.queue {
		if x == ttid {
			tm.queue = append(tm.queue[:i:i], tm.queue[i+1:]...)
			break
		}
	}
	delete(tm.txns, ttid)
	tm.c.runDelayed()
}

// lock records that storage nid locked ttid, and commits what can be.
func (tm *txnManager) lock(ttid zodb.Tid, nid proto.NodeID) {
	t := tm.txns[ttid]
	if t == nil || t.tid == 0 {
		tm.c.log.Warn("lock answer for an unknown transaction", "ttid", ttid, "storage", nid)
		return
	}
	delete(t.locking, nid)
	if len(t.locking) == 0 && len(tm.queue) > 0 && tm.queue[0] == ttid {
		tm.unlockPending()
	}
}

// storageLost stops waiting for the locks of a lost storage.
func (tm *txnManager) storageLost(nid proto.NodeID) {
	unlock := false
	for ttid, t := range tm.txns {
		delete(t.notify, nid)
		if t.tid != 0 {
			delete(t.locking, nid)
			delete(t.involved, nid)
			if len(t.locking) == 0 && len(tm.queue) > 0 && tm.queue[0] == ttid {
				unlock = true
			}
		}
	}
	if unlock {
		tm.unlockPending()
	}
}

// unlockPending commits the transactions at the head of the commit queue
// that are fully locked, in tid order.
func (tm *txnManager) unlockPending() {
	for len(tm.queue) > 0 {
		t := tm.txns[tm.queue[0]]
		if t == nil {
			tm.queue = tm.queue[1:]
			continue
		}
		if len(t.locking) > 0 {
			break
		}
		tm.queue = tm.queue[1:]
		delete(tm.txns, t.ttid)
		if !tm.gotFirst {
			tm.gotFirst = true
			tm.setFirstTid(t.tid)
		}
		tm.c.transactionCommitted(t)
	}
	tm.c.runDelayed()
}

// addTID adds n to the low 32 bits of tid, carrying whole minutes into the
// date part as NEO/py's addTID does.
func addTID(tid zodb.Tid, n int64) zodb.Tid {
	hi := uint32(tid >> 32)
	lo := int64(uint32(tid)) + n
	carry := floorDiv(lo, 1<<32)
	lo -= carry << 32
	if carry != 0 {
		minute := int(hi % 60)
		h := hi / 60
		hour := int(h % 24)
		h /= 24
		day := int(h%31) + 1
		h /= 31
		month := int(h%12) + 1
		year := int(h/12) + 1900
		t := time.Date(year, time.Month(month), day, hour, minute, 0, 0, time.UTC)
		t = t.Add(time.Duration(carry) * time.Minute)
		hi = uint32(((((t.Year()-1900)*12+int(t.Month())-1)*31+t.Day()-1)*24+t.Hour())*60 + t.Minute())
	}
	return zodb.Tid(uint64(hi)<<32 | uint64(lo))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
