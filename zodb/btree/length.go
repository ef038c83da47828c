package btree

import (
	"context"
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Length is BTrees.Length.Length: a counter kept beside a tree, whose
// state is a plain int; concurrent changes are added up by the conflict
// resolution package zodb registers for it.
type Length struct {
	zodb.Persistent
	value int64
}

// Value returns the counter.
func (l *Length) Value(ctx context.Context) (int64, error) {
	if err := l.PActivate(ctx); err != nil {
		return 0, err
	}
	return l.value, nil
}

// Change adds delta to the counter.
func (l *Length) Change(ctx context.Context, delta int64) error {
	if err := l.PActivate(ctx); err != nil {
		return err
	}
	l.value += delta
	l.PModify()
	return nil
}

// Set sets the counter.
func (l *Length) Set(ctx context.Context, v int64) error {
	if err := l.PActivate(ctx); err != nil {
		return err
	}
	l.value = v
	l.PModify()
	return nil
}

// PyGetState returns the int.
func (l *Length) PyGetState() any { return l.value }

// PySetState accepts an int.
func (l *Length) PySetState(state any) error {
	v, err := intFromPy[int64](state)
	if err != nil {
		return fmt.Errorf("Length: %w", err)
	}
	l.value = v
	return nil
}

func init() {
	zodb.RegisterClass("BTrees.Length.Length", func() zodb.IPersistent { return new(Length) }, nil)
}
