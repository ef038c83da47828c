package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tinylib/msgp/msgp"
)

// addVectorSeeds seeds f with every golden packet and the malformed ones.
func addVectorSeeds(f *testing.F) {
	for _, v := range loadVectors(f) {
		raw, err := hex.DecodeString(v.Hex)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, m := range malformed {
		b, err := hex.DecodeString(strings.ReplaceAll(m.hex, " ", ""))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// two packets in a row
	f.Add([]byte{0x93, 0x00, 0x02, 0x90, 0x93, 0x00, 0xcd, 0x80, 0x02, 0x90})
}

func FuzzDecodePacket(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		id, m, n, err := DecodePacket(b)
		ln, lerr := PacketLen(b)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a message %T", err, m)
			}
			if errors.Is(err, ErrIncomplete) != errors.Is(lerr, ErrIncomplete) {
				t.Fatalf("DecodePacket: %v; PacketLen: %v", err, lerr)
			}
			return
		}
		if lerr != nil || ln != n || n > len(b) || n <= 0 {
			t.Fatalf("DecodePacket took %d bytes, PacketLen = %d, %v", n, ln, lerr)
		}
		id2, m2, n2, err := DecodePacketNoCopy(b)
		if err != nil || id2 != id || n2 != n || !equal(reflect.ValueOf(m), reflect.ValueOf(m2)) {
			t.Fatalf("DecodePacketNoCopy differs: %v\n%+v\n%+v", err, m, m2)
		}
		// The encoding is canonical: what decodes, encodes to bytes that
		// decode to the same message and encode to themselves.
		enc := AppendPacket(nil, id, m)
		id3, m3, n3, err := DecodePacket(enc)
		if err != nil || id3 != id || n3 != len(enc) {
			t.Fatalf("re-encoded %x: %d/%d, %v", enc, n3, len(enc), err)
		}
		if !equal(reflect.ValueOf(m), reflect.ValueOf(m3)) {
			t.Fatalf("round trip differs:\n%+v\n%+v", m, m3)
		}
		if enc2 := AppendPacket(nil, id3, m3); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%x\n%x", enc, enc2)
		}
	})
}

func FuzzPacketLen(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := PacketLen(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("n = %d with error %v", n, err)
			}
			return
		}
		if n <= 0 || n > len(b) || n > MaxPacketSize {
			t.Fatalf("n = %d of %d", n, len(b))
		}
		if n2, err := PacketLen(b[:n]); n2 != n || err != nil {
			t.Fatalf("PacketLen(b[:%d]) = %d, %v", n, n2, err)
		}
		// every strict prefix is incomplete (check a few)
		for _, k := range []int{0, 1, n / 2, n - 1} {
			if k < n {
				if _, err := PacketLen(b[:k]); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("PacketLen(b[:%d]) of a %d-byte packet: %v", k, n, err)
				}
			}
		}
		// msgp's own skipper agrees on where the value ends
		if rest, err := msgp.Skip(b); err == nil && len(b)-len(rest) != n {
			t.Fatalf("PacketLen = %d, msgp.Skip took %d", n, len(b)-len(rest))
		}
	})
}
