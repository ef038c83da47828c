package fs1

import (
	"io"
	"os"
)

// Iter walks the transactions of a file forward, and the data records of
// each, exposing the raw headers (for dump and verification tools). It
// reads what is there up to Size: an unfinished ('c') transaction is
// returned like any other, the caller decides.
type Iter struct {
	R    io.ReaderAt
	Size int64

	Txn  *TxnHeader  // current transaction, after NextTxn
	Data *DataHeader // current data record, after NextData

	pos  int64 // next transaction
	dpos int64 // next data record of Txn
}

// NewIter returns an iterator over the transactions of r, a file of size
// bytes, starting at the first transaction.
func NewIter(r io.ReaderAt, size int64) *Iter {
	return &Iter{R: r, Size: size, pos: FileHeaderSize}
}

// SeekTxn makes the next NextTxn read the transaction at pos.
func (it *Iter) SeekTxn(pos int64) { it.pos, it.Txn, it.Data = pos, nil, nil }

// NextTxn moves to the next transaction, with its metadata loaded and its
// trailing length checked. It returns io.EOF at the end of the file.
func (it *Iter) NextTxn() error {
	th, err := ReadTxnHeader(it.R, it.pos, it.Size, LoadMeta|CheckTrailer)
	if err != nil {
		return err
	}
	it.Txn, it.Data = th, nil
	it.pos = th.NextPos()
	it.dpos = th.DataPos()
	return nil
}

// NextData moves to the next data record of the current transaction. It
// returns io.EOF after the last one.
func (it *Iter) NextData() error {
	if it.Txn == nil || it.dpos >= it.Txn.DataEnd() {
		return io.EOF
	}
	dh, err := ReadDataHeader(it.R, it.dpos, it.Txn.DataEnd())
	if err != nil {
		return err
	}
	if dh.TxnPos != it.Txn.Pos {
		return fmtErr(dh.Pos, nil, "data record points to transaction %d, not %d", dh.TxnPos, it.Txn.Pos)
	}
	it.Data = dh
	it.dpos += dh.RecLen()
	return nil
}

// OpenFile opens a data file for low-level reading and checks its magic.
func OpenFile(path string) (f *os.File, size int64, magic string, err error) {
	f, err = os.Open(path)
	if err != nil {
		return nil, 0, "", err
	}
	fi, err := f.Stat()
	if err == nil {
		magic, err = ReadFileHeader(f)
	}
	if err != nil {
		f.Close()
		return nil, 0, "", fmtFileErr(path, err)
	}
	return f, fi.Size(), magic, nil
}

func fmtFileErr(path string, err error) error {
	if fe, ok := err.(*FormatError); ok && fe.File == "" {
		e := *fe
		e.File = path
		return &e
	}
	return err
}

// BuildIndex scans a whole file and returns its index and the scan result
// (ZODB's reindexing). Nothing is written.
func BuildIndex(r io.ReaderAt, size int64) (*Index, ScanResult, error) {
	x := NewIndex()
	res, err := ScanIndex(backgroundCtx, r, size, x, FileHeaderSize, 0, discardLog)
	x.TopPos = res.End
	return x, res, err
}

// VerifyIndex checks x against the file: it rebuilds the index from the
// file up to x.TopPos and reports the first difference.
func VerifyIndex(r io.ReaderAt, x *Index) error {
	y := NewIndex()
	res, err := ScanIndex(backgroundCtx, r, x.TopPos, y, FileHeaderSize, 0, discardLog)
	if err != nil {
		return err
	}
	if res.Tail != nil {
		return res.Tail
	}
	return diffIndex(x, y)
}
