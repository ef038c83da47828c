// Package proto defines the packets of the NEO protocol, version 5, and
// their encoding, byte for byte as NEO/py (neo.lib.protocol) writes and
// reads them.
//
// # Parts
//
//   - The handshake: [Handshake] is sent by each side first;
//     [ParseHandshake] checks the peer's.
//   - Framing: after the handshake a connection carries msgpack arrays
//     [msg_id, code, args], with no length prefix. [AppendPacket] encodes one;
//     [PacketLen] finds where the first one ends in a buffer (the link layer
//     reads until it is complete); [DecodePacket] decodes it into a [Msg].
//   - Packets: one Go struct per packet type (AskObject, AnswerObject, ...,
//     Error), all implementing [Msg]. They, their encoder and their decoder
//     are generated (zproto.go) by gen.go from one table of packet
//     definitions; run "go generate" after editing the table.
//   - Metadata: the codes (CodeAskObject, ...), [IsAnswer], [AnswerCode]
//     and [IsAnswerTo] (which packet answers a request),
//     [Info] (name, kind, NEO/py's nodelay and ignore_when_closed flags).
//   - Types of the fields: the enums ([CellState], [ClusterState],
//     [ErrorCode], [NodeState], [NodeType]), [NodeID], [Address], [PTid],
//     [Checksum], [Opt], and [Dict]/[Map] for open-typed maps.
//
// # Field conventions
//
// Tids, oids, serials travel as 8-byte big-endian bin; they are zodb.Tid and
// zodb.Oid here. Where NEO/py may send None instead:
//
//   - an optional tid or oid is zodb.InvalidTid / zodb.InvalidOid when nil
//     (NEO's INVALID_TID, never a real tid or oid);
//   - an optional node id is [NoNode] (0, never assigned) when nil;
//   - any other optional value is an [Opt] (Ok false when nil).
//
// Text (cluster names, error messages) is a Go string, sent as bin; user,
// description, extension and object data stay []byte. msgpack maps are
// slices of pairs in wire order (NEO/py writes dicts in insertion order),
// which keeps re-encoding exact and costs no hashing.
//
// # Memory
//
// Encoding appends to the caller's buffer and allocates nothing else.
// Decoding copies byte strings out of the input (DecodePacket,
// Msg.DecodeArgs), or lets them point into it (DecodePacketNoCopy,
// DecodeArgsNoCopy: the input must then stay unchanged while the message is
// used). Counts read from the input are checked against the bytes that
// remain before anything is allocated, and a packet may not exceed
// [MaxPacketSize].
package proto

//go:generate go run gen.go

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/tinylib/msgp/msgp"
)

// Version is the protocol version this package speaks.
const Version = 5

// Handshake is what each side sends first: msgpack ["NEO", Version].
var Handshake = []byte{0x92, 0xa3, 'N', 'E', 'O', Version}

// handshakeMagic is the handshake without the version.
var handshakeMagic = Handshake[:5]

// AnswerBit is set in the code of answers (and of Error).
const AnswerBit = 0x8000

// MaxPacketSize is the largest packet NEO/py can receive (its unpacker
// buffers at most 64 MiB).
const MaxPacketSize = 64 << 20

// Msg is a packet: its code, and the encoding and decoding of its arguments
// (the args array of [msg_id, code, args]).
type Msg interface {
	MsgCode() uint16
	// AppendArgs appends the msgpack array of the arguments to b.
	AppendArgs(b []byte) []byte
	// DecodeArgs sets the message from b, which must hold exactly the
	// arguments array. Byte strings are copied out of b; other slices of
	// the message may be reused.
	DecodeArgs(b []byte) error
}

// Errors of framing and handshake.
var (
	// ErrIncomplete tells that the input holds only the beginning of a
	// packet or handshake: read more and try again.
	ErrIncomplete = errors.New("proto: incomplete data")
	// ErrNotNEO tells that the peer's first bytes are not a NEO handshake.
	ErrNotNEO = errors.New("proto: peer is not a NEO node")
)

