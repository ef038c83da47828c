package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// TestClusterCatchUpUnderLoad runs the real master and client: a storage
// that was down catches up while clients keep committing (its stores are
// lockless meanwhile), then serves everything alone once the other one
// is gone.
func TestClusterCatchUpUnderLoad(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := c.Open(t, "C1", nil)

	type rev struct {
		serial zodb.Tid
		data   string
	}
	history := map[zodb.Oid][]rev{}
	var oids []zodb.Oid
	for i := 0; i < 20; i++ {
		oid, err := st.NewOid(ctx)
		if err != nil {
			t.Fatal(err)
		}
		oids = append(oids, oid)
	}
	round := 0
	commitRound := func() {
		t.Helper()
		txn, err := st.Begin(ctx, zodb.TxnMeta{User: []byte("u"), Description: []byte(fmt.Sprint("round ", round))})
		if err != nil {
			t.Fatal(err)
		}
		var changed []zodb.Oid
		for i, oid := range oids {
			if (i+round)%3 != 0 {
				continue
			}
			var serial zodb.Tid
			if h := history[oid]; len(h) > 0 {
				serial = h[len(h)-1].serial
			}
			if err := txn.Store(ctx, oid, serial, []byte(fmt.Sprintf("oid %d round %d", oid, round))); err != nil {
				t.Fatal(err)
			}
			changed = append(changed, oid)
		}
		if _, err := txn.Vote(ctx); err != nil {
			t.Fatal(err)
		}
		tid, err := txn.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, oid := range changed {
			history[oid] = append(history[oid], rev{tid, fmt.Sprintf("oid %d round %d", oid, round)})
		}
		round++
	}
	for i := 0; i < 6; i++ {
		commitRound()
	}

	c.KillStorage(1)
	addr1 := c.StorageAddr(1)
	if err := c.WaitState(ctx, func(s proto.ClusterState, nodes map[string]proto.NodeState) bool {
		return s == proto.ClusterRunning && nodes[addr1] == proto.NodeDown
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		commitRound()
	}
	if err := c.RestartStorage(1); err != nil {
		t.Fatal(err)
	}
	// commit while S2 catches up, until all its cells are readable
	admin, err := (&neonet.Dialer{Net: c.Net.Endpoint("test")}).Dial(ctx, c.AdminAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for upToDate := false; !upToDate; {
		commitRound()
		m, err := admin.Ask(ctx, &proto.AskPartitionList{})
		if err != nil {
			t.Fatal(err)
		}
		upToDate = true
		for _, row := range m.(*proto.AnswerPartitionList).Rows {
			for _, cell := range row {
				upToDate = upToDate && cell.State == proto.CellUpToDate
			}
			upToDate = upToDate && len(row) == 2
		}
		if round > 500 {
			t.Fatalf("S2 not up to date after %d rounds: %+v", round, m)
		}
	}
	commitRound()

	// S1 goes away: S2 alone serves every revision
	c.KillStorage(0)
	addr0 := c.StorageAddr(0)
	if err := c.WaitState(ctx, func(s proto.ClusterState, nodes map[string]proto.NodeState) bool {
		return s == proto.ClusterRunning && nodes[addr0] == proto.NodeDown
	}); err != nil {
		t.Fatal(err)
	}
	// a new client, whose cache is empty
	fresh := c.Open(t, "C2", nil)
	n := 0
	for oid, revs := range history {
		for i, r := range revs {
			data, serial, _, err := fresh.Load(ctx, zodb.Xid{Oid: oid, At: r.serial})
			if err != nil || serial != r.serial || string(data) != r.data {
				t.Fatalf("%s revision %d: %q %s %v; want %q %s", oid, i, data, serial, err, r.data, r.serial)
			}
			n++
		}
	}
	t.Logf("%d rounds, %d revisions read from the caught-up storage", round, n)
}
