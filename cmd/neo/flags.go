package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/neozodb/neo/neo/neonet"
)

// logFlags are the options about logging that every command takes besides
// NEO/py's ones: --loglevel LEVEL and -v/--verbose (= --loglevel debug).
// NEO/py has no such option (its nodes log everything to the SQLite file of
// -l/--logfile); here logs are text on standard error, or appended to the
// file of -l/--logfile.
type logFlags struct {
	level slog.Level
}

// parseLevel reads a level name: slog's (debug, info, warn, error) or
// Python logging's (DEBUG, INFO, WARNING, ERROR, CRITICAL).
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "critical":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("bad log level %q (want debug, info, warning or error)", s)
}

// stripLogFlags removes --loglevel and -v/--verbose from args (anywhere
// before "--") and returns what they set and the other arguments.
func stripLogFlags(args []string) (logFlags, []string, error) {
	lf := logFlags{level: slog.LevelInfo}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		switch name {
		case "v", "verbose":
			if hasValue {
				return lf, nil, usagef("option %s takes no value", a)
			}
			lf.level = slog.LevelDebug
		case "loglevel":
			if !hasValue {
				if i+1 == len(args) {
					return lf, nil, usagef("option %s needs a value", a)
				}
				i++
				value = args[i]
			}
			l, err := parseLevel(value)
			if err != nil {
				return lf, nil, &usageError{err.Error()}
			}
			lf.level = l
		default:
			rest = append(rest, a)
		}
	}
	return lf, rest, nil
}

// logOutput opens where logs go: logfile (appended to; a leading ~ is the
// home directory) or stderr. close must be called at the end.
func logOutput(logfile string, stderr io.Writer) (w io.Writer, close func(), err error) {
	if logfile == "" {
		return stderr, func() {}, nil
	}
	path := expandUser(logfile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	// NEO/py's log files are SQLite databases: do not append text to one.
	head := make([]byte, len(sqliteMagic))
	if n, _ := f.ReadAt(head, 0); n == len(head) && string(head) == sqliteMagic {
		f.Close()
		return nil, nil, fmt.Errorf("log file %s is a SQLite database (a NEO/py log?): this program writes text logs; give another file", path)
	}
	return f, func() { f.Close() }, nil
}

// sqliteMagic starts every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// expandUser replaces a leading ~ by the home directory, as NEO/py does
// for paths in options.
func expandUser(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// loadTLS reads --ca, --cert and --key (all or none).
func loadTLS(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	if ca == "" || cert == "" || key == "" {
		return nil, usagef("--ca, --cert and --key go together")
	}
	c, err := neonet.LoadTLSConfig(expandUser(ca), expandUser(cert), expandUser(key))
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return c, nil
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments (as Python's optparse does), up to "--"; it returns
// the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stopped at a positional argument, or after "--" which it
		// consumed: then everything left is positional.
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newFlagSet returns a flag set that reports errors to stderr and whose
// usage line names the program.
func newFlagSet(e *env, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(e.prog, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: %s %s\n", e.prog, usageLine)
		fs.PrintDefaults()
	}
	return fs
}
