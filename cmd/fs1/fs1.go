package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/neozodb/neo/zodb/zodbtools"
)

// usageError makes the command exit with status 2 after printing its usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exitError makes the command exit with Code after printing Msg (if any) to
// stderr, without the "fs1 <cmd>:" prefix (for messages whose text is
// fixed, like fstest's).
type exitError struct {
	Code int
	Msg  string
}

func (e *exitError) Error() string { return e.Msg }

type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	summary string
	usage   string
	run     func(ctx context.Context, e *env, args []string) error
}

var commandOrder = []string{"dump", "verify", "dump-index", "reindex", "verify-index", "info"}

var commands map[string]*command

func init() {
	commands = map[string]*command{
		"dump":         {"print the transactions and records of a FileStorage", dumpUsage, runDump},
		"verify":       {"check the framing of a FileStorage (fstest)", verifyUsage, runVerify},
		"dump-index":   {"print the entries of an index file", dumpIndexUsage, runDumpIndex},
		"reindex":      {"rebuild the index file of a FileStorage", reindexUsage, runReindex},
		"verify-index": {"check the index file of a FileStorage against the data", verifyIndexUsage, runVerifyIndex},
		"info":         {"print general information about a FileStorage", infoUsage, runInfo},
	}
}

const mainUsage = `Fs1 is a tool for FileStorage (Data.fs) files.

Usage:

	fs1 command [arguments]

The commands are:

%s
Use "fs1 help [command]" for more information about a command.
`

func commandList() string {
	var b strings.Builder
	for _, name := range commandOrder {
		fmt.Fprintf(&b, "\t%-12s %s\n", name, commands[name].summary)
	}
	return b.String()
}

// Main runs the fs1 command with args (without the program name) and
// returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprintf(stderr, mainUsage, commandList())
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		if len(args) < 2 {
			fmt.Fprintf(stdout, mainUsage, commandList())
			return 0
		}
		c := commands[args[1]]
		if c == nil {
			fmt.Fprintf(stderr, "fs1 help %s: unknown command\n", args[1])
			return 2
		}
		fmt.Fprint(stdout, c.usage)
		return 0
	}
	c := commands[name]
	if c == nil {
		fmt.Fprintf(stderr, "fs1: unknown command %q\n", name)
		fmt.Fprintf(stderr, mainUsage, commandList())
		return 2
	}
	err := c.run(ctx, e, args[1:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, c.usage)
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if ue.msg != "" {
			fmt.Fprintf(stderr, "E: %s\n", ue.msg)
		}
		fmt.Fprint(stderr, c.usage)
		return 2
	}
	var xe *exitError
	if errors.As(err, &xe) {
		if xe.Msg != "" {
			fmt.Fprintln(stderr, xe.Msg)
		}
		return xe.Code
	}
	fmt.Fprintf(stderr, "fs1 %s: %s\n", name, err)
	return 1
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	return nil
}

// countFlag counts its occurrences (-v -v).
type countFlag int

func (c *countFlag) String() string   { return fmt.Sprint(int(*c)) }
func (c *countFlag) Set(string) error { *c++; return nil }
func (c *countFlag) IsBoolFlag() bool { return true }

// oneFile parses flags and the single FILE argument.
func oneFile(fs *flag.FlagSet, args []string) (string, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", &usageError{"expected one FILE argument"}
	}
	return fs.Arg(0), nil
}

// pyBytesRepr formats b like Python's repr(bytes): b'...'.
func pyBytesRepr(b []byte) string { return "b" + zodbtools.PyRepr(b) }
