package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// Invariants kept by the transaction manager (all under Storage.mu):
//
//   - storeLock[oid] = ttid: the write lock of oid, held by a registered
//     transaction that stored or checked oid (oid in its serial map), or
//     shared by lockless stores of a replicated partition.
//   - loadLock[oid] = ttid: reads of oid wait; only between lock and unlock.
//   - an oid of a partition being replicated is stored without lock
//     (lockless) and answered ZERO_TID.
//   - delayed requests are retried, in ttid order, each time a lock is
//     released.

// errDelay tells that a request must wait for a lock.
var errDelay = errors.New("delayed by a lock")

// errNonReadable tells that the oid's partition is not readable here.
var errNonReadable = errors.New("partition not readable")

// storedObject is one store of a transaction.
type storedObject struct {
	dataID     int64
	dataSerial zodb.Tid // undo back-pointer, InvalidTid when none
	// the data as sent, kept until the vote to hand it back on a relock
	// conflict (nil once voted, or for a record without data)
	hasData     bool
	compression uint8
	checksum    proto.Checksum
	data        []byte
}

// txn is a transaction in progress on this node.
type txn struct {
	ttid     zodb.Tid
	tid      zodb.Tid // final tid, 0 until locked
	nid      proto.NodeID
	link     *neonet.Link // client link, for NotifyDeadlock
	serial   map[zodb.Oid]zodb.Tid
	store    map[zodb.Oid]*storedObject
	lockless map[zodb.Oid]bool
	deadlock map[zodb.Oid]bool
	voted    int // 0: no, 1: objects only, 2: with metadata
	pack     bool
}

// replicatedState is a replicated partition: notify is true until
// NotifyReplicationDone is sent.
type replicatedState struct {
	tid    zodb.Tid
	notify bool
}

// delayed is a request waiting for a lock.
type delayed struct {
	ttid zodb.Tid
	run  func() error // errDelay: still waiting
}

type txnManager struct {
	s                *Storage
	txns             map[zodb.Tid]*txn
	storeLock        map[zodb.Oid]zodb.Tid
	loadLock         map[zodb.Oid]zodb.Tid
	replicatingParts map[uint32]bool
	// replicated: partitions whose replication finished, until their
	// cells are readable.
	replicated map[uint32]*replicatedState
	queue      []delayed
	executing  bool
	again      bool
	// released is closed (and replaced) whenever read locks are released.
	released chan struct{}
}

func newTxnManager(s *Storage) *txnManager {
	return &txnManager{
		s:                s,
		txns:             map[zodb.Tid]*txn{},
		storeLock:        map[zodb.Oid]zodb.Tid{},
		loadLock:         map[zodb.Oid]zodb.Tid{},
		replicatingParts: map[uint32]bool{},
		replicated:       map[uint32]*replicatedState{},
		released:         make(chan struct{}),
	}
}

func (tm *txnManager) partition(oid zodb.Oid) uint32 {
	return uint32(tm.s.partitionOf(uint64(oid)))
}

// register records a transaction of a client, if not known yet.
func (tm *txnManager) register(link *neonet.Link, nid proto.NodeID, ttid zodb.Tid) *txn {
	t, ok := tm.txns[ttid]
	if !ok {
		t = &txn{
			ttid: ttid, nid: nid, link: link,
			serial:   map[zodb.Oid]zodb.Tid{},
			store:    map[zodb.Oid]*storedObject{},
			lockless: map[zodb.Oid]bool{},
			deadlock: map[zodb.Oid]bool{},
		}
		tm.txns[ttid] = t
	}
	return t
}

// queueDelayed adds a request to retry when locks are released.
func (tm *txnManager) queueDelayed(ttid zodb.Tid, run func() error) {
	i := len(tm.queue)
	for i > 0 && tm.queue[i-1].ttid > ttid {
		i--
	}
	tm.queue = slices.Insert(tm.queue, i, delayed{ttid, run})
}

