package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// command is one neoctl command: its help and what it does. do returns the
// text to print (show false: nothing, not even a newline).
type command struct {
	name string
	help string // first line: summary; then parameters, indented
	do   func(ctx context.Context, c *client, params []string) (out string, show bool, err error)
	sub  []*command
}

// commands is neoctl's command tree, in the order the usage lists it.
var commands = []*command{
	{name: "print", sub: []*command{
		{name: "ids", do: printIDs, help: `
Print the last ids: the last oid (or the backup tid of a backup
cluster), the last tid and the partition table id.`},
		{name: "pt", do: printPT, help: `
Print the partition table: the whole table in compact form, or the
rows between two offsets, one per line.
Parameters: [min [max [node]]]
  min: first row to print (from 0)
  max: row after the last to print (0: up to the end)
  node: storage whose cells are wanted (the admin lists all)`},
		{name: "node", do: printNode, help: `
Print the nodes known to the cluster.
Parameters: [type]
  type: only nodes of this type (master, storage, client, admin)`},
		{name: "cluster", do: printCluster, help: `
Print the state of the cluster.`},
		{name: "primary", do: printPrimary, help: `
Print the id of the primary master.`},
		{name: "summary", do: printSummary, help: `
Print the health of this cluster and of its backup clusters.
The first line is a comment holding a JSON object:
  {severity: [backup cluster name | null]}
with severity "warning" or "problem", and null for this cluster.`},
	}},
	{name: "set", sub: []*command{
		{name: "cluster", do: setCluster, help: `
Change the state of the cluster.
Parameters: state
  state: the state wanted (e.g. stopping, starting_backup)`},
		{name: "replicas", do: setReplicas, help: `
Change the number of replicas.
Parameters: nr
  nr: extra copies of each partition (0: one copy, no redundancy)`},
	}},
	{name: "check", do: check, help: `
Compare the replicas of partitions and report differences.
Cells found to differ are logged by the primary master.
EXPERIMENTAL: differences due to pack are not told apart.
Parameters: [partition]:[reference] ... [min_tid [max_tid]]
  partition: partition to check (empty: all partitions)
  reference: storage with data known to be good (empty: none, or
    the upstream cluster in backup mode)`},
	{name: "start", do: start, help: `
Let the cluster leave recovery and start (same as
"set cluster verifying").`},
	{name: "add", do: add, help: `
Put pending storages in use.
Parameters: node [node [...]]
  node: a storage, or "all" for every pending storage`},
	{name: "tweak", do: tweak, help: `
Spread the partitions over the storages in use.
Listed storages and storages that are down keep their cells unchanged
and do not count as replicas: list storages that are to be dropped
once their data is copied elsewhere.
Parameters: [-n] [node [...]]
  -n: dry run, print the table that would result`},
	{name: "drop", do: drop, help: `
Remove a stopped storage from the cluster for good.
Parameters: node`},
	{name: "kill", do: kill, help: `
Stop a storage or a secondary master.
Parameters: node`},
	{name: "prune_orphan", do: pruneOrphan, help: `
Delete data that no object revision refers to (may take long).
Parameters: dry_run node [node [...]]
  dry_run: 1 to only report, 0 to delete
  node: a storage, or "all" for every storage`},
	{name: "truncate", do: truncate, help: `
Cut the history of the database after a transaction.
The cluster must be RUNNING, with no transaction in progress; it then
goes back to RECOVERING and waits until every storage is back (do not
"start" it unless the missing storages need no truncation).
Parameters: tid`},
	{name: "flush_log", do: flushLog, help: `
Ask every node of the cluster to flush its log (only the primary
masters of backup clusters).`},
}

const tidSyntax = "TID arguments are either tid:<integer> (any case; decimal, or" +
	" 0x, 0o, 0b prefixed) for a tid, or <float> for a Unix timestamp, e.g." +
	" 'tid:257684787499560686', 'tid:0x3937af2eeeeeeee' or '1325421296'" +
	" (2012-01-01 12:34:56 UTC)."

// usage is the text neoctl prints when given no command.
func usage() string {
	lines := []string{"Available commands:"}
	var walk func(l []*command, level int)
	walk = func(l []*command, level int) {
		for _, c := range l {
			lines = append(lines, strings.Repeat("  ", level)+c.name)
			if c.sub != nil {
				walk(c.sub, level+1)
				continue
			}
			for _, h := range strings.Split(strings.Trim(c.help, "\n"), "\n") {
				lines = append(lines, strings.Repeat("  ", level+1)+h)
			}
		}
	}
	walk(commands, 0)
	lines = append(lines, tidSyntax)
	return strings.Join(lines, "\n")
}

