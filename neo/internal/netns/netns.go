// Package netns builds small networks of Linux network namespaces for tests
// of network partitions: every node of a test gets a namespace of its own,
// joined to the others through a bridge that lives in one more namespace (the
// hub), and links between two nodes can be cut and healed, in one direction
// or both, while the processes run.
//
// Nothing is created in the namespace of the test itself: the network is
// reachable only by commands run inside its namespaces (Node.Command), so
// tests running at the same time, in this process or others, never see each
// other's addresses, and the host's own network is left alone.
//
// A cut is silent, as a real partition: the sending node's static neighbour
// entry for the peer is replaced by one naming a hardware address nobody has,
// so packets leave the node and are dropped by the bridge's other ports
// (nothing answers, no ICMP error, connections see only lost packets).
// Healing restores the real address. Reset destroys the connections
// between two nodes, so that a cut can also be noticed at once. Only
// iproute2's ip and ss commands are needed, and root (CAP_NET_ADMIN and
// CAP_SYS_ADMIN) to create namespaces.
//
// Namespaces are named Prefix-<pid>-<n>-<node>; they are deleted when the
// test ends, after the processes still inside them are killed, whether it
// passed or not. Namespaces of an earlier run whose process is gone (a test
// binary killed before its cleanup) are removed by the next New.
//
// The tests of this package use it for network partitions in a NEO cluster
// of processes (the neo binary, and clients run by the test binary), as
// root:
//
//	go test ./neo/internal/netns                                 # abrupt cuts
//	go test -timeout 30m ./neo/internal/netns -args -netns.long  # + silent cuts
//	go test ./neo/internal/netns -args -netns.logs               # every process's log
//
// Without root, without ip, or where namespaces cannot be created, they
// are skipped, saying so.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "neotest"

// SkipReason starts the message of tests skipped because namespaces cannot
// be made here.
const SkipReason = "needs root and iproute2 for network namespaces"

// Network is a set of nodes, each in a network namespace of its own, on one
// IPv4 subnet.
type Network struct {
	t      testing.TB
	id     string // Prefix-<pid>-<n>
	hub    string // namespace holding the bridge
	subnet netip.Prefix
	nodes  []*Node

	mu   sync.Mutex
	cut  map[[2]*Node]bool // from, to: packets from → to are dropped
	cmds []*exec.Cmd       // made by Command and CommandContext, killed by teardown
}

// Node is one namespace of a Network.
type Node struct {
	Name string     // as given to New
	NS   string     // the namespace's name, for ip netns exec
	Addr netip.Addr // its IPv4 address on the network
	mac  string
	net  *Network
}

var (
	seq        atomic.Uint32
	staleOnce  sync.Once
	availOnce  sync.Once
	availErr   error
	ipCommand  = "ip"
	ssCommand  = "ss"
	bogusMAC   = "02:00:00:00:00:01" // no interface has it: frames to it are dropped
	cmdTimeout = 30 * time.Second
)

// Available tells whether network namespaces can be made here: the process
// must be root, ip (iproute2) must be installed, and creating a namespace
// must work (it does not in some containers).
func Available() error {
	availOnce.Do(func() {
		if os.Geteuid() != 0 {
			availErr = fmt.Errorf("not running as root (euid %d)", os.Geteuid())
			return
		}
		for _, cmd := range []string{ipCommand, ssCommand} {
			if _, err := exec.LookPath(cmd); err != nil {
				availErr = fmt.Errorf("no %s command (package iproute2): %w", cmd, err)
				return
			}
		}
		// Creating a namespace and running a command in it (ip netns
		// exec also mounts /sys) both need privileges a container may
		// not have even as root.
		name := fmt.Sprintf("%s-%d-probe", Prefix, os.Getpid())
		if err := ip("netns", "add", name); err != nil {
			availErr = err
			return
		}
		if err := ip("netns", "exec", name, ipCommand, "link", "set", "lo", "up"); err != nil {
			availErr = err
		}
		if err := ip("netns", "del", name); err != nil && availErr == nil {
			availErr = err
		}
	})
	return availErr
}

// Require skips the test, saying why, when network namespaces cannot be
// made here.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("%s: %v", SkipReason, err)
	}
}

