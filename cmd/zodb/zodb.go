package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/wks"
	"github.com/neozodb/neo/zodb/zodbtools"
)

// env is what a command runs with.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// timeRef is the reference for relative dates in tids; zero = now.
	timeRef zodbtools.TimeRef
}

// usageError makes the command exit with status 2 after printing its message.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exitError makes the command exit with code after printing msg to stderr
// as it is (for messages zodbtools prints without a prefix).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

type command struct {
	summary string
	usage   string
	run     func(ctx context.Context, e *env, args []string) error
}

var commands map[string]*command

func init() {
	commands = map[string]*command{
		"info":    {"print general information about a ZODB database", infoUsage, runInfo},
		"dump":    {"dump content of a ZODB database", dumpUsage, runDump},
		"catobj":  {"print a record stored in a ZODB database", catobjUsage, runCatobj},
		"watch":   {"watch ZODB database for changes", watchUsage, runWatch},
		"restore": {"restore content of a ZODB database", restoreUsage, runRestore},
		"commit":  {"commit new transaction into a ZODB database", commitUsage, runCommit},
		"analyze": {"analyze ZODB database usage", analyzeUsage, runAnalyze},
	}
}

const mainUsage = `Zodb is a tool for managing ZODB databases.

Usage:

	zodb command [arguments]

The commands are:

%s
Use "zodb help [command]" for more information about a command.
Use "zodb help tidrange" for the forms of tids and tid ranges.
Use "zodb help zurl" for the forms of storage URLs.
`

func commandList() string {
	var b strings.Builder
	for _, name := range []string{"info", "dump", "catobj", "watch", "restore", "commit", "analyze"} {
		fmt.Fprintf(&b, "\t%-8s %s\n", name, commands[name].summary)
	}
	return b.String()
}

const tidrangeHelp = `A <tidrange> is "tidmin..tidmax": the transactions with
tidmin <= tid <= tidmax. Either side may be empty (no bound).

A tid is 16 hex digits (optionally with "0x" before them), or a date/time:

	2018-01-01T10:30:00Z          RFC 3339, also with fractions and offsets
	2018-01-01 10:30:00 UTC       also "2018-01-02 UTC"
	26 Aug 76 14:29 GMT           RFC 822, also with "+02:00"
	now, today, yesterday, tomorrow
	3 days ago, 3.days.ago, 10.minutes.ago, 1 week ago, 2 months ago
	15:00, 6am yesterday, noon today, 6AM, June 7, 2009

Dates without a zone and relative dates use the local time zone.
`

const zurlHelp = `A <storage> is named by a URL:

	path/to/Data.fs               a FileStorage file (also file://path)
	mem://                        a new, empty in-memory storage
	mem://name                    an in-memory storage shared in the process

Schemes known to this program: %s.
`

// Main runs the zodb command with args (without the program name) and
// returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(ctx, &env{stdin: stdin, stdout: stdout, stderr: stderr}, args)
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(e.stderr, mainUsage, commandList())
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		if len(args) < 2 {
			fmt.Fprintf(e.stdout, mainUsage, commandList())
			return 0
		}
		switch args[1] {
		case "tidrange":
			fmt.Fprint(e.stdout, tidrangeHelp)
			return 0
		case "zurl":
			fmt.Fprintf(e.stdout, zurlHelp, strings.Join(zodb.Drivers(), ", "))
			return 0
		}
		c := commands[args[1]]
		if c == nil {
			fmt.Fprintf(e.stderr, "zodb help %s: unknown topic\n", args[1])
			return 2
		}
		fmt.Fprint(e.stdout, c.usage)
		return 0
	}
	c := commands[name]
	if c == nil {
		fmt.Fprintf(e.stderr, "zodb: unknown command %q\n", name)
		fmt.Fprintf(e.stderr, mainUsage, commandList())
		return 2
	}
	err := c.run(ctx, e, args[1:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, c.usage)
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		if ue.msg != "" {
			fmt.Fprintf(e.stderr, "E: %s\n", ue.msg)
		}
		fmt.Fprint(e.stderr, c.usage)
		return 2
	}
	var xe *exitError
	if errors.As(err, &xe) {
		fmt.Fprintln(e.stderr, xe.msg)
		return xe.code
	}
	fmt.Fprintf(e.stderr, "zodb %s: %s\n", name, err)
	return 1
}

// flags returns a flag set that reports errors instead of exiting.
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

func openStorage(ctx context.Context, zurl string, readOnly bool) (*zodb.Storage, error) {
	return zodb.Open(ctx, zurl, &zodb.OpenOptions{ReadOnly: readOnly, NoCreate: readOnly})
}

// closeInto closes stor and keeps the first error.
func closeInto(stor *zodb.Storage, errp *error) {
	if err := stor.Close(); err != nil && *errp == nil {
		*errp = err
	}
}

// ---- info ----

const infoUsage = `Usage: zodb info [OPTIONS] <storage> [parameter ...]
Print general information about a ZODB database.

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.

By default info prints information about all storage parameters. If one or
more parameter names are given as arguments, info prints the value of each
named parameter on its own line.

Parameters: name, size, head, last_tid (deprecated alias for head).

Options:

    -h  --help      show this help
`