// execute finds the command named by the first args and runs it with the
// rest.
func execute(ctx context.Context, c *client, args []string) (string, bool, error) {
	if len(args) == 0 {
		return usage(), true, nil
	}
	level := commands
	for i, a := range args {
		var found *command
		for _, cmd := range level {
			if cmd.name == a {
				found = cmd
				break
			}
		}
		if found == nil {
			break
		}
		if found.sub == nil {
			return found.do(ctx, c, args[i+1:])
		}
		level = found.sub
	}
	return "", false, errors.New("invalid command: " + strings.Join(args, " "))
}

func nargs(name string, params []string, lo, hi int) error {
	if len(params) < lo || len(params) > hi {
		switch {
		case hi == 0:
			return fmt.Errorf("%s: takes no argument", name)
		case lo == hi:
			return fmt.Errorf("%s: takes %d argument(s), got %d", name, lo, len(params))
		}
		return fmt.Errorf("%s: takes %d to %d arguments, got %d", name, lo, hi, len(params))
	}
	return nil
}

func parseNode(s string) (proto.NodeID, error) {
	nid, err := proto.ParseNodeID(s)
	if err != nil {
		return 0, fmt.Errorf("invalid node %q: expected a node id like S1, M2", s)
	}
	return nid, nil
}

func parseNodes(params []string) ([]proto.NodeID, error) {
	nids := make([]proto.NodeID, 0, len(params))
	for _, p := range params {
		nid, err := parseNode(p)
		if err != nil {
			return nil, err
		}
		nids = append(nids, nid)
	}
	return nids, nil
}

