package faultnet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/faultnet"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
)

// pair returns a link dialed by "A" and the one accepted by "B".
func pair(t *testing.T, n *faultnet.Network) (a, b *neonet.Link) {
	t.Helper()
	ctx := t.Context()
	ln, err := neonet.ListenConfig{Net: n.Endpoint("B")}.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := &neonet.Dialer{Net: n.Endpoint("A")}
	a, err = d.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if got := n.NameOf(ln.Addr().String()); got != "B" {
		t.Errorf("NameOf(listener) = %q, want B", got)
	}
	return a, b
}

// serve answers AskLastTransaction on l until it goes down.
func serve(l *neonet.Link) {
	go func() {
		for {
			req, err := l.Recv(context.Background())
			if err != nil {
				return
			}
			if _, ok := req.Msg.(*proto.AskLastTransaction); ok {
				req.Reply(context.Background(), &proto.AnswerLastTransaction{Tid: 42})
			}
		}
	}()
}

func ask(ctx context.Context, l *neonet.Link) error {
	m, err := l.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil {
		return err
	}
	if a, ok := m.(*proto.AnswerLastTransaction); !ok || a.Tid != 42 {
		return errors.New("bad answer")
	}
	return nil
}

func TestPass(t *testing.T) {
	n := faultnet.New(nil)
	a, b := pair(t, n)
	serve(b)
	serve(a)
	if err := ask(t.Context(), a); err != nil {
		t.Fatalf("A asks B: %v", err)
	}
	if err := ask(t.Context(), b); err != nil {
		t.Fatalf("B asks A: %v", err)
	}
}

func TestDelay(t *testing.T) {
	n := faultnet.New(nil)
	a, b := pair(t, n)
	serve(b)
	const d = 50 * time.Millisecond
	n.Delay("B", "A", d) // answers are late
	start := time.Now()
	if err := ask(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < d {
		t.Errorf("answer through a delay of %v took %v", d, took)
	}
	n.Heal("B", "A")
}

func TestBlackholeOneWay(t *testing.T) {
	n := faultnet.New(nil)
	a, b := pair(t, n)
	serve(b)
	serve(a)
	n.Blackhole("A", "B")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	err := ask(ctx, a)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ask through a blackhole: %v, want a timeout", err)
	}
	// The other direction still carries requests... whose answers are
	// held back: B's request to A is blackholed on its way back only.
	done := make(chan error, 1)
	go func() { done <- ask(t.Context(), b) }()
	select {
	case err := <-done:
		t.Fatalf("answer came through the blackhole: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// Healing delivers what was held: nothing is lost.
	n.Heal("A", "B")
	if err := <-done; err != nil {
		t.Fatalf("after heal: %v", err)
	}
	if err := ask(t.Context(), a); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

func TestCut(t *testing.T) {
	n := faultnet.New(nil)
	a, b := pair(t, n)
	serve(b)
	n.Cut("A", "B")
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("link A→B not closed by the cut")
	}
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("link seen by B not closed by the cut")
	}
	// New connections from A to B are refused; those from B to A fail
	// as soon as A answers (a connection needs both directions).
	lnB, err := neonet.ListenConfig{Net: n.Endpoint("B")}.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lnB.Close()
	_, err = (&neonet.Dialer{Net: n.Endpoint("A")}).Dial(t.Context(), lnB.Addr().String())
	if !errors.Is(err, faultnet.ErrCut) {
		t.Fatalf("dial across a cut: %v, want ErrCut", err)
	}
	lnA, err := neonet.ListenConfig{Net: n.Endpoint("A")}.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lnA.Close()
	if l, err := (&neonet.Dialer{Net: n.Endpoint("B")}).Dial(t.Context(), lnA.Addr().String()); err == nil {
		l.Close()
		t.Fatalf("dial in the other direction of a cut: no error")
	}
	n.Heal("A", "B")
	l, err := (&neonet.Dialer{Net: n.Endpoint("A")}).Dial(t.Context(), lnB.Addr().String())
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	l.Close()
}

func TestIsolate(t *testing.T) {
	n := faultnet.New(nil)
	a, _ := pair(t, n)
	n.Isolate("B")
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("link to an isolated endpoint not closed")
	}
	n.HealAll()
	a2, b2 := pair(t, n)
	serve(b2)
	if err := ask(t.Context(), a2); err != nil {
		t.Fatal(err)
	}
}

// TestForeignDialer: a dialer outside the network still connects to an
// endpoint's listener; its name is its address.
func TestForeignDialer(t *testing.T) {
	n := faultnet.New(nil)
	ln, err := neonet.ListenConfig{Net: n.Endpoint("B")}.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := neonet.Dial(t.Context(), ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ln.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	serve(b)
	if err := ask(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	// A cut from B to everyone reaches it too.
	n.Cut("B", faultnet.Any)
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("foreign link not closed by the cut")
	}
}
