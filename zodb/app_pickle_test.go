package zodb

import (
	"crypto/sha1"
	"encoding/hex"
	"math/big"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Pickles made by Python 3.11's C pickler (pickle.dumps(v, 3)), which
// zodbpickle's follows: whole bytes for small values, sha1 for long ones.
var pythonPickles = []struct {
	name  string
	value func() any
	hex   string // whole pickle
	sha1  string // or its digest
}{
	{"singletons", func() any {
		// '' b'' and 1-character strings/bytes are single objects in
		// Python, so the second occurrence is a memo reference.
		return &PyList{Items: []any{newStr(nil), newStr(nil), newBytes(nil), newBytes(nil),
			newStr([]byte("a")), newStr([]byte("a")), newStr([]byte("é")), newStr([]byte("é")),
			newBytes([]byte("z")), newBytes([]byte("z"))}}
	}, "80035d710028580000000071016801430071026802580100000061710368035802000000c3a97104680443017a71056805652e", ""},
	{"floats", func() any {
		return &PyList{Items: []any{0.0, negZero(), 1.5, 1e300, inf()}}
	}, "80035d710028470000000000000000478000000000000000473ff8000000000000477e37e43c8800759c477ff0000000000000652e", ""},
	{"tuples", func() any {
		return &PyList{Items: []any{PyTuple{}, PyTuple{int64(1)}, PyTuple{int64(1), int64(2)}, PyTuple{int64(1), int64(2), int64(3)}, PyTuple{int64(1), int64(2), int64(3), int64(4)}}}
	}, "80035d710028294b018571014b014b028671024b014b024b03877103284b014b024b034b04747104652e", ""},
	{"shared", func() any {
		s := &PyList{Items: []any{int64(1), int64(2)}}
		d := NewPyDict()
		d.Set("k", s)
		return &PyList{Items: []any{s, s, PyTuple{s}, d}}
	}, "80035d7100285d7101284b014b0265680168018571027d710358010000006b7104680173652e", ""},
	{"ints", func() any {
		var l []any
		for _, s := range []string{"0", "1", "255", "256", "65535", "65536", "-1", "-256", "2147483647", "-2147483648",
			"2147483648", "-2147483649", "9223372036854775807", "-9223372036854775808", "18446744073709551616",
			"-18446744073709551616", "127", "128", "-128", "-129"} {
			n, _ := new(big.Int).SetString(s, 10)
			l = append(l, normInt(n))
		}
		l = append(l, new(big.Int).Lsh(big.NewInt(1), 2048))
		return &PyList{Items: l}
	}, "", "cc5dc288201c0f08e507d1d5ded59cbd5f137ece"},
	{"list1001", func() any { return intList(1001) }, "", "b83ecc004cd103c7bdaa5914fc10d1dfd42281de"},
	{"list2000", func() any { return intList(2000) }, "", "b3f58e528633be9c324ce5400b80d01ea5a57f3d"},
	{"dict1001", func() any {
		d := NewPyDict()
		for i := range 1001 {
			d.Set(strconv.Itoa(i), int64(i))
		}
		return d
	}, "", "3e390cb6858ff75db930a80f87a81808c71b31c6"},
	{"memo300", func() any {
		l := &PyList{}
		for i := range 300 {
			l.Items = append(l.Items, strconv.Itoa(i)+"x")
		}
		return l
	}, "", "452c682e1b3ad010c49a40815a23c7a3300a06ff"},
	{"longget", func() any {
		l := &PyList{}
		for i := range 300 {
			l.Items = append(l.Items, strconv.Itoa(i)+"y")
		}
		l.Items = append(l.Items, l.Items[0], l.Items[299])
		return l
	}, "", "e3a7df4256601946114231c066424f7436b1820c"},
	{"bytes", func() any {
		return &PyList{Items: []any{PyBytes(strings.Repeat("x", 255)), PyBytes(strings.Repeat("y", 256))}}
	}, "", "f35401dba417cc87b646daf5d42bda345badd0ba"},
}

func intList(n int) *PyList {
	l := &PyList{}
	for i := range n {
		l.Items = append(l.Items, int64(i))
	}
	return l
}

func negZero() float64 { z := 0.0; return -z }
func inf() float64     { x := 1e308; return x * 10 }

func TestPickleLikePython(t *testing.T) {
	for _, tc := range pythonPickles {
		t.Run(tc.name, func(t *testing.T) {
			e := newPickleEncoder(nil)
			v := tc.value()
			if err := e.encode(v); err != nil {
				t.Fatal(err)
			}
			got := e.buf
			if tc.hex != "" {
				if hex.EncodeToString(got) != tc.hex {
					t.Errorf("encode:\ngot  %x\nwant %s", got, tc.hex)
				}
			} else if h := sha1.Sum(got); hex.EncodeToString(h[:]) != tc.sha1 {
				t.Errorf("encode: sha1 %x, want %s", h, tc.sha1)
			}
			// decode and encode again: same bytes, equal value
			d := newPickleDecoder(got, nil)
			back, err := d.decode()
			if err != nil {
				t.Fatal(err)
			}
			if !PyEqual(back, v) {
				t.Errorf("decoded %s, want %s", PyRepr(back), PyRepr(v))
			}
			e2 := newPickleEncoder(nil)
			if err := e2.encode(back); err != nil {
				t.Fatal(err)
			}
			if string(e2.buf) != string(got) {
				t.Errorf("decode→encode differs:\ngot  %x\nwant %x", e2.buf, got)
			}
		})
	}
}

// Malformed input gives errors, never panics.
func TestPickleMalformed(t *testing.T) {
	for _, in := range []string{
		"",
		"\x80\x03",
		"\x80\x03X\xff\xff\xff\x7f",
		"\x80\x03h\x05.",
		"\x80\x03a.",
		"\x80\x03K\x01K\x02s.",
		"\x80\x03(K\x01u.",
		"\x80\x03]K\x01K\x02\x86s.",
		"\x80\x03\x8b\xff\xff\xff\xff.",
		"\x80\x03K\x01b.",
		"\x80\x03Q.",
		"\x80\x03\xff.",
		"\x80\x03N\x85\x85\x87.",
		"\x80\x03K\x01K\x02.",
		"\x80\x03cmod\n",
		"\x80\x03(.",
		"\x80\x0a.",
	} {
		if _, _, err := DecodeRecord([]byte(in)); err == nil {
			t.Errorf("%q: decoded without error", in)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte("\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s."))
	for _, tc := range pythonPickles[:4] {
		b, _ := hex.DecodeString(tc.hex)
		f.Add(append(append([]byte{}, b...), b...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		desc, state, err := DecodeRecord(data)
		if err != nil {
			return
		}
		// what decodes encodes, and decodes to an equal value
		re, err := EncodeRecord(desc, state)
		if err != nil {
			return // e.g. a class description holding a reference
		}
		desc2, state2, err := DecodeRecord(re)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%q", err, re)
		}
		// the same bytes again (values may hold NaN, unequal to itself)
		re2, err := EncodeRecord(desc2, state2)
		if err != nil || string(re2) != string(re) {
			t.Fatalf("encode(decode(encoded)) differs: %v\n%q\n%q", err, re, re2)
		}
		PyEqual(desc, desc2)
		PyEqual(state, state2)
		_ = PyRepr(state)
	})
}

// A list containing itself (possible in Python) round-trips, compares and
// prints without looping.
func TestPickleCycle(t *testing.T) {
	in := "\x80\x03]q\x00h\x00a."
	d := newPickleDecoder([]byte(in), nil)
	v, err := d.decode()
	if err != nil {
		t.Fatal(err)
	}
	l := v.(*PyList)
	if len(l.Items) != 1 || l.Items[0] != any(l) {
		t.Fatalf("decoded %#v", v)
	}
	if !PyEqual(v, v) || PyRepr(v) != "[...]" && PyRepr(v) != "[[...]]" {
		t.Errorf("PyEqual %v PyRepr %s", PyEqual(v, v), PyRepr(v))
	}
	e := newPickleEncoder(nil)
	if err := e.encode(v); err != nil || string(e.buf) != in {
		t.Errorf("encode: %v %q", err, e.buf)
	}
}

// Tuples shared 40 levels deep (2^40 paths) decode, compare, print, serve
// as dict keys and encode at once.
func TestPickleSharedTupleGraph(t *testing.T) {
	in := []byte("\x80\x03K\x01")
	for range 40 {
		in = append(in, opDup, opTuple2) // t = (t, t)
	}
	in = append(in, opStop)
	x, err := newPickleDecoder(in, nil).decode()
	if err != nil {
		t.Fatal(err)
	}
	var y any = int64(1)
	for range 40 {
		y = PyTuple{y, y}
	}
	if !PyEqual(x, y) {
		t.Error("equal graphs compare unequal")
	}
	dict := NewPyDict()
	dict.Set(x, "a")
	if got, ok := dict.Get(y); !ok || got != "a" {
		t.Errorf("lookup by an equal key: %v %v", got, ok)
	}
	if r := PyRepr(x); len(r) > 2000 {
		t.Errorf("repr of %d bytes", len(r))
	}
	e := newPickleEncoder(nil)
	if err := e.encode(x); err != nil || len(e.buf) > 1000 {
		t.Errorf("encode: %v, %d bytes", err, len(e.buf))
	}
}

func TestPyDict(t *testing.T) {
	d := NewPyDict()
	for i := range 20 {
		d.Set(int64(i), i)
	}
	d.Set(1.0, "one")   // 1.0 == 1
	d.Set(true, "true") // True == 1
	d.Set(PyTuple{int64(1), "a"}, "t")
	d.Set(PyTuple{1.0, "a"}, "t2") // same key
	d.Set("1", "str")
	d.Set(PyBytes("1"), "bytes")
	if d.Len() != 23 {
		t.Errorf("len %d, want 23", d.Len())
	}
	if v, _ := d.Get(int64(1)); v != "true" {
		t.Errorf("d[1] = %v", v)
	}
	if v, _ := d.Get(PyTuple{true, "a"}); v != "t2" {
		t.Errorf("d[(1, 'a')] = %v", v)
	}
	if !d.Del(int64(5)) || d.Del(int64(5)) {
		t.Error("Del")
	}
	if v, ok := d.Get(int64(6)); !ok || v != 6 {
		t.Errorf("after Del: d[6] = %v %v", v, ok)
	}
	var keys []any
	for k := range d.All() {
		keys = append(keys, k)
		if len(keys) == 3 {
			break
		}
	}
	if !PyEqual(PyTuple(keys), PyTuple{int64(0), int64(1), int64(2)}) {
		t.Errorf("order: %s", PyRepr(PyTuple(keys)))
	}
	small := NewPyDict()
	small.Set("a", 1)
	small.Set("b", 2)
	small.Del("a")
	if v, ok := small.Get("b"); !ok || v != 2 || small.Len() != 1 {
		t.Errorf("small dict: %v %v", v, ok)
	}
}

// Objects the encoder makes on the way (reference tuples) must not share
// memo entries with objects freed meanwhile at the same address.
func TestPickleTransientObjects(t *testing.T) {
	type marker struct{ n int }
	l := &PyList{}
	for i := range 100 {
		l.Items = append(l.Items, &marker{i})
	}
	e := newPickleEncoder(func(v any) (any, bool, error) {
		m, ok := v.(*marker)
		if !ok {
			return nil, false, nil
		}
		runtime.GC()
		oid := Oid(m.n + 1)
		return PyTuple{PyBytes(oid.Bytes()), PyGlobal{"m", "C"}}, true, nil
	})
	if err := e.encode(l); err != nil {
		t.Fatal(err)
	}
	v, err := newPickleDecoder(e.buf, nil).decode()
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range v.(*PyList).Items {
		ri, err := x.(*PyRef).Parse()
		if err != nil || ri.Oid != Oid(i+1) {
			t.Fatalf("item %d: reference to %v (%v)", i, ri.Oid, err)
		}
	}
}
