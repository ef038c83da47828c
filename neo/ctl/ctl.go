// Package ctl is neoctl: it sends one command to an admin node and prints the
// result formatted as NEO/py's neoctl does.
package ctl

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
)

// Run executes one neoctl command line (args after the global flags, e.g.
// ["print", "node"]) against the admin node at addr and writes the output to
// stdout.
func Run(ctx context.Context, addr string, tlsConf *tls.Config, args []string, stdout io.Writer) error {
	return errors.New("neoctl: not implemented")
}
