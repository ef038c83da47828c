package zeo

import (
	"bytes"
	"fmt"
	"math/big"
	"sort"
	"testing"

	ogórek "github.com/kisielk/og-rek"
)

// Our pickle codec is our own: og-rek's encoder writes lists and dicts
// with LIST/DICT (ZEO's pickler uses APPEND(S)/SETITEM(S)), longs as text,
// and its decoder does not keep dict order, so it cannot give ZEO's exact
// bytes. og-rek serves here as an independent decoder: every recorded
// pickle frame must decode to the same value with both (dicts compared
// without order).

// fromOgórek converts an og-rek value to ours, with dict pairs sorted by
// their rendering so that order does not matter.
func fromOgórek(v any) (any, error) {
	switch v := v.(type) {
	case ogórek.None:
		return nil, nil
	case bool, float64, string:
		return v, nil
	case int64:
		return v, nil
	case *big.Int:
		if v.IsInt64() {
			return v.Int64(), nil
		}
		if v.IsUint64() {
			return v.Uint64(), nil
		}
		return nil, fmt.Errorf("int %v out of range", v)
	case ogórek.Bytes:
		return []byte(v), nil
	case ogórek.Tuple:
		t := tuple{}
		for _, x := range v {
			y, err := fromOgórek(x)
			if err != nil {
				return nil, err
			}
			t = append(t, y)
		}
		return t, nil
	case []any:
		l := &list{}
		for _, x := range v {
			y, err := fromOgórek(x)
			if err != nil {
				return nil, err
			}
			l.items = append(l.items, y)
		}
		return l, nil
	case ogórek.Dict:
		d := &dict{}
		var err error
		v.Iter()(func(k, x any) bool {
			var kk, xx any
			if kk, err = fromOgórek(k); err != nil {
				return false
			}
			if xx, err = fromOgórek(x); err != nil {
				return false
			}
			d.add(kk, xx)
			return true
		})
		return sortedDict(d), err
	case ogórek.Class:
		return global{v.Module, v.Name}, nil
	case ogórek.Call:
		args, err := fromOgórek(v.Args)
		if err != nil {
			return nil, err
		}
		return &reduce{fn: global{v.Callable.Module, v.Callable.Name}, args: args}, nil
	}
	return nil, fmt.Errorf("og-rek value %T", v)
}

// canonical sorts the pairs of every dict in v.
func canonical(v any) any {
	switch v := v.(type) {
	case tuple:
		t := tuple{}
		for _, x := range v {
			t = append(t, canonical(x))
		}
		return t
	case *list:
		l := &list{}
		for _, x := range v.items {
			l.items = append(l.items, canonical(x))
		}
		return l
	case *dict:
		d := &dict{}
		for _, e := range v.items {
			d.add(canonical(e.k), canonical(e.v))
		}
		return sortedDict(d)
	case *reduce:
		return &reduce{fn: canonical(v.fn), args: canonical(v.args), state: canonical(v.state), hasState: v.hasState}
	}
	return v
}

func sortedDict(d *dict) *dict {
	sort.SliceStable(d.items, func(i, j int) bool { return formatValue(d.items[i].k) < formatValue(d.items[j].k) })
	return d
}

func TestPickleAgainstOgórek(t *testing.T) {
	n := 0
	for _, tr := range loadTranscripts(t) {
		for _, f := range tr.Frames {
			if f.node == nil || f.Encoding == "msgpack" {
				continue
			}
			dec := ogórek.NewDecoderWithConfig(bytes.NewReader(f.payload), &ogórek.DecoderConfig{StrictUnicode: true, PyDict: true})
			ov, err := dec.Decode()
			if err != nil {
				t.Errorf("%s frame %d: og-rek: %v", tr.file, f.I, err)
				continue
			}
			want, err := fromOgórek(ov)
			if err != nil {
				t.Errorf("%s frame %d: %v", tr.file, f.I, err)
				continue
			}
			got, err := pickleCodec{}.decode(f.payload)
			if err != nil {
				t.Errorf("%s frame %d: %v", tr.file, f.I, err)
				continue
			}
			if !equalValue(canonical(got), want) {
				t.Errorf("%s frame %d:\nours   %s\nog-rek %s", tr.file, f.I, formatValue(canonical(got)), formatValue(want))
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no pickle frames")
	}
}

// TestExtensionPickles: extensions as ZODB writes them (with memo
// opcodes) decode; ours encode to what og-rek reads back.
func TestExtensionPickles(t *testing.T) {
	zodbExt := []byte("\x80\x03}q\x00(X\x01\x00\x00\x00nq\x01K\x04X\x06\x00\x00\x00sourceq\x02X\x03\x00\x00\x00genq\x03u.")
	d, err := decodeExtension(zodbExt)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"n": 4, "source": "gen"}`; formatValue(d) != want {
		t.Fatalf("decoded %s, want %s", formatValue(d), want)
	}
	b, err := encodeExtension(d)
	if err != nil {
		t.Fatal(err)
	}
	ov, err := ogórek.NewDecoderWithConfig(bytes.NewReader(b), &ogórek.DecoderConfig{StrictUnicode: true, PyDict: true}).Decode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := fromOgórek(ov)
	if err != nil || !equalValue(got, sortedDict(d)) {
		t.Fatalf("og-rek reads %s (%v)", formatValue(got), err)
	}
	if b, err := encodeExtension(&dict{}); err != nil || b != nil {
		t.Errorf("empty extension: %q, %v", b, err)
	}
}
