// Package config reads NEO's configuration the way NEO/py does: an INI file
// (neo.conf, Python ConfigParser syntax) whose sections hold node options,
// overridden by command-line flags with the same names.
//
// A node reads its section (-s/--section, by default its kind: "master",
// "storage", "admin") of the file given with -f/--file; [DEFAULT] applies to
// every section. In the file, option names use '_' where flags use '-'.
package config

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// File is a parsed INI file.
type File struct {
	defaults *section
	sections map[string]*section
	order    []string
}

type section struct {
	keys []string
	vals map[string]string
}

func newSection() *section { return &section{vals: map[string]string{}} }

func (s *section) set(k, v string) {
	if _, ok := s.vals[k]; !ok {
		s.keys = append(s.keys, k)
	}
	s.vals[k] = v
}

// ReadFile parses the INI file at path.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cf, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cf, nil
}

// Parse reads INI text with Python ConfigParser's rules: "[name]" starts a
// section; "key = value" or "key: value"; lines starting with '#' or ';'
// are comments, as are inline comments nowhere (ConfigParser's default);
// an indented line continues the previous value (a new line is kept, which
// is how repeatable options are given one per line); keys are
// case-insensitive.
func Parse(r io.Reader) (*File, error) {
	cf := &File{defaults: newSection(), sections: map[string]*section{}}
	var cur *section
	var lastKey string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	lineno := 0
	for sc.Scan() {
		lineno++
		line := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';' {
			if trimmed == "" {
				lastKey = ""
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur == nil || lastKey == "" {
				return nil, fmt.Errorf("line %d: continuation line without a key", lineno)
			}
			v := cur.vals[lastKey]
			if v != "" {
				v += "\n"
			}
			cur.vals[lastKey] = v + trimmed
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", lineno, line)
			}
			name := line[1 : len(line)-1]
			if name == "DEFAULT" {
				cur = cf.defaults
			} else {
				if cf.sections[name] != nil {
					return nil, fmt.Errorf("line %d: section %q given twice", lineno, name)
				}
				cur = newSection()
				cf.sections[name] = cur
				cf.order = append(cf.order, name)
			}
			lastKey = ""
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("line %d: option outside of any section", lineno)
		}
		i := strings.IndexAny(line, "=:")
		if i <= 0 {
			return nil, fmt.Errorf("line %d: expected 'key = value', got %q", lineno, line)
		}
		key := strings.ToLower(strings.TrimSpace(line[:i]))
		cur.set(key, strings.TrimSpace(line[i+1:]))
		lastKey = key
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return cf, nil
}

// Sections returns the section names in file order ([DEFAULT] excluded).
func (cf *File) Sections() []string { return append([]string(nil), cf.order...) }

// Section returns the options of a section with [DEFAULT] applied and
// %(name)s references expanded (ConfigParser's basic interpolation).
func (cf *File) Section(name string) (map[string]string, error) {
	s := cf.sections[name]
	if s == nil {
		return nil, fmt.Errorf("no section [%s]", name)
	}
	raw := map[string]string{}
	for k, v := range cf.defaults.vals {
		raw[k] = v
	}
	for k, v := range s.vals {
		raw[k] = v
	}
	out := map[string]string{}
	for k, v := range raw {
		x, err := interpolate(raw, v, 0)
		if err != nil {
			return nil, fmt.Errorf("[%s] %s: %w", name, k, err)
		}
		out[k] = x
	}
	return out, nil
}

func interpolate(vals map[string]string, v string, depth int) (string, error) {
	if depth > 10 {
		return "", fmt.Errorf("interpolation too deep")
	}
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		switch {
		case i+1 < len(v) && v[i+1] == '%':
			b.WriteByte('%')
			i++
		case i+1 < len(v) && v[i+1] == '(':
			end := strings.Index(v[i:], ")s")
			if end < 0 {
				return "", fmt.Errorf("bad interpolation in %q", v)
			}
			name := strings.ToLower(v[i+2 : i+end])
			ref, ok := vals[name]
			if !ok {
				return "", fmt.Errorf("interpolation of unknown option %q", name)
			}
			x, err := interpolate(vals, ref, depth+1)
			if err != nil {
				return "", err
			}
			b.WriteString(x)
			i += end + 1
		default:
			return "", fmt.Errorf("'%%' must be followed by '%%' or '(' in %q", v)
		}
	}
	return b.String(), nil
}

// ParseBool reads an INI boolean (ConfigParser's getboolean).
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}