// VersionError tells that the peer is a NEO node speaking another protocol
// version. Version is -1 when the peer's version could not be read.
type VersionError struct {
	Version int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("proto: protocol version mismatch: peer speaks %d, we speak %d", e.Version, Version)
}

// ParseHandshake checks the peer's handshake at the start of b, as NEO/py
// does: it returns Version and the number of bytes it takes (6) when it
// matches; ErrIncomplete when b is a strict prefix of it; a *VersionError
// when only the version differs; ErrNotNEO otherwise. NEO/py closes the
// connection on the last two.
func ParseHandshake(b []byte) (version int, n int, err error) {
	if len(b) >= len(Handshake) && bytes.Equal(b[:len(Handshake)], Handshake) {
		return Version, len(Handshake), nil
	}
	if len(b) < len(Handshake) && bytes.HasPrefix(Handshake, b) {
		return 0, 0, ErrIncomplete
	}
	if len(b) >= len(handshakeMagic) && bytes.Equal(b[:len(handshakeMagic)], handshakeMagic) {
		v, rest, err := msgp.ReadInt64Bytes(b[len(handshakeMagic):])
		if err != nil || v < math.MinInt32 || v > math.MaxInt32 {
			return -1, 0, &VersionError{Version: -1}
		}
		return int(v), len(b) - len(rest), &VersionError{Version: int(v)}
	}
	return 0, 0, ErrNotNEO
}

// IsAnswer tells whether code is the code of an answer (or of Error).
func IsAnswer(code uint16) bool { return code&AnswerBit != 0 }

// AppendPacket appends the packet [msgID, code, args] of m to b.
func AppendPacket(b []byte, msgID uint32, m Msg) []byte {
	b = append(b, 0x93)
	b = msgp.AppendUint64(b, uint64(msgID))
	b = msgp.AppendUint64(b, uint64(m.MsgCode()))
	return m.AppendArgs(b)
}

// packetHeader reads [msg_id, code, and returns what follows (the args).
func packetHeader(b []byte) (msgID uint32, code uint16, rest []byte, err error) {
	if len(b) == 0 {
		return 0, 0, nil, ErrIncomplete
	}
	if b[0] == 0x93 {
		rest = b[1:]
	} else {
		var sz uint32
		sz, rest, err = msgp.ReadArrayHeaderBytes(b)
		if err != nil {
			if errors.Is(err, msgp.ErrShortBytes) {
				return 0, 0, nil, ErrIncomplete
			}
			return 0, 0, nil, fmt.Errorf("proto: packet: want array [msg_id, code, args], got %s", what(b))
		}
		if sz != 3 {
			return 0, 0, nil, fmt.Errorf("proto: packet: want array of 3 elements, got %d", sz)
		}
	}
	id, rest, err := readHeaderUint(rest, math.MaxUint32, "msg_id")
	if err != nil {
		return 0, 0, nil, err
	}
	c, rest, err := readHeaderUint(rest, math.MaxUint16, "code")
	if err != nil {
		return 0, 0, nil, err
	}
	return uint32(id), uint16(c), rest, nil
}

func readHeaderUint(b []byte, max uint64, name string) (uint64, []byte, error) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), b[1:], nil
	}
	v, rest, err := msgp.ReadUint64Bytes(b)
	if err != nil {
		if errors.Is(err, msgp.ErrShortBytes) {
			return 0, nil, ErrIncomplete
		}
		return 0, nil, fmt.Errorf("proto: packet %s: want non-negative int, got %s", name, what(b))
	}
	if v > max {
		return 0, nil, fmt.Errorf("proto: packet %s %d out of range", name, v)
	}
	return v, rest, nil
}

// PacketLen returns the length of the first packet in b: ErrIncomplete if b
// holds only its beginning, another error if it is malformed or longer than
// MaxPacketSize. Only the framing is checked (a 3-element array of msg id,
// code and an args array of well-formed msgpack); DecodePacket checks the
// arguments.
func PacketLen(b []byte) (int, error) {
	_, _, _, n, err := scanPacket(b)
	return n, err
}

