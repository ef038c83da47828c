package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/neozodb/neo/zodb/storage/fs1"
)

const verifyUsage = `Usage: fs1 verify [-v [-v]] FILE
Check the framing of a FileStorage, as ZODB's fstest does: increasing tids,
transaction and data record lengths, status bytes, transaction positions in
data records and the redundant lengths. Object pickles are not checked.

Prints nothing and exits 0 when the file is fine. On the first error found
it prints one message to stderr and exits 1.

With -v, prints a line per transaction (and "no errors detected" at the
end); with -v -v, also a line per data record, before the line of its
transaction.

Options:

    -v              verbose (repeat for more)
    -h  --help      show this help
`

// fstestError is a format error reported with fstest's message.
type fstestError struct{ msg string }

func (e *fstestError) Error() string { return e.msg }

func runVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlags("verify")
	var verbose countFlag
	fs.Var(&verbose, "v", "")
	path, err := oneFile(fs, args)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	err = fstest(ctx, w, path, int(verbose))
	if err2 := w.Flush(); err == nil {
		err = err2
	}
	if fe, ok := err.(*fstestError); ok {
		return &exitError{Code: 1, Msg: fe.msg}
	}
	return err
}

func hexify(b []byte) string { return fmt.Sprintf("0x%x", b) }

// fstest checks the file at path; verbose as fstest's -v count.
func fstest(ctx context.Context, w io.Writer, path string, verbose int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return fstestFile(ctx, w, path, f, st.Size(), verbose)
}

// fstestFile checks the size bytes of f, named path in messages.
func fstestFile(ctx context.Context, w io.Writer, path string, f io.ReaderAt, size int64, verbose int) error {
	fail := func(format string, args ...any) error {
		return &fstestError{path + " " + fmt.Sprintf(format, args...)}
	}
	if size == 0 {
		return &fstestError{"empty file"}
	}
	var magic [4]byte
	if n, _ := f.ReadAt(magic[:], 0); n != 4 || (string(magic[:]) != fs1.Magic && string(magic[:]) != fs1.Magic21) {
		return &fstestError{"invalid file header"}
	}

	pos := int64(4)
	ltid := make([]byte, 8)
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		tpos := pos
		var h [fs1.TxnHeaderFixSize]byte
		n, err := f.ReadAt(h[:], pos)
		if n == 0 && (err == io.EOF || pos >= size) {
			break
		}
		if n != len(h) {
			return fail("truncated at %d", pos)
		}
		tid := append([]byte(nil), h[:8]...)
		stl := h[8:16]
		status := h[16]
		ul := int64(binary.BigEndian.Uint16(h[17:]))
		dl := int64(binary.BigEndian.Uint16(h[19:]))
		el := int64(binary.BigEndian.Uint16(h[21:]))
		tmetaLen := fs1.TxnHeaderFixSize + ul + dl + el

		if string(tid) <= string(ltid) {
			return fail("time-stamp reduction at %d: %s <= %s", pos, hexify(tid), hexify(ltid))
		}
		ltid = tid
		tl := binary.BigEndian.Uint64(stl)
		if tl > uint64(size) || pos+int64(tl)+8 > size {
			return fail("truncated possibly because of damaged records at %d", pos)
		}
		if status == 'c' {
			return fail("checkpoint flag was not cleared at %d", pos)
		}
		if status != ' ' && status != 'u' && status != 'p' {
			return fail("has invalid status '%c' at %d", status, pos)
		}
		if tmetaLen > int64(tl) {
			return fail("has an invalid transaction header at %d", pos)
		}
		tend := tpos + int64(tl)
		if status != 'u' {
			pos = tpos + tmetaLen
			for j := 0; pos < tend; j++ {
				dpos := pos
				var d [fs1.DataHeaderSize]byte
				if n, _ := f.ReadAt(d[:], pos); n != len(d) {
					return fail("truncated at %d", pos)
				}
				tloc := binary.BigEndian.Uint64(d[24:])
				vlen := int64(binary.BigEndian.Uint16(d[32:]))
				plen := binary.BigEndian.Uint64(d[34:])
				dlen := uint64(fs1.DataHeaderSize)
				if plen == 0 {
					dlen += 8
				} else {
					dlen += plen
				}
				if vlen != 0 {
					dlen += 16 + uint64(vlen)
				}
				if tloc != uint64(tpos) {
					return fail("data record exceeds transaction record at %d: tloc %d != tpos %d", pos, tloc, tpos)
				}
				if dlen > uint64(size) {
					return fail("has data records that extend beyond the transaction record; end at %d", uint64(pos)+dlen)
				}
				pos += int64(dlen)
				if pos > tend {
					return fail("has data records that extend beyond the transaction record; end at %d", pos)
				}
				if verbose >= 2 {
					fmt.Fprintf(w, "%10d: object oid %s #%d\n", dpos, hexify(d[:8]), j)
				}
			}
		}
		var rtl [8]byte
		if n, _ := f.ReadAt(rtl[:], tend); n != 8 || string(rtl[:]) != string(stl) {
			return fail("has inconsistent transaction length for undone transaction at %d", pos)
		}
		pos = tend + 8
		if verbose >= 1 {
			fmt.Fprintf(w, "%10d: transaction tid %s #%d \n", tpos, hexify(tid), i)
		}
	}
	if verbose >= 1 {
		fmt.Fprint(w, "no errors detected")
	}
	return nil
}
