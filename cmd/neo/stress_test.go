package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

func TestStressArgs(t *testing.T) {
	e := &env{prog: "neo stress", stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	o, err := stressArgs(e, []string{"--cycles", "7", "--seed=42", "--clients", "2", "--storages=3", "--replicas", "1", "--masters", "2"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Cycles != 7 || o.Seed != 42 || o.Clients != 2 || o.Storages != 3 || o.Replicas != 1 || o.Masters != 2 {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range [][]string{{"--replicas", "2"}, {"--seed", "x"}, {"--clients", "0"}, {"extra"}} {
		if _, err := stressArgs(e, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// neo stress runs a short schedule and ends with its summary line.
func TestStressCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster under faults (-short)")
	}
	var out, errb bytes.Buffer
	code := Main(context.Background(), "neo", []string{"stress", "--cycles", "1", "--seed", "5", "--clients", "2"}, &out, &errb)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if code != 0 || !regexp.MustCompile(`^cycles=1 faults=\d+ acked=\d+ lost=0 anomalies=0$`).MatchString(last) {
		t.Fatalf("exit %d, last line %q\nstderr:\n%s", code, last, errb.String())
	}
}
