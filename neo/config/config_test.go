package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sampleConf is laid out like the neo.conf shipped with NEO/py.
const sampleConf = `# NEO configuration
[DEFAULT]
cluster: test
masters: 127.0.0.1:10000 [::1]:10001
replicas: 1
partitions: 12
; a comment
home = /var/lib/neo

[admin]
bind: 127.0.0.1:9999
monitor_email:
  a@example.org
  b@example.org

[master]
bind: 127.0.0.1:10000

[storage]
database: %(home)s/neo1.sqlite
adapter = SQLite
bind: 127.0.0.1:20000
disable_pack = yes
`

func writeConf(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "neo.conf")
	if err := os.WriteFile(p, []byte(sampleConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileAndFlags(t *testing.T) {
	conf := writeConf(t)
	o, rest, err := Load("storage", []string{"-f", conf, "--bind=127.0.0.1:0", "extra"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Cluster != "test" || o.Database != "/var/lib/neo/neo1.sqlite" || o.Adapter != "SQLite" || !o.DisablePack {
		t.Errorf("from file: %+v", o)
	}
	if o.Bind != "127.0.0.1:0" {
		t.Errorf("command line must override the file: bind = %q", o.Bind)
	}
	if !reflect.DeepEqual(o.Masters, []string{"127.0.0.1:10000", "[::1]:10001"}) {
		t.Errorf("masters = %q", o.Masters)
	}
	if !reflect.DeepEqual(rest, []string{"extra"}) {
		t.Errorf("rest = %q", rest)
	}

	m, _, err := Load("master", []string{"--file", conf, "-c", "other", "-p", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cluster != "other" || m.Partitions != 7 || m.Replicas != 1 || m.Bind != "127.0.0.1:10000" {
		t.Errorf("master: %+v", m)
	}

	a, _, err := Load("admin", []string{"-f", conf}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.MonitorEmail, []string{"a@example.org", "b@example.org"}) {
		t.Errorf("monitor_email = %q", a.MonitorEmail)
	}
	// A section chosen with -s.
	s, _, err := Load("storage", []string{"-f", conf, "-s", "storage", "-d", "x.sqlite"}, io.Discard)
	if err != nil || s.Database != "x.sqlite" {
		t.Errorf("section: %+v %v", s, err)
	}
}

func TestLoadErrors(t *testing.T) {
	conf := writeConf(t)
	for _, tc := range []struct {
		kind string
		args []string
		want string
	}{
		{"master", nil, "cluster name is required"},
		{"storage", []string{"-c", "x"}, "database is required"},
		{"master", []string{"-c", "x", "--ca", "ca.crt"}, "go together"},
		{"master", []string{"-c", "x", "-m", "nohostport"}, "bad address"},
		{"master", []string{"-c", "x", "-p", "many"}, "not an integer"},
		{"master", []string{"-f", conf, "-s", "nosuch"}, "no section"},
		{"master", []string{"-c", "x", "--adapter", "SQLite"}, "not defined"},
		{"client", nil, "unknown node kind"},
	} {
		_, _, err := Load(tc.kind, tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: err = %v, want %q", tc.kind, tc.args, err, tc.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	o, _, err := Load("storage", []string{"-c", "x", "-d", "db"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Adapter != "MySQL" || o.Bind != "127.0.0.1:0" || o.Masters[0] != "127.0.0.1:10000" || o.Section != "storage" {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseINI(t *testing.T) {
	cf, err := Parse(strings.NewReader("[a]\nx = 1\n  2\ny: %(x)s%%\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := cf.Section("a")
	if err != nil {
		t.Fatal(err)
	}
	if s["x"] != "1\n2" || s["y"] != "1\n2%" {
		t.Errorf("%q", s)
	}
	for _, bad := range []string{"x = 1\n", "[a\n", "[a]\nnovalue\n", "[a]\n[a]\n", "  cont\n"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	cf, _ = Parse(strings.NewReader("[a]\nx = %(nosuch)s\n"))
	if _, err := cf.Section("a"); err == nil {
		t.Error("unknown interpolation accepted")
	}
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:10000": "127.0.0.1:10000",
		"[::1]:5":         "[::1]:5",
		"localhost":       "localhost:7",
		"[::1]":           "[::1]:7",
	} {
		got, err := ParseAddress(in, 7)
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := ParseAddress("host:99999", 0); err == nil {
		t.Error("port 99999 accepted")
	}
}
