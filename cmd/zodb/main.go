// Command zodb is a set of tools to manage ZODB databases, compatible with
// zodbtools (arguments and output):
//
//	zodb info    <storage> [parameter...]        name, size, head of a database
//	zodb dump    [--hashonly] <storage> [<tidrange>]
//	zodb catobj  [--hashonly|--raw] <storage> <xid>...
//	zodb watch   [-v] <storage>                  print commits as they happen
//	zodb restore <storage> < dump                re-create dumped transactions
//	zodb commit  <storage> <at> < txn            commit one new transaction
//	zodb analyze [--csv] <storage> [<tidrange>]  space used per class
//
// <storage> is a URL: a FileStorage path (or file://path), mem://..., or any
// scheme of a driver linked in. Run "zodb help <command>" for details, and
// "zodb help tidrange" for the forms of tids and tid ranges.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