// executeQueued retries the delayed requests in ttid order.
func (tm *txnManager) executeQueued() {
	if tm.executing {
		tm.again = true
		return
	}
	tm.executing = true
	defer func() { tm.executing = false }()
	for {
		tm.again = false
		q := tm.queue
		tm.queue = nil
		var keep []delayed
		for _, d := range q {
			if err := d.run(); errors.Is(err, errDelay) {
				keep = append(keep, d)
			}
		}
		// requests queued meanwhile go after the retried ones, in order
		keep = append(keep, tm.queue...)
		slices.SortStableFunc(keep, func(a, b delayed) int { return cmpTid(a.ttid, b.ttid) })
		tm.queue = keep
		if !tm.again {
			return
		}
	}
}

// lockObject takes the write lock of oid for t, checking that serial is
// current. It returns whether a lock was taken (false: lockless), or a
// conflict serial, or errDelay / errNonReadable.
func (tm *txnManager) lockObject(ctx context.Context, t *txn, serial zodb.Tid, oid zodb.Oid) (locked bool, conflict zodb.Tid, err error) {
	conflict = zodb.InvalidTid
	p := tm.partition(oid)
	if tm.replicatingParts[p] {
		// Out of date: a readable cell elsewhere checks conflicts.
		t.lockless[oid] = true
		return false, conflict, nil
	}
	previous, hasPrevious := zodb.InvalidTid, false
	if l, ok := tm.storeLock[oid]; ok {
		other := tm.txns[l]
		if l < t.ttid || (other != nil && other.voted > 0) {
			// younger than the holder, or the holder voted: wait
			return false, conflict, errDelay
		}
		if t.lockless[oid] {
			return false, conflict, nil
		}
		if other != nil && other != t {
			// older than the holder, which did not vote: possible deadlock
			if other.lockless[oid] {
				t.lockless[oid] = true
				return false, conflict, nil
			}
			if !other.deadlock[oid] {
				other.deadlock[oid] = true
				tm.s.log.Info("deadlock", "oid", oid, "ttid", t.ttid, "holder", l)
				tm.s.send(other.link, &proto.NotifyDeadlock{TTid: l, Oid: oid})
			}
			return false, conflict, errDelay
		}
		// stored again by t: an undo must be based on its target
		st, ok := t.store[oid]
		if !ok || st.dataSerial == zodb.InvalidTid {
			return true, conflict, nil
		}
		previous, hasPrevious = st.dataSerial, true
	} else {
		if !tm.s.readable(int(p)) {
			if _, ok := tm.replicated[p]; !ok {
				return false, conflict, errNonReadable
			}
		}
		previous, hasPrevious, err = tm.s.db.LastSerial(ctx, oid)
		if err != nil {
			return false, conflict, err
		}
	}
	if hasPrevious && previous != serial {
		return false, previous, nil
	}
	tm.storeLock[oid] = t.ttid
	return true, conflict, nil
}

// unstore cancels the store (or check) of oid by t and returns the data
// that was stored, if any.
func (tm *txnManager) unstore(ctx context.Context, t *txn, oid zodb.Oid) (proto.Opt[proto.RelockData], error) {
	var data proto.Opt[proto.RelockData]
	if st, ok := t.store[oid]; ok {
		delete(t.store, oid)
		if st.hasData {
			data = proto.Some(proto.RelockData{Compression: st.compression, Checksum: st.checksum, Data: st.data})
		}
		if st.dataID != backend.NoData {
			if err := tm.s.db.ReleaseData(ctx, []int64{st.dataID}); err != nil {
				return data, err
			}
		}
	}
	delete(t.serial, oid)
	return data, nil
}

