// Command neo runs the nodes of a NEO cluster and the tools around them, in
// one binary:
//
//	neo master  [options]        a master node        (as neomaster)
//	neo storage [options]        a storage node       (as neostorage)
//	neo admin   [options]        an admin node        (as neoadmin)
//	neo ctl     [options] CMD    neoctl: ask the admin (as neoctl)
//	neo simple  [options] NAME.. a whole local cluster in one process (as neosimple)
//	neo demo                     start a local cluster, commit, read back, stop
//	neo bench   [options] URL    measure a running cluster through the Go client
//	neo stress  [options]        a cluster of its own under faults; check no commit is lost
//
// Called as neomaster, neostorage, neoadmin, neoctl or neosimple (a link or a
// copy of the binary with that name), it behaves as the matching subcommand,
// so that it replaces NEO/py's programs: the daemons take NEO/py's options
// (-f neo.conf -s SECTION, -c, -m, -b, -d, -a ...) in the forms -x value,
// --long value and --long=value, and neoctl takes -a ADMIN and NEO/py's
// commands.
//
// Logs are text (log/slog) on standard error, or appended to the file of
// -l/--logfile; --loglevel LEVEL (debug, info, warning, error) or -v
// (debug) choose how much, in every command. The storage backend is SQLite
// (--adapter SQLite; NEO/py's default adapter, MySQL, is not built in).
//
// A daemon runs until SIGINT or SIGTERM (then it stops and exits 0), until
// it is told to stop by the cluster (neoctl kill, cluster STOPPING), or until
// it fails (exit status 1). Usage errors exit with status 2.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[0], os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
