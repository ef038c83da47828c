package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/cluster"
)

// TestMastersStop: with several masters, "neoctl set cluster STOPPING"
// stops every node, the secondary masters included, and no master takes
// over as primary.
func TestMastersStop(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d masters", n), func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Masters: n, Storages: 2, Replicas: 1})
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			p, err := c.WaitPrimary(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stor := c.Open(t, "C1", nil)
			oid, err := stor.NewOid(ctx)
			if err != nil {
				t.Fatal(err)
			}
			commit(t, stor, oid, 0, "x")
			t.Logf("primary %s", c.MasterName(p))
			sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
			defer scancel()
			if err := c.Stop(sctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