// storeObject handles AskStoreObject (after its checks); the answer is
// the conflict field of AnswerStoreObject.
func (tm *txnManager) storeObject(ctx context.Context, ttid, serial zodb.Tid, oid zodb.Oid, compression uint8, checksum proto.Checksum, data []byte, hasData bool, dataSerial zodb.Tid) (zodb.Tid, error) {
	t, ok := tm.txns[ttid]
	if !ok {
		return 0, nil // aborted meanwhile
	}
	locked, conflict, err := tm.lockObject(ctx, t, serial, oid)
	if errors.Is(err, errNonReadable) {
		tm.s.log.Info("store to an unassigned partition ignored", "oid", oid, "ttid", ttid)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if conflict != zodb.InvalidTid {
		return conflict, nil
	}
	if _, ok := t.serial[oid]; ok {
		if _, err := tm.unstore(ctx, t, oid); err != nil {
			return 0, err
		}
	}
	t.serial[oid] = serial
	st := &storedObject{dataID: backend.NoData, dataSerial: dataSerial, hasData: hasData}
	if hasData {
		st.compression, st.checksum, st.data = compression, checksum, data
	}
	var sum proto.Checksum
	if hasData {
		sum = checksum
	}
	id, err := tm.s.db.StoreData(ctx, ttid, oid, sum, data, compression, dataSerial)
	if errors.Is(err, backend.ErrUndoData) && !tm.s.readable(int(tm.partition(oid))) {
		// not readable here: the data sent by the client is used
		id, err = tm.s.db.StoreData(ctx, ttid, oid, sum, data, compression, zodb.InvalidTid)
	}
	if err != nil {
		// oid stays in t.serial, as the write lock the store took: it is
		// released with the transaction, which the client aborts.
		return 0, err
	}
	st.dataID = id
	t.store[oid] = st
	if !locked {
		return 0, nil
	}
	return zodb.InvalidTid, nil
}

// checkCurrentSerial handles AskCheckCurrentSerial.
func (tm *txnManager) checkCurrentSerial(ctx context.Context, ttid zodb.Tid, oid zodb.Oid, serial zodb.Tid) (zodb.Tid, error) {
	t, ok := tm.txns[ttid]
	if !ok {
		return 0, nil
	}
	locked, conflict, err := tm.lockObject(ctx, t, serial, oid)
	if errors.Is(err, errNonReadable) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if conflict != zodb.InvalidTid {
		return conflict, nil
	}
	t.serial[oid] = serial
	if !locked {
		return 0, nil
	}
	return zodb.InvalidTid, nil
}

// relockObject handles AskRelockObject: with unlock, the lock of oid is
// released first, letting the transaction that hit the deadlock proceed.
func (tm *txnManager) relockObject(ctx context.Context, ttid zodb.Tid, oid zodb.Oid, unlock bool) (proto.Opt[proto.RelockConflict], error) {
	var none proto.Opt[proto.RelockConflict]
	t, ok := tm.txns[ttid]
	if !ok {
		return none, nil
	}
	serial, ok := t.serial[oid]
	if !ok {
		return none, nil
	}
	if unlock {
		if t.voted > 0 {
			return none, protoErrorf("relock of %s by %s after its vote", oid, ttid)
		}
		delete(t.deadlock, oid)
		if tm.storeLock[oid] == ttid {
			delete(tm.storeLock, oid)
		}
		tm.executeQueued()
	}
	_, conflict, err := tm.lockObject(ctx, t, serial, oid)
	if errors.Is(err, errNonReadable) {
		return none, nil
	}
	if err != nil {
		return none, err
	}
	if conflict != zodb.InvalidTid {
		data, err := tm.unstore(ctx, t, oid)
		if err != nil {
			return none, err
		}
		return proto.Some(proto.RelockConflict{Serial: serial, ConflictSerial: conflict, Data: data}), nil
	}
	return none, nil
}

// vote writes the transaction to the temporary tables, durably.
func (tm *txnManager) vote(ctx context.Context, ttid zodb.Tid, meta *backend.TxnMeta) error {
	t, ok := tm.txns[ttid]
	if !ok {
		return protoErrorf("unknown ttid %s", ttid)
	}
	objs := make([]backend.TObject, 0, len(t.store))
	for oid, st := range t.store {
		objs = append(objs, backend.TObject{Oid: oid, DataID: st.dataID, DataSerial: st.dataSerial})
	}
	slices.SortFunc(objs, func(a, b backend.TObject) int {
		switch {
		case a.Oid < b.Oid:
			return -1
		case a.Oid > b.Oid:
			return 1
		}
		return 0
	})
	if meta != nil {
		if len(meta.Oids) >= 0x200000 || (meta.Pack != nil && len(meta.Pack.Oids) >= 0x200000) {
			return protoErrorf("Too many modified OIDs (the default storage backend has a limitation of 2^21-1)")
		}
		meta.TTid = ttid
	}
	if t.voted > 0 {
		// a second vote (the client retried): the first one is durable
		return nil
	}
	if err := tm.s.db.Vote(ctx, ttid, objs, meta); err != nil {
		return fmt.Errorf("vote %s: %w", ttid, err)
	}
	if meta != nil {
		t.voted = 2
		t.pack = meta.Pack != nil
	} else {
		t.voted = 1
	}
	for _, st := range t.store {
		st.data = nil // no relock after the vote
	}
	return nil
}

// lock handles AskLockInformation: read locks, final tid, durable.
func (tm *txnManager) lock(ctx context.Context, ttid, tid zodb.Tid, pack bool) error {
	t, ok := tm.txns[ttid]
	if !ok {
		return protoErrorf("unknown ttid %s", ttid)
	}
	if t.tid != 0 {
		return protoErrorf("transaction %s already locked", ttid)
	}
	if t.voted == 0 {
		return protoErrorf("transaction %s locked before its vote", ttid)
	}
	t.tid = tid
	tm.s.viewMu.Lock()
	for oid := range t.store {
		tm.loadLock[oid] = ttid
	}
	tm.s.viewMu.Unlock()
	if t.voted == 2 {
		if err := tm.s.db.Lock(ctx, ttid, tid, pack); err != nil {
			return fmt.Errorf("lock %s: %w", ttid, err)
		}
	}
	return nil
}

// unlock handles NotifyUnlockInformation.
func (tm *txnManager) unlock(ctx context.Context, ttid zodb.Tid) error {
	t, ok := tm.txns[ttid]
	if !ok {
		return protoErrorf("unknown ttid %s", ttid)
	}
	if t.tid == 0 {
		return protoErrorf("unlock of %s which is not locked", ttid)
	}
	if err := tm.s.db.Unlock(ctx, ttid, t.tid); err != nil {
		return fmt.Errorf("unlock %s: %w", ttid, err)
	}
	return tm.abort(ctx, ttid, true)
}

// abort forgets a transaction; a locked one only with evenIfLocked.
func (tm *txnManager) abort(ctx context.Context, ttid zodb.Tid, evenIfLocked bool) error {
	t, ok := tm.txns[ttid]
	if !ok {
		return nil
	}
	locked := t.tid != 0
	if locked && !evenIfLocked {
		return nil
	}
	if !locked {
		if err := tm.s.db.Abort(ctx, ttid); err != nil {
			return fmt.Errorf("abort %s: %w", ttid, err)
		}
	}
	// t.serial has every oid whose lock t may hold (stored, checked, or
	// a store that failed after taking the lock).
	tm.s.viewMu.Lock()
	for oid := range t.serial {
		if locked && tm.loadLock[oid] == ttid {
			delete(tm.loadLock, oid)
		}
		if tm.storeLock[oid] == ttid {
			delete(tm.storeLock, oid)
		}
	}
	tm.s.viewMu.Unlock()
	delete(tm.txns, ttid)
	if locked {
		close(tm.released)
		tm.released = make(chan struct{})
	}
	if len(tm.replicated) > 0 {
		tm.notifyReplicated(ctx)
	}
	tm.executeQueued()
	return nil
}

// abortFor aborts the transactions of a client (voted ones too with
// evenIfVoted), not the locked ones.
func (tm *txnManager) abortFor(ctx context.Context, nid proto.NodeID, evenIfVoted bool) error {
	var ttids []zodb.Tid
	for ttid, t := range tm.txns {
		if t.nid == nid && (evenIfVoted || t.voted == 0) {
			ttids = append(ttids, ttid)
		}
	}
	slices.SortFunc(ttids, cmpTid)
	for _, ttid := range ttids {
		if err := tm.abort(ctx, ttid, false); err != nil {
			return err
		}
	}
	return nil
}

// isLockedTid tells whether a transaction with a final tid ≤ tid is
// between lock and unlock.
func (tm *txnManager) isLockedTid(tid zodb.Tid) bool {
	for _, t := range tm.txns {
		if t.tid != 0 && t.tid <= tid {
			return true
		}
	}
	return false
}

// replicating marks partitions as being replicated: stores to them are
// lockless from now on.
func (tm *txnManager) replicating(partitions []uint32) {
	for _, p := range partitions {
		tm.replicatingParts[p] = true
		delete(tm.replicated, p)
	}
}

// readable tells that cells became readable.
func (tm *txnManager) readable(partitions []uint32) {
	for _, p := range partitions {
		delete(tm.replicated, p)
	}
}

// replicated tells that a partition is replicated up to tid.
func (tm *txnManager) replicatedUpTo(ctx context.Context, p uint32, tid zodb.Tid) {
	delete(tm.replicatingParts, p)
	tm.replicated[p] = &replicatedState{tid: tid, notify: true}
	tm.notifyReplicated(ctx)
}

// notifyReplicated turns lockless stores of replicated partitions into
// locks and, for the partitions where no oid is locklessly stored by two
// transactions, tells the master that replication is done.
func (tm *txnManager) notifyReplicated(ctx context.Context) {
	notify := map[uint32]bool{}
	for p, st := range tm.replicated {
		if st.notify {
			notify[p] = true
		}
	}
	if len(notify) == 0 {
		return
	}
	ttids := make([]zodb.Tid, 0, len(tm.txns))
	for ttid := range tm.txns {
		ttids = append(ttids, ttid)
	}
	slices.SortFunc(ttids, cmpTid)
	for _, ttid := range ttids {
		t := tm.txns[ttid]
		for oid := range t.lockless {
			p := tm.partition(oid)
			if st := tm.replicated[p]; st == nil || !st.notify {
				continue
			}
			if l, ok := tm.storeLock[oid]; ok && l != ttid {
				delete(notify, p) // locklessly stored by several transactions
			}
			tm.storeLock[oid] = ttid
		}
	}
	if len(notify) == 0 {
		return
	}
	ps := make([]uint32, 0, len(notify))
	for p := range notify {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	for _, p := range ps {
		st := tm.replicated[p]
		tm.s.send(tm.s.master, &proto.NotifyReplicationDone{Partition: p, Tid: st.tid})
		tm.s.log.Info("replication done", "partition", p, "tid", st.tid)
		st.notify = false
	}
	var oids []zodb.Oid
	for oid := range tm.storeLock {
		if notify[tm.partition(oid)] {
			oids = append(oids, oid)
		}
	}
	slices.Sort(oids)
	for _, oid := range oids {
		ttid := tm.storeLock[oid]
		delete(tm.storeLock, oid)
		t := tm.txns[ttid]
		if t == nil {
			continue
		}
		delete(t.lockless, oid)
		_, conflict, err := tm.lockObject(ctx, t, t.serial[oid], oid)
		if err != nil {
			tm.s.log.Error("relock after replication", "oid", oid, "ttid", ttid, "err", err)
			continue
		}
		if conflict != zodb.InvalidTid {
			if _, err := tm.unstore(ctx, t, oid); err != nil {
				tm.s.log.Error("cancel store after replication", "oid", oid, "ttid", ttid, "err", err)
			}
		}
	}
}

// discarded forgets everything about partitions the node lost.
func (tm *txnManager) discarded(ctx context.Context, partitions []uint32) error {
	drop := map[uint32]bool{}
	for _, p := range partitions {
		drop[p] = true
		delete(tm.replicatingParts, p)
		delete(tm.replicated, p)
	}
	tm.s.viewMu.Lock()
	for oid := range tm.loadLock {
		if drop[tm.partition(oid)] {
			delete(tm.loadLock, oid)
		}
	}
	tm.s.viewMu.Unlock()
	for oid := range tm.storeLock {
		if drop[tm.partition(oid)] {
			delete(tm.storeLock, oid)
		}
	}
	var ids []int64
	for _, t := range tm.txns {
		for oid := range t.serial {
			if !drop[tm.partition(oid)] {
				continue
			}
			delete(t.serial, oid)
			delete(t.lockless, oid)
			if st, ok := t.store[oid]; ok {
				delete(t.store, oid)
				if st.dataID != backend.NoData {
					ids = append(ids, st.dataID)
				}
			}
		}
	}
	if len(ids) > 0 {
		if err := tm.s.db.ReleaseData(ctx, ids); err != nil {
			return err
		}
	}
	close(tm.released)
	tm.released = make(chan struct{})
	tm.executeQueued()
	return nil
}
