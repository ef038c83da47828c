package master_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

func commit(t *testing.T, ctx context.Context, st *zodb.Storage, oid zodb.Oid, serial zodb.Tid, data string) zodb.Tid {
	t.Helper()
	txn, err := st.Begin(ctx, zodb.TxnMeta{User: []byte("u"), Description: []byte("d")})
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

// cellsUpToDate asks the admin for the partition table until every cell
// is UP_TO_DATE and every partition has want cells.
func cellsUpToDate(ctx context.Context, adminAddr string, net neonet.Network, want int) error {
	d := neonet.Dialer{Net: net}
	l, err := d.Dial(ctx, adminAddr)
	if err != nil {
		return err
	}
	defer l.Close()
	var last any
	for {
		m, err := l.Ask(ctx, &proto.AskPartitionList{})
		if err != nil {
			return err
		}
		ok := true
		for _, row := range m.(*proto.AnswerPartitionList).Rows {
			n := 0
			for _, c := range row {
				if c.State == proto.CellUpToDate {
					n++
				}
			}
			ok = ok && n == want && len(row) == want
		}
		if ok {
			return nil
		}
		last = m
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: last partition table %+v", ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// With one replica, losing a storage keeps the cluster running; when it
// comes back it catches up and its cells are UP_TO_DATE again.
func TestClusterStorageLossAndReturn(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := c.Open(t, "C1", nil)
	oid, err := st.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tid1 := commit(t, ctx, st, oid, 0, "one")

	c.KillStorage(1)
	addr := c.StorageAddr(1)
	if err := c.WaitState(ctx, func(s proto.ClusterState, storages map[string]proto.NodeState) bool {
		return s == proto.ClusterRunning && storages[addr] == proto.NodeDown
	}); err != nil {
		t.Fatalf("storage loss: %v", err)
	}
	tid2 := commit(t, ctx, st, oid, tid1, "two")
	if tid2 <= tid1 {
		t.Fatalf("tids %v then %v", tid1, tid2)
	}

	if err := c.RestartStorage(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := cellsUpToDate(ctx, c.AdminAddr(), c.Net.Endpoint("test"), 2); err != nil {
		t.Fatalf("replication: %v", err)
	}
	data, serial, _, err := st.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
	if err != nil || string(data) != "two" || serial != tid2 {
		t.Fatalf("load: %q %v %v", data, serial, err)
	}
}

// Clients committing at the same time get distinct, increasing tids.
func TestClusterConcurrentCommits(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Partitions: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const clients, commits = 4, 15
	type result struct {
		tids []zodb.Tid
		err  error
	}
	results := make(chan result, clients)
	var stores []*zodb.Storage
	for i := range clients {
		stores = append(stores, c.Open(t, fmt.Sprintf("C%d", i+1), nil))
	}
	for _, st := range stores {
		go func() {
			var r result
			defer func() { results <- r }()
			oid, err := st.NewOid(ctx)
			if err != nil {
				r.err = err
				return
			}
			serial := zodb.Tid(0)
			for j := range commits {
				txn, err := st.Begin(ctx, zodb.TxnMeta{})
				if err == nil {
					err = txn.Store(ctx, oid, serial, []byte(fmt.Sprint(j)))
				}
				if err == nil {
					_, err = txn.Vote(ctx)
				}
				if err == nil {
					serial, err = txn.Finish(ctx)
				}
				if err != nil {
					r.err = err
					return
				}
				r.tids = append(r.tids, serial)
			}
		}()
	}
	seen := map[zodb.Tid]bool{}
	for range clients {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		for i, tid := range r.tids {
			if seen[tid] {
				t.Fatalf("tid %v given twice", tid)
			}
			seen[tid] = true
			if i > 0 && tid <= r.tids[i-1] {
				t.Fatalf("tids of one client not increasing: %v", r.tids)
			}
		}
	}
}

// Losing every storage stops operation; when they come back with their
// data, the cluster restarts by itself from their partition table.
func TestClusterAllStoragesRestart(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := c.Open(t, "C1", nil)
	oid, err := st.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tid := commit(t, ctx, st, oid, 0, "kept")
	c.StopStorage(0)
	c.StopStorage(1)
	if err := c.WaitState(ctx, func(s proto.ClusterState, _ map[string]proto.NodeState) bool {
		return s == proto.ClusterRecovering
	}); err != nil {
		t.Fatalf("after losing the storages: %v", err)
	}
	for i := range 2 {
		if err := c.RestartStorage(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	st2 := c.Open(t, "C2", nil)
	data, serial, _, err := st2.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
	if err != nil || string(data) != "kept" || serial != tid {
		t.Fatalf("load after restart: %q %v %v", data, serial, err)
	}
	tid2 := commit(t, ctx, st2, oid, tid, "new")
	if tid2 <= tid {
		t.Fatalf("tid %v after %v", tid2, tid)
	}
}

// neoctl truncate: operation stops, storages truncate, the cluster runs
// again with the truncation tid as last transaction.
func TestClusterTruncate(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := c.Open(t, "C1", nil)
	oid, err := st.NewOid(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tids []zodb.Tid
	serial := zodb.Tid(0)
	for i := range 3 {
		serial = commit(t, ctx, st, oid, serial, fmt.Sprint(i))
		tids = append(tids, serial)
	}
	d := neonet.Dialer{Net: c.Net.Endpoint("ctl")}
	l, err := d.Dial(ctx, c.AdminAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = l.Ask(ctx, &proto.Truncate{Tid: tids[1]})
	var e *proto.Error
	if !errors.As(err, &e) || e.Code != proto.Ack {
		t.Fatalf("truncate: %v", err)
	}
	if err := c.WaitRunning(ctx); err != nil {
		t.Fatalf("after truncate: %v", err)
	}
	// The admin may not have reconnected to the master yet: poll.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m, err := l.Ask(ctx, &proto.AskLastTransaction{})
		if err == nil && m.(*proto.AnswerLastTransaction).Tid == tids[1] {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("last transaction after truncate: %v %v, want %v", m, err, tids[1])
		}
	}
}

// neoctl commands through the admin node get the master's answers.
func TestClusterNeoctl(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Storages: 2, Replicas: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		args []string
		out  string // expected output, or
		err  string // expected error
	}{
		{args: []string{"print", "cluster"}, out: "RUNNING\n"},
		{args: []string{"start"}, err: "Can not switch to this state"},
		{args: []string{"set", "cluster", "RUNNING"}, err: "Invalid state requested"},
		{args: []string{"drop", "S2"}, err: "a running node must be stopped before removal"},
		{args: []string{"truncate", "0"}, err: "Truncating after last transaction does nothing"},
		{args: []string{"kill", "S2"}, out: "state changed\n"},
		{args: []string{"kill", "S2"}, out: "node already in DOWN state\n"},
		{args: []string{"drop", "S2"}, out: "node permanently removed\n"},
		{args: []string{"tweak"}, out: "No change done.\n"},
		{args: []string{"set", "cluster", "STOPPING"}, out: "Cluster state changed\n"},
	} {
		var out bytes.Buffer
		err := ctl.Run(ctx, c.AdminAddr(), nil, tc.args, &out)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("neoctl %v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || out.String() != tc.out {
			t.Errorf("neoctl %v: %q %v, want %q", tc.args, out.String(), err, tc.out)
		}
	}
}
