package main

import (
	"context"
	"flag"

	"github.com/neozodb/neo/neo/config"
	"github.com/neozodb/neo/neo/ctl"
)

// ctlArgs is neoctl's command line.
type ctlArgs struct {
	addr          string // admin node, host:port
	logfile       string
	ca, cert, key string
	log           logFlags
	cmd           []string // the neoctl command, e.g. ["print", "node"]
}

func parseCtl(e *env, args []string) (*ctlArgs, error) {
	lf, args, err := stripLogFlags(args)
	if err != nil {
		return nil, err
	}
	c := &ctlArgs{log: lf}
	fs := newFlagSet(e, "[-a ADMIN] [--ca FILE --cert FILE --key FILE] [COMMAND...]")
	addr := "127.0.0.1:9999"
	for _, n := range []string{"a", "address"} {
		fs.StringVar(&addr, n, addr, "address (host:port) of an admin node")
	}
	for _, n := range []string{"l", "logfile"} {
		fs.StringVar(&c.logfile, n, "", "log file")
	}
	fs.StringVar(&c.ca, "ca", "", "TLS: certificate authority")
	fs.StringVar(&c.cert, "cert", "", "TLS: certificate")
	fs.StringVar(&c.key, "key", "", "TLS: private key")
	var handler string
	fs.StringVar(&handler, "handler", "", "ignored (NEO/py compatibility)")
	// As NEO/py's neoctl (argparse REMAINDER): options come before the
	// command; from its first word on, everything is the command's
	// (tweak -n).
	err = fs.Parse(args)
	c.cmd = fs.Args()
	if err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if c.addr, err = config.ParseAddress(addr, 9999); err != nil {
		return nil, usagef("-a: %s", err)
	}
	return c, nil
}

func runCtl(ctx context.Context, e *env, args []string) error {
	c, err := parseCtl(e, args)
	if err != nil {
		return err
	}
	tlsConf, err := loadTLS(c.ca, c.cert, c.key)
	if err != nil {
		return err
	}
	// c.logfile: the Go neoctl logs nothing worth a file; the option is
	// accepted so that NEO/py command lines keep working.
	// Without a command, ctl.Run lists the commands, as neoctl does.
	if err := ctl.Run(ctx, c.addr, tlsConf, c.cmd, e.stdout); err != nil {
		return &rawError{err}
	}
	return nil
}
