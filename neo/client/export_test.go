package client

import (
	"context"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// WaitStored waits for the answers to every store of txn in flight, as
// its vote does first.
func WaitStored(ctx context.Context, t zodb.ITxn) error {
	return t.(*txn).drain(ctx, 0)
}

// TTid returns the temporary tid of a transaction.
func TTid(t zodb.ITxn) zodb.Tid { return t.(*txn).ttid }

// WriteCells returns the storages that receive the writes of the
// partition of x (an oid or a tid).
func WriteCells(c *Client, x uint64) []proto.NodeID {
	p, err := c.partition(x)
	if err != nil {
		return nil
	}
	return c.writeCells(p)
}
