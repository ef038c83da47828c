package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/fs1"
)

const dumpIndexUsage = `Usage: fs1 dump-index FILE
Print the entries of the index file FILE.index (FILE may also name the
index file itself): first "pos <n>", the data file position up to which the
index is valid, then one line "<oid> <position>" per object, in oid order.

Options:

    -h  --help      show this help
`

const reindexUsage = `Usage: fs1 reindex FILE
Rebuild FILE.index by scanning FILE, as ZODB does when it has no usable
index: every object is mapped to the position of its latest data record,
and the index is valid up to the end of the last complete transaction.

Options:

    -h  --help      show this help
`

const verifyIndexUsage = `Usage: fs1 verify-index FILE
Check FILE.index against FILE: scan FILE up to the position the index was
saved at and compare every entry. Prints the differences and exits 1 if
there are any; with -v also prints "OK" when there are none.

Options:

    -v              verbose
    -h  --help      show this help
`

// indexPath returns the index file of a data file (or the path itself if
// it already names an index).
func indexPath(path string) string {
	if len(path) > 6 && path[len(path)-6:] == ".index" {
		return path
	}
	return path + ".index"
}

func runDumpIndex(ctx context.Context, e *env, args []string) error {
	fs := newFlags("dump-index")
	path, err := oneFile(fs, args)
	if err != nil {
		return err
	}
	x, err := fs1.LoadIndexFile(indexPath(path))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	fmt.Fprintf(w, "pos %d\n", x.TopPos)
	for _, oid := range x.Oids() {
		pos, _ := x.Get(oid)
		fmt.Fprintf(w, "%s %d\n", oid, pos)
	}
	return w.Flush()
}

// scanFile builds the index of the data file at path, as ZODB does by
// scanning. It returns the index, whose TopPos is the end of the last
// complete transaction (limited to upTo when upTo > 0), and the last tid.
func scanFile(ctx context.Context, path string, upTo int64, log io.Writer) (*fs1.Index, zodb.Tid, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if _, err := fs1.ReadFileHeader(f); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	size := st.Size()
	if upTo > 0 && upTo < size {
		size = upTo
	}
	x := fs1.NewIndex()
	logger := slog.New(slog.NewTextHandler(log, nil))
	res, err := fs1.ScanIndex(ctx, f, size, x, fs1.FileHeaderSize, 0, logger)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	x.TopPos = res.End
	if res.Tail != nil {
		fmt.Fprintf(log, "%s: data after %d not indexed: %v\n", path, res.End, res.Tail)
	}
	return x, res.LastTid, nil
}

func runReindex(ctx context.Context, e *env, args []string) error {
	fs := newFlags("reindex")
	path, err := oneFile(fs, args)
	if err != nil {
		return err
	}
	x, _, err := scanFile(ctx, path, 0, e.stderr)
	if err != nil {
		return err
	}
	return x.SaveFile(path + ".index")
}

func runVerifyIndex(ctx context.Context, e *env, args []string) error {
	fs := newFlags("verify-index")
	verbose := fs.Bool("v", false, "")
	path, err := oneFile(fs, args)
	if err != nil {
		return err
	}
	saved, err := fs1.LoadIndexFile(path + ".index")
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if saved.TopPos > st.Size() {
		return &exitError{Code: 1, Msg: fmt.Sprintf("%s.index: index position %d is past the end of the file (size %d)", path, saved.TopPos, st.Size())}
	}
	scanned, _, err := scanFile(ctx, path, saved.TopPos, e.stderr)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(e.stdout)
	ndiff := 0
	if scanned.TopPos != saved.TopPos {
		ndiff++
		fmt.Fprintf(w, "index position %d, but the transactions up to it end at %d\n", saved.TopPos, scanned.TopPos)
	}
	for _, oid := range saved.Oids() {
		p, _ := saved.Get(oid)
		q, ok := scanned.Get(oid)
		switch {
		case !ok:
			ndiff++
			fmt.Fprintf(w, "%s: in index at %d, not in the file\n", oid, p)
		case p != q:
			ndiff++
			fmt.Fprintf(w, "%s: index has %d, file has %d\n", oid, p, q)
		}
	}
	for _, oid := range scanned.Oids() {
		if _, ok := saved.Get(oid); !ok {
			ndiff++
			q, _ := scanned.Get(oid)
			fmt.Fprintf(w, "%s: in the file at %d, not in index\n", oid, q)
		}
	}
	if ndiff == 0 && *verbose {
		fmt.Fprintf(w, "OK\n")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if ndiff != 0 {
		return &exitError{Code: 1, Msg: fmt.Sprintf("%s.index: %d differences with the data", path, ndiff)}
	}
	return nil
}
