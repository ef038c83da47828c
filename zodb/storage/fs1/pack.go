package fs1

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/neozodb/neo/zodb"
)

// Pack removes the revisions that are not current at packTid (and, with gc,
// the objects not reachable from the root at packTid), as ZODB's FileStorage
// packer does: the result is written to Data.fs.pack, the old file is kept
// as Data.fs.old, and the index saved. Transactions up to packTid that keep
// records get status 'p' and their records lose their prev links and
// backpointers (data is inlined); later transactions are copied with their
// backpointers re-targeted.
//
// Commits wait while a pack runs. A pack that would free nothing, or that
// is redundant with an earlier one, leaves the file as it is.
func (s *FileStorage) Pack(ctx context.Context, packTid zodb.Tid, gc bool) error {
	if s.readOnly {
		return s.opErr("pack", packTid, zodb.ErrReadOnly)
	}
	if packTid == 0 {
		return s.opErr("pack", packTid, errors.New("invalid pack time"))
	}
	select {
	case s.commitSem <- struct{}{}:
	case <-ctx.Done():
		return s.opErr("pack", packTid, ctx.Err())
	case <-s.down:
		return s.opErr("pack", packTid, zodb.ErrClosed)
	}
	defer func() { <-s.commitSem }()
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if err := s.rlock(); err != nil {
		return s.opErr("pack", packTid, err)
	}
	file, eof, empty := s.file, s.index.TopPos, s.index.Len() == 0
	s.mu.RUnlock()
	if empty {
		return nil
	}
	// Nothing else writes the file while we hold the commit lock and opMu.
	p := &packer{ctx: ctx, r: file, eof: eof, packTid: packTid, gc: gc, log: s.log}
	newIndex, newEnd, err := p.pack(s.path)
	if err != nil {
		os.Remove(s.path + ".pack")
		return s.opErr("pack", packTid, err)
	}
	if newIndex == nil {
		return nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	oldPath := s.path + ".old"
	os.Remove(oldPath)
	if err := os.Rename(s.path, oldPath); err != nil {
		return s.opErr("pack", packTid, err)
	}
	if err := os.Rename(s.path+".pack", s.path); err != nil {
		return s.opErr("pack", packTid, fmt.Errorf("%w (the data file is now %s)", err, oldPath))
	}
	nf, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		// Keep reading the old file: it is still open.
		return s.opErr("pack", packTid, err)
	}
	s.file.Close()
	s.file = nf
	newIndex.TopPos = newEnd
	s.index = newIndex
	s.gen++
	s.txnPos = nil
	if err := newIndex.SaveFile(s.path + ".index"); err != nil {
		return s.opErr("pack", packTid, err)
	}
	return nil
}

type packer struct {
	ctx     context.Context
	r       io.ReaderAt
	eof     int64
	packTid zodb.Tid
	gc      bool
	log     interface {
		Info(msg string, args ...any)
	}

	packPos   int64
	oid2cur   map[zodb.Oid]int64 // current record of each object at pack time
	reachable map[zodb.Oid]int64 // one reachable revision per object
	reachEx   map[zodb.Oid][]int64
}

func (p *packer) isReachable(oid zodb.Oid, pos int64) bool {
	rpos, ok := p.reachable[oid]
	if !ok {
		return false
	}
	if rpos == pos {
		return true
	}
	for _, x := range p.reachEx[oid] {
		if x == pos {
			return true
		}
	}
	return false
}

// errRedundantPack: the file was packed at a later time already, or nothing
// happened since.
var errRedundantPack = errors.New("the database has already been packed to a later time or no changes have been made since the last pack")

// walkTxns calls f for every transaction in [from, to) with its records; f
// returning false stops.
func (p *packer) walkTxns(from, to int64, f func(th *TxnHeader, recs []*DataHeader) (bool, error)) (int64, error) {
	pos := from
	for n := 0; pos < to; n++ {
		if n%256 == 0 && p.ctx.Err() != nil {
			return pos, p.ctx.Err()
		}
		th, err := ReadTxnHeader(p.r, pos, p.eof, CheckTrailer)
		if err != nil {
			return pos, err
		}
		var recs []*DataHeader
		for dp := th.DataPos(); dp < th.DataEnd(); {
			dh, err := ReadDataHeader(p.r, dp, th.DataEnd())
			if err != nil {
				return pos, err
			}
			if dh.TxnPos != th.Pos {
				return pos, fmtErr(dp, nil, "data record points to transaction %d, not %d", dh.TxnPos, th.Pos)
			}
			recs = append(recs, dh)
			dp += dh.RecLen()
		}
		ok, err := f(th, recs)
		if err != nil {
			return pos, err
		}
		if !ok {
			return pos, nil
		}
		pos = th.NextPos()
	}
	return pos, nil
}

