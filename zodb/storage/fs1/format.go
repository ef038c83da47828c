package fs1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/neozodb/neo/zodb"
)

// On-disk layout (all integers big-endian):
//
//	file    = magic(4) txn*
//	txn     = tid(8) tlen(8) status(1) ulen(2) dlen(2) elen(2) user desc ext data* tlen(8)
//	data    = oid(8) tid(8) prev(8) tloc(8) vlen(2) plen(8) (payload(plen) | backpointer(8) if plen == 0)
//
// tlen counts the whole transaction record except its trailing copy of tlen.

const (
	// Magic is written at the start of every file this package creates
	// (ZODB on Python 3).
	Magic = "FS30"
	// Magic21 is the magic of files written by ZODB on Python 2; the rest
	// of the format is the same.
	Magic21 = "FS21"

	// FileHeaderSize is the size of the file header (the magic): the first
	// transaction starts there.
	FileHeaderSize = 4
	// TxnHeaderFixSize is the fixed part of a transaction header.
	TxnHeaderFixSize = 23
	// DataHeaderSize is the size of a data record header (without the
	// backpointer that follows it when plen is 0).
	DataHeaderSize = 42

	maxMetaLen = 1<<16 - 1
	// maxPos bounds positions: the index stores them in 6 bytes.
	maxPos = 1<<48 - 1
)

// FormatError reports a malformed file: what is wrong and where.
type FormatError struct {
	File string // file name, may be ""
	Pos  int64  // file offset of the damaged record
	Msg  string
	Err  error // underlying I/O error, if any
}

func (e *FormatError) Error() string {
	s := ""
	if e.File != "" {
		s = e.File + ": "
	}
	s += fmt.Sprintf("at %d: %s", e.Pos, e.Msg)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }

func fmtErr(pos int64, err error, format string, args ...any) *FormatError {
	return &FormatError{Pos: pos, Msg: fmt.Sprintf(format, args...), Err: err}
}

// ErrTruncated is wrapped by errors about records that extend past the end of
// the file.
var ErrTruncated = errors.New("unexpected end of file")

// readFull reads exactly len(buf) bytes at pos; a short read is reported as
// ErrTruncated (io.EOF only when nothing at all was there and eofOK).
func readFull(r io.ReaderAt, buf []byte, pos int64) (int, error) {
	n, err := r.ReadAt(buf, pos)
	if n == len(buf) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		if n == 0 {
			return 0, io.EOF
		}
		return n, ErrTruncated
	}
	return n, err
}

// ReadFileHeader reads and checks the magic at the start of a file.
func ReadFileHeader(r io.ReaderAt) (magic string, err error) {
	var b [FileHeaderSize]byte
	if _, err := readFull(r, b[:], 0); err != nil {
		if err == io.EOF {
			err = ErrTruncated
		}
		return "", fmtErr(0, err, "reading file header")
	}
	switch string(b[:]) {
	case Magic, Magic21:
		return string(b[:]), nil
	}
	return "", fmtErr(0, nil, "invalid magic %q: not a FileStorage file", b[:])
}

// TxnHeader is a transaction record header.
type TxnHeader struct {
	Pos         int64 // position of the header in the file
	Tid         zodb.Tid
	Len         int64 // the tlen field: record length without the trailing length
	Status      zodb.TxnStatus
	User        []byte
	Description []byte
	Extension   []byte

	// lengths as in the header (kept when metadata is not loaded)
	ulen, dlen, elen int
}

// HeaderLen is the length of the header including user, description and
// extension.
func (h *TxnHeader) HeaderLen() int64 {
	return TxnHeaderFixSize + int64(h.ulen+h.dlen+h.elen)
}

// DataPos is the position of the first data record.
func (h *TxnHeader) DataPos() int64 { return h.Pos + h.HeaderLen() }

// DataEnd is the position just after the last data record (where the
// trailing length is).
func (h *TxnHeader) DataEnd() int64 { return h.Pos + h.Len }

// NextPos is the position of the next transaction.
func (h *TxnHeader) NextPos() int64 { return h.Pos + h.Len + 8 }

