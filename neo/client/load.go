package client

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// maxInflated bounds the size of an object record once inflated, so that
// a bad record cannot exhaust memory.
const maxInflated = 1 << 30

// checkObject verifies the checksum of an AnswerObject.
func checkObject(m proto.Msg) error {
	a, ok := m.(*proto.AnswerObject)
	if !ok {
		return fmt.Errorf("unexpected answer %T", m)
	}
	if !a.Compression.Ok {
		if len(a.Data) != 0 {
			return fmt.Errorf("object %v at %v: data without compression flag", a.Oid, a.Serial)
		}
		return nil
	}
	if sha1.Sum(a.Data) != a.Checksum {
		return fmt.Errorf("object %v at %v: checksum mismatch", a.Oid, a.Serial)
	}
	return nil
}

var zlibReaders sync.Pool

// inflate returns the object data as the application wrote it.
func inflate(compression uint8, data []byte) ([]byte, error) {
	switch compression {
	case 0:
		return data, nil
	case 1:
		// zlib readers are kept for reuse: each holds a 32 KiB window.
		var r io.ReadCloser
		if v := zlibReaders.Get(); v != nil {
			r = v.(io.ReadCloser)
			if err := r.(zlib.Resetter).Reset(bytes.NewReader(data), nil); err != nil {
				return nil, fmt.Errorf("zlib: %w", err)
			}
		} else {
			var err error
			if r, err = zlib.NewReader(bytes.NewReader(data)); err != nil {
				return nil, fmt.Errorf("zlib: %w", err)
			}
		}
		defer zlibReaders.Put(r)
		out, err := io.ReadAll(io.LimitReader(r, maxInflated+1))
		if err != nil {
			return nil, fmt.Errorf("zlib: %w", err)
		}
		if len(out) > maxInflated {
			return nil, fmt.Errorf("zlib: record inflates to more than %d bytes", maxInflated)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression %d", compression)
}

// loadAnswer asks a storage for an object record.
func (c *Client) loadAnswer(ctx context.Context, req *proto.AskObject) (*proto.AnswerObject, error) {
	p, err := c.partition(uint64(req.Oid))
	if err != nil {
		return nil, err
	}
	m, err := c.read(ctx, p, req, checkObject)
	if err != nil {
		if pe := peerError(err); pe != nil {
			switch pe.Code {
			case proto.OidDoesNotExist:
				return nil, &zodb.NoObjectError{Oid: req.Oid}
			case proto.OidNotFound:
				return nil, &zodb.NoDataError{Oid: req.Oid}
			}
		}
		return nil, err
	}
	return m.(*proto.AnswerObject), nil
}

// Load returns the revision of xid.Oid current at xid.At (NEO's loadBefore
// at xid.At+1), its serial and the serial of the next revision.
func (c *Client) Load(ctx context.Context, xid zodb.Xid) (data []byte, serial, nextSerial zodb.Tid, err error) {
	if err := c.alive(); err != nil {
		return nil, 0, 0, c.opError("load", xid, err)
	}
	before := xid.At
	if before < zodb.TidMax {
		before++
	} else {
		before = zodb.TidMax
	}
	a, err := c.loadAnswer(ctx, &proto.AskObject{Oid: xid.Oid, At: zodb.InvalidTid, Before: before})
	if err != nil {
		return nil, 0, 0, c.opError("load", xid, err)
	}
	if !a.Compression.Ok {
		return nil, 0, 0, c.opError("load", xid, &zodb.NoDataError{Oid: xid.Oid, DeletedAt: a.Serial})
	}
	data, err = inflate(a.Compression.V, a.Data)
	if err != nil {
		return nil, 0, 0, c.opError("load", xid, fmt.Errorf("object %v at %v: %w", a.Oid, a.Serial, err))
	}
	next := a.NextSerial
	if next == zodb.InvalidTid {
		next = 0
	}
	return data, a.Serial, next, nil
}

// loadSerial returns the data of oid's revision serial exactly (nil for a
// revision without data).
func (c *Client) loadSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) ([]byte, *proto.AnswerObject, error) {
	a, err := c.loadAnswer(ctx, &proto.AskObject{Oid: oid, At: serial, Before: zodb.InvalidTid})
	if err != nil {
		return nil, nil, err
	}
	if !a.Compression.Ok {
		return nil, a, nil
	}
	data, err := inflate(a.Compression.V, a.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("object %v at %v: %w", oid, serial, err)
	}
	return data, a, nil
}

// txnInformation asks for the metadata of transaction tid.
func (c *Client) txnInformation(ctx context.Context, tid zodb.Tid) (*proto.AnswerTransactionInformation, error) {
	p, err := c.partition(uint64(tid))
	if err != nil {
		return nil, err
	}
	var m proto.Msg
	for wait := 2 * time.Millisecond; ; wait *= 2 {
		m, err = c.read(ctx, p, &proto.AskTransactionInformation{Tid: tid}, nil)
		// A transaction the master reported committed may not be
		// unlocked on the storage yet: it soon will be.
		if pe := peerError(err); pe != nil && pe.Code == proto.TidNotFound && tid <= c.head() && wait < time.Second {
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		break
	}
	if err != nil {
		return nil, err
	}
	a, ok := m.(*proto.AnswerTransactionInformation)
	if !ok {
		return nil, fmt.Errorf("transaction %v: unexpected answer %T", tid, m)
	}
	return a, nil
}

func txnInfoOf(a *proto.AnswerTransactionInformation) *zodb.TxnInfo {
	status := zodb.TxnComplete
	if a.Packed {
		status = zodb.TxnPacked
	}
	return &zodb.TxnInfo{Tid: a.Tid, Status: status, User: a.User, Description: a.Description, Extension: a.Extension}
}

// History returns up to size revisions of oid, newest first.
func (c *Client) History(ctx context.Context, oid zodb.Oid, size int) ([]zodb.HistoryEntry, error) {
	if err := c.alive(); err != nil {
		return nil, c.opError("history", oid, err)
	}
	last := uint64(1 << 31)
	if size > 0 {
		last = uint64(size)
	}
	p, err := c.partition(uint64(oid))
	if err != nil {
		return nil, c.opError("history", oid, err)
	}
	m, err := c.read(ctx, p, &proto.AskObjectHistory{Oid: oid, First: 0, Last: last}, nil)
	if err != nil {
		if pe := peerError(err); pe != nil && (pe.Code == proto.OidNotFound || pe.Code == proto.OidDoesNotExist) {
			err = &zodb.NoObjectError{Oid: oid}
		}
		return nil, c.opError("history", oid, err)
	}
	a, ok := m.(*proto.AnswerObjectHistory)
	if !ok {
		return nil, c.opError("history", oid, fmt.Errorf("unexpected answer %T", m))
	}
	var v []zodb.HistoryEntry
	for _, h := range a.History {
		info, err := c.txnInformation(ctx, h.Serial)
		if err != nil {
			return nil, c.opError("history", oid, err)
		}
		v = append(v, zodb.HistoryEntry{TxnInfo: *txnInfoOf(info), Size: int(h.Size)})
	}
	return v, nil
}

// tidsBatch is how many tids are asked per partition at a time, as NEO/py.
const tidsBatch = 100

// txnIter lists committed transactions in [min, max] in tid order.
type txnIter struct {
	c        *Client
	min, max zodb.Tid
	batch    []zodb.Tid
	end      bool
}

func (c *Client) newTxnIter(min, max zodb.Tid) *txnIter {
	return &txnIter{c: c, min: min, max: max, end: min > max}
}

// next returns the next transaction and the oids it changed, or nil at the
// end.
func (it *txnIter) next(ctx context.Context) (*proto.AnswerTransactionInformation, []zodb.Oid, error) {
	for len(it.batch) == 0 {
		if it.end {
			return nil, nil, nil
		}
		if err := it.fetch(ctx); err != nil {
			return nil, nil, err
		}
	}
	tid := it.batch[0]
	it.batch = it.batch[1:]
	info, err := it.c.txnInformation(ctx, tid)
	if err != nil {
		return nil, nil, fmt.Errorf("transaction %v: %w", tid, err)
	}
	return info, info.Oids, nil
}

// fetch gets the next batch of tids from every partition.
func (it *txnIter) fetch(ctx context.Context) error {
	np, err := it.c.numPartitions()
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		tids []zodb.Tid
		full bool
		errs []error
		wg   sync.WaitGroup
	)
	for p := range np {
		wg.Go(func() {
			m, err := it.c.read(ctx, p, &proto.AskTIDsFrom{MinTid: it.min, MaxTid: it.max, Length: tidsBatch, Partition: uint32(p)}, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("tids of partition %d: %w", p, err))
				return
			}
			a, ok := m.(*proto.AnswerTIDsFrom)
			if !ok {
				errs = append(errs, fmt.Errorf("tids of partition %d: unexpected answer %T", p, m))
				return
			}
			tids = append(tids, a.Tids...)
			if len(a.Tids) >= tidsBatch {
				full = true
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	slices.Sort(tids)
	tids = slices.Compact(tids)
	if len(tids) > tidsBatch {
		tids = tids[:tidsBatch]
		full = true
	}
	// Keep only what is in range: a storage may be generous.
	tids = slices.DeleteFunc(tids, func(t zodb.Tid) bool { return t < it.min || t > it.max })
	it.batch = tids
	if !full || len(tids) == 0 {
		it.end = true
	} else {
		last := tids[len(tids)-1]
		if last >= it.max {
			it.end = true
		} else {
			it.min = last + 1
		}
	}
	return nil
}

// Iterate returns an iterator over the transactions with
// tidMin ≤ tid ≤ tidMax.
func (c *Client) Iterate(ctx context.Context, tidMin, tidMax zodb.Tid) zodb.ITxnIterator {
	if tidMax > zodb.TidMax {
		tidMax = zodb.TidMax
	}
	return &iterator{c: c, it: c.newTxnIter(tidMin, tidMax)}
}

type iterator struct {
	c   *Client
	it  *txnIter
	err error
}

func (i *iterator) NextTxn(ctx context.Context) (*zodb.TxnInfo, zodb.IDataIterator, error) {
	if i.err != nil {
		return nil, nil, i.err
	}
	if err := i.c.alive(); err != nil {
		i.err = i.c.opError("iterate", nil, err)
		return nil, nil, i.err
	}
	info, oids, err := i.it.next(ctx)
	if err != nil {
		i.err = i.c.opError("iterate", nil, err)
		return nil, nil, i.err
	}
	if info == nil {
		i.err = io.EOF
		return nil, nil, io.EOF
	}
	return txnInfoOf(info), &dataIter{c: i.c, tid: info.Tid, oids: oids}, nil
}

// prefetchDepth is how many loads of its transaction's records a data
// iterator keeps in flight: an iteration is bound by throughput, not by
// the round trip of each record.
const prefetchDepth = 32

// prefetch is a load sent ahead of NextData; call nil: to be loaded the
// ordinary way when its turn comes.
type prefetch struct {
	oid  zodb.Oid
	call *neonet.Call
}

type dataIter struct {
	c        *Client
	tid      zodb.Tid
	oids     []zodb.Oid // not sent yet
	inflight []prefetch // in oid order, before oids
}

// startLoads sends the next loads until prefetchDepth are in flight, each
// to one readable cell of its partition. A load that cannot be sent now
// is left to the ordinary path (read), which retries and reports.
func (d *dataIter) startLoads(ctx context.Context) {
	for len(d.inflight) < prefetchDepth && len(d.oids) > 0 {
		oid := d.oids[0]
		d.oids = d.oids[1:]
		pf := prefetch{oid: oid}
		if p, err := d.c.partition(uint64(oid)); err == nil {
			if cells, _ := d.c.readCandidates(p); len(cells) > 0 {
				if link, err := d.c.storage(ctx, cells[0]); err == nil {
					pf.call, _ = link.Start(ctx, &proto.AskObject{Oid: oid, At: d.tid, Before: zodb.InvalidTid})
				}
			}
		}
		d.inflight = append(d.inflight, pf)
	}
}

// takeLoad returns the answer of a prefetched load, or falls back to the
// ordinary path when it was not sent, failed or is refused.
func (d *dataIter) takeLoad(ctx context.Context, pf prefetch) ([]byte, zodb.Tid, error) {
	if pf.call != nil {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if d.c.cfg.ReadTimeout > 0 {
			wctx, cancel = context.WithTimeout(ctx, d.c.cfg.ReadTimeout)
		}
		m, err := pf.call.Wait(wctx)
		cancel()
		if err == nil && checkObject(m) == nil {
			a := m.(*proto.AnswerObject)
			if a.Oid == pf.oid && a.Serial == d.tid {
				var data []byte // nil: a deletion record
				switch {
				case !a.Compression.Ok:
				case a.Compression.V == 0:
					data = bytes.Clone(a.Data)
					if data == nil {
						data = []byte{}
					}
				default:
					data, err = inflate(a.Compression.V, a.Data)
				}
				dataTid := a.DataSerial
				pf.call.Release()
				if err != nil {
					return nil, 0, fmt.Errorf("object %v at %v: %w", pf.oid, d.tid, err)
				}
				return data, dataTid, nil
			}
		}
		pf.call.Release()
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		// Errors (no data, a storage down, a bad answer, ...) are
		// handled, and reported, by the ordinary path.
	}
	data, a, err := d.c.loadSerial(ctx, pf.oid, d.tid)
	if err != nil {
		return nil, 0, err
	}
	return data, a.DataSerial, nil
}

func (d *dataIter) NextData(ctx context.Context) (*zodb.DataInfo, error) {
	for {
		d.startLoads(ctx)
		if len(d.inflight) == 0 {
			return nil, io.EOF
		}
		pf := d.inflight[0]
		d.inflight[0] = prefetch{}
		d.inflight = d.inflight[1:]
		data, dataTid, err := d.takeLoad(ctx, pf)
		if err != nil {
			var nd *zodb.NoDataError
			var no *zodb.NoObjectError
			if errors.As(err, &nd) || errors.As(err, &no) {
				continue // packed away, or only checked by the transaction
			}
			return nil, d.c.opError("iterate", zodb.Xid{Oid: pf.oid, At: d.tid}, err)
		}
		if dataTid == zodb.InvalidTid {
			dataTid = 0
		}
		return &zodb.DataInfo{Oid: pf.oid, Tid: d.tid, Data: data, DataTid: dataTid}, nil
	}
}

// UndoLog returns descriptions of undoable transactions, newest first.
func (c *Client) UndoLog(ctx context.Context, first, last int, filter func(*zodb.UndoInfo) bool) ([]zodb.UndoInfo, error) {
	if err := c.alive(); err != nil {
		return nil, c.opError("undoLog", nil, err)
	}
	if last < 0 {
		last = first - last
	}
	if first < 0 {
		first = 0
	}
	if last <= first {
		return nil, nil
	}
	// Every storage tells its newest tids; with a filter, or skipped
	// entries, more may be needed: ask again for twice as many.
	for n := last; ; n *= 2 {
		tids, exhausted, err := c.newestTids(ctx, n)
		if err != nil {
			return nil, c.opError("undoLog", nil, err)
		}
		var v []zodb.UndoInfo
		skipped := 0
		for _, tid := range tids {
			a, err := c.txnInformation(ctx, tid)
			if err != nil {
				return nil, c.opError("undoLog", nil, err)
			}
			if a.Packed {
				exhausted = true
				break // packed transactions and what is before them are not undoable
			}
			ui := zodb.UndoInfo{TxnInfo: *txnInfoOf(a), Size: recordSize(a)}
			if filter != nil && !filter(&ui) {
				continue
			}
			if skipped < first {
				skipped++
				continue
			}
			v = append(v, ui)
			if len(v) >= last-first {
				return v, nil
			}
		}
		if exhausted {
			return v, nil
		}
	}
}

// recordSize estimates the size of a transaction's record, which NEO does
// not tell: its metadata and one oid per object.
func recordSize(a *proto.AnswerTransactionInformation) int64 {
	return int64(8 + len(a.User) + len(a.Description) + len(a.Extension) + 8*len(a.Oids))
}

// newestTids returns the n newest committed tids, newest first, merged from
// every storage with a readable cell; exhausted tells that there are no more.
func (c *Client) newestTids(ctx context.Context, n int) (tids []zodb.Tid, exhausted bool, err error) {
	set := map[zodb.Tid]bool{}
	exhausted = true
	for _, nid := range c.readableStorages() {
		link, err := c.storage(ctx, nid)
		if err != nil {
			return nil, false, err
		}
		m, err := link.Ask(ctx, &proto.AskTIDs{First: 0, Last: uint64(n), Partition: 0xffffffff})
		if err != nil {
			return nil, false, fmt.Errorf("storage %v: %w", nid, err)
		}
		a, ok := m.(*proto.AnswerTIDs)
		if !ok {
			return nil, false, fmt.Errorf("storage %v: unexpected answer %T", nid, m)
		}
		if len(a.Tids) >= n {
			exhausted = false
		}
		for _, t := range a.Tids {
			set[t] = true
		}
	}
	for t := range set {
		tids = append(tids, t)
	}
	slices.Sort(tids)
	slices.Reverse(tids)
	if len(tids) > n {
		tids = tids[:n]
	}
	return tids, exhausted, nil
}
