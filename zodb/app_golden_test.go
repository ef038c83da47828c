package zodb_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/storage/fs1"
)

// currentJSON is X.fs.current.json.
type currentJSON struct {
	LastTid string                 `json:"last_tid"`
	Objects map[string]*currentObj `json:"objects"`
}

type currentObj struct {
	Error    string          `json:"error"`
	Serial   string          `json:"serial"`
	DataSha1 string          `json:"data_sha1"`
	DataSize int             `json:"data_size"`
	Meta     json.RawMessage `json:"meta"`
	State    json.RawMessage `json:"state"`
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// generic decodes raw JSON into map/slice/json.Number values.
func generic(t testing.TB, raw []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// normalize passes a value built here through JSON so that it compares
// with what the reference files hold.
func normalize(t testing.TB, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return sortSets(generic(t, raw))
}

// sortSets orders set elements by their JSON text, on both sides.
func sortSets(v any) any {
	switch x := v.(type) {
	case []any:
		for i := range x {
			x[i] = sortSets(x[i])
		}
	case map[string]any:
		for k, e := range x {
			x[k] = sortSets(e)
		}
		for _, k := range []string{"set", "frozenset"} {
			if l, ok := x[k].([]any); ok && len(x) == 1 {
				sort.Slice(l, func(i, j int) bool {
					a, _ := json.Marshal(l[i])
					b, _ := json.Marshal(l[j])
					return string(a) < string(b)
				})
			}
		}
	}
	return v
}

// pyFloatRepr formats f as Python's repr does.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, exps, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(exps)
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(mant, "-")
	digits := strings.Replace(mant, ".", "", 1)
	sign := ""
	if neg {
		sign = "-"
	}
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := fmt.Sprintf("%+03d", exp)
		return sign + m + "e" + es
	}
	if exp < 0 {
		return sign + "0." + strings.Repeat("0", -exp-1) + digits
	}
	if len(digits) <= exp+1 {
		return sign + digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	}
	return sign + digits[:exp+1] + "." + digits[exp+1:]
}

func sha1hex(b []byte) string {
	h := sha1.Sum(b)
	return hex.EncodeToString(h[:])
}

