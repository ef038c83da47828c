// Command fs1 inspects and checks FileStorage (Data.fs) files, with the
// output of ZODB's own scripts:
//
//	fs1 dump FILE            python -m ZODB.FileStorage.fsdump FILE
//	fs1 dump -v FILE         ZODB.FileStorage.fsdump.Dumper(FILE).dump()
//	fs1 verify [-v [-v]] FILE  python -m ZODB.scripts.fstest [-v [-v]] FILE
//	fs1 dump-index FILE      print the entries of FILE.index
//	fs1 reindex FILE         rebuild FILE.index from FILE
//	fs1 verify-index FILE    check FILE.index against FILE
//	fs1 info FILE            magic, size, last transaction, counts
//
// All commands only read FILE, except reindex, which writes FILE.index.
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
