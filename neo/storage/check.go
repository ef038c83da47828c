package storage

import (
	"context"
	"crypto/sha1"
	"fmt"
	"log/slog"
	"slices"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/zodb"
)

// checkCount is NEO/py's CHECK_COUNT: items per replica check chunk.
const checkCount = 40000

// checkable returns an error unless the node can serve checks of p: its
// cell exists and is not OUT_OF_DATE.
func (s *Storage) checkable(p uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.ownCell(int(p))
	if !ok || c.State == proto.CellOutOfDate {
		return &peerError{proto.CheckingError, fmt.Sprintf("partition %d not readable", p), false}
	}
	return nil
}

func (h *linkHandler) askCheckTIDRange(ctx context.Context, r *neonet.Request, m *proto.AskCheckTIDRange) error {
	s := h.s
	if err := s.checkable(m.Partition); err != nil {
		return err
	}
	s.mu.Lock()
	err := s.waitWhile(ctx, func() bool { return s.tm.isLockedTid(m.MaxTid) })
	s.mu.Unlock()
	if err != nil {
		return err
	}
	a, err := s.checkTIDRange(ctx, m.Partition, m.Length, m.MinTid, m.MaxTid)
	if err != nil {
		return err
	}
	return r.Reply(ctx, a)
}

func (s *Storage) checkTIDRange(ctx context.Context, p, length uint32, minTid, maxTid zodb.Tid) (*proto.AnswerCheckTIDRange, error) {
	n, sum, last, err := s.db.CheckTIDRange(ctx, p, int(min(length, 1<<20)), minTid, maxTid)
	if err != nil {
		return nil, err
	}
	return &proto.AnswerCheckTIDRange{Count: uint64(n), Checksum: sum, MaxTid: last}, nil
}

func (h *linkHandler) askCheckSerialRange(ctx context.Context, r *neonet.Request, m *proto.AskCheckSerialRange) error {
	s := h.s
	if err := s.checkable(m.Partition); err != nil {
		return err
	}
	s.mu.Lock()
	locked := s.tm != nil && s.tm.isLockedTid(m.MaxTid)
	s.mu.Unlock()
	if locked {
		return protoErrorf("transactions must be checked before objects")
	}
	a, err := s.checkSerialRange(ctx, m.Partition, int(min(m.Length, 1<<20)), m.MinTid, m.MaxTid, m.MinOid)
	if err != nil {
		return err
	}
	return r.Reply(ctx, a)
}

