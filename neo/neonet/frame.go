package neonet

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/neozodb/neo/neo/proto"
)

// MaxPacketSize bounds the encoded size of one received packet. It is the
// size of NEO/py's msgpack unpack buffer (0x4000000): a packet larger than
// that cannot be received by NEO/py either. A peer announcing more closes
// the link before we allocate for it.
const MaxPacketSize = proto.MaxPacketSize

// maxNesting bounds how deeply msgpack containers may nest inside one
// packet. NEO packets nest a handful of levels; the bound only keeps a
// hostile stream of nested array headers from growing the scanner's stack.
const maxNesting = 64

// errIncomplete is returned by the scanner when the buffered bytes are only
// a prefix of a packet.
var errIncomplete = errors.New("incomplete packet")

// MalformedError reports bytes from the peer that are not a NEO packet
// stream. The link is closed when it happens.
type MalformedError struct {
	Offset int64  // stream offset (after the handshake) of the offending packet
	What   string // what was wrong
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed packet at stream offset %d: %s", e.Offset, e.What)
}

// scanner finds the end of one msgpack object (a packet) in a byte stream
// that arrives in pieces. Its state survives between calls, so a big packet
// received in many reads is walked once, not once per read.
//
// The scanner does not look at values, only at their sizes; the packet
// header (msg id, code) is checked by parseHeader once the packet is whole.
type scanner struct {
	pos   int      // bytes of the current packet already walked over
	stack []uint32 // elements still expected by each open container
	need  int      // bytes the current packet needs at least (≥ pos)
}

// next walks b (which starts at the current packet's first byte and holds
// everything buffered so far) and returns the packet's size when it is
// complete. It returns errIncomplete when more bytes are needed; s.need then
// tells how many the buffer must hold before a new call can progress.
func (s *scanner) next(b []byte) (int, error) {
	if s.pos == 0 && len(s.stack) == 0 {
		if len(b) == 0 {
			s.need = 1
			return 0, errIncomplete
		}
		// Every packet is a 3-element array; refuse anything else at its
		// first byte rather than after buffering it.
		if b[0] != 0x93 {
			return 0, fmt.Errorf("packet starts with byte 0x%02x, not a 3-element array (0x93)", b[0])
		}
		s.stack = append(s.stack[:0], 1)
	}
	for len(s.stack) > 0 {
		if s.pos >= len(b) {
			s.need = s.pos + 1
			return 0, errIncomplete
		}
		hdr, size, children, err := elementSize(b[s.pos:])
		if err != nil {
			if err == errIncomplete {
				s.need = s.pos + hdr
				return 0, errIncomplete
			}
			return 0, err
		}
		end := s.pos + size
		if size > MaxPacketSize || end > MaxPacketSize {
			return 0, fmt.Errorf("packet needs at least %d bytes, more than the %d-byte limit", uint64(s.pos)+uint64(size), MaxPacketSize)
		}
		if children > uint64(MaxPacketSize-end) {
			return 0, fmt.Errorf("container of %d elements cannot fit in the %d-byte limit", children, MaxPacketSize)
		}
		if end > len(b) {
			s.need = end
			return 0, errIncomplete
		}
		s.pos = end
		s.stack[len(s.stack)-1]--
		if children > 0 {
			if len(s.stack) >= maxNesting {
				return 0, fmt.Errorf("containers nested deeper than %d levels", maxNesting)
			}
			s.stack = append(s.stack, uint32(children))
		}
		for len(s.stack) > 0 && s.stack[len(s.stack)-1] == 0 {
			s.stack = s.stack[:len(s.stack)-1]
		}
	}
	n := s.pos
	s.pos, s.need = 0, 0
	return n, nil
}

