package admin

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// vectors returns the packets named name that NEO/py made
// (testdata/neo-proto/packets.json), decoded.
func vectors(t *testing.T, name string) []proto.Msg {
	t.Helper()
	path := filepath.Join(testdir.Dir("NEO_PROTO_VECTORS", "neo-proto"), "packets.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct{ Name, Hex string }
	}
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
			t.Fatalf("%s: %s: %v", path, name, err)
		}
		_, m, _, err := proto.DecodePacket(b)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", path, name, v.Hex, err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		t.Fatalf("%s: no %s", path, name)
	}
	return msgs
}

// TestGoldenMonitorInformation: the reports of NEO/py's backup admins are
// understood, and ours decode to the same health.
func TestGoldenMonitorInformation(t *testing.T) {
	for _, m := range vectors(t, "NotifyMonitorInformation") {
		info := m.(*proto.NotifyMonitorInformation).Info
		var h health
		h.down = -1 // to see that "down" is set when present
		if err := updateHealth(&h, info); err != nil {
			t.Fatalf("%v: %v", info, err)
		}
		for _, it := range info {
			switch it.Key {
			case "cluster_state":
				if st, ok := it.Value.(proto.ClusterState); ok != h.state.Ok || (ok && st != h.state.V) {
					t.Errorf("cluster_state %v: got %v", it.Value, h.state)
				}
			case "down":
				if int64(h.down) != it.Value.(int64) {
					t.Errorf("down %v: got %d", it.Value, h.down)
				}
			case "pt_summary":
				n := 0
				for _, e := range it.Value.(proto.Map) {
					n++
					if int64(h.ptSummary[e.Key.(proto.CellState)]) != e.Value.(int64) {
						t.Errorf("pt_summary %v: got %v", it.Value, h.ptSummary)
					}
				}
				if n != len(h.ptSummary) {
					t.Errorf("pt_summary %v: got %v", it.Value, h.ptSummary)
				}
			}
		}
		if _, ok := info.Get("pt_summary"); !ok {
			continue
		}
		// Ours, decoded, give the same health.
		b := proto.AppendPacket(nil, 1, &proto.NotifyMonitorInformation{Info: healthInfo(h, nil)})
		_, back, _, err := proto.DecodePacket(b)
		if err != nil {
			t.Fatal(err)
		}
		var h2 health
		if err := updateHealth(&h2, back.(*proto.NotifyMonitorInformation).Info); err != nil || !h2.equal(h) {
			t.Errorf("re-encoded %v: got %+v, %v", h, h2, err)
		}
	}
}

// TestGoldenUpstreamAdmin: the upstream admin's address, as NEO/py's master
// sends it (IPv6 too), becomes the address the admin dials.
func TestGoldenUpstreamAdmin(t *testing.T) {
	for _, m := range vectors(t, "NotifyUpstreamAdmin") {
		a := &Admin{logBase: slog.New(slog.DiscardHandler), healthSignal: make(chan struct{}, 1),
			mailSignal: make(chan struct{}, 1), upstreamSignal: make(chan struct{}, 1)}
		if err := a.handleMaster(context.Background(), &neonet.Request{Msg: m}); err != nil {
			t.Fatal(err)
		}
		want := m.(*proto.NotifyUpstreamAdmin).Address
		host, port, err := net.SplitHostPort(a.upstreamAddr)
		if err != nil || host != want.Host || port != strconv.Itoa(int(want.Port)) {
			t.Errorf("%+v: dial address %q", want, a.upstreamAddr)
		}
		select {
		case <-a.upstreamSignal:
		default:
			t.Errorf("%+v: no signal", want)
		}
	}
}