func runInfo(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("info")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) < 1 {
		return &usageError{}
	}
	params := args[1:]
	wantNames := len(params) == 0
	if wantNames {
		params = []string{"name", "size", "head", "last_tid"}
	}
	for _, p := range params {
		switch p {
		case "name", "size", "head", "last_tid":
		default:
			return &exitError{1, "invalid parameter: " + p}
		}
	}

	stor, err := openStorage(ctx, args[0], true)
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	drv := stor.Driver()

	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	for _, p := range params {
		var v string
		switch p {
		case "name":
			v = zodbtools.StorageName(drv)
		case "size":
			n, err := zodbtools.StorageSize(ctx, drv)
			if wantNames && errors.Is(err, zodb.ErrUnsupported) {
				continue // not asked for, and this storage cannot tell it (NEO)
			}
			if err != nil {
				return err
			}
			v = strconv.FormatInt(n, 10)
		case "head", "last_tid":
			if p == "last_tid" {
				fmt.Fprintf(e.stderr, "W: last_tid is deprecated alias for head\n")
			}
			head, err := stor.LastTid(ctx)
			if err != nil {
				return err
			}
			v = head.String()
		}
		if wantNames {
			fmt.Fprintf(w, "%s=", p)
		}
		fmt.Fprintf(w, "%s\n", v)
	}
	return w.Flush()
}

// ---- dump ----

const dumpUsage = `Usage: zodb dump [OPTIONS] <storage> [<tidrange>]
Dump content of a ZODB database.

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.
<tidrange> is a history range (see 'zodb help tidrange') to dump.

Options:

        --hashonly        dump only hashes of objects without content
        --pretty=<format> output in a given format, where <format> can be one
                          of raw, zpickledis
    -h  --help            show this help
`

func runDump(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("dump")
	hashOnly := fs.Bool("hashonly", false, "")
	pretty := fs.String("pretty", "raw", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pretty != "raw" && *pretty != "zpickledis" {
		return &usageError{"unsupported pretty format: " + *pretty}
	}
	stor, tidMin, tidMax, err := openRange(ctx, e, fs.Args())
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	return zodbtools.Dump(ctx, e.stdout, stor, tidMin, tidMax, zodbtools.DumpOptions{HashOnly: *hashOnly, Pretty: *pretty})
}

// openRange opens, read-only, the storage of a "<storage> [<tidrange>]"
// command line.
func openRange(ctx context.Context, e *env, args []string) (stor *zodb.Storage, tidMin, tidMax zodb.Tid, err error) {
	if len(args) < 1 || len(args) > 2 {
		return nil, 0, 0, &usageError{}
	}
	tidMin, tidMax = zodb.Tid(0), zodb.TidMax
	if len(args) > 1 {
		tidMin, tidMax, err = zodbtools.ParseTidRange(args[1], e.timeRef)
		if err != nil {
			return nil, 0, 0, &usageError{err.Error()}
		}
	}
	stor, err = openStorage(ctx, args[0], true)
	return stor, tidMin, tidMax, err
}

// ---- catobj ----

const catobjUsage = `Usage: zodb catobj [OPTIONS] <storage> <xid>...
Print records stored in a ZODB database.

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.
<xid> is an object address: <tid>:<oid> (the revision of <oid> as of <tid>;
<tid> in any form of 'zodb help tidrange', <oid> in hex with or without 0x),
or <oid>@<tid> with both in 16 hex digits.

By default each record is printed as an obj entry of zodb dump:
"obj <oid> <size> sha1:<hash>", the data, and an empty line.

Options:

        --hashonly        print only the hash of each record, not its data
        --raw             print only the record data (one xid only)
        --pretty=<format> show data as raw (default) or zpickledis
    -h  --help            show this help
`

// parseXid parses "<tid>:<oid>" (zodbtools) or "<oid>@<tid>".
func parseXid(s string, ref zodbtools.TimeRef) (zodb.Xid, error) {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		oid, err := zodb.ParseOidRepr(s[i+1:])
		if err != nil {
			return zodb.Xid{}, fmt.Errorf("invalid object address %q: %w", s, err)
		}
		tid, err := zodbtools.ParseTid(s[:i], ref)
		if err != nil {
			return zodb.Xid{}, fmt.Errorf("invalid object address %q: %w", s, err)
		}
		return zodb.Xid{Oid: oid, At: tid}, nil
	}
	return zodb.ParseXid(s)
}

