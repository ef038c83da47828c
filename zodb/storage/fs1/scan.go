package fs1

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"

	"github.com/neozodb/neo/zodb"
)

// ScanResult is what scanning a file for its index finds.
type ScanResult struct {
	// End is the position just after the last valid transaction: the
	// size of the usable file.
	End int64
	// LastTid is the tid of the last valid transaction (the one given
	// to the scan when none was found).
	LastTid zodb.Tid
	// Tail, when not nil, tells why the bytes from End to the end of the
	// file are not used: an incomplete or unfinished ('c') last
	// transaction, or garbage. A read-write open cuts them off.
	Tail error
}

// ScanIndex reads the transactions of r from pos on, as ZODB's read_index
// does, and adds their records to x (records of 'u' transactions are not
// indexed). lastTid is the tid of the transaction before pos (0 for none);
// warnings (time-stamp reduction, inconsistent prev pointers) go to log.
//
// An incomplete or unfinished transaction at the end, or garbage after the
// last transaction that does not look like one, ends the scan with
// ScanResult.Tail set. Damage in the middle of the file is an error naming
// its offset.
func ScanIndex(ctx context.Context, r io.ReaderAt, fileSize int64, x *Index, pos int64, lastTid zodb.Tid, log *slog.Logger) (ScanResult, error) {
	if log == nil {
		log = slog.Default()
	}
	res := ScanResult{End: pos, LastTid: lastTid}
	tindex := map[zodb.Oid]int64{}
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		res.End = pos
		if pos == fileSize {
			return res, nil
		}
		if pos > fileSize {
			return res, fmtErr(pos, nil, "transaction position beyond the end of the file (size %d)", fileSize)
		}
		var b [TxnHeaderFixSize]byte
		if fileSize-pos < TxnHeaderFixSize {
			res.Tail = fmtErr(pos, ErrTruncated, "incomplete transaction header")
			return res, nil
		}
		if _, err := readFull(r, b[:], pos); err != nil {
			return res, fmtErr(pos, err, "reading transaction header")
		}
		tid := zodb.Tid(binary.BigEndian.Uint64(b[0:]))
		tl := binary.BigEndian.Uint64(b[8:])
		status := zodb.TxnStatus(b[16])
		hl := int64(TxnHeaderFixSize) + int64(binary.BigEndian.Uint16(b[17:])) + int64(binary.BigEndian.Uint16(b[19:])) + int64(binary.BigEndian.Uint16(b[21:]))
		if tid <= res.LastTid {
			log.Warn("fs1: time-stamp reduction", "pos", pos, "tid", tid, "previous", res.LastTid)
		}
		if tl > uint64(fileSize) || pos+int64(tl)+8 > fileSize {
			res.Tail = fmtErr(pos, ErrTruncated, "transaction record (tlen %d) goes past the end of the file (size %d)", tl, fileSize)
			return res, nil
		}
		if status == zodb.TxnInprogress {
			res.Tail = fmtErr(pos, nil, "unfinished transaction (status 'c')")
			return res, nil
		}
		if status != zodb.TxnComplete && status != zodb.TxnPacked && status != zodb.TxnUndone {
			return res, fmtErr(pos, nil, "invalid transaction status %q", byte(status))
		}
		tpos, tend := pos, pos+int64(tl)
		if int64(tl) < hl {
			// Damaged header: garbage at the end of the file (e.g. after
			// a crash), or damage in the middle? Judge by the last 8
			// bytes: do they look like the length of a transaction?
			var t [8]byte
			if _, err := readFull(r, t[:], fileSize-8); err != nil {
				return res, fmtErr(pos, err, "reading the end of the file")
			}
			rtl := binary.BigEndian.Uint64(t[:])
			if rtl > uint64(fileSize) || fileSize-int64(rtl) < pos || rtl < TxnHeaderFixSize {
				res.Tail = fmtErr(pos, nil, "invalid transaction header (tlen %d smaller than header %d): garbage at the end of the file", tl, hl)
				return res, nil
			}
			return res, fmtErr(pos, nil, "invalid transaction header (tlen %d smaller than header %d)", tl, hl)
		}
		if status != zodb.TxnUndone {
			p := tpos + hl
			for p < tend {
				dh, err := ReadDataHeader(r, p, tend)
				if err != nil {
					return res, fmtErr(tpos, err, "data record exceeds transaction record")
				}
				if dh.TxnPos != tpos {
					return res, fmtErr(p, nil, "data record points to transaction %d, not %d", dh.TxnPos, tpos)
				}
				if prev, ok := tindex[dh.Oid]; !ok {
					prev, _ = x.Get(dh.Oid)
					if prev != dh.PrevPos {
						log.Warn("fs1: incorrect previous pointer", "pos", p, "oid", dh.Oid, "prev", dh.PrevPos, "indexed", prev)
					}
				}
				tindex[dh.Oid] = p
				p += dh.RecLen()
			}
			if p != tend {
				return res, fmtErr(tpos, nil, "data records don't add up")
			}
		}
		var t [8]byte
		if _, err := readFull(r, t[:], tend); err != nil {
			return res, fmtErr(tend, err, "reading redundant transaction length")
		}
		if rtl := binary.BigEndian.Uint64(t[:]); rtl != tl {
			return res, fmtErr(tpos, nil, "redundant transaction length check failed at %d (%d != %d)", tend, rtl, tl)
		}
		for oid, p := range tindex {
			x.Set(oid, p)
		}
		clear(tindex)
		pos = tend + 8
		res.LastTid = tid
		x.TopPos = pos
	}
}

// checkIndexSanity is ZODB's check that an index loaded from disk matches
// the file: it returns the tid of the last transaction before x.TopPos, or
// an error saying why the index must be ignored.
func checkIndexSanity(r io.ReaderAt, fileSize int64, x *Index) (zodb.Tid, error) {
	pos := x.TopPos
	if pos < 100 {
		return 0, fmt.Errorf("index position %d < 100", pos)
	}
	if pos > fileSize {
		return 0, fmt.Errorf("index position %d beyond the end of the file (%d)", pos, fileSize)
	}
	var ltid zodb.Tid
	haveTid := false
	const maxChecked = 5
	checked := 0
	for {
		h, err := ReadTxnHeaderBefore(r, pos, fileSize, 0)
		if err != nil {
			return 0, err
		}
		pos = h.Pos
		if !haveTid {
			ltid, haveTid = h.Tid, true
		}
		if h.Status == zodb.TxnUndone {
			continue
		}
		if h.Status != zodb.TxnComplete && h.Status != zodb.TxnPacked {
			return 0, fmt.Errorf("transaction at %d has status %q", pos, byte(h.Status))
		}
		if h.DataPos() == h.DataEnd() {
			continue // empty transaction
		}
		for p := h.DataPos(); p < h.DataEnd() && checked < maxChecked; checked++ {
			dh, err := ReadDataHeader(r, p, h.DataEnd())
			if err != nil {
				return 0, err
			}
			if dh.TxnPos != h.Pos {
				return 0, fmt.Errorf("data record at %d: wrong transaction position", p)
			}
			if ip, _ := x.Get(dh.Oid); ip != p {
				return 0, fmt.Errorf("index has %d for %v, file has a record at %d", ip, dh.Oid, p)
			}
			p += dh.RecLen()
		}
		return ltid, nil
	}
}