func (p *packer) findReachable() error {
	p.oid2cur = map[zodb.Oid]int64{}
	unpacked := false
	var err error
	p.packPos, err = p.walkTxns(FileHeaderSize, p.eof, func(th *TxnHeader, recs []*DataHeader) (bool, error) {
		if th.Tid > p.packTid {
			return false, nil
		}
		if th.Status != zodb.TxnPacked {
			unpacked = true
		}
		for _, dh := range recs {
			if dh.IsDeletion() {
				delete(p.oid2cur, dh.Oid)
			} else {
				p.oid2cur[dh.Oid] = dh.Pos
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if !unpacked {
		th, err := ReadTxnHeader(p.r, p.packPos, p.eof, 0)
		if err == nil && th.Status == zodb.TxnPacked {
			return errRedundantPack
		}
	}
	if !p.gc {
		p.reachable = p.oid2cur
		p.reachEx = map[zodb.Oid][]int64{}
		return nil
	}
	p.reachable = map[zodb.Oid]int64{}
	p.reachEx = map[zodb.Oid][]int64{}
	if err := p.markReachable([]zodb.Oid{0}); err != nil {
		return err
	}
	// Records after the pack time that point back before it keep the
	// revision they point to, and what that revision refers to.
	var extraRoots []int64
	_, err = p.walkTxns(p.packPos, p.eof, func(th *TxnHeader, recs []*DataHeader) (bool, error) {
		for _, dh := range recs {
			if dh.DataLen != 0 || dh.BackPos == 0 || dh.BackPos >= p.packPos {
				continue
			}
			if _, ok := p.reachable[dh.Oid]; ok {
				l := p.reachEx[dh.Oid]
				found := false
				for _, x := range l {
					found = found || x == dh.BackPos
				}
				if !found {
					p.reachEx[dh.Oid] = append(l, dh.BackPos)
					extraRoots = append(extraRoots, dh.BackPos)
				}
			} else {
				p.reachable[dh.Oid] = dh.BackPos
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, pos := range extraRoots {
		refs, err := p.refsAt(pos)
		if err != nil {
			return err
		}
		if err := p.markReachable(refs); err != nil {
			return err
		}
	}
	return nil
}

// markReachable marks the current revisions at pack time of roots and of
// everything they refer to.
func (p *packer) markReachable(roots []zodb.Oid) error {
	todo := append([]zodb.Oid(nil), roots...)
	for len(todo) > 0 {
		oid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if _, ok := p.reachable[oid]; ok {
			continue
		}
		pos, ok := p.oid2cur[oid]
		if !ok {
			// The root before its creation, or a dangling reference.
			continue
		}
		p.reachable[oid] = pos
		refs, err := p.refsAt(pos)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if _, ok := p.reachable[r]; !ok {
				todo = append(todo, r)
			}
		}
	}
	return nil
}

func (p *packer) refsAt(pos int64) ([]zodb.Oid, error) {
	dh, err := ReadDataHeader(p.r, pos, p.eof)
	if err != nil {
		return nil, err
	}
	data, _, err := LoadData(p.r, dh)
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, nil
	}
	refs, err := zodb.PickleRefs(data)
	if err != nil {
		return nil, fmtErr(pos, err, "finding references of %v", dh.Oid)
	}
	return refs, nil
}

// packOut is the pack output: a file being written sequentially, that the
// backpointer search reads back.
type packOut struct {
	f   *os.File
	w   *bufio.Writer
	pos int64
}

func (o *packOut) write(b []byte) error {
	_, err := o.w.Write(b)
	o.pos += int64(len(b))
	return err
}

// ReadAt reads what was written so far.
func (o *packOut) ReadAt(b []byte, off int64) (int, error) {
	if err := o.w.Flush(); err != nil {
		return 0, err
	}
	return o.f.ReadAt(b, off)
}

// pack writes path.pack and returns the index of the new file and its size,
// or a nil index when the pack changes nothing.
func (p *packer) pack(path string) (*Index, int64, error) {
	if err := p.findReachable(); err != nil {
		if errors.Is(err, errRedundantPack) {
			p.log.Info("fs1: pack: " + err.Error())
			return nil, 0, nil
		}
		return nil, 0, err
	}
	f, err := os.Create(path + ".pack")
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	out := &packOut{f: f, w: bufio.NewWriterSize(f, 1<<20)}
	var magic [FileHeaderSize]byte
	if _, err := readFull(p.r, magic[:], 0); err != nil {
		return nil, 0, err
	}
	if err := out.write(magic[:]); err != nil {
		return nil, 0, err
	}
	index := NewIndex()

	// Up to the pack time: only reachable records, data inlined.
	ipos, err := p.walkTxns(FileHeaderSize, p.packPos, func(th *TxnHeader, recs []*DataHeader) (bool, error) {
		var body []byte
		for _, dh := range recs {
			if !p.isReachable(dh.Oid, dh.Pos) {
				continue
			}
			data, _, err := LoadData(p.r, dh)
			if err != nil {
				return false, err
			}
			index.Set(dh.Oid, 0) // position fixed below
			body = appendDataHeader(body, dh.Oid, dh.Tid, 0, 0, int64(len(data)))
			if len(data) > 0 {
				body = append(body, data...)
			} else {
				body = binary.BigEndian.AppendUint64(body, 0)
			}
		}
		if body == nil {
			return true, nil
		}
		th2, err := ReadTxnHeader(p.r, th.Pos, p.eof, LoadMeta)
		if err != nil {
			return false, err
		}
		return true, p.writeTxn(out, index, th2, zodb.TxnPacked, body)
	})
	if err != nil {
		return nil, 0, err
	}
	if ipos != p.packPos {
		return nil, 0, fmt.Errorf("pack: stopped at %d before the pack position %d", ipos, p.packPos)
	}
	if out.pos == ipos {
		// Nothing was freed.
		f.Close()
		os.Remove(path + ".pack")
		return nil, 0, nil
	}

	// After the pack time: everything, re-linked.
	_, err = p.walkTxns(p.packPos, p.eof, func(th *TxnHeader, recs []*DataHeader) (bool, error) {
		th2, err := ReadTxnHeader(p.r, th.Pos, p.eof, LoadMeta)
		if err != nil {
			return false, err
		}
		tpos := out.pos
		here := tpos + th2.HeaderLen()
		var body []byte
		tindex := map[zodb.Oid]int64{}
		for _, dh := range recs {
			data, _, err := LoadData(p.r, dh)
			if err != nil {
				return false, err
			}
			var back int64
			if dh.DataLen == 0 && dh.BackPos != 0 {
				bh, err := ReadDataHeader(p.r, dh.BackPos, dh.Pos)
				if err != nil {
					return false, err
				}
				// Re-target: the record of the same transaction in
				// the output, if it has the same data.
				btpos, err := findTxn(out, tpos, bh.Tid, false)
				if errors.Is(err, errTxnNotFound) {
					return false, fmtErr(dh.Pos, nil, "invalid backpointer transaction id %v", bh.Tid)
				}
				if err != nil {
					return false, err
				}
				back, err = findData(out, btpos, tpos, dh.Oid, data)
				if err != nil {
					return false, err
				}
			}
			prev, _ := index.Get(dh.Oid)
			tindex[dh.Oid] = here + int64(len(body))
			if back != 0 {
				data = nil
			}
			body = appendDataHeader(body, dh.Oid, dh.Tid, prev, tpos, int64(len(data)))
			if len(data) > 0 {
				body = append(body, data...)
			} else {
				body = binary.BigEndian.AppendUint64(body, uint64(back))
			}
		}
		if err := p.writeTxnRaw(out, th2, th2.Status, body); err != nil {
			return false, err
		}
		for oid, pos := range tindex {
			index.Set(oid, pos)
		}
		return true, nil
	})
	if err != nil {
		return nil, 0, err
	}
	if err := out.w.Flush(); err != nil {
		return nil, 0, err
	}
	if err := f.Sync(); err != nil {
		return nil, 0, err
	}
	if err := f.Close(); err != nil {
		return nil, 0, err
	}
	return index, out.pos, nil
}

// writeTxn writes a packed transaction whose records (in body) still have
// prev = tloc = 0: it sets tloc and indexes them.
func (p *packer) writeTxn(out *packOut, index *Index, th *TxnHeader, status zodb.TxnStatus, body []byte) error {
	tpos := out.pos
	here := tpos + th.HeaderLen()
	for off := 0; off < len(body); {
		binary.BigEndian.PutUint64(body[off+24:], uint64(tpos))
		oid := zodb.Oid(binary.BigEndian.Uint64(body[off:]))
		index.Set(oid, here+int64(off))
		plen := int(binary.BigEndian.Uint64(body[off+34:]))
		if plen == 0 {
			plen = 8
		}
		off += DataHeaderSize + plen
	}
	return p.writeTxnRaw(out, th, status, body)
}

func (p *packer) writeTxnRaw(out *packOut, th *TxnHeader, status zodb.TxnStatus, body []byte) error {
	tlen := th.HeaderLen() + int64(len(body))
	rec := appendTxnHeader(nil, th.Tid, tlen, status, th.User, th.Description, th.Extension)
	rec = append(rec, body...)
	rec = binary.BigEndian.AppendUint64(rec, uint64(tlen))
	return out.write(rec)
}