// scanPacket reads the header of the first packet in b and finds its end:
// the args are b[argsAt:n].
func scanPacket(b []byte) (msgID uint32, code uint16, argsAt, n int, err error) {
	msgID, code, rest, err := packetHeader(b)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if len(rest) > 0 && !isArray(rest[0]) {
		return 0, 0, 0, 0, fmt.Errorf("proto: packet args: want array, got %s", what(rest))
	}
	argsAt = len(b) - len(rest)
	n, err = skipValue(b, argsAt)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	return msgID, code, argsAt, n, nil
}

func isArray(c byte) bool { return c&0xf0 == 0x90 || c == 0xdc || c == 0xdd }

// skipValue returns where the msgpack value starting at b[off] ends. It
// walks nested arrays and maps with a counter instead of recursion, so
// nesting depth costs nothing.
func skipValue(b []byte, off int) (int, error) {
	pending := uint64(1) // values still to skip
	for pending > 0 {
		if off >= len(b) {
			return 0, ErrIncomplete
		}
		if uint64(off)+pending > MaxPacketSize {
			return 0, errTooLarge(uint64(off) + pending)
		}
		c := b[off]
		pending--
		var size uint64 // bytes of this value, header included, excluding elements
		var nest uint64 // elements that follow
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			size = 1
		case c <= 0x8f:
			size, nest = 1, 2*uint64(c&0x0f)
		case c <= 0x9f:
			size, nest = 1, uint64(c&0x0f)
		case c <= 0xbf:
			size = 1 + uint64(c&0x1f)
		default:
			var hdr int
			switch c {
			case 0xc4, 0xd9, 0xc7: // bin8, str8, ext8
				hdr = 1
			case 0xc5, 0xda, 0xc8, 0xdc, 0xde:
				hdr = 2
			case 0xc6, 0xdb, 0xc9, 0xdd, 0xdf:
				hdr = 4
			case 0xcc, 0xd0:
				size = 2
			case 0xcd, 0xd1:
				size = 3
			case 0xca, 0xce, 0xd2:
				size = 5
			case 0xcb, 0xcf, 0xd3:
				size = 9
			case 0xd4:
				size = 3
			case 0xd5:
				size = 4
			case 0xd6:
				size = 6
			case 0xd7:
				size = 10
			case 0xd8:
				size = 18
			default: // 0xc1
				return 0, fmt.Errorf("proto: packet: invalid msgpack byte 0x%02x at offset %d", c, off)
			}
			if hdr > 0 {
				if off+1+hdr > len(b) {
					return 0, ErrIncomplete
				}
				var n uint64
				for _, x := range b[off+1 : off+1+hdr] {
					n = n<<8 | uint64(x)
				}
				size = 1 + uint64(hdr)
				switch c {
				case 0xdc, 0xdd:
					nest = n
				case 0xde, 0xdf:
					nest = 2 * n
				case 0xc7, 0xc8, 0xc9:
					size += 1 + n // ext type byte + payload
				default:
					size += n
				}
			}
		}
		pending += nest
		next := uint64(off) + size
		if next+pending > MaxPacketSize {
			return 0, errTooLarge(next + pending)
		}
		if next > uint64(len(b)) {
			return 0, ErrIncomplete
		}
		off = int(next)
	}
	return off, nil
}

func errTooLarge(n uint64) error {
	return fmt.Errorf("proto: packet of at least %d bytes exceeds the limit of %d", n, MaxPacketSize)
}

// DecodePacket decodes the first packet in b and returns its msg id, the
// message and the number of bytes it took. Errors are as for PacketLen, plus
// unknown codes and arguments not matching the packet type; for these two,
// msgID and n are still returned. Byte strings of the message are copies.
func DecodePacket(b []byte) (msgID uint32, m Msg, n int, err error) {
	return decodePacket(b, false)
}

// DecodePacketNoCopy is DecodePacket except that byte strings of the
// message (object data, user, ...) point into b: b must not be modified
// while the message is in use. Each byte string has a capacity equal to its
// length, so that appending to one allocates rather than overwriting what
// follows it in b.
func DecodePacketNoCopy(b []byte) (msgID uint32, m Msg, n int, err error) {
	return decodePacket(b, true)
}

