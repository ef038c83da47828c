package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/fs1"
	"github.com/neozodb/neo/zodb/zodbtools"
)

// storageSize is ZODB's getSize() of the storage: the driver's own when it
// has one (zodbtools.Sizer), else, for a FileStorage, the end of its last
// committed transaction found from the file.
func storageSize(ctx context.Context, drv zodb.IStorageDriver) (int64, error) {
	if fsd, ok := drv.(*fs1.FileStorage); ok {
		if _, sizer := drv.(zodbtools.Sizer); !sizer {
			return fileStorageEnd(ctx, fsd.Path())
		}
	}
	return zodbtools.StorageSize(ctx, drv)
}

// fileStorageEnd returns the position just after the last committed
// transaction of the FileStorage file at path: the file size, less an
// unfinished ('c') or incomplete transaction at its end. It walks back
// from the end using the redundant lengths, and scans the whole file only
// when the end does not look like the end of a transaction.
func fileStorageEnd(ctx context.Context, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	end := size
	for end > fs1.FileHeaderSize {
		th, err := fs1.ReadTxnHeaderBefore(f, end, size, fs1.CheckTrailer)
		if err != nil {
			break // not the end of a transaction: scan
		}
		if th.Status != zodb.TxnInprogress {
			return end, nil
		}
		end = th.Pos
	}
	if end == fs1.FileHeaderSize {
		return end, nil
	}
	res, err := fs1.ScanIndex(ctx, f, size, fs1.NewIndex(), fs1.FileHeaderSize, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	return res.End, nil
}
