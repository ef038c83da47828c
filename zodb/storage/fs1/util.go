package fs1

import (
	"context"
	"fmt"
	"io"
	"log/slog"
)

var (
	backgroundCtx = context.Background()
	discardLog    = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// diffIndex describes the first difference between the index x (checked)
// and y (built from the file), or returns nil.
func diffIndex(x, y *Index) error {
	if x.TopPos != y.TopPos {
		return fmt.Errorf("index: position %d, file scanned up to %d", x.TopPos, y.TopPos)
	}
	for _, oid := range y.Oids() {
		want, _ := y.Get(oid)
		got, ok := x.Get(oid)
		if !ok {
			return fmt.Errorf("index: %v missing (file has it at %d)", oid, want)
		}
		if got != want {
			return fmt.Errorf("index: %v at %d, file has its latest record at %d", oid, got, want)
		}
	}
	for _, oid := range x.Oids() {
		if _, ok := y.Get(oid); !ok {
			got, _ := x.Get(oid)
			return fmt.Errorf("index: %v at %d is not in the file", oid, got)
		}
	}
	return nil
}
