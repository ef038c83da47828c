package admin_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/internal/cluster"
	"github.com/neozodb/neo/neo/proto"
)

// TestCluster drives a real cluster (master, storages, this admin) with
// neoctl.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole cluster; skipped with -short")
	}
	c := cluster.Start(t, cluster.Options{Storages: 2, Partitions: 12})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	neoctl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := ctl.Run(ctx, c.AdminAddr(), nil, args, &out)
		return out.String(), err
	}
	mustCtl := func(args ...string) string {
		t.Helper()
		out, err := neoctl(args...)
		if err != nil {
			t.Fatalf("neoctl %s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	if out := mustCtl("print", "cluster"); out != "RUNNING\n" {
		t.Errorf("print cluster: %q", out)
	}
	if out := mustCtl("print", "primary"); out != "M1\n" {
		t.Errorf("print primary: %q", out)
	}

	// print node: one admin, one master, two running storages.
	nodeLine := regexp.MustCompile(`^([ACMS]\d+) +\| (ADMIN|MASTER|STORAGE|CLIENT) +\| (127\.0\.0\.1:\d+) +\| (RUNNING|PENDING|DOWN) +\| (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?|None)$`)
	types := map[string]int{}
	out := mustCtl("print", "node")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		m := nodeLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("print node: bad line %q", l)
			continue
		}
		if m[4] != "RUNNING" {
			t.Errorf("print node: %s is %s", m[1], m[4])
		}
		types[m[2]]++
	}
	if types["ADMIN"] != 1 || types["MASTER"] != 1 || types["STORAGE"] != 2 {
		t.Errorf("print node: got %v:\n%s", types, out)
	}
	// The columns are aligned.
	for _, l := range lines[1:] {
		if len(l) < 40 || strings.Index(l, "|") != strings.Index(lines[0], "|") {
			t.Errorf("print node: misaligned:\n%s", out)
			break
		}
	}

	// print pt: 12 partitions, each readable on one of the two storages.
	pt := mustCtl("print", "pt")
	ptRE := regexp.MustCompile(`^# ptid: \d+, replicas: 0\n {6}       10v\nS1 R ([U.]{12})\nS2 R ([U.]{12})\n$`)
	m := ptRE.FindStringSubmatch(pt)
	if m == nil {
		t.Fatalf("print pt:\n%s", pt)
	}
	for p := range 12 {
		if (m[1][p] == 'U') == (m[2][p] == 'U') {
			t.Errorf("print pt: partition %d not on exactly one storage:\n%s", p, pt)
		}
	}
	rows := mustCtl("print", "pt", "0", "2")
	if !regexp.MustCompile(`^# ptid: \d+, replicas: 0\n000 \| S\d - UP_TO_DATE \|\n001 \| S\d - UP_TO_DATE \|\n$`).MatchString(rows) {
		t.Errorf("print pt 0 2:\n%s", rows)
	}

	// start: the cluster is already running, the master refuses.
	if out, err := neoctl("start"); err == nil || strings.HasPrefix(err.Error(), "ERROR") || strings.HasPrefix(err.Error(), "unexpected") {
		t.Errorf("start on a running cluster: %q, %v; want the master's refusal", out, err)
	}

	// tweak: balanced already; a dry run without S2 moves everything to
	// S1 and changes nothing for real.
	if out := mustCtl("tweak", "-n"); out != "No change done.\n" {
		t.Errorf("tweak -n:\n%s", out)
	}
	dry := mustCtl("tweak", "-n", "S2")
	if !regexp.MustCompile(`^ {6}       10v\nS1 R [UO]{12}\nS2 R [U.]{12}\n$`).MatchString(dry) {
		t.Errorf("tweak -n S2:\n%s", dry)
	}
	if after := mustCtl("print", "pt"); after != pt {
		t.Errorf("partition table changed by a dry run:\nbefore:\n%s\nafter:\n%s", pt, after)
	}

	// Two copies of each partition: the tweak adds out-of-date cells,
	// which replication then brings up to date.
	if out := mustCtl("set", "replicas", "1"); out != "\n" {
		t.Errorf("set replicas 1: %q", out)
	}
	if pt := mustCtl("print", "pt", "0", "1"); !regexp.MustCompile(`^# ptid: \d+, replicas: 1\n`).MatchString(pt) {
		t.Errorf("print pt 0 1 after set replicas:\n%s", pt)
	}
	tweaked := mustCtl("tweak")
	if !regexp.MustCompile(`^ {6}       10v\nS1 R [UO]{12}\nS2 R [UO]{12}\n$`).MatchString(tweaked) || strings.Count(tweaked, "O") != 12 {
		t.Errorf("tweak:\n%s", tweaked)
	}
	if err := c.WaitState(ctx, func(proto.ClusterState, map[string]proto.NodeState) bool {
		pt, err := neoctl("print", "pt")
		return err == nil && strings.Count(pt, "U") == 24
	}); err != nil {
		t.Errorf("replication did not complete: %v", err)
	}
	mustCtl("flush_log")

	ids := mustCtl("print", "ids")
	if !regexp.MustCompile(`^last_oid = 0x[0-9a-f]+\nlast_tid = 0x[0-9a-f]+ \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\)\nlast_ptid = \d+\n$`).MatchString(ids) {
		t.Errorf("print ids:\n%s", ids)
	}
	summary := mustCtl("print", "summary")
	if !regexp.MustCompile(`^# \{\}\nRUNNING; UP_TO_DATE=24; ltid=[0-9a-f]{16} \(.*\)\n$`).MatchString(summary) {
		t.Errorf("print summary:\n%s", summary)
	}
}
