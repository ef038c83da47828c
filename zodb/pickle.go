package zodb

import (
	"bytes"
	"fmt"

	pickle "github.com/kisielk/og-rek"
)

// An object record is two pickles back to back, decoded with one shared
// memo: the class description, then the state. The functions here look
// into records without knowing the classes.

// PickleClass returns the "module.name" of the class of an object record,
// as ZODB's get_pickle_metadata finds it, or "" when it cannot tell.
func PickleClass(data []byte) string {
	mod, name := pickleClass(data)
	if mod == "" && name == "" {
		return ""
	}
	return mod + "." + name
}

func pickleClass(data []byte) (mod, name string) {
	p := data
	if len(p) >= 2 && p[0] == 0x80 { // PROTO n
		p = p[2:]
	}
	// Fast path: GLOBAL or MARK GLOBAL, the names follow as lines.
	switch {
	case bytes.HasPrefix(p, []byte("(c")):
		p = p[2:]
	case bytes.HasPrefix(p, []byte("c")):
		p = p[1:]
	default:
		p = nil
	}
	if p != nil {
		m, rest, ok1 := bytes.Cut(p, []byte("\n"))
		n, _, ok2 := bytes.Cut(rest, []byte("\n"))
		if ok1 && ok2 {
			return string(m), string(n)
		}
		return "", ""
	}
	d := pickle.NewDecoder(bytes.NewReader(data))
	v, err := d.Decode()
	if err != nil {
		return "", ""
	}
	t, ok := v.(pickle.Tuple)
	if !ok || len(t) == 0 {
		return fmt.Sprint(v), ""
	}
	switch c := t[0].(type) {
	case pickle.Class:
		return c.Module, c.Name
	case pickle.Tuple:
		if len(c) == 2 {
			m, ok1 := c[0].(string)
			n, ok2 := c[1].(string)
			if ok1 && ok2 {
				return m, n
			}
		}
	}
	return "", ""
}

// PickleRefs returns the oids an object record refers to strongly within its
// database, in the order they appear: persistent references of the forms
// (oid, class) and bare oid. Weak ('w') and cross-database ('m', 'n')
// references are not returned, like ZODB's referencesf, which pack's garbage
// collection uses.
func PickleRefs(data []byte) ([]Oid, error) {
	var refs []Oid
	var bad error
	cfg := &pickle.DecoderConfig{
		PersistentLoad: func(ref pickle.Ref) (any, error) {
			if oid, ok := refOid(ref.Pid); ok {
				refs = append(refs, oid)
			} else if t, ok := ref.Pid.(pickle.Tuple); ok && len(t) == 2 {
				if oid, ok := refOid(t[0]); ok {
					refs = append(refs, oid)
				} else if bad == nil {
					bad = fmt.Errorf("reference with invalid oid %#v", t[0])
				}
			}
			// Lists are weak or cross-database references: not followed.
			return nil, nil
		},
	}
	d := pickle.NewDecoderWithConfig(bytes.NewReader(data), cfg)
	if _, err := d.Decode(); err != nil {
		return nil, fmt.Errorf("class pickle: %w", err)
	}
	if _, err := d.Decode(); err != nil {
		return nil, fmt.Errorf("state pickle: %w", err)
	}
	return refs, bad
}

// refOid recognises an 8-byte oid: bytes (Python 3) or a byte string
// (Python 2 str).
func refOid(v any) (Oid, bool) {
	var b []byte
	switch x := v.(type) {
	case pickle.Bytes:
		b = []byte(x)
	case string:
		b = []byte(x)
	case pickle.ByteString:
		b = []byte(x)
	default:
		return 0, false
	}
	if len(b) != 8 {
		return 0, false
	}
	oid, _ := OidFromBytes(b)
	return oid, true
}
