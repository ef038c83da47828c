package fs1

import (
	"context"
	"errors"
	"io"

	"github.com/neozodb/neo/zodb"
)

// Iterate returns an iterator over the committed transactions with
// tidMin ≤ tid ≤ tidMax, in file order. Transactions with status 'u' are
// skipped. Each record's DataTid is the tid of the record its backpointer
// points to, and Data the data at the end of the backpointer chain (nil for
// a deletion).
func (s *FileStorage) Iterate(ctx context.Context, tidMin, tidMax zodb.Tid) zodb.ITxnIterator {
	return &txnIter{s: s, tidMin: tidMin, tidMax: tidMax, pos: -1}
}

type txnIter struct {
	s              *FileStorage
	tidMin, tidMax zodb.Tid
	gen            int
	pos            int64 // next transaction; -1 before the start
	done           bool
	err            error
	data           *dataIter
}

type dataIter struct {
	it       *txnIter
	th       *TxnHeader
	pos      int64
	gen      int
	err      error
	finished bool
}

func (it *txnIter) fail(err error) error {
	it.err = it.s.opErr("iterate", nil, err)
	return it.err
}

func (it *txnIter) NextTxn(ctx context.Context) (*zodb.TxnInfo, zodb.IDataIterator, error) {
	if it.err != nil {
		return nil, nil, it.err
	}
	if it.data != nil {
		it.data.finished = true
		it.data = nil
	}
	if it.done {
		return nil, nil, io.EOF
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s := it.s
	if err := s.rlock(); err != nil {
		return nil, nil, it.fail(err)
	}
	defer s.mu.RUnlock()
	if it.pos < 0 {
		it.pos = FileHeaderSize
		it.gen = s.gen
		if it.tidMin > s.lastTid || it.tidMin > it.tidMax {
			it.done = true
			return nil, nil, io.EOF
		}
		if it.tidMin > 0 {
			pos, err := s.skipToTid(it.tidMin)
			if err != nil {
				return nil, nil, it.fail(err)
			}
			it.pos = pos
		}
	}
	if it.gen != s.gen {
		return nil, nil, it.fail(errors.New("storage was packed during iteration"))
	}
	end := s.index.TopPos
	for n := 0; ; n++ {
		if n%4096 == 4095 {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
		}
		th, err := ReadTxnHeader(s.file, it.pos, end, 0)
		if err == io.EOF {
			it.done = true
			return nil, nil, io.EOF
		}
		if err != nil {
			return nil, nil, it.fail(err)
		}
		if th.Status == zodb.TxnInprogress {
			return nil, nil, it.fail(fmtErr(th.Pos, nil, "unfinished transaction inside the committed part of the file"))
		}
		it.pos = th.NextPos()
		if th.Tid > it.tidMax {
			it.done = true
			return nil, nil, io.EOF
		}
		if th.Tid < it.tidMin || th.Status == zodb.TxnUndone {
			continue
		}
		th, err = ReadTxnHeader(s.file, th.Pos, end, LoadMeta|CheckTrailer)
		if err != nil {
			return nil, nil, it.fail(err)
		}
		it.data = &dataIter{it: it, th: th, pos: th.DataPos(), gen: it.gen}
		return th.Info(), it.data, nil
	}
}

func (d *dataIter) NextData(ctx context.Context) (*zodb.DataInfo, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.finished || d.pos >= d.th.DataEnd() {
		return nil, io.EOF
	}
	s := d.it.s
	fail := func(err error) error {
		d.err = s.opErr("iterate", d.th.Tid, err)
		return d.err
	}
	if err := s.rlock(); err != nil {
		return nil, fail(err)
	}
	defer s.mu.RUnlock()
	if d.gen != s.gen {
		return nil, fail(errors.New("storage was packed during iteration"))
	}
	dh, err := ReadDataHeader(s.file, d.pos, d.th.DataEnd())
	if err != nil {
		return nil, fail(err)
	}
	if dh.TxnPos != d.th.Pos {
		return nil, fail(fmtErr(dh.Pos, nil, "data record points to transaction %d, not %d", dh.TxnPos, d.th.Pos))
	}
	data, dataTid, err := LoadData(s.file, dh)
	if err != nil {
		return nil, fail(err)
	}
	d.pos += dh.RecLen()
	return &zodb.DataInfo{Oid: dh.Oid, Tid: dh.Tid, Data: data, DataTid: dataTid}, nil
}

// skipToTid returns the position of the first transaction with tid ≥ tid,
// or one before it: it walks backwards from the end when tid is closer to
// the last tid than to the first (like ZODB's iterator), else it starts at
// the beginning. Call with s.mu held.
func (s *FileStorage) skipToTid(tid zodb.Tid) (int64, error) {
	end := s.index.TopPos
	if end <= FileHeaderSize {
		return FileHeaderSize, nil
	}
	first, err := ReadTxnHeader(s.file, FileHeaderSize, end, 0)
	if err != nil {
		return 0, err
	}
	if tid <= first.Tid || tid-first.Tid < s.lastTid-tid {
		return FileHeaderSize, nil
	}
	pos := end
	for pos > FileHeaderSize {
		h, err := ReadTxnHeaderBefore(s.file, pos, end, 0)
		if err != nil {
			return 0, err
		}
		if h.Tid < tid {
			break
		}
		pos = h.Pos
	}
	return pos, nil
}