// DecodeArgsNoCopy is m.DecodeArgs(b) except that byte strings of m point
// into b, as with DecodePacketNoCopy. It lets a message be decoded again
// in place, its slices reused, with no allocation when they are large
// enough.
func DecodeArgsNoCopy(m Msg, b []byte) error {
	return decodeArgs(m, b, true)
}

func decodePacket(b []byte, alias bool) (uint32, Msg, int, error) {
	msgID, code, argsAt, n, err := scanPacket(b)
	if err != nil {
		return 0, nil, 0, err
	}
	m, err := NewMsg(code)
	if err != nil {
		return msgID, nil, n, err
	}
	if err := decodeArgs(m, b[argsAt:n], alias); err != nil {
		return msgID, nil, n, err
	}
	return msgID, m, n, nil
}

func decodeArgs(m Msg, b []byte, alias bool) error {
	d := decoder{b: b, alias: alias}
	if !decodeMsgArgs(m, &d) {
		return fmt.Errorf("proto: %T is not a packet of this package", m)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errTrailing
	}
	if d.err != nil {
		return fmt.Errorf("proto: %s: %w", packetName(m.MsgCode()), d.err)
	}
	return nil
}

// NewMsg returns a new empty message of type code, or an
// *UnknownCodeError.
func NewMsg(code uint16) (Msg, error) {
	if m := newMsg(code); m != nil {
		return m, nil
	}
	return nil, &UnknownCodeError{Code: code}
}

// UnknownCodeError tells that a packet code is not one of protocol 5.
type UnknownCodeError struct {
	Code uint16
}

func (e *UnknownCodeError) Error() string {
	return fmt.Sprintf("proto: unknown packet code 0x%04x", e.Code)
}

// Kind tells what role a packet type has.
type Kind uint8

const (
	KindRequest      Kind = iota + 1 // expects an answer
	KindAnswer                       // answers a request
	KindNotification                 // expects no answer
	KindError                        // Error: answers any request, or notifies
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindAnswer:
		return "answer"
	case KindNotification:
		return "notification"
	case KindError:
		return "error"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// PacketInfo describes a packet type.
type PacketInfo struct {
	Name string
	Code uint16
	Kind Kind
	// Answer is, for a request, the code of its answer, or CodeError for
	// the requests only ever answered by Error; for an answer, the code of
	// its request; 0 otherwise.
	Answer uint16
	// NoDelay is NEO/py's nodelay: send at once. AddTransaction and
	// AddObject are buffered until 64 KiB are queued or a nodelay packet
	// follows.
	NoDelay bool
	// IgnoreWhenClosed is NEO/py's ignore_when_closed: a request of this
	// type still queued when its connection closes is dropped.
	IgnoreWhenClosed bool
}

// Info returns the description of packet type code.
func Info(code uint16) (PacketInfo, bool) {
	i, ok := packetIndex(code)
	if !ok {
		return PacketInfo{}, false
	}
	return packetInfos[i], true
}

// Packets returns the descriptions of all 111 packet types, in code order:
// requests and notifications, then Error and the answers.
func Packets() []PacketInfo {
	return append([]PacketInfo(nil), packetInfos[:]...)
}

// AnswerCode returns the code of the answer to request code: the request's
// own answer type, or CodeError for requests answered only by Error.
// ok is false when code is not a request.
func AnswerCode(code uint16) (answer uint16, ok bool) {
	i, ok := packetIndex(code)
	if !ok || packetInfos[i].Kind != KindRequest {
		return 0, false
	}
	return packetInfos[i].Answer, true
}

// IsAnswerTo tells whether answer is an acceptable answer to request: its
// answer type, or Error.
func IsAnswerTo(request, answer uint16) bool {
	if answer == CodeError {
		return true
	}
	a, ok := AnswerCode(request)
	return ok && a == answer
}

func packetName(code uint16) string {
	if i, ok := packetIndex(code); ok {
		return packetInfos[i].Name
	}
	return fmt.Sprintf("packet 0x%04x", code)
}

// Err returns the Error packet for code and message.
func Err(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error lets an Error packet be used as a Go error.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}
