package zodb

import (
	"context"

	"github.com/neozodb/neo/transaction"
)

// ReencodeObject loads oid through a new connection of db (at the
// storage's last tid, with an empty cache) and encodes it again as a
// commit would store it.
func ReencodeObject(ctx context.Context, db *DB, oid Oid) (IPersistent, []byte, error) {
	c := newConnection(db)
	at, err := db.stor.LastTid(ctx)
	if err != nil {
		return nil, nil, err
	}
	c.at = at
	c.txn = &transaction.Transaction{}
	// a connection of every database of the multi-database, at their
	// last tid
	c.group = map[string]*Connection{db.name: c}
	for name, other := range db.databases {
		if other != db {
			oc := newConnection(other)
			if oc.at, err = other.stor.LastTid(ctx); err != nil {
				return nil, nil, err
			}
			oc.group = c.group
			oc.txn = c.txn
			c.group[name] = oc
		}
	}
	obj, err := c.Get(ctx, oid)
	if err != nil {
		return nil, nil, err
	}
	data, err := c.encodeObject(ctx, obj)
	return obj, data, err
}

// CacheLive counts the objects of c's cache that are still alive.
func CacheLive(c *Connection) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, wp := range c.cache {
		if wp.Value() != nil {
			n++
		}
	}
	return n
}

// PendingLen returns how many events c has queued.
func PendingLen(c *Connection) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
