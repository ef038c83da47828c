package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func commit(t *testing.T, stor *zodb.Storage, oid zodb.Oid, serial zodb.Tid, data string) zodb.Tid {
	t.Helper()
	ctx := t.Context()
	txn, err := stor.Begin(ctx, zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Store(ctx, oid, serial, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.Vote(ctx); err != nil {
		t.Fatal(err)
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

// TestRestartReplicates: a storage that missed commits while it was down
// catches up when it comes back, and then serves them alone.
func TestRestartReplicates(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1, Partitions: 2})
	stor := c.Open(t, "C1", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	oids, err := stor.NewOids(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	serials := map[zodb.Oid]zodb.Tid{}
	for _, oid := range oids[:2] {
		serials[oid] = commit(t, stor, oid, 0, "before "+oid.String())
	}

	c.KillStorage(0)
	for _, oid := range oids[2:] {
		serials[oid] = commit(t, stor, oid, 0, "while S1 down "+oid.String())
	}
	if err := c.RestartStorage(0); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("S1 back: %v", err)
	}
	if err := c.WaitUpToDate(ctx); err != nil {
		t.Fatalf("S1 back: replication: %v", err)
	}

	c.KillStorage(1)
	for i, oid := range oids {
		data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
		if err != nil {
			t.Fatalf("load %v from S1 alone: %v", oid, err)
		}
		want := "before "
		if i >= 2 {
			want = "while S1 down "
		}
		if string(data) != want+oid.String() || serial != serials[oid] {
			t.Errorf("load %v from S1 alone: %q at %v", oid, data, serial)
		}
	}
}

// TestMasterRestart: the master is killed and started again; the cluster
// recovers from its storages, clients reconnect, see what was committed
// meanwhile by others, and commit again.
func TestMasterRestart(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	a := c.Open(t, "C1", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	oid, err := a.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t1 := commit(t, a, oid, 0, "before")

	c.KillMaster(0)
	if err := c.RestartMaster(0); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("after the master restart: %v", err)
	}
	t2 := commit(t, a, oid, t1, "after")
	if t2 <= t1 {
		t.Errorf("tid %v after restart not after %v", t2, t1)
	}
	b := c.Open(t, "C2", nil)
	data, serial, _, err := b.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
	if err != nil || string(data) != "after" || serial != t2 {
		t.Errorf("load: %q at %v: %v", data, serial, err)
	}
}

// TestManualStart: without autostart the cluster waits in RECOVERING until
// neoctl's "start".
func TestManualStart(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 1, Autostart: -1, NoWait: true})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// RECOVERING, with the storage known (pending).
	err := c.WaitState(ctx, func(st proto.ClusterState, storages map[string]proto.NodeState) bool {
		return st == proto.ClusterRecovering && len(storages) == 1
	})
	if err != nil {
		t.Fatalf("waiting for RECOVERING: %v", err)
	}
	// The master refuses while it still asks the storage for its
	// partition table ("node S1 is entering cluster"): asked again.
	for {
		var out strings.Builder
		err := ctl.Run(ctx, c.AdminAddr(), nil, []string{"start"}, &out)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "is entering cluster") || ctx.Err() != nil {
			t.Fatalf("neoctl start: %v %s", err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("after neoctl start: %v", err)
	}
}
