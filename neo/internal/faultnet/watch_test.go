package faultnet_test

import (
	"context"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/proto"
)

// TestOnPacket: the second Ping from A to B cuts the link before it goes:
// B receives the first one and none after.
func TestOnPacket(t *testing.T) {
	n := faultnet.New(nil)
	seen := 0
	trig := n.OnPacket("A", "B", proto.CodeAskLastTransaction, func(p faultnet.Packet) bool {
		if p.From != "A" || p.To != "B" || p.Code != proto.CodeAskLastTransaction {
			t.Errorf("packet %+v", p)
		}
		if m, err := p.Decode(); err != nil {
			t.Errorf("decode: %v", err)
		} else if _, ok := m.(*proto.AskLastTransaction); !ok {
			t.Errorf("decoded %T", m)
		}
		seen++
		if seen < 2 {
			return false
		}
		n.Cut("A", "B")
		return true
	})
	// Packets of other codes or directions do not fire.
	other := n.OnPacket("B", "A", proto.CodeAskLastTransaction, func(faultnet.Packet) bool { return true })
	defer other.Stop()
	a, b := pair(t, n)
	serve(b)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := a.Notify(ctx, &proto.NotifyReady{}); err != nil {
		t.Fatal(err)
	}
	if err := ask(ctx, a); err != nil {
		t.Fatalf("first ask: %v", err)
	}
	select {
	case <-trig.Fired():
		t.Fatal("fired at the first packet")
	default:
	}
	if err := ask(ctx, a); err == nil {
		t.Fatal("second ask answered across a cut made before it went")
	}
	select {
	case <-trig.Fired():
	default:
		t.Fatal("not fired")
	}
	select {
	case <-other.Fired():
		t.Fatal("B → A watch fired")
	default:
	}
	if seen != 2 {
		t.Errorf("action called %d times, want 2", seen)
	}
}
