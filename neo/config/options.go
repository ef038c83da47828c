package config

import (
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Options are the options of a NEO daemon (master, storage or admin), with
// NEO/py's names, defaults and meaning. Fields that do not apply to the
// node kind keep their zero value.
type Options struct {
	Kind string // "master", "storage" or "admin"

	// common
	File              string
	Section           string
	Cluster           string
	Masters           []string // "host:port" each (IPv6 as "[addr]:port")
	Bind              string
	Logfile           string
	CA, Cert, Key     string
	DynamicMasterList string
	NID               string // forced node id (testing), e.g. "S1"

	// master
	Autostart       int
	UpstreamCluster string
	UpstreamMasters []string
	Backup          bool
	Replicas        int
	Partitions      int

	// storage
	Adapter               string
	Database              string
	Wait                  float64
	DisablePack           bool
	DisableDropPartitions bool
	NewNID                bool
	Engine                string
	Dedup                 bool
	Reset                 bool

	// admin
	MonitorMaxlag float64
	MonitorEmail  []string
	MonitorBackup []string
	SMTP          string
	SMTPTLS       bool
	SMTPAuth      string
}

// option describes one option: its long flag name, short alias, the kinds
// it applies to, and how to set it from text.
type option struct {
	long, short string
	kinds       string // letters: m(aster) s(torage) a(dmin)
	usage       string
	boolean     bool
	set         func(o *Options, v string) error
}

func str(p func(o *Options) *string) func(*Options, string) error {
	return func(o *Options, v string) error { *p(o) = v; return nil }
}

func integer(p func(o *Options) *int) func(*Options, string) error {
	return func(o *Options, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("not an integer: %q", v)
		}
		*p(o) = n
		return nil
	}
}

func float(p func(o *Options) *float64) func(*Options, string) error {
	return func(o *Options, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		*p(o) = f
		return nil
	}
}

func boolean(p func(o *Options) *bool) func(*Options, string) error {
	return func(o *Options, v string) error {
		b, err := ParseBool(v)
		*p(o) = b
		return err
	}
}

func addrList(p func(o *Options) *[]string) func(*Options, string) error {
	return func(o *Options, v string) error {
		l, err := ParseMasters(v)
		*p(o) = l
		return err
	}
}

func lines(p func(o *Options) *[]string) func(*Options, string) error {
	return func(o *Options, v string) error {
		*p(o) = append(*p(o), strings.Fields(v)...)
		return nil
	}
}

var options = []option{
	{"file", "f", "msa", "configuration file", false, str(func(o *Options) *string { return &o.File })},
	{"section", "s", "msa", "section of the configuration file", false, str(func(o *Options) *string { return &o.Section })},
	{"cluster", "c", "msa", "cluster name", false, str(func(o *Options) *string { return &o.Cluster })},
	{"masters", "m", "msa", "space-separated list of master addresses", false, addrList(func(o *Options) *[]string { return &o.Masters })},
	{"bind", "b", "msa", "address to listen on", false, str(func(o *Options) *string { return &o.Bind })},
	{"logfile", "l", "msa", "log file", false, str(func(o *Options) *string { return &o.Logfile })},
	{"ca", "", "msa", "TLS: certificate authority", false, str(func(o *Options) *string { return &o.CA })},
	{"cert", "", "msa", "TLS: certificate of this node", false, str(func(o *Options) *string { return &o.Cert })},
	{"key", "", "msa", "TLS: private key of this node", false, str(func(o *Options) *string { return &o.Key })},
	{"dynamic-master-list", "D", "msa", "file holding the dynamic master list", false, str(func(o *Options) *string { return &o.DynamicMasterList })},
	{"nid", "i", "msa", "node id to use", false, str(func(o *Options) *string { return &o.NID })},

	{"autostart", "A", "m", "start a new cluster once this many storages are pending", false, integer(func(o *Options) *int { return &o.Autostart })},
	{"upstream-cluster", "C", "m", "name of the cluster to back up", false, str(func(o *Options) *string { return &o.UpstreamCluster })},
	{"upstream-masters", "M", "m", "masters of the cluster to back up", false, addrList(func(o *Options) *[]string { return &o.UpstreamMasters })},
	{"backup", "B", "m", "go to backup mode if the database is empty", true, boolean(func(o *Options) *bool { return &o.Backup })},
	{"replicas", "r", "m", "number of extra copies of each partition (new database)", false, integer(func(o *Options) *int { return &o.Replicas })},
	{"partitions", "p", "m", "number of partitions (new database)", false, integer(func(o *Options) *int { return &o.Partitions })},

	{"adapter", "a", "s", "storage backend: SQLite, MySQL or Importer", false, str(func(o *Options) *string { return &o.Adapter })},
	{"database", "d", "s", "backend connection string or path", false, str(func(o *Options) *string { return &o.Database })},
	{"wait", "w", "s", "seconds to wait for the backend (-1: forever)", false, float(func(o *Options) *float64 { return &o.Wait })},
	{"disable-pack", "", "s", "never process pack orders", true, boolean(func(o *Options) *bool { return &o.DisablePack })},
	{"disable-drop-partitions", "", "s", "keep the data of discarded cells", true, boolean(func(o *Options) *bool { return &o.DisableDropPartitions })},
	{"new-nid", "", "s", "get a new node id for a copied database, record it and exit", true, boolean(func(o *Options) *bool { return &o.NewNID })},
	{"engine", "e", "s", "MySQL engine", false, str(func(o *Options) *string { return &o.Engine })},
	{"dedup", "", "s", "deduplicate data (at database creation)", true, boolean(func(o *Options) *bool { return &o.Dedup })},
	{"reset", "", "s", "erase the database and exit", true, boolean(func(o *Options) *bool { return &o.Reset })},

	{"monitor-maxlag", "", "a", "maximum lag of backup clusters (s)", false, float(func(o *Options) *float64 { return &o.MonitorMaxlag })},
	{"monitor-email", "", "a", "notification recipient (repeatable)", false, lines(func(o *Options) *[]string { return &o.MonitorEmail })},
	{"monitor-backup", "", "a", "backup cluster to monitor (repeatable)", false, lines(func(o *Options) *[]string { return &o.MonitorBackup })},
	{"smtp", "", "a", "SMTP server HOST[:PORT]", false, str(func(o *Options) *string { return &o.SMTP })},
	{"smtp-tls", "", "a", "use STARTTLS", true, boolean(func(o *Options) *bool { return &o.SMTPTLS })},
	{"smtp-auth", "", "a", "SMTP credentials USER:PASS", false, str(func(o *Options) *string { return &o.SMTPAuth })},
}

