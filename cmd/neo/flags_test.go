package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/neozodb/neo/neo/proto"
)

func TestParseDaemonForms(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		bind       string
		masters    []string
		partitions int
		replicas   int
		autostart  int
		nid        proto.NodeID
		level      slog.Level
	}{
		{
			name:       "short",
			args:       []string{"-c", "prod", "-b", "127.0.0.1:0", "-m", "127.0.0.1:10000 [::1]:10001 10.0.0.3:7", "-p", "7", "-r", "1", "-A", "2", "-i", "M3"},
			bind:       "127.0.0.1:0",
			masters:    []string{"127.0.0.1:10000", "[::1]:10001", "10.0.0.3:7"},
			partitions: 7, replicas: 1, autostart: 2,
			nid:   proto.NewNodeID(proto.Master, 3),
			level: slog.LevelInfo,
		},
		{
			name:       "long with =",
			args:       []string{"--cluster=prod", "--bind=[::1]:0", "--masters=127.0.0.1:10000 [::1]:10001", "--partitions=7", "--replicas=1", "--autostart=2", "--nid=M3", "--loglevel=debug"},
			bind:       "[::1]:0",
			masters:    []string{"127.0.0.1:10000", "[::1]:10001"},
			partitions: 7, replicas: 1, autostart: 2,
			nid:   proto.NewNodeID(proto.Master, 3),
			level: slog.LevelDebug,
		},
		{
			name:       "long with space",
			args:       []string{"--cluster", "prod", "--bind", "[::1]", "--masters", "[::1]:10001", "--partitions", "7", "--replicas", "1", "--autostart", "2", "--nid", "M3", "-v"},
			bind:       "[::1]:0", // a bare host gets port 0, as in NEO/py
			masters:    []string{"[::1]:10001"},
			partitions: 7, replicas: 1, autostart: 2,
			nid:   proto.NewNodeID(proto.Master, 3),
			level: slog.LevelDebug,
		},
		{
			name:       "defaults",
			args:       []string{"-c", "prod", "--loglevel", "WARNING"},
			bind:       "127.0.0.1:10000",
			partitions: 100, // NEO/py master's default
			level:      slog.LevelWarn,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			d, err := parseDaemon("master", tc.args, &stderr)
			if err != nil {
				t.Fatalf("parseDaemon: %v (stderr %q)", err, stderr.String())
			}
			o := d.opts
			if o.Cluster != "prod" || d.bind != tc.bind || !reflect.DeepEqual(o.Masters, tc.masters) ||
				o.Partitions != tc.partitions || o.Replicas != tc.replicas || o.Autostart != tc.autostart ||
				d.nid != tc.nid || d.log.level != tc.level {
				t.Errorf("got cluster %q bind %q masters %q partitions %d replicas %d autostart %d nid %v level %v",
					o.Cluster, d.bind, o.Masters, o.Partitions, o.Replicas, o.Autostart, d.nid, d.log.level)
			}
		})
	}
}

