package storage

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

// packLimit is how many oids one Pack call examines (a variable for tests).
var packLimit = 1000

// packProgress returns, for the node's own cells, the completed pack id of
// each readable one and the smallest over all of them (ok false: no cell).
func (s *Storage) packProgress(ctx context.Context, nid proto.NodeID) (readable map[uint32]zodb.Tid, minDone zodb.Tid, ok bool, err error) {
	cells, err := s.db.PartitionTable(ctx)
	if err != nil {
		return nil, 0, false, err
	}
	readable = map[uint32]zodb.Tid{}
	for _, c := range cells {
		if c.NID != nid || !c.HasPack {
			continue
		}
		if !ok || c.Pack < minDone {
			minDone, ok = c.Pack, true
		}
		if (pt.Cell{NID: c.NID, State: c.State}).Readable() {
			readable[c.Partition] = c.Pack
		}
	}
	return readable, minDone, ok, nil
}

// notifyPackCompleted tells the master the smallest completed pack id of
// the node's cells, if it changed; mu held.
func (s *Storage) notifyPackCompleted(minDone zodb.Tid) {
	if s.master == nil || minDone == s.packReported {
		return
	}
	s.packReported = minDone
	s.send(s.master, &proto.NotifyPackCompleted{PackID: minDone})
}

// packNext processes the next approved pack order, if any partition is
// behind the last approved one. It returns false when there is nothing to
// do.
func (r *replicator) packNext(ctx context.Context) (bool, error) {
	s := r.s
	s.mu.Lock()
	last, master, nid := s.lastPackID, s.master, s.nid
	s.mu.Unlock()
	if last == 0 || master == nil || last == r.packNone {
		return false, nil
	}
	readable, minDone, ok, err := s.packProgress(ctx, nid)
	if err != nil || !ok {
		return false, err
	}
	behind := zodb.TidMax
	for _, done := range readable {
		if done < last && done < behind {
			behind = done
		}
	}
	if behind == zodb.TidMax {
		s.mu.Lock()
		s.notifyPackCompleted(minDone)
		s.unlock()
		return false, nil
	}
	ans, err := master.Ask(ctx, &proto.AskPackOrders{MinPackID: behind + 1})
	if err != nil {
		return false, fmt.Errorf("AskPackOrders: %w", err)
	}
	a, ok := ans.(*proto.AnswerPackOrders)
	if !ok {
		return false, fmt.Errorf("AskPackOrders: unexpected answer %T", ans)
	}
	var order *proto.PackOrder
	for i := range a.Orders {
		o := &a.Orders[i]
		if approved, ok := o.Approved.Get(); ok && approved && o.PackID > behind {
			order = o
			break
		}
	}
	if order == nil {
		r.packNone = last // nothing to do until another order is approved
		return false, nil
	}
	s.mu.Lock()
	np := s.np()
	s.mu.Unlock()
	for p, done := range readable {
		if done >= order.PackID {
			continue
		}
		var oids []zodb.Oid
		if list, partial := order.Oids.Get(); partial && order.Partial {
			oids = []zodb.Oid{}
			for _, oid := range list {
				if pt.Partition(uint64(oid), np) == int(p) {
					oids = append(oids, oid)
				}
			}
		}
		s.logf(slog.LevelInfo, "packing", "partition", p, "order", order.PackID, "tid", order.PackTid)
		for next := zodb.Oid(0); ; {
			n, more, err := s.db.Pack(ctx, p, order.PackTid, oids, next, packLimit)
			if err != nil {
				return false, fmt.Errorf("pack partition %d at %s: %w", p, order.PackTid, err)
			}
			if oids != nil || !more {
				break
			}
			next = n
		}
		if err := s.db.SetPartitionPacked(ctx, p, order.PackID); err != nil {
			return false, err
		}
		if err := s.db.Commit(ctx); err != nil {
			return false, err
		}
	}
	if _, minDone, ok, err := s.packProgress(ctx, nid); err == nil && ok {
		s.mu.Lock()
		s.notifyPackCompleted(minDone)
		s.unlock()
	}
	return true, nil
}
