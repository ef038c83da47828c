package mem

import (
	"context"
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Pack removes the revisions that were no longer current at packTid, the
// objects deleted by then, and with gc the objects not reachable at packTid
// from the root (oid 0) through the persistent references of their
// records. Revisions committed after packTid are kept. Transactions up to
// packTid are marked packed (TxnPacked), and those left without records are
// removed; the undo log stops at them.
//
// A packTid after the last transaction packs up to the last transaction.
// With gc, every object record reachable at packTid must be a ZODB pickle
// (see zodb.PickleRefs), or Pack fails and changes nothing.
func (d *Driver) Pack(ctx context.Context, packTid zodb.Tid, gc bool) error {
	if err := d.check(ctx); err != nil {
		return d.opErr("pack", packTid, err)
	}
	if d.readOnly {
		return d.opErr("pack", packTid, zodb.ErrReadOnly)
	}
	if packTid == 0 {
		return d.opErr("pack", packTid, fmt.Errorf("pack at tid 0"))
	}
	db := d.db
	select {
	case db.commitLock <- struct{}{}:
	case <-ctx.Done():
		return d.opErr("pack", packTid, ctx.Err())
	case <-d.closed:
		return d.opErr("pack", packTid, zodb.ErrClosed)
	}
	defer func() { <-db.commitLock }()

	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.pack(min(packTid, db.last), gc); err != nil {
		return d.opErr("pack", packTid, err)
	}
	return nil
}

// pack does Pack's work with db.mu and the commit lock held.
func (db *database) pack(packTid zodb.Tid, gc bool) error {
	// current[oid] = index of the revision current at packTid, for the
	// objects that have data then.
	current := map[zodb.Oid]int{}
	for oid, revs := range db.objs {
		if i := findRev(revs, packTid); i >= 0 && revs[i].data != nil {
			current[oid] = i
		}
	}
	if gc {
		reachable := map[zodb.Oid]bool{}
		queue := []zodb.Oid{0}
		for len(queue) > 0 {
			oid := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			i, ok := current[oid]
			if !ok || reachable[oid] {
				continue
			}
			reachable[oid] = true
			r := db.objs[oid][i]
			refs, err := zodb.PickleRefs(r.data)
			if err != nil {
				return fmt.Errorf("gc: record %v: %w", zodb.Xid{Oid: oid, At: r.serial}, err)
			}
			queue = append(queue, refs...)
		}
		for oid := range current {
			if !reachable[oid] {
				delete(current, oid)
			}
		}
	}

	// Object revisions: the one current at packTid (if kept), then the
	// later ones. A later revision reusing the data of a removed one
	// keeps its data, but no longer names the removed revision.
	type xkey struct {
		oid zodb.Oid
		tid zodb.Tid
	}
	kept := map[xkey]bool{} // revisions up to packTid that stay
	fixData := map[xkey]bool{}
	for oid, revs := range db.objs {
		first := findRev(revs, packTid) + 1 // first revision after packTid
		var nrevs []revision
		if i, ok := current[oid]; ok {
			r := revs[i]
			r.dataTid = 0
			nrevs = append(nrevs, r)
			kept[xkey{oid, r.serial}] = true
		}
		for _, r := range revs[first:] {
			if r.dataTid != 0 && r.dataTid <= packTid && !kept[xkey{oid, r.dataTid}] {
				r.dataTid = 0
				fixData[xkey{oid, r.serial}] = true
			}
			nrevs = append(nrevs, r)
		}
		if len(nrevs) == 0 {
			delete(db.objs, oid)
		} else {
			db.objs[oid] = nrevs
		}
	}

	// Transactions.
	var txns []*txnRecord
	for _, t := range db.txns {
		tid := t.info.Tid
		if tid <= packTid {
			var recs []zodb.DataInfo
			for _, r := range t.recs {
				if kept[xkey{r.Oid, tid}] {
					r.DataTid = 0
					recs = append(recs, r)
				}
			}
			if len(recs) == 0 {
				continue
			}
			info := t.info
			info.Status = zodb.TxnPacked
			txns = append(txns, &txnRecord{info: info, recs: recs, size: recordSize(&info, recs)})
			continue
		}
		changed := false
		for _, r := range t.recs {
			if fixData[xkey{r.Oid, tid}] {
				changed = true
			}
		}
		if changed {
			recs := append([]zodb.DataInfo(nil), t.recs...)
			for i, r := range recs {
				if fixData[xkey{r.Oid, tid}] {
					recs[i].DataTid = 0
				}
			}
			t = &txnRecord{info: t.info, recs: recs, size: recordSize(&t.info, recs)}
		}
		txns = append(txns, t)
	}
	db.txns = txns
	db.undoIdx = make(map[zodb.Tid]*txnRecord, len(txns))
	for _, t := range txns {
		db.undoIdx[t.info.Tid] = t
	}
	return nil
}
