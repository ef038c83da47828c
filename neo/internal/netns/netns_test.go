package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/internal/netns"
)

// probe tells what a TCP round trip from n to the echo server at addr
// gives: "ok", "timeout" or "error: ...".
func probe(t *testing.T, n *netns.Node, addr string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+20*time.Second)
	defer cancel()
	cmd := n.CommandContext(ctx, testBinary(t), "probe", addr, timeout.String())
	cmd.Env = append(os.Environ(), helperEnv+"=probe")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe %s → %s: %v\n%s", n, addr, err, out)
	}
	return strings.TrimSpace(string(out))
}

// startEcho runs an echo server in n's namespace on port.
func startEcho(t *testing.T, n *netns.Node, port int) string {
	t.Helper()
	a := addr(n, port)
	cmd := n.Command(testBinary(t), "echo", a)
	cmd.Env = append(os.Environ(), helperEnv+"=echo")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	startProc(t, "echo-"+n.Name, cmd, pw)
	pw.Close()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "listening" {
		t.Fatalf("echo server in %s: %q, %v", n, line, err)
	}
	return a
}

// TestCutHeal: nodes reach each other; a cut silently drops the packets
// of one pair only (a connection attempt times out, it is not refused);
// a one-way cut is enough to break TCP both ways; healing restores it.
func TestCutHeal(t *testing.T) {
	nw := netns.New(t, "a", "b", "c")
	a, b, c := nw.Node("a"), nw.Node("b"), nw.Node("c")
	if a.Addr == b.Addr || !a.Addr.Is4() {
		t.Fatalf("addresses %v %v", a.Addr, b.Addr)
	}
	echoB := startEcho(t, b, 7000)
	echoC := startEcho(t, c, 7000)
	echoA := startEcho(t, a, 7000)
	const short = time.Second
	expect := func(from *netns.Node, to string, want string) {
		t.Helper()
		if got := probe(t, from, to, short); !strings.HasPrefix(got, want) {
			t.Errorf("%s → %s: %s, want %s", from, to, got, want)
		}
	}
	expect(a, echoB, "ok")
	expect(a, echoC, "ok")
	expect(b, echoA, "ok")
	// Nothing listens on that port: refused, not silent.
	expect(a, addr(b, 7001), "error:")

	nw.Cut(a, b)
	if !nw.IsCut(a, b) || !nw.IsCut(b, a) || nw.IsCut(a, c) {
		t.Error("IsCut does not tell the cut")
	}
	expect(a, echoB, "timeout")
	expect(b, echoA, "timeout")
	expect(a, addr(b, 7001), "timeout") // silent: no RST comes back
	expect(a, echoC, "ok")
	expect(c, echoB, "ok")
	nw.Heal(a, b)
	expect(a, echoB, "ok")
	expect(b, echoA, "ok")

	nw.CutOneWay(a, b)
	if !nw.IsCut(a, b) || nw.IsCut(b, a) {
		t.Error("IsCut does not tell the one-way cut")
	}
	expect(a, echoB, "timeout")
	expect(b, echoA, "timeout") // the answers from a are dropped
	nw.HealOneWay(a, b)
	expect(a, echoB, "ok")

	// A connection across a silent cut stays up; Reset ends it at once.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	hold := a.Command(testBinary(t), "hold", echoB)
	hold.Env = append(os.Environ(), helperEnv+"=hold")
	hp := startProc(t, "hold", hold, pw)
	pw.Close()
	lines := bufio.NewReader(pr)
	if line, err := lines.ReadString('\n'); err != nil || line != "connected\n" {
		t.Fatalf("hold: %q, %v", line, err)
	}
	nw.Cut(a, b)
	nw.Reset(a, b)
	select {
	case <-hp.done:
		line, _ := lines.ReadString('\n')
		if !strings.HasPrefix(line, "closed: ") || strings.TrimSpace(line) == "closed: <nil>" {
			t.Errorf("connection across the reset: %q, want an error", line)
		}
	case <-time.After(10 * time.Second):
		t.Error("a connection across Reset is still up 10 s later")
	}
	nw.Heal(a, b)
	expect(a, echoB, "ok")

	nw.Isolate(c)
	expect(a, echoC, "timeout")
	expect(c, echoB, "timeout")
	expect(a, echoB, "ok")
	nw.HealAll()
	expect(a, echoC, "ok")
	expect(c, echoB, "ok")
}

// TestSysctl: network sysctls are set per namespace.
func TestSysctl(t *testing.T) {
	nw := netns.New(t, "a", "b")
	a, b := nw.Node("a"), nw.Node("b")
	if err := a.Sysctl("net.ipv4.tcp_retries2", "3"); err != nil {
		t.Fatal(err)
	}
	read := func(n *netns.Node) string {
		out, err := n.Command("cat", "/proc/sys/net/ipv4/tcp_retries2").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := read(a); got != "3" {
		t.Errorf("tcp_retries2 in a: %s, want 3", got)
	}
	if got := read(b); got == "3" {
		t.Errorf("tcp_retries2 in b changed too")
	}
	if err := a.Sysctl("kernel.hostname", "x"); err == nil {
		t.Error("a sysctl outside net.* accepted")
	}
}

func namespaces(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestTeardown: the namespaces of a network are gone when its test ends,
// with the processes left inside them, even when the test failed.
func TestTeardown(t *testing.T) {
	netns.Require(t)
	var names []string
	var sleeper *exec.Cmd
	t.Run("network", func(t *testing.T) {
		nw := netns.New(t, "x", "y")
		for _, n := range nw.Nodes() {
			names = append(names, n.NS)
		}
		sleeper = nw.Node("x").Command("sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		list := namespaces(t)
		for _, name := range names {
			if !strings.Contains(list, name) {
				t.Errorf("namespace %s not in ip netns list:\n%s", name, list)
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Error("a process left in a namespace still runs after the teardown")
		sleeper.Process.Kill()
		<-done
	}
	list := namespaces(t)
	for _, name := range names {
		if strings.Contains(list, name+" ") || strings.Contains(list, name+"\n") {
			t.Errorf("namespace %s still there after the test:\n%s", name, list)
		}
	}
}

// TestRemoveStale: namespaces left by a test binary that died (its pid is
// in their name) are removed with what runs inside them; those of live
// processes are kept.
func TestRemoveStale(t *testing.T) {
	netns.Require(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s-%d-1-s1", netns.Prefix, dead.Process.Pid)
	live := fmt.Sprintf("%s-%d-999999-s1", netns.Prefix, os.Getppid())
	for _, name := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		defer exec.Command("ip", "netns", "del", name).Run()
	}
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, _ := exec.Command("ip", "netns", "pids", stale).Output()
		if strings.TrimSpace(string(out)) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process started in the stale namespace is not there")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := netns.RemoveStale(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Error("the process in the stale namespace still runs")
		sleeper.Process.Kill()
		<-done
	}
	list := namespaces(t)
	if strings.Contains(list, stale) {
		t.Errorf("stale namespace %s still there:\n%s", stale, list)
	}
	if !strings.Contains(list, live) {
		t.Errorf("namespace %s of a live process removed:\n%s", live, list)
	}
}