// Info returns the transaction metadata as the storage API reports it.
func (h *TxnHeader) Info() *zodb.TxnInfo {
	return &zodb.TxnInfo{Tid: h.Tid, Status: h.Status, User: h.User, Description: h.Description, Extension: h.Extension}
}

// TxnLoadFlags selects what ReadTxnHeader loads and checks.
type TxnLoadFlags int

const (
	// LoadMeta loads user, description and extension.
	LoadMeta TxnLoadFlags = 1 << iota
	// CheckTrailer also checks that the redundant trailing length matches.
	CheckTrailer
)

// ReadTxnHeader reads the transaction header at pos. It checks that the
// record is well formed and fits before fileSize. It returns io.EOF (bare)
// when pos == fileSize. A status 'c' record is returned without error: the
// caller decides (it is an unfinished transaction).
func ReadTxnHeader(r io.ReaderAt, pos, fileSize int64, flags TxnLoadFlags) (*TxnHeader, error) {
	if pos == fileSize {
		return nil, io.EOF
	}
	if pos < FileHeaderSize || pos > fileSize {
		return nil, fmtErr(pos, nil, "transaction position out of file (size %d)", fileSize)
	}
	var b [TxnHeaderFixSize]byte
	if _, err := readFull(r, b[:], pos); err != nil {
		if err == io.EOF {
			err = ErrTruncated
		}
		return nil, fmtErr(pos, err, "reading transaction header")
	}
	h := &TxnHeader{Pos: pos}
	if err := h.decode(b[:]); err != nil {
		return nil, fmtErr(pos, nil, "%s", err)
	}
	if pos+h.Len+8 > fileSize {
		return nil, fmtErr(pos, ErrTruncated, "transaction record (tlen %d) goes past the end of the file (size %d)", h.Len, fileSize)
	}
	if flags&LoadMeta != 0 {
		n := h.ulen + h.dlen + h.elen
		if n > 0 {
			meta := make([]byte, n)
			if _, err := readFull(r, meta, pos+TxnHeaderFixSize); err != nil {
				return nil, fmtErr(pos, err, "reading transaction metadata")
			}
			h.User = meta[:h.ulen:h.ulen]
			h.Description = meta[h.ulen : h.ulen+h.dlen : h.ulen+h.dlen]
			h.Extension = meta[h.ulen+h.dlen:]
		} else {
			h.User, h.Description, h.Extension = []byte{}, []byte{}, []byte{}
		}
	}
	if flags&CheckTrailer != 0 {
		if err := h.checkTrailer(r); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (h *TxnHeader) checkTrailer(r io.ReaderAt) error {
	var t [8]byte
	if _, err := readFull(r, t[:], h.DataEnd()); err != nil {
		return fmtErr(h.Pos, err, "reading redundant transaction length")
	}
	if tl := int64(binary.BigEndian.Uint64(t[:])); tl != h.Len {
		return fmtErr(h.Pos, nil, "redundant transaction length %d at %d does not match tlen %d", tl, h.DataEnd(), h.Len)
	}
	return nil
}

func (h *TxnHeader) decode(b []byte) error {
	h.Tid = zodb.Tid(binary.BigEndian.Uint64(b[0:]))
	tlen := binary.BigEndian.Uint64(b[8:])
	h.Status = zodb.TxnStatus(b[16])
	h.ulen = int(binary.BigEndian.Uint16(b[17:]))
	h.dlen = int(binary.BigEndian.Uint16(b[19:]))
	h.elen = int(binary.BigEndian.Uint16(b[21:]))
	if tlen > maxPos {
		return fmt.Errorf("invalid transaction length %d", tlen)
	}
	h.Len = int64(tlen)
	switch h.Status {
	case zodb.TxnComplete, zodb.TxnPacked, zodb.TxnInprogress, zodb.TxnUndone:
	default:
		return fmt.Errorf("invalid transaction status %q", byte(h.Status))
	}
	if h.Len < h.HeaderLen() {
		return fmt.Errorf("transaction length %d smaller than its header (%d)", h.Len, h.HeaderLen())
	}
	return nil
}

// ReadTxnHeaderBefore reads the header of the transaction that ends at end
// (the position just after its trailing length), using the redundant length.
func ReadTxnHeaderBefore(r io.ReaderAt, end, fileSize int64, flags TxnLoadFlags) (*TxnHeader, error) {
	if end-8 < FileHeaderSize+TxnHeaderFixSize {
		return nil, fmtErr(end, nil, "no transaction before")
	}
	var t [8]byte
	if _, err := readFull(r, t[:], end-8); err != nil {
		if err == io.EOF {
			err = ErrTruncated
		}
		return nil, fmtErr(end-8, err, "reading redundant transaction length")
	}
	tl := binary.BigEndian.Uint64(t[:])
	if tl > uint64(end) || int64(tl)+8 > end-FileHeaderSize {
		return nil, fmtErr(end-8, nil, "invalid redundant transaction length %d", tl)
	}
	pos := end - 8 - int64(tl)
	h, err := ReadTxnHeader(r, pos, fileSize, flags)
	if err != nil {
		return nil, err
	}
	if h.Len != int64(tl) {
		return nil, fmtErr(pos, nil, "transaction length %d does not match redundant length %d at %d", h.Len, tl, end-8)
	}
	return h, nil
}

// encodeTxnHeader appends the header of a transaction record.
func appendTxnHeader(b []byte, tid zodb.Tid, tlen int64, status zodb.TxnStatus, user, desc, ext []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(tid))
	b = binary.BigEndian.AppendUint64(b, uint64(tlen))
	b = append(b, byte(status))
	b = binary.BigEndian.AppendUint16(b, uint16(len(user)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(desc)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(ext)))
	b = append(b, user...)
	b = append(b, desc...)
	return append(b, ext...)
}

// DataHeader is a data record header.
type DataHeader struct {
	Pos     int64 // position of the record in the file
	Oid     zodb.Oid
	Tid     zodb.Tid
	PrevPos int64 // position of the previous record of Oid, 0 if none
	TxnPos  int64 // position of the enclosing transaction (tloc)
	DataLen int64 // plen
	// BackPos is the backpointer when DataLen is 0: the position of a
	// record of Oid holding the data, or 0 for a deletion.
	BackPos int64
}

// RecLen is the length of the whole record.
func (h *DataHeader) RecLen() int64 {
	if h.DataLen == 0 {
		return DataHeaderSize + 8
	}
	return DataHeaderSize + h.DataLen
}

// IsDeletion tells whether the record deletes the object (no data, no
// backpointer).
func (h *DataHeader) IsDeletion() bool { return h.DataLen == 0 && h.BackPos == 0 }

// ReadDataHeader reads the data record header at pos, and the backpointer
// when the record has no data. The record must lie before limit (the end of
// the data records of its transaction, or the file size when not known).
func ReadDataHeader(r io.ReaderAt, pos, limit int64) (*DataHeader, error) {
	var b [DataHeaderSize + 8]byte
	if pos < FileHeaderSize+TxnHeaderFixSize || pos+DataHeaderSize > limit {
		return nil, fmtErr(pos, nil, "data record position out of range (limit %d)", limit)
	}
	n, err := r.ReadAt(b[:], pos)
	if n < DataHeaderSize {
		if err == nil || errors.Is(err, io.EOF) {
			err = ErrTruncated
		}
		return nil, fmtErr(pos, err, "reading data record header")
	}
	h := &DataHeader{Pos: pos}
	h.Oid = zodb.Oid(binary.BigEndian.Uint64(b[0:]))
	h.Tid = zodb.Tid(binary.BigEndian.Uint64(b[8:]))
	prev := binary.BigEndian.Uint64(b[16:])
	tloc := binary.BigEndian.Uint64(b[24:])
	vlen := binary.BigEndian.Uint16(b[32:])
	plen := binary.BigEndian.Uint64(b[34:])
	if vlen != 0 {
		return nil, fmtErr(pos, nil, "data record with version (vlen %d): versions are not supported", vlen)
	}
	if prev >= uint64(pos) {
		return nil, fmtErr(pos, nil, "invalid previous record position %d", prev)
	}
	if tloc >= uint64(pos) || tloc < FileHeaderSize {
		return nil, fmtErr(pos, nil, "invalid transaction position %d", tloc)
	}
	if plen > uint64(limit) || pos+DataHeaderSize+int64(plen) > limit {
		return nil, fmtErr(pos, nil, "data length %d goes past %d", plen, limit)
	}
	h.PrevPos, h.TxnPos, h.DataLen = int64(prev), int64(tloc), int64(plen)
	if plen == 0 {
		if n < DataHeaderSize+8 || pos+DataHeaderSize+8 > limit {
			if err == nil || errors.Is(err, io.EOF) {
				err = ErrTruncated
			}
			return nil, fmtErr(pos, err, "reading backpointer")
		}
		back := binary.BigEndian.Uint64(b[DataHeaderSize:])
		if back >= uint64(pos) || (back != 0 && back < FileHeaderSize+TxnHeaderFixSize) {
			return nil, fmtErr(pos, nil, "invalid backpointer %d", back)
		}
		h.BackPos = int64(back)
	}
	return h, nil
}

func appendDataHeader(b []byte, oid zodb.Oid, tid zodb.Tid, prev, tloc, plen int64) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(oid))
	b = binary.BigEndian.AppendUint64(b, uint64(tid))
	b = binary.BigEndian.AppendUint64(b, uint64(prev))
	b = binary.BigEndian.AppendUint64(b, uint64(tloc))
	b = binary.BigEndian.AppendUint16(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(plen))
}

