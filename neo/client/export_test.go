package client

import (
	"context"

	"github.com/neozodb/neo/zodb"
)

// WaitStored waits for the answers to every store of txn in flight, as
// its vote does first.
func WaitStored(ctx context.Context, t zodb.ITxn) error {
	return t.(*txn).drain(ctx, 0)
}