// toTypedJSON converts a decoded value to the typed JSON of the reference
// files (see testdata/zodb/README.md).
func toTypedJSON(v any) (any, error) {
	list := func(items []any) ([]any, error) {
		out := make([]any, 0, len(items))
		for _, e := range items {
			j, err := toTypedJSON(e)
			if err != nil {
				return nil, err
			}
			out = append(out, j)
		}
		return out, nil
	}
	switch x := v.(type) {
	case nil, bool:
		return x, nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case *big.Int:
		return json.Number(x.String()), nil
	case float64:
		return map[string]any{"float": pyFloatRepr(x)}, nil
	case string:
		if n := utf8.RuneCountInString(x); n > 4096 {
			return map[string]any{"str_len": n, "sha1_utf8": sha1hex([]byte(x))}, nil
		}
		return x, nil
	case zodb.PyBytes:
		if len(x) > 4096 {
			return map[string]any{"bytes_len": len(x), "sha1": sha1hex([]byte(x))}, nil
		}
		return map[string]any{"bytes": hex.EncodeToString([]byte(x))}, nil
	case zodb.PyTuple:
		l, err := list(x)
		return map[string]any{"tuple": l}, err
	case *zodb.PyList:
		return list(x.Items)
	case *zodb.PyDict:
		items := []any{}
		for _, it := range x.Items() {
			kv, err := list([]any{it.Key, it.Value})
			if err != nil {
				return nil, err
			}
			items = append(items, kv)
		}
		return map[string]any{"dict": items}, nil
	case zodb.PyGlobal:
		return map[string]any{"global": x.String()}, nil
	case *zodb.PyRef:
		ri, err := x.Parse()
		if err != nil {
			return nil, err
		}
		oid := ri.Oid.String()
		switch ri.Kind {
		case zodb.RefOidClass:
			cls, err := toTypedJSON(x.Pid.(zodb.PyTuple)[1])
			return map[string]any{"ref": oid, "class": cls}, err
		case zodb.RefOid:
			return map[string]any{"ref": oid}, nil
		case zodb.RefWeak:
			if ri.Database != "" {
				return map[string]any{"ref_w": []any{oid, ri.Database}}, nil
			}
			return map[string]any{"ref_w": []any{oid}}, nil
		case zodb.RefMulti:
			cls, err := toTypedJSON(x.Pid.(*zodb.PyList).Items[1].(zodb.PyTuple)[2])
			return map[string]any{"ref_m": []any{ri.Database, oid, cls}}, err
		case zodb.RefMultiOid:
			return map[string]any{"ref_n": []any{ri.Database, oid}}, nil
		}
		return nil, fmt.Errorf("reference form %c not in the typed JSON", ri.Kind)
	case *zodb.PyReduce:
		g, _ := x.Callable.(zodb.PyGlobal)
		args, _ := x.Args.(zodb.PyTuple)
		switch name := g.String(); {
		case !x.NewObj && !x.HasState && (name == "builtins.set" || name == "builtins.frozenset") && len(args) == 1:
			if l, ok := args[0].(*zodb.PyList); ok {
				items, err := list(l.Items)
				return map[string]any{name[len("builtins."):]: items}, err
			}
		case !x.NewObj && !x.HasState && name == "builtins.complex" && len(args) == 2:
			re, ok1 := args[0].(float64)
			im, ok2 := args[1].(float64)
			if ok1 && ok2 {
				return map[string]any{"complex": []any{pyFloatRepr(re), pyFloatRepr(im)}}, nil
			}
		case !x.NewObj && name == "builtins.bytearray" && len(args) == 1:
			if b, ok := args[0].(zodb.PyBytes); ok && (!x.HasState || x.State == nil) {
				return map[string]any{"bytearray": hex.EncodeToString([]byte(b))}, nil
			}
		}
		if g.Name == "" {
			return nil, fmt.Errorf("reduce of %s", zodb.PyRepr(x.Callable))
		}
		a, err := list(args)
		if err != nil {
			return nil, err
		}
		out := map[string]any{"reduce": g.String(), "args": a}
		if x.HasState {
			if out["state"], err = toTypedJSON(x.State); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no typed JSON for %T", v)
}

// fromTypedJSON builds the value typed JSON describes (the other way).
func fromTypedJSON(j any) (any, error) {
	list := func(items []any) ([]any, error) {
		out := make([]any, 0, len(items))
		for _, e := range items {
			v, err := fromTypedJSON(e)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	oidb := func(s any) (zodb.PyBytes, error) {
		str, _ := s.(string)
		oid, err := zodb.ParseOid(str)
		return zodb.PyBytes(oid.Bytes()), err
	}
	switch x := j.(type) {
	case nil, bool, string:
		return x, nil
	case json.Number:
		n, ok := new(big.Int).SetString(string(x), 10)
		if !ok {
			return nil, fmt.Errorf("number %s", x)
		}
		if n.IsInt64() {
			return n.Int64(), nil
		}
		return n, nil
	case []any:
		l, err := list(x)
		return &zodb.PyList{Items: l}, err
	case map[string]any:
		if len(x) == 1 {
			for k, v := range x {
				switch k {
				case "float":
					return strconv.ParseFloat(v.(string), 64)
				case "bytes", "bytearray":
					b, err := hex.DecodeString(v.(string))
					if k == "bytes" {
						return zodb.PyBytes(b), err
					}
					return &zodb.PyReduce{Callable: zodb.PyGlobal{Module: "builtins", Name: "bytearray"}, Args: zodb.PyTuple{zodb.PyBytes(b)}}, err
				case "tuple":
					l, err := list(v.([]any))
					return zodb.PyTuple(l), err
				case "dict":
					d := zodb.NewPyDict()
					for _, kv := range v.([]any) {
						kv, err := list(kv.([]any))
						if err != nil {
							return nil, err
						}
						d.Set(kv[0], kv[1])
					}
					return d, nil
				case "set", "frozenset":
					l, err := list(v.([]any))
					return &zodb.PyReduce{Callable: zodb.PyGlobal{Module: "builtins", Name: k}, Args: zodb.PyTuple{&zodb.PyList{Items: l}}}, err
				case "complex":
					p := v.([]any)
					re, err1 := strconv.ParseFloat(p[0].(string), 64)
					im, err2 := strconv.ParseFloat(p[1].(string), 64)
					return &zodb.PyReduce{Callable: zodb.PyGlobal{Module: "builtins", Name: "complex"}, Args: zodb.PyTuple{re, im}}, errors.Join(err1, err2)
				case "global":
					s := v.(string)
					i := strings.LastIndexByte(s, '.')
					return zodb.PyGlobal{Module: s[:i], Name: s[i+1:]}, nil
				case "ref":
					b, err := oidb(v)
					return &zodb.PyRef{Pid: b}, err
				case "ref_w":
					p := v.([]any)
					b, err := oidb(p[0])
					t := zodb.PyTuple{b}
					if len(p) == 2 {
						t = append(t, p[1])
					}
					return &zodb.PyRef{Pid: &zodb.PyList{Items: []any{"w", t}}}, err
				case "ref_m", "ref_n":
					p := v.([]any)
					b, err := oidb(p[1])
					t := zodb.PyTuple{p[0], b}
					if k == "ref_m" {
						cls, err := fromTypedJSON(p[2])
						if err != nil {
							return nil, err
						}
						t = append(t, cls)
					}
					return &zodb.PyRef{Pid: &zodb.PyList{Items: []any{k[len("ref_"):], t}}}, err
				}
			}
		}
		if r, ok := x["ref"]; ok {
			b, err := oidb(r)
			if err != nil {
				return nil, err
			}
			cls, err := fromTypedJSON(x["class"])
			return &zodb.PyRef{Pid: zodb.PyTuple{b, cls}}, err
		}
		if r, ok := x["reduce"]; ok {
			s := r.(string)
			i := strings.LastIndexByte(s, '.')
			args, err := list(x["args"].([]any))
			if err != nil {
				return nil, err
			}
			red := &zodb.PyReduce{Callable: zodb.PyGlobal{Module: s[:i], Name: s[i+1:]}, Args: zodb.PyTuple(args)}
			if st, ok := x["state"]; ok {
				red.HasState = true
				if red.State, err = fromTypedJSON(st); err != nil {
					return nil, err
				}
			}
			return red, nil
		}
		return nil, errTruncated
	}
	return nil, fmt.Errorf("typed JSON %T", j)
}

// errTruncated: the reference files give only a digest of long values.
var errTruncated = errors.New("value given as a digest")

// metaJSON describes a class description as the reference files do.
func metaJSON(desc any) (any, error) {
	switch d := desc.(type) {
	case zodb.PyGlobal:
		return map[string]any{"form": "class", "class": d.String()}, nil
	case zodb.PyTuple:
		if len(d) == 2 {
			if g, ok := d[0].(zodb.PyGlobal); ok {
				args, err := toTypedJSON(d[1])
				return map[string]any{"form": "class,newargs", "class": g.String(), "newargs": args}, err
			}
		}
	}
	return nil, fmt.Errorf("class description %s", zodb.PyRepr(desc))
}

// goldenFiles returns the FileStorage files that have X.fs.current.json.
func goldenFiles(t *testing.T) []string {
	dir := testdir.Dir("ZODB_TESTDATA", "zodb")
	all, err := filepath.Glob(filepath.Join(dir, "*.fs"))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range all {
		if _, err := os.Stat(f + ".current.json"); err == nil {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		t.Fatalf("no *.fs with .current.json in %s", dir)
	}
	return files
}

// TestAppGolden decodes every current object of the reference databases,
// checks it against the typed JSON, and encodes it again: the record must
// come back byte for byte, both from the raw values and through a
// Connection (objects of registered classes, and Broken for the others).
func TestAppGolden(t *testing.T) {
	ctx := context.Background()
	for _, path := range goldenFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			var cur currentJSON
			readJSON(t, path+".current.json", &cur)
			stor, err := zodb.Open(ctx, path, &zodb.OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer stor.Close()
			// The multidb-<name>.fs files are the databases of one
			// multi-database.
			dbopt := &zodb.DBOptions{}
			if name, ok := strings.CutPrefix(filepath.Base(path), "multidb-"); ok {
				dbopt.Name = strings.TrimSuffix(name, ".fs")
				dbopt.Databases = map[string]*zodb.DB{}
				others, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "multidb-*.fs"))
				for _, other := range others {
					if other == path {
						continue
					}
					ostor, err := zodb.Open(ctx, other, &zodb.OpenOptions{ReadOnly: true})
					if err != nil {
						t.Fatal(err)
					}
					defer ostor.Close()
					oname := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(other), "multidb-"), ".fs")
					odb, err := zodb.NewDB(ostor, &zodb.DBOptions{Name: oname, Databases: dbopt.Databases})
					if err != nil {
						t.Fatal(err)
					}
					defer odb.Close()
				}
			}
			db, err := zodb.NewDB(stor, dbopt)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()

			oids := make([]string, 0, len(cur.Objects))
			for k := range cur.Objects {
				oids = append(oids, k)
			}
			sort.Strings(oids)
			checked := 0
			for _, oidHex := range oids {
				o := cur.Objects[oidHex]
				oid, err := zodb.ParseOid(oidHex)
				if err != nil {
					t.Fatal(err)
				}
				data, serial, _, err := stor.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
				if o.Error != "" {
					if err == nil {
						t.Errorf("%s: loaded, want %s", oidHex, o.Error)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", oidHex, err)
					continue
				}
				if serial.String() != o.Serial || sha1hex(data) != o.DataSha1 {
					t.Errorf("%s: serial %v sha1 %s, want %s %s", oidHex, serial, sha1hex(data), o.Serial, o.DataSha1)
					continue
				}
				checkRecord(t, oidHex, data, o)
				checkObject(t, ctx, db, oid, data)
				checked++
			}
			t.Logf("%d objects", checked)
		})
	}
}

