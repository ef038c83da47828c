package main

import (
	"context"
	"fmt"
	"os"

	"github.com/neozodb/neo/zodb/storage/fs1"
)

const infoUsage = `Usage: fs1 info FILE
Print general information about a FileStorage file:

	magic=FS30             file format (FS21: written by ZODB on Python 2)
	size=<n>               size of the file
	end=<n>                end of the last complete transaction (ZODB's getSize)
	head=<tid>             tid of the last committed transaction
	objects=<n>            number of objects (deleted ones included)

Options:

    -h  --help      show this help
`

func runInfo(ctx context.Context, e *env, args []string) error {
	fs := newFlags("info")
	path, err := oneFile(fs, args)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	magic, err := fs1.ReadFileHeader(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	x, head, err := scanFile(ctx, path, 0, e.stderr)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "magic=%s\nsize=%d\nend=%d\nhead=%s\nobjects=%d\n", magic, st.Size(), x.TopPos, head, x.Len())
	return err
}
