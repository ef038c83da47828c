package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestBenchMem runs neo bench against an in-memory storage: every figure
// is printed and the program's own bookkeeping (serials, loadBefore,
// iteration) holds on a storage that is known to be right.
func TestBenchMem(t *testing.T) {
	e := &env{prog: "neo bench", stdout: io.Discard, stderr: io.Discard}
	b, err := parseBench(e, []string{"-n", "300", "--batch=70", "--commits", "20", "--samples=50", "--duration", "50ms", "--raw", "100", fmt.Sprintf("mem://bench-%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bench(ctx, b, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	want := []string{
		"raw TCP ping-pong 64 B, loopback: median ",
		"fill: 300 objects of 100 B in 5 transactions",
		"load, serial, uncached (first read of each object): median ",
		"load, serial, uncached by the client (second read): median ",
		"commit 1 object(s) of 100 B: median ",
		"commit 10 object(s) of 100 B: median ",
		"commit 1 new object of 100 B, 8 parallel clients: median ",
		"loadBefore, serial, uncached: median ",
		"load, 1 parallel client(s): ",
		"load, 4 parallel client(s): ",
		"load, 16 parallel client(s): ",
		"read all (iteration): 536 records",
		"ratio load/raw (medians, second read): ",
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %q, want prefix %q", i+1, lines[i], w)
		}
	}
	if !strings.Contains(out.String(), "loadBefore, serial, uncached: median") || !strings.Contains(out.String(), "(n=50)") {
		t.Errorf("loadBefore sample count:\n%s", out.String())
	}
}

// TestDemoCommitRead checks the commit and the read of neo demo on a
// storage two clients of one process share.
func TestDemoCommitRead(t *testing.T) {
	ctx := context.Background()
	url := fmt.Sprintf("mem://demo-commit-read-%d", time.Now().UnixNano())
	tid, err := demoCommit(ctx, url, "hello")
	if err != nil {
		t.Fatal(err)
	}
	got, serial, err := demoRead(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if got != "hello" || serial != tid || tid == 0 {
		t.Errorf("read %q at %v, want %q at %v", got, serial, "hello", tid)
	}
}
