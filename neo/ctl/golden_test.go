package ctl

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/neo/proto"
)

// vector is a packet made by NEO/py (testdata/neo-proto/packets.json).
type vector struct {
	Name string `json:"name"`
	Hex  string `json:"hex"`
}

func loadVectors(t *testing.T, name string) []proto.Msg {
	t.Helper()
	path := filepath.Join(testdir.Dir("NEO_PROTO_VECTORS", "neo-proto"), "packets.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var msgs []proto.Msg
	for _, v := range f.Vectors {
		if v.Name != name {
			continue
		}
		b, err := hex.DecodeString(v.Hex)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, v.Name, err)
		}
		_, m, _, err := proto.DecodePacket(b)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", path, v.Name, v.Hex, err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		t.Fatalf("%s: no %s", path, name)
	}
	return msgs
}

// TestGoldenSummary: "print summary" of the monitoring answers NEO/py made.
func TestGoldenSummary(t *testing.T) {
	for _, m := range loadVectors(t, "AnswerMonitorInformation") {
		a := m.(*proto.AnswerMonitorInformation)
		// Python's json.dumps of the non-empty lists, by hand.
		list := func(l []proto.Opt[string]) string {
			var items []string
			for _, x := range l {
				if x.Ok {
					items = append(items, `"`+x.V+`"`)
				} else {
					items = append(items, "null")
				}
			}
			return "[" + strings.Join(items, ", ") + "]"
		}
		var parts []string
		if len(a.Warnings) > 0 {
			parts = append(parts, `"warning": `+list(a.Warnings))
		}
		if len(a.Problems) > 0 {
			parts = append(parts, `"problem": `+list(a.Problems))
		}
		want := "# {" + strings.Join(parts, ", ") + "}\n" + a.Summary + "\n"

		addr := fakeAdmin(t, []exchange{{req: &proto.AskMonitorInformation{}, ans: m}})
		var out bytes.Buffer
		if err := Run(context.Background(), addr, nil, []string{"print", "summary"}, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
		}
	}
}

// TestGoldenNodeList: "print node" of the node lists NEO/py made.
func TestGoldenNodeList(t *testing.T) {
	for _, m := range loadVectors(t, "AnswerNodeList") {
		a := m.(*proto.AnswerNodeList)
		addr := fakeAdmin(t, []exchange{{req: &proto.AskNodeList{}, ans: m}})
		var out bytes.Buffer
		if err := Run(context.Background(), addr, nil, []string{"print", "node"}, &out); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(a.Nodes) == 0 {
			if out.String() != "Empty list!\n" {
				t.Errorf("empty list: %q", out.String())
			}
			continue
		}
		if len(lines) != len(a.Nodes) {
			t.Fatalf("%d nodes, %d lines:\n%s", len(a.Nodes), len(lines), out.String())
		}
		// Every node has its line, columns aligned.
		for _, n := range a.Nodes {
			found := false
			for _, l := range lines {
				f := strings.Split(l, " | ")
				if len(f) == 5 && strings.TrimSpace(f[0]) == n.NID.String() && strings.TrimSpace(f[1]) == n.Type.String() &&
					strings.TrimSpace(f[2]) == formatAddress(n.Addr) && strings.TrimSpace(f[3]) == n.State.String() {
					found = true
				}
			}
			if !found {
				t.Errorf("node %+v not printed:\n%s", n, out.String())
			}
		}
		for _, l := range lines[1:] {
			if strings.Index(l, " | ") != strings.Index(lines[0], " | ") {
				t.Errorf("misaligned:\n%s", out.String())
			}
		}
	}
}

// TestGoldenPartitionList: "print pt", in both forms, of the partition
// tables NEO/py made.
func TestGoldenPartitionList(t *testing.T) {
	for _, m := range loadVectors(t, "AnswerPartitionList") {
		a := m.(*proto.AnswerPartitionList)
		np := len(a.Rows)
		var storages []proto.NodeInfo
		seen := map[proto.NodeID]bool{}
		for _, row := range a.Rows {
			for _, c := range row {
				if !seen[c.NID] {
					seen[c.NID] = true
					storages = append(storages, proto.NodeInfo{Type: proto.Storage, NID: c.NID, State: proto.NodeRunning})
				}
			}
		}
		head := "# ptid: " + a.PTid.String() + ", replicas: " + strconv.Itoa(int(a.NumReplicas)) + "\n"

		// Whole table: a line per storage, a letter per partition.
		addr := fakeAdmin(t, []exchange{
			{req: &proto.AskPartitionList{}, ans: m},
			{req: askStorages(), ans: nodeList(storages...)},
		})
		var out bytes.Buffer
		if err := Run(context.Background(), addr, nil, []string{"print", "pt"}, &out); err != nil {
			t.Fatal(err)
		}
		s, ok := strings.CutPrefix(out.String(), head)
		if !ok {
			t.Fatalf("header: %q, want %q", out.String(), head)
		}
		lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		if np > 10 && len(storages) > 0 {
			lines = lines[1:] // the ruler
		}
		if len(storages) == 0 {
			lines = nil
		}
		if len(lines) != len(storages) {
			t.Fatalf("%d storages, %d lines:\n%s", len(storages), len(lines), out.String())
		}
		for _, l := range lines {
			if f := strings.Fields(l); len(f) != 3 || f[1] != "R" || len(f[2]) != np {
				t.Errorf("bad line %q", l)
			}
		}

		// Rows.
		if np == 0 {
			continue
		}
		addr = fakeAdmin(t, []exchange{{req: &proto.AskPartitionList{MaxOffset: uint32(np)}, ans: m}})
		out.Reset()
		if err := Run(context.Background(), addr, nil, []string{"print", "pt", "0", strconv.Itoa(np)}, &out); err != nil {
			t.Fatal(err)
		}
		s, ok = strings.CutPrefix(out.String(), head)
		if !ok {
			t.Fatalf("header: %q, want %q", out.String(), head)
		}
		lines = strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		if len(lines) != np {
			t.Fatalf("%d rows, %d lines:\n%s", np, len(lines), out.String())
		}
		for p, l := range lines {
			if !strings.HasPrefix(l, fmt.Sprintf("%03d |", p)) || strings.Count(l, " - ") != len(a.Rows[p]) {
				t.Errorf("row %d: %q", p, l)
			}
		}
	}
}