// check runs a replica check ordered by the master (CheckPartition): the
// node compares its own digests with those of the other readable cells,
// and reports the cells that differ from the reference.
func (r *replicator) check(ctx context.Context, links map[proto.NodeID]*peerConn, m *proto.CheckPartition) error {
	s := r.s
	if m.Source.UpstreamName != "" {
		return fmt.Errorf("check against an upstream cluster is not supported")
	}
	if err := s.checkable(m.Partition); err != nil {
		return fmt.Errorf("partition %d: own cell is not checkable", m.Partition)
	}
	s.mu.Lock()
	own := s.nid
	ref := proto.NoNode
	refAddr, hasRef := m.Source.Addr.Get()
	var parts []source
	for _, c := range s.pt.ReadableCells(int(m.Partition)) {
		if c.NID == own {
			continue
		}
		n := s.nodes[c.NID]
		if n == nil || n.state != proto.NodeRunning {
			continue
		}
		a, ok := n.addr.Get()
		if !ok {
			continue
		}
		if hasRef && a == refAddr {
			ref = c.NID
		}
		parts = append(parts, source{c.NID, a.String()})
	}
	if hasRef && refAddr == s.addr {
		ref = own
	}
	s.mu.Unlock()
	if len(parts) == 0 {
		return fmt.Errorf("partition %d: nothing to compare with", m.Partition)
	}
	conns := map[proto.NodeID]*neonet.Link{}
	for i := range parts {
		pc, err := r.peerLink(ctx, links, &parts[i])
		if err != nil {
			return err
		}
		conns[parts[i].nid] = pc.link
	}
	// compare runs one round: answers by node, the local one included.
	compare := func(answers map[proto.NodeID]string) bool {
		refAns, hasRefAns := answers[ref]
		var bad []proto.NodeID
		same := true
		for _, a := range answers {
			for _, b := range answers {
				if a != b {
					same = false
				}
			}
		}
		if same {
			return true
		}
		for nid, a := range answers {
			if !hasRefAns || a != refAns {
				bad = append(bad, nid)
			}
		}
		slices.Sort(bad)
		s.logf(slog.LevelWarn, "replicas differ", "partition", m.Partition, "nodes", fmt.Sprint(bad))
		s.mu.Lock()
		s.send(s.master, &proto.NotifyPartitionCorrupted{Partition: m.Partition, NIDs: bad})
		s.unlock()
		for _, nid := range bad {
			delete(conns, nid)
		}
		return false
	}
	// TID phase, then serial phase
	next := m.MinTid
	for {
		answers := map[proto.NodeID]string{}
		local, err := s.checkTIDRange(ctx, m.Partition, checkCount, next, m.MaxTid)
		if err != nil {
			return err
		}
		answers[own] = fmt.Sprint(local)
		for nid, l := range conns {
			a, err := l.Ask(ctx, &proto.AskCheckTIDRange{Partition: m.Partition, Length: checkCount, MinTid: next, MaxTid: m.MaxTid})
			if err != nil {
				return fmt.Errorf("check with %s: %w", nid, err)
			}
			answers[nid] = fmt.Sprint(a)
		}
		if !compare(answers) && len(conns) == 0 {
			return nil
		}
		if local.Count < checkCount {
			break
		}
		next = local.MaxTid + 1
	}
	nextTid, nextOid := m.MinTid, zodb.Oid(0)
	for {
		answers := map[proto.NodeID]string{}
		local, err := s.checkSerialRange(ctx, m.Partition, checkCount, nextTid, m.MaxTid, nextOid)
		if err != nil {
			return err
		}
		answers[own] = fmt.Sprint(local)
		for nid, l := range conns {
			a, err := l.Ask(ctx, &proto.AskCheckSerialRange{Partition: m.Partition, Length: checkCount, MinTid: nextTid, MaxTid: m.MaxTid, MinOid: nextOid})
			if err != nil {
				return fmt.Errorf("check with %s: %w", nid, err)
			}
			answers[nid] = fmt.Sprint(a)
		}
		if !compare(answers) && len(conns) == 0 {
			return nil
		}
		if local.Count < checkCount {
			return nil
		}
		nextTid, nextOid = local.MaxTid, local.MaxOid+1
	}
}

// checkSerialRange computes AnswerCheckSerialRange, and also compares the
// data of those records with their checksums. The digests only tell which
// records a copy has: data altered on disk behind the node's back would go
// unseen by the check (and be served to readers, whose checksum test then
// fails). A record whose data does not match is not a valid copy of it, so
// the answer is made to differ from every correct replica's (its digests
// inverted), and the checker reports this node's cell.
func (s *Storage) checkSerialRange(ctx context.Context, p uint32, length int, minTid, maxTid zodb.Tid, minOid zodb.Oid) (*proto.AnswerCheckSerialRange, error) {
	a, err := s.db.CheckSerialRange(ctx, p, length, minTid, maxTid, minOid)
	if err != nil {
		return nil, err
	}
	xids, err := s.db.ObjectsFrom(ctx, p, minTid, maxTid, minOid, length)
	if err != nil {
		return nil, err
	}
	var o backend.Object
	for _, x := range xids {
		if err := s.db.Load(ctx, x.Oid, x.At, zodb.InvalidTid, &o); err != nil {
			return nil, fmt.Errorf("partition %d: verify %s: %w", p, x, err)
		}
		if o.HasData && sha1.Sum(o.Data) != o.Checksum {
			s.logf(slog.LevelError, "data does not match its checksum", "partition", p, "oid", x.Oid, "serial", x.At)
			for i := range a.TidChecksum {
				a.TidChecksum[i] ^= 0xff
				a.OidChecksum[i] ^= 0xff
			}
			break
		}
	}
	return a, nil
}
