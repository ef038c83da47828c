package zeo

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/neozodb/neo/zodb"
)

// Iteration runs on server-side iterators: iterator_start → iterator id,
// iterator_next per transaction, iterator_record_start (on the first record
// asked for) and iterator_record_next per record. The server forgets a
// transaction iterator that reached its end; record iterators, and
// transaction iterators dropped before their end, are released with
// iterator_gc after the next commit or abort, as ZEO's client does.

type iterState struct {
	mu      sync.Mutex
	c       *conn
	iid     int64
	started bool
	ended   bool
}

type txnIter struct {
	s           *Storage
	start, stop any
	st          *iterState
	cur         *dataIter
	err         error
}

type dataIter struct {
	it      *txnIter
	tid     zodb.Tid
	rid     int64
	started bool
	ended   bool
}

// Iterate returns an iterator over the transactions with tidMin ≤ tid ≤
// tidMax. tidMin 0 and tidMax ≥ zodb.TidMax are sent as "no bound".
func (s *Storage) Iterate(ctx context.Context, tidMin, tidMax zodb.Tid) zodb.ITxnIterator {
	it := &txnIter{s: s, st: &iterState{}}
	if tidMin != 0 {
		it.start = tidMin.Bytes()
	}
	if tidMax < zodb.TidMax {
		it.stop = tidMax.Bytes()
	}
	return it
}

// queueIteratorGC remembers server iterator ids to release.
func (s *Storage) queueIteratorGC(c *conn, ids ...int64) {
	s.mu.Lock()
	if s.cur == c {
		s.iterGC = append(s.iterGC, ids...)
	}
	s.mu.Unlock()
}

// sendIteratorGC releases the iterators queued for c.
func (s *Storage) sendIteratorGC(c *conn) {
	s.mu.Lock()
	ids := s.iterGC
	s.iterGC = nil
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	l := &list{}
	for _, id := range ids {
		l.items = append(l.items, id)
	}
	_ = c.async("iterator_gc", tuple{l})
}

func (it *txnIter) fail(err error) error {
	it.err = it.s.opErr("iterate", nil, err)
	return it.err
}

func (it *txnIter) NextTxn(ctx context.Context) (*zodb.TxnInfo, zodb.IDataIterator, error) {
	if it.err != nil {
		return nil, nil, it.err
	}
	st := it.st
	if !st.started {
		c, err := it.s.conn(ctx)
		if err != nil {
			return nil, nil, it.fail(err)
		}
		r, err := c.call(ctx, "iterator_start", tuple{it.start, it.stop}, nil)
		if err != nil {
			return nil, nil, it.fail(err)
		}
		iid, ok := intArg(r)
		if !ok {
			return nil, nil, it.fail(fmt.Errorf("iterator_start: bad reply %.100s", formatValue(r)))
		}
		st.mu.Lock()
		st.c, st.iid, st.started = c, iid, true
		st.mu.Unlock()
		// An iterator dropped before its end is released on the server.
		runtime.AddCleanup(it, func(st *iterState) {
			st.mu.Lock()
			defer st.mu.Unlock()
			if st.started && !st.ended {
				st.c.s.queueIteratorGC(st.c, st.iid)
			}
		}, st)
	}
	if st.ended {
		return nil, nil, io.EOF
	}
	if it.cur != nil && it.cur.started && !it.cur.ended {
		it.s.queueIteratorGC(st.c, it.cur.rid)
		it.cur.ended = true
	}
	it.cur = nil
	r, err := st.c.call(ctx, "iterator_next", tuple{st.iid}, nil)
	if err != nil {
		return nil, nil, it.fail(err)
	}
	if r == nil {
		st.mu.Lock()
		st.ended = true
		st.mu.Unlock()
		return nil, nil, io.EOF
	}
	t, ok := items(r)
	if !ok || len(t) != 5 {
		return nil, nil, it.fail(fmt.Errorf("iterator_next: bad reply %.200s", formatValue(r)))
	}
	tid, err := tidArg(t[0])
	if err != nil {
		return nil, nil, it.fail(fmt.Errorf("iterator_next: %w", err))
	}
	info := &zodb.TxnInfo{Tid: tid, Status: zodb.TxnComplete, User: textOrBytes(t[2]), Description: textOrBytes(t[3])}
	if sb := textOrBytes(t[1]); len(sb) == 1 {
		info.Status = zodb.TxnStatus(sb[0])
	}
	if ext, ok := t[4].(*dict); ok {
		if info.Extension, err = encodeExtension(ext); err != nil {
			return nil, nil, it.fail(err)
		}
	} else if t[4] != nil {
		return nil, nil, it.fail(fmt.Errorf("iterator_next: extension %.100s", formatValue(t[4])))
	}
	it.cur = &dataIter{it: it, tid: tid}
	return info, it.cur, nil
}

func (di *dataIter) NextData(ctx context.Context) (*zodb.DataInfo, error) {
	it := di.it
	if it.err != nil {
		return nil, it.err
	}
	if di.ended {
		return nil, io.EOF
	}
	c := it.st.c
	if !di.started {
		r, err := c.call(ctx, "iterator_record_start", tuple{it.st.iid, di.tid.Bytes()}, nil)
		if err != nil {
			return nil, it.fail(err)
		}
		rid, ok := intArg(r)
		if !ok {
			return nil, it.fail(fmt.Errorf("iterator_record_start: bad reply %.100s", formatValue(r)))
		}
		di.rid, di.started = rid, true
	}
	r, err := c.call(ctx, "iterator_record_next", tuple{di.rid}, nil)
	if err != nil {
		return nil, it.fail(err)
	}
	if r == nil {
		di.ended = true
		it.s.queueIteratorGC(c, di.rid)
		return nil, io.EOF
	}
	t, ok := items(r)
	if !ok || len(t) != 4 {
		return nil, it.fail(fmt.Errorf("iterator_record_next: bad reply %.200s", formatValue(r)))
	}
	oid, err := oidArg(t[0])
	if err != nil {
		return nil, it.fail(err)
	}
	tid, err := tidArg(t[1])
	if err != nil {
		return nil, it.fail(err)
	}
	rec := &zodb.DataInfo{Oid: oid, Tid: tid}
	if t[2] != nil {
		b, ok := t[2].([]byte)
		if !ok {
			return nil, it.fail(fmt.Errorf("iterator_record_next: data %.100s", formatValue(t[2])))
		}
		rec.Data = b
	}
	if rec.DataTid, err = optTid(t[3]); err != nil {
		return nil, it.fail(err)
	}
	return rec, nil
}