func checkRecord(t *testing.T, what string, data []byte, o *currentObj) {
	t.Helper()
	desc, state, err := zodb.DecodeRecord(data)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	meta, err := metaJSON(desc)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	} else if got, want := normalize(t, meta), generic(t, o.Meta); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: class description\ngot  %v\nwant %v", what, got, want)
	}
	st, err := toTypedJSON(state)
	if err != nil {
		t.Errorf("%s: state: %v", what, err)
	} else if got, want := normalize(t, st), sortSets(generic(t, o.State)); !reflect.DeepEqual(got, want) {
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		t.Errorf("%s: state\ngot  %s\nwant %s", what, gj, wj)
	}
	// and back: typed JSON → values equal to the decoded ones
	back, err := fromTypedJSON(generic(t, o.State))
	switch {
	case errors.Is(err, errTruncated):
	case err != nil:
		t.Errorf("%s: from typed JSON: %v", what, err)
	case !zodb.PyEqual(back, state):
		t.Errorf("%s: from typed JSON: %s\nwant %s", what, zodb.PyRepr(back), zodb.PyRepr(state))
	}
	re, err := zodb.EncodeRecord(desc, state)
	if err != nil {
		t.Errorf("%s: encode: %v", what, err)
	} else if !bytes.Equal(re, data) {
		t.Errorf("%s: encoded record differs\ngot  %q\nwant %q", what, re, data)
	}
}

