package zodbtools

import (
	"context"
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Optional driver interfaces that zodb info uses.

// Namer is implemented by drivers that have a name to show (ZODB's
// getName(); for FileStorage the path it was opened with).
type Namer interface {
	Name() string
}

// Sizer is implemented by drivers that know their size in bytes (ZODB's
// getSize(); for FileStorage the end of the last committed transaction).
type Sizer interface {
	Size(ctx context.Context) (int64, error)
}

// pather is what FileStorage drivers have.
type pather interface {
	Path() string
}

// StorageName returns ZODB's getName() of a driver: its Name, else its
// file path, else its URL.
func StorageName(drv zodb.IStorageDriver) string {
	switch d := drv.(type) {
	case Namer:
		return d.Name()
	case pather:
		return d.Path()
	}
	return drv.URL()
}

// StorageSize returns ZODB's getSize() of a driver (see Sizer).
func StorageSize(ctx context.Context, drv zodb.IStorageDriver) (int64, error) {
	switch d := drv.(type) {
	case Sizer:
		return d.Size(ctx)
	}
	return 0, fmt.Errorf("%s: size: %w", drv.URL(), zodb.ErrUnsupported)
}
