package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/fs1"
	"github.com/neozodb/neo/zodb/zodbtools"
)

const dumpUsage = `Usage: fs1 dump [-v] FILE
Print the transactions and data records of a FileStorage.

Without -v the output is that of ZODB's fsdump: per committed transaction
its tid, size, time, offset of its first data record, status, user and
description; per data record its oid, data size, class and, for records
that reuse the data of another revision, bp=<tid of that revision>.

With -v the output is that of ZODB's verbose Dumper: the raw header fields
of every transaction and data record in the file, including an unfinished
transaction at its end.

Options:

    -v              verbose (raw headers)
    -h  --help      show this help
`

func runDump(ctx context.Context, e *env, args []string) error {
	fs := newFlags("dump")
	verbose := fs.Bool("v", false, "")
	path, err := oneFile(fs, args)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(e.stdout, 64*1024)
	if *verbose {
		err = dumpVerbose(ctx, w, f, st.Size())
	} else {
		err = fsdump(ctx, w, e.stderr, f, st.Size())
	}
	if err2 := w.Flush(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// fsdump prints what ZODB's fsdump prints: the committed transactions, as
// FileStorage's iterator yields them.
func fsdump(ctx context.Context, w io.Writer, stderr io.Writer, f io.ReaderAt, size int64) error {
	if _, err := fs1.ReadFileHeader(f); err != nil {
		return err
	}
	pos := int64(fs1.FileHeaderSize)
	for i := 0; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		th, err := fs1.ReadTxnHeader(f, pos, size, fs1.LoadMeta|fs1.CheckTrailer)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, fs1.ErrTruncated) {
				// like FileStorage's iterator: an incomplete tail ends it
				fmt.Fprintf(stderr, "warning: %v\n", err)
				return nil
			}
			return err
		}
		if th.Status == zodb.TxnInprogress {
			return nil // unfinished transaction: not committed
		}
		pos = th.NextPos()
		if th.Status == zodb.TxnUndone {
			continue
		}
		fmt.Fprintf(w, "Trans #%05d tid=%016x size=%d time=%s offset=%d\n",
			i, uint64(th.Tid), th.Len, th.Tid.TimeString(), th.DataPos())
		fmt.Fprintf(w, "    status=%s user=%s description=%s\n",
			zodbtools.PyRepr([]byte{byte(th.Status)}), pyBytesRepr(th.User), pyBytesRepr(th.Description))
		j := 0
		for dpos := th.DataPos(); dpos < th.DataEnd(); j++ {
			dh, err := fs1.ReadDataHeader(f, dpos, th.DataEnd())
			if err != nil {
				return err
			}
			data, dataTid, err := fs1.LoadData(f, dh)
			if err != nil {
				return err
			}
			var sizeStr, class, bp string
			if data == nil {
				class = "undo or abort of object creation"
			} else {
				sizeStr = fmt.Sprintf(" size=%d", len(data))
				class = className(data)
			}
			if dataTid != 0 {
				bp = fmt.Sprintf(" bp=%016x", uint64(dataTid))
			}
			fmt.Fprintf(w, "  data #%05d oid=%016x%s class=%s%s\n", j, uint64(dh.Oid), sizeStr, class, bp)
			dpos += dh.RecLen()
		}
		i++
	}
}

// className is fsdump's "module.name" of a record's class (with ZODB's
// "." when it cannot be found).
func className(data []byte) string {
	if c := zodb.PickleClass(data); c != "" {
		return c
	}
	return "."
}