// ReadData returns the payload of a record that has data (DataLen > 0).
func ReadData(r io.ReaderAt, h *DataHeader) ([]byte, error) {
	data := make([]byte, h.DataLen)
	if _, err := readFull(r, data, h.Pos+DataHeaderSize); err != nil {
		if err == io.EOF {
			err = ErrTruncated
		}
		return nil, fmtErr(h.Pos, err, "reading data")
	}
	return data, nil
}

// maxBackHops bounds backpointer chains (each hop must go backwards, so
// this is only a guard against pathological files).
const maxBackHops = 1 << 20

// LoadData returns the data of record h, following backpointers. It returns
// nil data for a deletion (or a backpointer chain ending in one), and in
// dataTid the tid of the record the first backpointer points to (0 when h
// holds its data itself or is a deletion).
func LoadData(r io.ReaderAt, h *DataHeader) (data []byte, dataTid zodb.Tid, err error) {
	cur := h
	for hop := 0; cur.DataLen == 0; hop++ {
		if cur.BackPos == 0 {
			return nil, dataTid, nil
		}
		if hop >= maxBackHops {
			return nil, 0, fmtErr(h.Pos, nil, "backpointer chain too long")
		}
		next, err := ReadDataHeader(r, cur.BackPos, cur.Pos)
		if err != nil {
			return nil, 0, fmtErr(cur.Pos, err, "following backpointer")
		}
		if next.Oid != h.Oid {
			return nil, 0, fmtErr(cur.Pos, nil, "backpointer %d to a record of another object (%v, want %v)", cur.BackPos, next.Oid, h.Oid)
		}
		if hop == 0 {
			dataTid = next.Tid
		}
		cur = next
	}
	data, err = ReadData(r, cur)
	return data, dataTid, err
}

// dataPosOf returns the position of the record that holds the data of h
// (following backpointers), or 0 for a deletion.
func dataPosOf(r io.ReaderAt, h *DataHeader) (int64, error) {
	cur := h
	for hop := 0; cur.DataLen == 0; hop++ {
		if cur.BackPos == 0 {
			return 0, nil
		}
		if hop >= maxBackHops {
			return 0, fmtErr(h.Pos, nil, "backpointer chain too long")
		}
		next, err := ReadDataHeader(r, cur.BackPos, cur.Pos)
		if err != nil {
			return 0, fmtErr(cur.Pos, err, "following backpointer")
		}
		if next.Oid != h.Oid {
			return 0, fmtErr(cur.Pos, nil, "backpointer %d to a record of another object", cur.BackPos)
		}
		cur = next
	}
	return cur.Pos, nil
}