// elementSize decodes the header of the msgpack element at the start of b.
// It returns the header's size, the element's size excluding its children
// (header + payload for scalars, strings, bins and exts; header alone for
// arrays and maps) and the number of child elements (2 per map entry). With
// errIncomplete, hdr is the number of bytes needed to decode the header.
func elementSize(b []byte) (hdr, size int, children uint64, err error) {
	c := b[0]
	switch {
	case c <= 0x7f, c >= 0xe0: // positive / negative fixint
		return 1, 1, 0, nil
	case c <= 0x8f: // fixmap
		return 1, 1, 2 * uint64(c&0x0f), nil
	case c <= 0x9f: // fixarray
		return 1, 1, uint64(c & 0x0f), nil
	case c <= 0xbf: // fixstr
		return 1, 1 + int(c&0x1f), 0, nil
	}
	var lenBytes int // size of a length field that follows the type byte
	var fixed int    // fixed total size, for fixed-size types
	var extra int    // bytes between the length field and the payload (ext type)
	kind := 0        // 0 fixed, 1 blob (bin/str/ext), 2 array, 3 map
	switch c {
	case 0xc0, 0xc2, 0xc3:
		fixed = 1
	case 0xc1:
		return 1, 0, 0, errors.New("reserved msgpack byte 0xc1")
	case 0xc4, 0xd9: // bin8, str8
		lenBytes, kind = 1, 1
	case 0xc5, 0xda: // bin16, str16
		lenBytes, kind = 2, 1
	case 0xc6, 0xdb: // bin32, str32
		lenBytes, kind = 4, 1
	case 0xc7: // ext8
		lenBytes, extra, kind = 1, 1, 1
	case 0xc8: // ext16
		lenBytes, extra, kind = 2, 1, 1
	case 0xc9: // ext32
		lenBytes, extra, kind = 4, 1, 1
	case 0xca: // float32
		fixed = 5
	case 0xcb: // float64
		fixed = 9
	case 0xcc, 0xd0:
		fixed = 2
	case 0xcd, 0xd1:
		fixed = 3
	case 0xce, 0xd2:
		fixed = 5
	case 0xcf, 0xd3:
		fixed = 9
	case 0xd4: // fixext1
		fixed = 3
	case 0xd5:
		fixed = 4
	case 0xd6:
		fixed = 6
	case 0xd7:
		fixed = 10
	case 0xd8:
		fixed = 18
	case 0xdc:
		lenBytes, kind = 2, 2
	case 0xdd:
		lenBytes, kind = 4, 2
	case 0xde:
		lenBytes, kind = 2, 3
	case 0xdf:
		lenBytes, kind = 4, 3
	}
	if kind == 0 {
		return fixed, fixed, 0, nil
	}
	hdr = 1 + lenBytes + extra
	if len(b) < 1+lenBytes {
		return hdr, 0, 0, errIncomplete
	}
	var n uint64
	switch lenBytes {
	case 1:
		n = uint64(b[1])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b[1:]))
	case 4:
		n = uint64(binary.BigEndian.Uint32(b[1:]))
	}
	switch kind {
	case 1:
		if n > MaxPacketSize {
			return hdr, 0, 0, fmt.Errorf("byte string of %d bytes exceeds the %d-byte packet limit", n, MaxPacketSize)
		}
		return hdr, hdr + int(n), 0, nil
	case 2:
		return hdr, hdr, n, nil
	default:
		return hdr, hdr, 2 * n, nil
	}
}

// header is the envelope of a packet: [msg_id, code, args].
type header struct {
	msgID uint32
	code  uint16
	args  []byte // the msgpack array of arguments, aliasing the packet bytes
}

// parseHeader splits a complete packet (as delimited by scanner) into its
// envelope. The scanner already checked that the packet is a 3-element
// array of well-formed elements.
func parseHeader(p []byte) (header, error) {
	var h header
	b := p[1:] // after 0x93
	id, n, err := readUint(b)
	if err != nil {
		return h, fmt.Errorf("msg id: %w", err)
	}
	if id > 0xffffffff {
		return h, fmt.Errorf("msg id %d out of 32-bit range", id)
	}
	b = b[n:]
	code, n, err := readUint(b)
	if err != nil {
		return h, fmt.Errorf("packet code: %w", err)
	}
	if code > 0xffff {
		return h, fmt.Errorf("packet code %d out of 16-bit range", code)
	}
	b = b[n:]
	if c := b[0]; !(c >= 0x90 && c <= 0x9f || c == 0xdc || c == 0xdd) {
		return h, fmt.Errorf("packet arguments: msgpack type byte 0x%02x is not an array", c)
	}
	h.msgID, h.code, h.args = uint32(id), uint16(code), b
	return h, nil
}

// readUint decodes a non-negative msgpack integer, in any of the encodings a
// msgpack library may choose for it.
func readUint(b []byte) (v uint64, n int, err error) {
	c := b[0]
	switch {
	case c <= 0x7f:
		return uint64(c), 1, nil
	case c == 0xcc:
		return uint64(b[1]), 2, nil
	case c == 0xcd:
		return uint64(binary.BigEndian.Uint16(b[1:])), 3, nil
	case c == 0xce:
		return uint64(binary.BigEndian.Uint32(b[1:])), 5, nil
	case c == 0xcf:
		return binary.BigEndian.Uint64(b[1:]), 9, nil
	case c >= 0xd0 && c <= 0xd3:
		var s int64
		switch c {
		case 0xd0:
			s, n = int64(int8(b[1])), 2
		case 0xd1:
			s, n = int64(int16(binary.BigEndian.Uint16(b[1:]))), 3
		case 0xd2:
			s, n = int64(int32(binary.BigEndian.Uint32(b[1:]))), 5
		default:
			s, n = int64(binary.BigEndian.Uint64(b[1:])), 9
		}
		if s < 0 {
			return 0, 0, fmt.Errorf("negative integer %d", s)
		}
		return uint64(s), n, nil
	case c >= 0xe0:
		return 0, 0, fmt.Errorf("negative integer %d", int8(c))
	}
	return 0, 0, fmt.Errorf("msgpack type byte 0x%02x is not an integer", c)
}