// dumpVerbose prints what ZODB's fsdump Dumper prints: every record's raw
// header fields, with no check beyond what is needed to walk the file.
func dumpVerbose(ctx context.Context, w io.Writer, f io.ReaderAt, size int64) error {
	var magic [4]byte
	n, err := f.ReadAt(magic[:], 0)
	if err != nil && n < len(magic) && !errors.Is(err, io.EOF) {
		return err
	}
	fmt.Fprintf(w, "%s\n", repeat('*', 60))
	fmt.Fprintf(w, "file identifier: %s\n", pyBytesRepr(magic[:n]))
	pos := int64(n)
	for pos < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		var h [fs1.TxnHeaderFixSize]byte
		if _, err := readAt(f, h[:], pos); err != nil {
			return fmt.Errorf("at %d: reading transaction header: %w", pos, err)
		}
		tid := binary.BigEndian.Uint64(h[0:])
		tlen := int64(binary.BigEndian.Uint64(h[8:]))
		status := h[16]
		ul := int64(binary.BigEndian.Uint16(h[17:]))
		dl := int64(binary.BigEndian.Uint16(h[19:]))
		el := int64(binary.BigEndian.Uint16(h[21:]))
		end := pos + tlen
		if tlen < 0 || end > size-8 || tlen < fs1.TxnHeaderFixSize+ul+dl+el {
			return fmt.Errorf("at %d: invalid transaction length %d (file size %d)", pos, tlen, size)
		}
		fmt.Fprintf(w, "%s\n", repeat('=', 60))
		fmt.Fprintf(w, "offset: %d\n", pos)
		fmt.Fprintf(w, "end pos: %d\n", end)
		fmt.Fprintf(w, "transaction id: %016x\n", tid)
		fmt.Fprintf(w, "trec len: %d\n", tlen)
		fmt.Fprintf(w, "status: %s\n", pyBytesRepr([]byte{status}))
		meta := make([]byte, ul+dl)
		if _, err := readAt(f, meta, pos+fs1.TxnHeaderFixSize); err != nil {
			return fmt.Errorf("at %d: reading transaction metadata: %w", pos, err)
		}
		// The Dumper shows an empty user or description as '' (str).
		reprOrEmpty := func(b []byte) string {
			if len(b) == 0 {
				return "''"
			}
			return pyBytesRepr(b)
		}
		fmt.Fprintf(w, "user: %s\n", reprOrEmpty(meta[:ul]))
		fmt.Fprintf(w, "description: %s\n", reprOrEmpty(meta[ul:]))
		fmt.Fprintf(w, "len(extra): %d\n", el)
		dpos := pos + fs1.TxnHeaderFixSize + ul + dl + el
		for dpos < end {
			var d [fs1.DataHeaderSize]byte
			if _, err := readAt(f, d[:], dpos); err != nil {
				return fmt.Errorf("at %d: reading data record header: %w", dpos, err)
			}
			plen := int64(binary.BigEndian.Uint64(d[34:]))
			if vlen := binary.BigEndian.Uint16(d[32:]); vlen != 0 {
				return fmt.Errorf("at %d: data record with version (vlen %d)", dpos, vlen)
			}
			fmt.Fprintf(w, "%s\n", repeat('-', 60))
			fmt.Fprintf(w, "offset: %d\n", dpos)
			fmt.Fprintf(w, "oid: %016x\n", binary.BigEndian.Uint64(d[0:]))
			fmt.Fprintf(w, "revid: %016x\n", binary.BigEndian.Uint64(d[8:]))
			fmt.Fprintf(w, "previous record offset: %d\n", binary.BigEndian.Uint64(d[16:]))
			fmt.Fprintf(w, "transaction offset: %d\n", binary.BigEndian.Uint64(d[24:]))
			fmt.Fprintf(w, "len(data): %d\n", plen)
			if plen < 0 || plen > end-dpos {
				return fmt.Errorf("at %d: data length %d goes past the transaction end %d", dpos, plen, end)
			}
			dpos += fs1.DataHeaderSize + plen
			if plen == 0 {
				var bp [8]byte
				if _, err := readAt(f, bp[:], dpos); err != nil {
					return fmt.Errorf("at %d: reading backpointer: %w", dpos, err)
				}
				fmt.Fprintf(w, "backpointer: %d\n", binary.BigEndian.Uint64(bp[:]))
				dpos += 8
			}
		}
		var tl [8]byte
		if _, err := readAt(f, tl[:], end); err != nil {
			return fmt.Errorf("at %d: reading redundant transaction length: %w", end, err)
		}
		fmt.Fprintf(w, "redundant trec len: %d\n", binary.BigEndian.Uint64(tl[:]))
		pos = end + 8
	}
	return nil
}

func readAt(f io.ReaderAt, b []byte, pos int64) (int, error) {
	n, err := f.ReadAt(b, pos)
	if n == len(b) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func repeat(c byte, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