func runCatobj(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("catobj")
	hashOnly := fs.Bool("hashonly", false, "")
	raw := fs.Bool("raw", false, "")
	pretty := fs.String("pretty", "raw", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pretty != "raw" && *pretty != "zpickledis" {
		return &usageError{"unsupported pretty format: " + *pretty}
	}
	args = fs.Args()
	if len(args) < 2 {
		return &usageError{}
	}
	if *raw && *hashOnly {
		return &usageError{"--hashonly & --raw are incompatible"}
	}
	if *raw && len(args) != 2 {
		return &usageError{"--raw: only one object allowed"}
	}
	var xids []zodb.Xid
	for _, a := range args[1:] {
		xid, err := parseXid(a, e.timeRef)
		if err != nil {
			return &usageError{err.Error()}
		}
		xids = append(xids, xid)
	}
	stor, err := openStorage(ctx, args[0], true)
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	for _, xid := range xids {
		data, _, _, err := stor.Load(ctx, xid)
		if err != nil {
			return &exitError{2, fmt.Sprintf("E: object address not found in database: %v", err)}
		}
		shown := data
		if *pretty == "zpickledis" && !*hashOnly {
			prefix := "  "
			if *raw {
				prefix = ""
			}
			if shown, err = zodbtools.DisassembleRecord(data, prefix); err != nil {
				return fmt.Errorf("%v: %w", xid, err)
			}
		}
		if *raw {
			w.Write(shown)
			continue
		}
		h := sha1.Sum(data)
		fmt.Fprintf(w, "obj %s %d sha1:%s", xid.Oid, len(data), hex.EncodeToString(h[:]))
		if *hashOnly {
			w.WriteString(" -\n")
		} else {
			w.WriteString("\n")
			w.Write(shown)
			w.WriteString("\n")
		}
	}
	return w.Flush()
}

// ---- watch ----

const watchUsage = `Usage: zodb watch [OPTIONS] <storage>
Watch ZODB database for changes.

Prints "# at <tid>" (the head when watching starts), then "txn <tid>" for
every committed transaction; with -v also "obj <oid>" for every object the
transaction changed, and an empty line.

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.

Options:

    -h --help       this help text.
    -v              verbose mode.
`

func runWatch(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("watch")
	verbose := fs.Bool("v", false, "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) != 1 {
		return &usageError{}
	}
	stor, err := openStorage(ctx, args[0], true)
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	return zodbtools.Watch(ctx, stor, e.stdout, *verbose, nil)
}

// ---- restore ----

const restoreUsage = `Usage: zodb restore [OPTIONS] <storage> < input
Restore content of a ZODB database.

The transactions to restore are read from stdin in zodbdump format, and are
re-created with their original tids, status and metadata.
On success the ID of every restored transaction is printed to stdout.

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.

Options:

    -h  --help      show this help
`

func runRestore(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("restore")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) != 1 {
		return &usageError{}
	}
	stor, err := openStorage(ctx, args[0], false)
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	return zodbtools.Restore(ctx, stor, e.stdin, "stdin", func(tid zodb.Tid) error {
		_, err := fmt.Fprintf(e.stdout, "%s\n", tid)
		return err
	})
}

// ---- commit ----

const commitUsage = `Usage: zodb commit [OPTIONS] <storage> <at> < input
Commit new transaction into a ZODB database.

The transaction to be committed is read from stdin in zodbdump format without
first 'txn' header line.

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.
<at> is transaction ID of what is caller idea about its current database view.

On success the ID of committed transaction is printed to stdout.

Options:

    -h  --help      show this help
`

func runCommit(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("commit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) != 2 {
		return &usageError{}
	}
	at, err := zodbtools.ParseTid(args[1], e.timeRef)
	if err != nil {
		return &usageError{err.Error()}
	}
	zr := zodbtools.NewDumpReader(e.stdin, "stdin")
	txn, err := zr.ReadTxnBody()
	if err != nil {
		return err
	}
	if _, err := zr.ReadTxn(); err != io.EOF {
		if err == nil {
			err = errors.New("garbage after transaction")
		}
		return fmt.Errorf("stdin: after the transaction: %w", err)
	}
	stor, err := openStorage(ctx, args[0], false)
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	tid, err := zodbtools.Commit(ctx, stor, at, txn)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", tid)
	return err
}

// ---- analyze ----

const analyzeUsage = `Usage: zodb analyze [OPTIONS] <storage> [<tidrange>]
Analyze ZODB database usage: per class, the number and size of records in
the transactions, split into the latest revision of every object seen
(current) and the older ones (old).

<storage> is an URL (see 'zodb help zurl') of a ZODB-storage.
<tidrange> is a history range (see 'zodb help tidrange') to analyze.

Options:

    -c  --csv       output CSV
    -d  --dbm       accepted for compatibility (no effect)
    -h  --help      show this help
`

func runAnalyze(ctx context.Context, e *env, args []string) (err error) {
	fs := newFlags("analyze")
	csv := fs.Bool("csv", false, "")
	fs.BoolVar(csv, "c", false, "")
	dbm := fs.Bool("dbm", false, "")
	fs.BoolVar(dbm, "d", false, "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	stor, tidMin, tidMax, err := openRange(ctx, e, fs.Args())
	if err != nil {
		return err
	}
	defer closeInto(stor, &err)
	rep, err := zodbtools.Analyze(ctx, stor, tidMin, tidMax)
	if err != nil {
		return err
	}
	if *csv {
		return rep.WriteCSV(e.stdout)
	}
	return rep.WriteText(e.stdout)
}