// defaults sets NEO/py's defaults for a node kind.
func defaults(kind string) *Options {
	o := &Options{Kind: kind, Section: kind}
	switch kind {
	case "master":
		o.Bind = "127.0.0.1:10000"
		o.Partitions = 100
	case "storage":
		o.Bind = "127.0.0.1:0"
		o.Masters = []string{"127.0.0.1:10000"}
		o.Adapter = "MySQL"
		o.Engine = "InnoDB"
	case "admin":
		o.Bind = "127.0.0.1:9999"
		o.Masters = []string{"127.0.0.1:10000"}
		o.SMTP = "localhost"
	}
	return o
}

// flagValue adapts an option to flag.Value.
type flagValue struct {
	o   *Options
	opt *option
}

func (v flagValue) String() string     { return "" }
func (v flagValue) Set(s string) error { return v.opt.set(v.o, s) }
func (v flagValue) IsBoolFlag() bool   { return v.opt.boolean }

// Load parses a daemon's command line: flags in any of the forms -x value,
// --long value, --long=value; then, if -f/--file was given, the options of
// its section that the command line did not set. It returns the options and
// the remaining (positional) arguments.
func Load(kind string, args []string, stderr io.Writer) (*Options, []string, error) {
	if kind != "master" && kind != "storage" && kind != "admin" {
		return nil, nil, fmt.Errorf("config: unknown node kind %q", kind)
	}
	o := defaults(kind)
	fs := flag.NewFlagSet("neo"+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	letter := kind[:1]
	for i := range options {
		opt := &options[i]
		if !strings.Contains(opt.kinds, letter) {
			continue
		}
		fs.Var(flagValue{o, opt}, opt.long, opt.usage)
		if opt.short != "" {
			fs.Var(flagValue{o, opt}, opt.short, opt.usage+" (short for --"+opt.long+")")
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		for _, opt := range options {
			if f.Name == opt.short || f.Name == opt.long {
				given[opt.long] = true
			}
		}
	})
	if o.File != "" {
		cf, err := ReadFile(o.File)
		if err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
		sect, err := cf.Section(o.Section)
		if err != nil {
			return nil, nil, fmt.Errorf("config: %s: %w", o.File, err)
		}
		for i := range options {
			opt := &options[i]
			if given[opt.long] || !strings.Contains(opt.kinds, letter) || opt.long == "file" || opt.long == "section" {
				continue
			}
			v, ok := sect[strings.ReplaceAll(opt.long, "-", "_")]
			if !ok {
				continue
			}
			if err := opt.set(o, v); err != nil {
				return nil, nil, fmt.Errorf("config: %s [%s] %s: %w", o.File, o.Section, opt.long, err)
			}
			given[opt.long] = true
		}
	}
	if o.Cluster == "" {
		return nil, nil, fmt.Errorf("config: the cluster name is required (-c/--cluster)")
	}
	if kind == "storage" && o.Database == "" && !o.Reset {
		return nil, nil, fmt.Errorf("config: the database is required (-d/--database)")
	}
	if (o.CA != "" || o.Cert != "" || o.Key != "") && (o.CA == "" || o.Cert == "" || o.Key == "") {
		return nil, nil, fmt.Errorf("config: --ca, --cert and --key go together")
	}
	return o, fs.Args(), nil
}

// ParseMasters splits a space-separated list of addresses ("host:port",
// "[ipv6]:port") and checks each.
func ParseMasters(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Fields(s) {
		if _, err := ParseAddress(a, -1); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseAddress checks "host:port", "[ipv6]:port" or, when defaultPort ≥ 0,
// a bare host (or bracketed IPv6 address) to which defaultPort is added. It
// returns the address in the form net.Dial takes.
func ParseAddress(s string, defaultPort int) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if defaultPort < 0 {
			return "", fmt.Errorf("bad address %q: want host:port", s)
		}
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if host == "" {
			return "", fmt.Errorf("bad address %q", s)
		}
		return net.JoinHostPort(host, strconv.Itoa(defaultPort)), nil
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("bad port in address %q", s)
	}
	if host == "" {
		return "", fmt.Errorf("bad address %q: no host", s)
	}
	return net.JoinHostPort(host, port), nil
}
