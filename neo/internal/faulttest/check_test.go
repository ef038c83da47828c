package faulttest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// damage changes S1's database behind its back, while it runs (SQLite
// lets another connection in): the data of oidA's latest revision gets
// other bytes (its recorded checksum kept), and oidB's oldest revision is
// deleted.
func damage(t *testing.T, path string, np int, oidA zodb.Oid, atA zodb.Tid, oidB zodb.Oid) {
	t.Helper()
	conn, err := sqlite.OpenConn(path, sqlite.OpenReadWrite)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer conn.Close()
	conn.SetBusyTimeout(waitTimeout)
	exec := func(q string, args ...any) {
		t.Helper()
		if err := sqlitex.Execute(conn, q, &sqlitex.ExecOptions{Args: args}); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if conn.Changes() != 1 {
			t.Fatalf("%s %v: %d rows changed, want 1", q, args, conn.Changes())
		}
	}
	exec(`UPDATE data SET value = ?1 WHERE id =
		(SELECT data_id FROM obj WHERE partition = ?2 AND oid = ?3 AND tid = ?4)`,
		[]byte("damaged"), int64(uint64(oidA)%uint64(np)), int64(oidA), int64(atA))
	exec(`DELETE FROM obj WHERE partition = ?1 AND oid = ?2 AND tid =
		(SELECT MIN(tid) FROM obj WHERE partition = ?1 AND oid = ?2)`,
		int64(uint64(oidB)%uint64(np)), int64(oidB))
}

// TestCheckReplicas damages S1's database, then runs "neoctl check" of
// every partition with S2 as reference. The check compares, between
// replicas, the lists of transactions and of records (tid, oid), and each
// node compares the data of those records with their checksums: it finds
// the partition missing oidB's revision and the one where oidA's data was
// altered, and S1 is reported for both with NotifyPartitionCorrupted. The
// master marks those cells CORRUPTED (NEO/py only does with an
// experimental option): the cluster serves them from S2.
func TestCheckReplicas(t *testing.T) {
	const np = 4
	c := start(t, opts{storages: 2, replicas: 1, partitions: np})
	s := c.waitRunning()
	cl := c.client("C1")
	w := newWorkload(t, cl, 4)
	w.commitN(t, cl, 3)
	oidA, oidB := w.oids[0], w.oids[1]
	partA, partB := uint32(uint64(oidA)%np), uint32(uint64(oidB)%np)
	if partA == partB {
		t.Fatalf("oids %v and %v in one partition", oidA, oidB)
	}

	// C3 reads through S1 alone. Its read of the last revision also waits
	// until S1 processed the unlock of the last transaction.
	ctx := t.Context()
	head, err := cl.LastTid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := w.acked[head]
	c.cutBoth("C3", "S2")
	cl3 := c.client("C3")
	if b, _, _, err := cl3.Load(ctx, zodb.Xid{Oid: oidA, At: head}); err != nil || !bytes.Equal(b, data(want, oidA)) {
		t.Fatalf("load %v through S1 alone before the damage: %q, %v", oidA, b, err)
	}
	damage(t, c.storages[0].dbPath, np, oidA, head, oidB)
	s1, s2 := s.nids["S1"], s.nids["S2"]
	reports := make(chan *proto.NotifyPartitionCorrupted, 2*np)
	watch := c.net.OnPacket(faultnet.Any, "M1", proto.CodeNotifyPartitionCorrupted, func(p faultnet.Packet) bool {
		if m, err := p.Decode(); err == nil {
			reports <- m.(*proto.NotifyPartitionCorrupted)
		}
		return false
	})
	defer watch.Stop()
	args := []string{"check"}
	for p := range np {
		args = append(args, fmt.Sprintf("%d:%v", p, s2))
	}
	if out, err := c.ctl(args...); err != nil {
		t.Fatalf("neoctl %v: %v %s", args, err, out)
	}
	reported := map[uint32]bool{}
	for len(reported) < 2 {
		select {
		case r := <-reports:
			if r.Partition != partA && r.Partition != partB || len(r.NIDs) != 1 || r.NIDs[0] != s1 {
				t.Fatalf("NotifyPartitionCorrupted(%d, %v), want (%d or %d, [%v])", r.Partition, r.NIDs, partA, partB, s1)
			}
			reported[r.Partition] = true
		case <-time.After(waitTimeout):
			t.Fatalf("reports after neoctl check: %v, want partitions %d and %d", reported, partA, partB)
		}
	}
	st := c.waitFor("S1's damaged cells CORRUPTED", func(st *state) bool {
		cells := st.cells("S1")
		return cells[int(partA)] == proto.CellCorrupted && cells[int(partB)] == proto.CellCorrupted
	})
	for p, cs := range st.cells("S1") {
		if p != int(partA) && p != int(partB) && cs != proto.CellUpToDate {
			t.Errorf("S1's intact cell %d is %v after the check", p, cs)
		}
	}

	st = c.waitRunning()
	t.Logf("after the check: %v", st)
	for p, cs := range st.cells("S2") {
		if cs != proto.CellUpToDate {
			t.Errorf("S2's cell %d is %v", p, cs)
		}
	}

	// The damaged data is never served: read through S1 alone it fails
	// (not readable there any more), through the cluster it is S2's.
	if b, _, _, err := cl3.Load(ctx, zodb.Xid{Oid: oidA, At: head}); err == nil {
		t.Errorf("load %v through S1 alone: %q, want an error (checksum)", oidA, b)
	}
	c.healBoth("C3", "S2")
	for range 10 {
		b, serial, _, err := cl.Load(ctx, zodb.Xid{Oid: oidA, At: head})
		if err != nil {
			t.Fatalf("load %v: %v", oidA, err)
		}
		if serial != head || !bytes.Equal(b, data(want, oidA)) {
			t.Fatalf("load %v: %q at %v, want %q at %v", oidA, b, serial, data(want, oidA), head)
		}
	}
	cl3.Close()
}