func checkObject(t *testing.T, ctx context.Context, db *zodb.DB, oid zodb.Oid, data []byte) {
	t.Helper()
	obj, re, err := zodb.ReencodeObject(ctx, db, oid)
	if err != nil {
		t.Errorf("%v: through a connection: %v", oid, err)
		return
	}
	cls := zodb.PickleClass(data)
	switch cls {
	case "persistent.mapping.PersistentMapping":
		if _, ok := obj.(*zodb.PersistentMapping); !ok {
			t.Errorf("%v: %s loaded as %T", oid, cls, obj)
		}
	case "persistent.list.PersistentList":
		if _, ok := obj.(*zodb.PersistentList); !ok {
			t.Errorf("%v: %s loaded as %T", oid, cls, obj)
		}
	case "zodbref.NewArgsItem":
		if _, ok := obj.(*refNewArgsItem); !ok {
			t.Errorf("%v: %s loaded as %T", oid, cls, obj)
		}
	}
	if zodb.ClassOf(obj) != cls {
		t.Errorf("%v: class %q, want %q", oid, zodb.ClassOf(obj), cls)
	}
	if !bytes.Equal(re, data) {
		t.Errorf("%v (%T): record stored again differs\ngot  %q\nwant %q", oid, obj, re, data)
	}
}
