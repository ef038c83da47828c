package zodbtools

import (
	"math"
	"strings"
	"testing"
)

func TestPyFloatRepr(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{0, "0.0"}, {1, "1.0"}, {-2.5, "-2.5"}, {0.1, "0.1"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"},
		{0.0001, "0.0001"}, {0.00001, "1e-05"}, {1.5e-7, "1.5e-07"}, {1e100, "1e+100"}, {3.141592653589793, "3.141592653589793"},
		{math.Inf(1), "inf"}, {math.Inf(-1), "-inf"}, {math.NaN(), "nan"}, {123456789012345678, "1.2345678901234568e+17"},
	} {
		if got := pyFloatRepr(tc.f); got != tc.want {
			t.Errorf("pyFloatRepr(%v) = %s, want %s", tc.f, got, tc.want)
		}
	}
}

func TestPyStrRepr(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"}, {"a'b", `"a'b"`}, {`a'"b`, `'a\'"b'`}, {"\t\n\r\\", `'\t\n\r\\'`}, {"\x00\x7f", `'\x00\x7f'`},
		{"é☃😀", "'é☃😀'"}, {"\u00a0", `'\xa0'`}, {"\u200b", `'\u200b'`}, {"\U000e0001", `'\U000e0001'`}, {"e\u0301", "'e\u0301'"},
	} {
		if got := pyStrRepr(pyStr(tc.in)); got != tc.want {
			t.Errorf("pyStrRepr(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDisassemble(t *testing.T) {
	// protocol 0 and 2 opcodes with their argument forms
	p := "(I01\nI-7\nL12345678901234567890L\nS'a\\nb'\nVx\\u00e9\nF1.5\n\x8a\x02\xff\x7f\x8a\x01\xfftp0\n.extra"
	got, err := DisassembleExtension([]byte(p), "  ")
	if err != nil {
		t.Fatal(err)
	}
	want := `      0: (    MARK
      1: I        INT        True
      5: I        INT        -7
      9: L        LONG       12345678901234567890
     32: S        STRING     'a\nb'
     40: V        UNICODE    'xé'
     49: F        FLOAT      1.5
     54: \x8a     LONG1      32767
     58: \x8a     LONG1      -1
     61: t        TUPLE      (MARK at 0)
     62: p    PUT        0
     65: .    STOP
  highest protocol among opcodes = 2
  + extra data "extra"
`
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	for _, bad := range []string{"", "N", "\xff", "h\x00.", "NNq\x00q\x00.", "K", "X\x05\x00\x00\x00ab", "X\x01\x00\x00\x00\xff.", "N0."} {
		if _, err := DisassembleExtension([]byte(bad), ""); err == nil || !strings.Contains(err.Error(), "invalid pickle") {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}

func FuzzDisassemble(f *testing.F) {
	f.Add([]byte("\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s."))
	f.Add([]byte("Np00\ng01\n."))
	f.Add([]byte("(I01\nL1L\nS'a'\nVb\nF1\n\x8b\x01\x00\x00\x00\xfftp0\n."))
	f.Fuzz(func(t *testing.T, data []byte) {
		DisassembleRecord(data, "  ")
	})
}