// New creates one namespace per name, all connected through a bridge, with
// addresses 10.a.b.1, 10.a.b.2, ... in the order of names. Everything is
// removed when the test ends. It skips the test when namespaces cannot be
// made here (see Require).
func New(t testing.TB, names ...string) *Network {
	t.Helper()
	Require(t)
	staleOnce.Do(func() {
		if err := RemoveStale(); err != nil {
			t.Logf("removing namespaces left by an earlier run: %v", err)
		}
	})
	if len(names) == 0 || len(names) > 250 {
		t.Fatalf("netns: %d nodes (1 to 250)", len(names))
	}
	n := seq.Add(1)
	pid := os.Getpid()
	// The address space is private to the network; still, distinct
	// subnets per network keep logs of parallel tests telling apart.
	a, b := byte(100+pid%100), byte(n%256)
	nw := &Network{
		t:      t,
		id:     fmt.Sprintf("%s-%d-%d", Prefix, pid, n),
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, a, b, 0}), 24),
		cut:    map[[2]*Node]bool{},
	}
	nw.hub = nw.id + "-hub"
	seen := map[string]bool{}
	for i, name := range names {
		if name == "" || name == "hub" || seen[name] || strings.ContainsAny(name, "/ \t\n") {
			t.Fatalf("netns: bad or repeated node name %q", name)
		}
		seen[name] = true
		nw.nodes = append(nw.nodes, &Node{
			Name: name,
			NS:   nw.id + "-" + name,
			Addr: netip.AddrFrom4([4]byte{10, a, b, byte(i + 1)}),
			mac:  fmt.Sprintf("02:4e:%02x:%02x:00:%02x", a, b, i+1),
			net:  nw,
		})
	}
	t.Cleanup(nw.teardown)
	if err := nw.build(); err != nil {
		t.Fatalf("netns: build network %s: %v", nw.id, err)
	}
	return nw
}

