package zodbtools

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

const hexdigits = "0123456789abcdef"

// Quote quotes s the way zodbtools print strings in dumps (pygolang's
// strconv.quote): in double quotes, with `"` and `\` escaped, printable ASCII
// kept, TAB/LF/CR as \t \n \r and every other ASCII byte as \xNN. A valid
// UTF-8 sequence of a letter, number, punctuation or symbol is kept as is;
// any other non-ASCII byte is written as \xNN. \u escapes are never used.
func Quote(s []byte) string { return string(AppendQuote(nil, s)) }

// AppendQuote appends Quote(s) to dst.
func AppendQuote(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\t':
				dst = append(dst, `\t`...)
			case c == '\n':
				dst = append(dst, `\n`...)
			case c == '\r':
				dst = append(dst, `\r`...)
			case c >= 0x20 && c < 0x7f:
				dst = append(dst, c)
			default:
				dst = appendHexEscape(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size <= 1 {
			dst = appendHexEscape(dst, c)
			i++
			continue
		}
		if isGraphicNoSpace(r) {
			dst = append(dst, s[i:i+size]...)
		} else {
			for _, b := range s[i : i+size] {
				dst = appendHexEscape(dst, b)
			}
		}
		i += size
	}
	return append(dst, '"')
}

// isGraphicNoSpace reports whether r's Unicode general category is one of
// L*, N*, P*, S*.
func isGraphicNoSpace(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsPunct(r) || unicode.IsSymbol(r)
}

func appendHexEscape(dst []byte, b byte) []byte {
	return append(dst, '\\', 'x', hexdigits[b>>4], hexdigits[b&0xf])
}

// ErrSyntax is returned (wrapped) by Unquote for malformed input.
var ErrSyntax = errors.New("invalid quoted string")

// Unquote decodes a string produced by Quote. It accepts the escapes \" \\
// \t \n \r \a \b \v \f and \xNN (as zodbtools' dump reader does); other bytes
// are taken literally. The input must be exactly one quoted string.
func Unquote(s []byte) ([]byte, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, fmt.Errorf("%w: %q: not in double quotes", ErrSyntax, s)
	}
	body := s[1 : len(s)-1]
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '"' {
			return nil, fmt.Errorf("%w: %q: unescaped quote at %d", ErrSyntax, s, i+1)
		}
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(body) {
			return nil, fmt.Errorf("%w: %q: truncated escape", ErrSyntax, s)
		}
		switch e := body[i]; e {
		case '"', '\\':
			out = append(out, e)
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 'a':
			out = append(out, '\a')
		case 'b':
			out = append(out, '\b')
		case 'v':
			out = append(out, '\v')
		case 'f':
			out = append(out, '\f')
		case 'x':
			if i+2 >= len(body) {
				return nil, fmt.Errorf("%w: %q: truncated \\x escape", ErrSyntax, s)
			}
			hi, ok1 := unhex(body[i+1])
			lo, ok2 := unhex(body[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("%w: %q: invalid \\x escape", ErrSyntax, s)
			}
			out = append(out, hi<<4|lo)
			i += 2
		default:
			return nil, fmt.Errorf("%w: %q: unknown escape \\%c", ErrSyntax, s, e)
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
