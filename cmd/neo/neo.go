package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// usageError makes the command exit with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// rawError is printed as it is (no program name before it), exit status 1:
// for messages NEO/py's tools print that way (neoctl).
type rawError struct{ err error }

func (e *rawError) Error() string { return e.err.Error() }
func (e *rawError) Unwrap() error { return e.err }

// command is one subcommand of neo.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// env is what a command runs with.
type env struct {
	prog           string // name in messages: "neo master", "neomaster"...
	stdout, stderr io.Writer
}

var commands map[string]*command

func init() {
	commands = map[string]*command{
		"master":  {"run a master node", func(ctx context.Context, e *env, a []string) error { return runDaemon(ctx, e, "master", a) }},
		"storage": {"run a storage node", func(ctx context.Context, e *env, a []string) error { return runDaemon(ctx, e, "storage", a) }},
		"admin":   {"run an admin node", func(ctx context.Context, e *env, a []string) error { return runDaemon(ctx, e, "admin", a) }},
		"ctl":     {"send a command to the cluster through its admin node (neoctl)", runCtl},
		"simple":  {"run a whole local cluster in one process", runSimple},
		"demo":    {"start a local cluster, commit an object, read it back, stop", runDemo},
		"bench":   {"measure a running cluster through the Go client", runBench},
		"stress":  {"run a cluster of its own under faults and check that no commit is lost", runStress},
	}
}

// aliases are the NEO/py program names the binary answers to.
var aliases = map[string]string{
	"neomaster":  "master",
	"neostorage": "storage",
	"neoadmin":   "admin",
	"neoctl":     "ctl",
	"neosimple":  "simple",
}

// Main runs the program called argv0 with args and returns its exit status.
func Main(ctx context.Context, argv0 string, args []string, stdout, stderr io.Writer) int {
	name := filepath.Base(argv0)
	if sub, ok := aliases[name]; ok {
		return runCommand(ctx, &env{prog: name, stdout: stdout, stderr: stderr}, sub, args)
	}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	sub := args[0]
	return runCommand(ctx, &env{prog: "neo " + sub, stdout: stdout, stderr: stderr}, sub, args[1:])
}

func runCommand(ctx context.Context, e *env, sub string, args []string) int {
	cmd := commands[sub]
	if cmd == nil {
		fmt.Fprintf(e.stderr, "neo: unknown command %q\n", sub)
		usage(e.stderr)
		return 2
	}
	err := cmd.run(ctx, e, args)
	var ue *usageError
	var re *rawError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &re):
		fmt.Fprintln(e.stderr, re.err)
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "%s: %s\n", e.prog, ue.msg)
		return 2
	default:
		fmt.Fprintf(e.stderr, "%s: %s\n", e.prog, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: neo <command> [arguments]\n\ncommands:\n")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	var al []string
	for a, sub := range aliases {
		al = append(al, a+" = neo "+sub)
	}
	sort.Strings(al)
	fmt.Fprintf(w, "\nThe binary called as %s behaves as the matching command.\n", strings.Join(al, ", "))
	fmt.Fprintf(w, "Run \"neo <command> -h\" for the options of a command.\n")
}