func parseNodeType(s string) (proto.NodeType, error) {
	for t := proto.Master; t <= proto.Admin; t++ {
		if strings.EqualFold(s, t.String()) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("invalid node type %q", s)
}

func parseClusterState(s string) (proto.ClusterState, error) {
	for st := proto.ClusterRecovering; st <= proto.ClusterStoppingBackup; st++ {
		if strings.EqualFold(s, st.String()) {
			return st, nil
		}
	}
	return 0, fmt.Errorf("invalid cluster state %q", s)
}

func optString[T any](o proto.Opt[T]) string { return o.String() }

// storageList is the nodes of add and prune_orphan: "all" is every storage
// the admin knows.
func storageList(ctx context.Context, c *client, params []string) ([]proto.NodeID, error) {
	if len(params) == 1 && params[0] == "all" {
		a, err := askFor[*proto.AnswerNodeList](ctx, c, &proto.AskNodeList{NodeType: proto.Some(proto.Storage)})
		if err != nil {
			return nil, err
		}
		nids := make([]proto.NodeID, 0, len(a.Nodes))
		for _, n := range a.Nodes {
			nids = append(nids, n.NID)
		}
		return nids, nil
	}
	return parseNodes(params)
}

// fullTable renders a whole table with the storage list, as "print pt" and
// "tweak" do.
func fullTable(ctx context.Context, c *client, rows [][]proto.CellInfo) (string, error) {
	a, err := askFor[*proto.AnswerNodeList](ctx, c, &proto.AskNodeList{NodeType: proto.Some(proto.Storage)})
	if err != nil {
		return "", err
	}
	return formatPartitionTable(rows, a.Nodes), nil
}

func printIDs(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("print ids", params, 0, 0); err != nil {
		return "", false, err
	}
	rec, err := askFor[*proto.AnswerRecovery](ctx, c, &proto.AskRecovery{})
	if err != nil {
		return "", false, err
	}
	var out string
	var ltid zodb.Tid
	if rec.BackupTid != zodb.InvalidTid {
		a, err := askFor[*proto.AnswerLastTransaction](ctx, c, &proto.AskLastTransaction{})
		if err != nil {
			return "", false, err
		}
		ltid = a.Tid
		out = fmt.Sprintf("backup_tid = 0x%x (%s)", uint64(rec.BackupTid), TidDatetime(rec.BackupTid))
	} else {
		a, err := askFor[*proto.AnswerLastIDs](ctx, c, &proto.AskLastIDs{})
		if err != nil {
			return "", false, err
		}
		ltid = a.LastTid
		out = fmt.Sprintf("last_oid = 0x%x", uint64(a.LastOid))
	}
	out += fmt.Sprintf("\nlast_tid = 0x%x (%s)\nlast_ptid = %s", uint64(ltid), TidDatetime(ltid), optString(rec.PTid))
	return out, true, nil
}

func printPT(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("print pt", params, 0, 3); err != nil {
		return "", false, err
	}
	var bounds [2]uint32
	for i := range min(len(params), 2) {
		n, err := parseDecimal(params[i])
		if err != nil || n < 0 || n > 1<<32-1 {
			return "", false, fmt.Errorf("print pt: invalid partition offset %q", params[i])
		}
		bounds[i] = uint32(n)
	}
	req := &proto.AskPartitionList{MinOffset: bounds[0], MaxOffset: bounds[1]}
	if len(params) == 3 {
		nid, err := parseNode(params[2])
		if err != nil {
			return "", false, err
		}
		req.NID = nid
	}
	a, err := askFor[*proto.AnswerPartitionList](ctx, c, req)
	if err != nil {
		return "", false, err
	}
	var table string
	if req.MinOffset != 0 || req.MaxOffset != 0 {
		table = formatRowList(a.Rows, req.MinOffset)
	} else if table, err = fullTable(ctx, c, a.Rows); err != nil {
		return "", false, err
	}
	return fmt.Sprintf("# ptid: %s, replicas: %d\n%s", optString(a.PTid), a.NumReplicas, table), true, nil
}

func printNode(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("print node", params, 0, 1); err != nil {
		return "", false, err
	}
	req := &proto.AskNodeList{}
	if len(params) == 1 {
		t, err := parseNodeType(params[0])
		if err != nil {
			return "", false, err
		}
		req.NodeType = proto.Some(t)
	}
	a, err := askFor[*proto.AnswerNodeList](ctx, c, req)
	if err != nil {
		return "", false, err
	}
	lines := formatNodeList(a.Nodes)
	if len(lines) == 0 {
		return "Empty list!", true, nil
	}
	return strings.Join(lines, "\n"), true, nil
}

func printCluster(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("print cluster", params, 0, 0); err != nil {
		return "", false, err
	}
	a, err := askFor[*proto.AnswerClusterState](ctx, c, &proto.AskClusterState{})
	if err != nil {
		return "", false, err
	}
	return optString(a.State), true, nil
}

func printPrimary(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("print primary", params, 0, 0); err != nil {
		return "", false, err
	}
	a, err := askFor[*proto.AnswerPrimary](ctx, c, &proto.AskPrimary{})
	if err != nil {
		return "", false, err
	}
	return a.PrimaryNID.String(), true, nil
}

func printSummary(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("print summary", params, 0, 0); err != nil {
		return "", false, err
	}
	a, err := askFor[*proto.AnswerMonitorInformation](ctx, c, &proto.AskMonitorInformation{})
	if err != nil {
		return "", false, err
	}
	return "# " + severityJSON(a.Warnings, a.Problems) + "\n" + a.Summary, true, nil
}

func setCluster(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("set cluster", params, 1, 1); err != nil {
		return "", false, err
	}
	st, err := parseClusterState(params[0])
	if err != nil {
		return "", false, err
	}
	msg, err := c.askAck(ctx, &proto.SetClusterState{State: st})
	return msg, err == nil, err
}

func setReplicas(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("set replicas", params, 1, 1); err != nil {
		return "", false, err
	}
	n, err := parseDecimal(params[0])
	if err != nil {
		return "", false, err
	}
	if n < 0 {
		return "", false, errors.New("invalid number of replicas")
	}
	if n > 1<<32-1 {
		return "", false, fmt.Errorf("number of replicas %d too large", n)
	}
	msg, err := c.askAck(ctx, &proto.SetNumReplicas{NumReplicas: uint32(n)})
	return msg, err == nil, err
}

func start(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("start", params, 0, 0); err != nil {
		return "", false, err
	}
	msg, err := c.askAck(ctx, &proto.SetClusterState{State: proto.ClusterVerifying})
	return msg, err == nil, err
}

func add(ctx context.Context, c *client, params []string) (string, bool, error) {
	nids, err := storageList(ctx, c, params)
	if err != nil {
		return "", false, err
	}
	msg, err := c.askAck(ctx, &proto.AddPendingNodes{NIDs: nids})
	return msg, err == nil, err
}

func tweak(ctx context.Context, c *client, params []string) (string, bool, error) {
	dryRun := len(params) > 0 && params[0] == "-n"
	if dryRun {
		params = params[1:]
	}
	nids, err := parseNodes(params)
	if err != nil {
		return "", false, err
	}
	a, err := askFor[*proto.AnswerTweakPartitionTable](ctx, c, &proto.TweakPartitionTable{DryRun: dryRun, Exclude: nids})
	if err != nil {
		return "", false, err
	}
	if !a.Changed {
		return "No change done.", true, nil
	}
	out, err := fullTable(ctx, c, a.Rows)
	return out, err == nil, err
}

func setNodeState(ctx context.Context, c *client, name string, params []string, st proto.NodeState) (string, bool, error) {
	if err := nargs(name, params, 1, 1); err != nil {
		return "", false, err
	}
	nid, err := parseNode(params[0])
	if err != nil {
		return "", false, err
	}
	msg, err := c.askAck(ctx, &proto.SetNodeState{NID: nid, State: st})
	return msg, err == nil, err
}

func drop(ctx context.Context, c *client, params []string) (string, bool, error) {
	return setNodeState(ctx, c, "drop", params, proto.NodeUnknown)
}

func kill(ctx context.Context, c *client, params []string) (string, bool, error) {
	return setNodeState(ctx, c, "kill", params, proto.NodeDown)
}

func pruneOrphan(ctx context.Context, c *client, params []string) (string, bool, error) {
	if len(params) == 0 || (params[0] != "0" && params[0] != "1") {
		return "", false, errors.New("prune_orphan: first argument must be 0 (delete) or 1 (dry run)")
	}
	nids, err := storageList(ctx, c, params[1:])
	if err != nil {
		return "", false, err
	}
	msg, err := c.askAck(ctx, &proto.Repair{NIDs: nids, DryRun: params[0] == "1"})
	return msg, err == nil, err
}

func truncate(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("truncate", params, 1, 1); err != nil {
		return "", false, err
	}
	tid, err := parseTid(params[0])
	if err != nil {
		return "", false, err
	}
	_, err = c.askAck(ctx, &proto.Truncate{Tid: tid})
	return "", false, err
}

// check parses "[partition]:[reference] ... [min_tid [max_tid]]".
func check(ctx context.Context, c *client, params []string) (string, bool, error) {
	req := &proto.CheckReplicas{MinTid: 0, MaxTid: zodb.InvalidTid}
	var parts []proto.CheckReplicasPartition
	for i := 0; i < len(params); i++ {
		p := params[i]
		partition, ref, isCell := strings.Cut(p, ":")
		if !isCell || strings.Contains(ref, ":") || strings.EqualFold(partition, "tid") {
			// The tid bounds (NEO/py takes "tid:..." for a cell here and
			// fails; it is read as a tid).
			tid, err := parseTid(p)
			if err != nil {
				return "", false, err
			}
			req.MinTid = tid
			if i+1 < len(params) {
				if tid, err = parseTid(params[i+1]); err != nil {
					return "", false, err
				}
				req.MaxTid = tid
			}
			if i+2 < len(params) {
				return "", false, fmt.Errorf("check: unexpected argument %q after the tids", params[i+2])
			}
			break
		}
		nid := proto.NoNode
		if ref != "" {
			var err error
			if nid, err = parseNode(ref); err != nil {
				return "", false, err
			}
		}
		if partition != "" {
			n, err := parseDecimal(partition)
			if err != nil || n < 0 || n > 1<<32-1 {
				return "", false, fmt.Errorf("check: invalid partition %q", partition)
			}
			parts = setCheck(parts, uint32(n), nid)
			continue
		}
		if len(parts) != 0 {
			return "", false, errors.New("check: \":reference\" (all partitions) must come first")
		}
		a, err := askFor[*proto.AnswerPartitionList](ctx, c, &proto.AskPartitionList{})
		if err != nil {
			return "", false, err
		}
		for p := range a.Rows {
			parts = append(parts, proto.CheckReplicasPartition{Partition: uint32(p), Reference: nid})
		}
	}
	req.Partitions = parts
	_, err := c.askAck(ctx, req)
	return "", false, err
}

// setCheck sets the reference of a partition, as a Python dict assignment
// (a partition given twice keeps its first place and its last reference).
func setCheck(parts []proto.CheckReplicasPartition, p uint32, ref proto.NodeID) []proto.CheckReplicasPartition {
	for i := range parts {
		if parts[i].Partition == p {
			parts[i].Reference = ref
			return parts
		}
	}
	return append(parts, proto.CheckReplicasPartition{Partition: p, Reference: ref})
}

func flushLog(ctx context.Context, c *client, params []string) (string, bool, error) {
	if err := nargs("flush_log", params, 0, 0); err != nil {
		return "", false, err
	}
	return "", false, c.notify(ctx, &proto.FlushLog{})
}