func TestParseStorage(t *testing.T) {
	d, err := parseDaemon("storage", []string{"-c", "prod", "--adapter=SQLite", "-d", "/x/db.sqlite", "-e", "InnoDB", "--reset", "-b", "[::1]:0", "-m", "[::1]:5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.opts.Database != "/x/db.sqlite" || !d.opts.Reset || d.bind != "[::1]:0" || d.opts.Engine != "InnoDB" {
		t.Errorf("got %+v bind %s", d.opts, d.bind)
	}
	// -a of a storage is its adapter; NEO/py's default is MySQL, which
	// this build does not have: the message says what to do.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "prod", "-d", "x"}, "adapter MySQL is not available in this build (only SQLite is): use --adapter SQLite"},
		{[]string{"-c", "prod", "-d", "x", "-a", "Importer"}, "adapter Importer is not available"},
		{[]string{"-c", "prod", "-d", "x", "--adapter=Oracle"}, `unknown adapter "Oracle"`},
		{[]string{"-c", "prod", "-a", "SQLite"}, "database is required"},
		{[]string{"-c", "prod", "-a", "SQLite", "-d", "x", "-i", "M1"}, "M1 is not the id of a storage node"},
		{[]string{"-c", "prod", "-a", "SQLite", "-d", "x", "-m", "nohost"}, `bad address "nohost"`},
		{[]string{"-c", "prod", "-a", "SQLite", "-d", "x", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-c", "prod", "-a", "SQLite", "-d", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"-c", "prod", "-a", "SQLite", "-d", "x", "--loglevel", "loud"}, `bad log level "loud"`},
		{[]string{"-a", "SQLite", "-d", "x"}, "cluster name is required"},
	} {
		_, err := parseDaemon("storage", tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
}

func TestParseDaemonConfigFile(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "neo.conf")
	err := os.WriteFile(conf, []byte(`[DEFAULT]
cluster = prod
masters = 127.0.0.1:10000 [::1]:10001

[storage1]
adapter = SQLite
database = /srv/neo/s1.sqlite
bind = 127.0.0.1:20001

[master]
partitions = 12
replicas = 1
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseDaemon("storage", []string{"-f", conf, "-s", "storage1", "--bind=127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.opts.Cluster != "prod" || d.opts.Database != "/srv/neo/s1.sqlite" || d.bind != "127.0.0.1:0" ||
		!reflect.DeepEqual(d.opts.Masters, []string{"127.0.0.1:10000", "[::1]:10001"}) {
		t.Errorf("storage from file: %+v bind %s", d.opts, d.bind)
	}
	d, err = parseDaemon("master", []string{"--file=" + conf, "-r", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.opts.Partitions != 12 || d.opts.Replicas != 0 || d.opts.Cluster != "prod" {
		t.Errorf("master from file: %+v", d.opts)
	}
}

func TestParseCtl(t *testing.T) {
	e := &env{prog: "neoctl", stdout: io.Discard, stderr: io.Discard}
	for _, tc := range []struct {
		args []string
		addr string
		cmd  []string
	}{
		{[]string{"print", "node"}, "127.0.0.1:9999", []string{"print", "node"}},
		{[]string{"-a", "[::1]:7000", "print", "pt"}, "[::1]:7000", []string{"print", "pt"}},
		{[]string{"--address=10.1.1.1", "start"}, "10.1.1.1:9999", []string{"start"}},
		{[]string{"-a", "127.0.0.1:5", "tweak", "-n", "S2"}, "127.0.0.1:5", []string{"tweak", "-n", "S2"}},
		// NEO/py: "invalid command: set --address 127.0.0.1:5 cluster STOPPING"
		{[]string{"set", "--address", "127.0.0.1:5", "cluster", "STOPPING"}, "127.0.0.1:9999", []string{"set", "--address", "127.0.0.1:5", "cluster", "STOPPING"}},
		{[]string{"-a", "127.0.0.1:5", "--", "print", "-x"}, "127.0.0.1:5", []string{"print", "-x"}},
	} {
		c, err := parseCtl(e, tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if c.addr != tc.addr || !reflect.DeepEqual(c.cmd, tc.cmd) {
			t.Errorf("%q: addr %q cmd %q, want %q %q", tc.args, c.addr, c.cmd, tc.addr, tc.cmd)
		}
	}
	if c, err := parseCtl(e, []string{"-a", "127.0.0.1:1"}); err != nil || len(c.cmd) != 0 {
		t.Errorf("no command (neoctl then lists the commands): %v", err)
	}
	if _, err := parseCtl(e, []string{"-a", "nohost:x", "print"}); err == nil || !strings.Contains(err.Error(), "bad port") {
		t.Errorf("bad admin address: %v", err)
	}
}

func TestMainDispatch(t *testing.T) {
	ctx := context.Background()
	var out, errb bytes.Buffer
	if code := Main(ctx, "/usr/bin/neo", []string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	// Called as neostorage: NEO/py's options, its default adapter refused.
	code := Main(ctx, "/usr/local/bin/neostorage", []string{"-c", "x", "-d", "db"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "neostorage: adapter MySQL is not available") {
		t.Errorf("neostorage: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	code = Main(ctx, "neo", []string{"master", "--partitions=x", "-c", "x"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `not an integer: "x"`) {
		t.Errorf("bad flag value: code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	for _, prog := range []string{"neoctl", "neomaster", "neostorage", "neoadmin", "neosimple"} {
		errb.Reset()
		if code := Main(ctx, prog, []string{"-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-c") && !strings.Contains(errb.String(), "-a") {
			t.Errorf("%s -h: code %d, usage %q", prog, code, errb.String())
		}
	}
}

func TestStripLogFlags(t *testing.T) {
	lf, rest, err := stripLogFlags([]string{"-c", "x", "--loglevel", "error", "-b", "h:1", "--", "-v"})
	if err != nil || lf.level != slog.LevelError || !reflect.DeepEqual(rest, []string{"-c", "x", "-b", "h:1", "--", "-v"}) {
		t.Errorf("got %v %q %v", lf.level, rest, err)
	}
	if _, _, err := stripLogFlags([]string{"--loglevel"}); err == nil {
		t.Error("--loglevel without value accepted")
	}
}

func TestParseSimple(t *testing.T) {
	e := &env{prog: "neo simple", stdout: io.Discard, stderr: io.Discard}
	s, err := parseSimple(e, []string{"s1", "--replicas", "1", "--bind=[::1]", "s2", "--cluster", "c", "-v"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.storages, []string{"s1", "s2"}) || s.replicas != 1 || s.bind != "[::1]:0" || s.cluster != "c" ||
		s.log.level != slog.LevelDebug || s.partitions != 12 || s.masters != 1 {
		t.Errorf("got %+v", s)
	}
	s, err = parseSimple(e, nil)
	if err != nil || !reflect.DeepEqual(s.storages, []string{"storage"}) || s.bind != "127.0.0.1:0" || s.cluster != "neo" {
		t.Errorf("defaults: %+v, %v", s, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--replicas", "1", "s1"}, "--replicas 1 needs more than 1 storages"},
		{[]string{"--masters", "0", "s1"}, "must be positive"},
		{[]string{"a/b"}, `bad storage name "a/b"`},
		{[]string{"s1", "s1"}, `storage "s1" given twice`},
		{[]string{"--bind", "h:x"}, "--bind: bad port"},
		{[]string{"--partitions", "0"}, "must be positive"},
	} {
		if _, err := parseSimple(e, tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestLogOutput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "neo.log")
	w, closeLog, err := logOutput(path, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	newLogger(w, slog.LevelInfo).Info("first")
	closeLog()
	w, closeLog, err = logOutput(path, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	newLogger(w, slog.LevelInfo).Info("second")
	closeLog()
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "msg=first") || !strings.Contains(string(b), "msg=second") {
		t.Errorf("log file: %q", b)
	}
	// A NEO/py log (a SQLite database) is not appended to.
	pylog := filepath.Join(dir, "py.log")
	os.WriteFile(pylog, []byte("SQLite format 3\x00rest of the header"), 0o644)
	if _, _, err := logOutput(pylog, io.Discard); err == nil || !strings.Contains(err.Error(), "is a SQLite database") {
		t.Errorf("SQLite log file: %v", err)
	}
}