// build creates the namespaces, the bridge and the links.
func (nw *Network) build() error {
	if err := ip("netns", "add", nw.hub); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", nw.hub, "link", "set", "lo", "up"},
		{"-n", nw.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", nw.hub, "link", "set", "br0", "up"},
	}
	for i, nd := range nw.nodes {
		port := fmt.Sprintf("p%d", i+1)
		if err := ip("netns", "add", nd.NS); err != nil {
			return err
		}
		steps = append(steps,
			[]string{"link", "add", "name", "eth0", "netns", nd.NS, "address", nd.mac,
				"type", "veth", "peer", "name", port, "netns", nw.hub},
			[]string{"-n", nw.hub, "link", "set", port, "master", "br0"},
			[]string{"-n", nw.hub, "link", "set", port, "up"},
			[]string{"-n", nd.NS, "link", "set", "lo", "up"},
			[]string{"-n", nd.NS, "addr", "add", netip.PrefixFrom(nd.Addr, nw.subnet.Bits()).String(), "dev", "eth0"},
			[]string{"-n", nd.NS, "link", "set", "eth0", "up"},
		)
		// Static neighbours: no ARP, and a cut is a change of one entry.
		for _, peer := range nw.nodes {
			if peer != nd {
				steps = append(steps, nd.neighbour(peer, peer.mac))
			}
		}
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

func (nd *Node) neighbour(peer *Node, mac string) []string {
	return []string{"-n", nd.NS, "neigh", "replace", peer.Addr.String(), "lladdr", mac, "dev", "eth0", "nud", "permanent"}
}

// teardown kills what still runs in the namespaces and deletes them.
func (nw *Network) teardown() {
	nw.mu.Lock()
	cmds := nw.cmds
	nw.cmds = nil
	nw.mu.Unlock()
	for _, cmd := range cmds {
		if cmd.Process != nil {
			cmd.Process.Kill() // an error: it ended already
		}
	}
	var errs []error
	for _, nd := range nw.nodes {
		errs = append(errs, removeNamespace(nd.NS))
	}
	errs = append(errs, removeNamespace(nw.hub))
	if err := errors.Join(errs...); err != nil {
		nw.t.Errorf("netns: tear down network %s: %v", nw.id, err)
	}
}

// removeNamespace kills the processes in namespace ns and deletes it; a
// namespace that does not exist is not an error.
func removeNamespace(ns string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	out, err := ipOutput("netns", "pids", ns)
	if err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ip("netns", "del", ns)
}

// RemoveStale deletes the namespaces named by this package for a process
// that no longer runs (a test binary killed before its cleanup), after
// killing what still runs inside them.
func RemoveStale() error {
	out, err := ipOutput("netns", "list")
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix+"-") {
			continue
		}
		name := f[0]
		rest := strings.SplitN(strings.TrimPrefix(name, Prefix+"-"), "-", 2)
		pid, err := strconv.Atoi(rest[0])
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		errs = append(errs, removeNamespace(name))
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Node returns the node of that name; the test fails if there is none.
func (nw *Network) Node(name string) *Node {
	nw.t.Helper()
	for _, nd := range nw.nodes {
		if nd.Name == name {
			return nd
		}
	}
	nw.t.Fatalf("netns: no node %q in network %s", name, nw.id)
	return nil
}

// Nodes returns the nodes in the order given to New.
func (nw *Network) Nodes() []*Node { return append([]*Node(nil), nw.nodes...) }

// Cut drops every packet between a and b, both ways.
func (nw *Network) Cut(a, b *Node) {
	nw.t.Helper()
	nw.set(a, b, true)
	nw.set(b, a, true)
}

// CutOneWay drops the packets from → to; those to → from still pass.
func (nw *Network) CutOneWay(from, to *Node) {
	nw.t.Helper()
	nw.set(from, to, true)
}

// Heal lets packets between a and b pass again, both ways.
func (nw *Network) Heal(a, b *Node) {
	nw.t.Helper()
	nw.set(a, b, false)
	nw.set(b, a, false)
}

// HealOneWay lets the packets from → to pass again.
func (nw *Network) HealOneWay(from, to *Node) {
	nw.t.Helper()
	nw.set(from, to, false)
}

// Isolate cuts n from every other node, both ways.
func (nw *Network) Isolate(n *Node) {
	nw.t.Helper()
	for _, peer := range nw.nodes {
		if peer != n {
			nw.Cut(n, peer)
		}
	}
}

// HealAll heals every cut.
func (nw *Network) HealAll() {
	nw.t.Helper()
	nw.mu.Lock()
	var cuts [][2]*Node
	for c := range nw.cut {
		cuts = append(cuts, c)
	}
	nw.mu.Unlock()
	for _, c := range cuts {
		nw.set(c[0], c[1], false)
	}
}

// IsCut tells whether packets from → to are dropped.
func (nw *Network) IsCut(from, to *Node) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.cut[[2]*Node{from, to}]
}

func (nw *Network) set(from, to *Node, cut bool) {
	nw.t.Helper()
	if from.net != nw || to.net != nw || from == to {
		nw.t.Fatalf("netns: cut %s → %s: not two nodes of network %s", from.Name, to.Name, nw.id)
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	mac := to.mac
	if cut {
		mac = bogusMAC
	}
	if err := ip(from.neighbour(to, mac)...); err != nil {
		nw.t.Fatalf("netns: %s %s → %s: %v", map[bool]string{true: "cut", false: "heal"}[cut], from.Name, to.Name, err)
	}
	if cut {
		nw.cut[[2]*Node{from, to}] = true
	} else {
		delete(nw.cut, [2]*Node{from, to})
	}
}

// Reset destroys the TCP connections between a and b, in both namespaces
// (ss -K; the kernel needs CONFIG_INET_DIAG_DESTROY): their sockets fail at
// once on both ends, as when a firewall resets them. After Cut, the resets
// they send are dropped: together they make a partition that both sides
// notice at once, where Cut alone lets them notice only when TCP gives up
// (keep-alive or unacknowledged data).
func (nw *Network) Reset(a, b *Node) {
	nw.t.Helper()
	for _, p := range [][2]*Node{{a, b}, {b, a}} {
		if err := p[0].killConnections(p[1]); err != nil {
			nw.t.Fatalf("netns: reset %s ↔ %s: %v", a.Name, b.Name, err)
		}
	}
}

// killConnections destroys nd's TCP sockets connected to peer.
func (nd *Node) killConnections(peer *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := nd.CommandContext(ctx, ssCommand, "-K", "-t", "-n", "dst", peer.Addr.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %s -K dst %s: %v: %s", nd.NS, ssCommand, peer.Addr, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// Command returns a command that runs name with args inside the node's
// namespace (through ip netns exec, which execs it: the process started
// is the command itself, so signals reach it).
func (nd *Node) Command(name string, args ...string) *exec.Cmd {
	return nd.net.track(exec.Command(ipCommand, append([]string{"netns", "exec", nd.NS, name}, args...)...))
}

// CommandContext is Command with a context that kills the process.
func (nd *Node) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nd.net.track(exec.CommandContext(ctx, ipCommand, append([]string{"netns", "exec", nd.NS, name}, args...)...))
}

// track records a command for teardown, which kills it: listing the
// processes of a namespace misses one that has not entered it yet (ip
// netns exec between its start and its setns), which would then run in
// the namespace after it lost its name.
func (nw *Network) track(cmd *exec.Cmd) *exec.Cmd {
	nw.mu.Lock()
	nw.cmds = append(nw.cmds, cmd)
	nw.mu.Unlock()
	return cmd
}

// Sysctl sets a network sysctl of the node's namespace, such as
// "net.ipv4.tcp_retries2" (network sysctls are per namespace).
func (nd *Node) Sysctl(key, value string) error {
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "..") || strings.ContainsAny(key, "/ ") {
		return fmt.Errorf("netns: sysctl %q: only net.* keys", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := nd.CommandContext(ctx, "sh", "-c", `printf '%s\n' "$1" > "$2"`, "sh", value, path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netns: %s: sysctl %s=%s: %v: %s", nd.NS, key, value, err, bytes.TrimSpace(out))
	}
	return nil
}

// Sysctl sets a network sysctl in the namespace of every node.
func (nw *Network) Sysctl(key, value string) error {
	for _, nd := range nw.nodes {
		if err := nd.Sysctl(key, value); err != nil {
			return err
		}
	}
	return nil
}

func (nd *Node) String() string { return nd.Name + "(" + nd.Addr.String() + ")" }

// ip runs the ip command and returns an error holding its output.
func ip(args ...string) error {
	_, err := ipOutput(args...)
	return err
}

func ipOutput(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ipCommand, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", ipCommand, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}
