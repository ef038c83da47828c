package zodbtools

import (
	"bytes"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, out string }{
		{"", `""`},
		{"hello", `"hello"`},
		{" ", `" "`},
		{"a\"b\\c", `"a\"b\\c"`},
		{"\t\n\r", `"\t\n\r"`},
		{"\x07\x08\x0b\x0c\x00\x1f\x7f", `"\x07\x08\x0b\x0c\x00\x1f\x7f"`},
		{"'", `"'"`},
		{"Jürgen 日本 😀", `"Jürgen 日本 😀"`},
		{"\xc3(", `"\xc3("`},
		{"\u00a0", `"\xc2\xa0"`},     // no-break space: category Zs
		{"\u200b", `"\xe2\x80\x8b"`}, // zero width space: Cf
		{"\u2028", `"\xe2\x80\xa8"`}, // line separator: Zl
		{"e\u0301", `"e\xcc\x81"`},   // combining mark: Mn
		{"\xff\xfe raw", `"\xff\xfe raw"`},
		{"\u2014", "\"\u2014\""}, // em dash: Pd
	} {
		if got := Quote([]byte(tc.in)); got != tc.out {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.out)
		}
		back, err := Unquote([]byte(tc.out))
		if err != nil || !bytes.Equal(back, []byte(tc.in)) {
			t.Errorf("Unquote(%s) = %q, %v; want %q", tc.out, back, err, tc.in)
		}
	}
}

func TestUnquote(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		bad     bool
	}{
		{in: `"\a\b\v\f"`, out: "\a\b\v\f"},
		{in: `"\x41\x4A\x4a"`, out: "AJJ"},
		{in: `"\u0041"`, bad: true},
		{in: `"abc`, bad: true},
		{in: `abc"`, bad: true},
		{in: `"a"b"`, bad: true},
		{in: `"\x4"`, bad: true},
		{in: `"\x4g"`, bad: true},
		{in: `"\"`, bad: true},
		{in: `"`, bad: true},
		{in: "\"\xff\"", out: "\xff"},
	} {
		got, err := Unquote([]byte(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("Unquote(%s): no error", tc.in)
			}
			continue
		}
		if err != nil || string(got) != tc.out {
			t.Errorf("Unquote(%s) = %q, %v; want %q", tc.in, got, err, tc.out)
		}
	}
}

func FuzzQuote(f *testing.F) {
	f.Add([]byte("Jürgen \x00\xc3( \u00a0"))
	f.Fuzz(func(t *testing.T, s []byte) {
		q := Quote(s)
		back, err := Unquote([]byte(q))
		if err != nil || !bytes.Equal(back, s) {
			t.Fatalf("round trip of %q via %s: %q, %v", s, q, back, err)
		}
	})
}
