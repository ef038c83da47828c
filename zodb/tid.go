package zodb

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Tid is a transaction identifier: the 8 bytes of a ZODB TimeStamp read as a
// big-endian unsigned integer. Tids order like the times they encode.
//
// A Tid is also the serial of an object revision: the tid of the transaction
// that wrote it.
type Tid uint64

// Oid is an object identifier: 8 bytes, big-endian, on the wire and on disk.
type Oid uint64

const (
	// TidMax is the largest tid ZODB hands out (ZODB's maxtid). "At TidMax"
	// means "the latest state".
	TidMax Tid = 1<<63 - 1

	// InvalidTid marks "no tid" where 0 is meaningful (FileStorage also uses
	// it as "no upper bound" when iterating).
	InvalidTid Tid = 1<<64 - 1

	// InvalidOid marks "no oid".
	InvalidOid Oid = 1<<64 - 1
)

// String returns the 16 lower-case hex digits zodbtools print.
func (tid Tid) String() string { return fmt.Sprintf("%016x", uint64(tid)) }

// String returns the 16 lower-case hex digits zodbtools print.
func (oid Oid) String() string { return fmt.Sprintf("%016x", uint64(oid)) }

// Bytes returns the 8-byte big-endian form.
func (tid Tid) Bytes() []byte { return binary.BigEndian.AppendUint64(nil, uint64(tid)) }

// Bytes returns the 8-byte big-endian form.
func (oid Oid) Bytes() []byte { return binary.BigEndian.AppendUint64(nil, uint64(oid)) }

// TidFromBytes decodes an 8-byte big-endian tid.
func TidFromBytes(b []byte) (Tid, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("tid: need 8 bytes, got %d", len(b))
	}
	return Tid(binary.BigEndian.Uint64(b)), nil
}

// OidFromBytes decodes an 8-byte big-endian oid.
func OidFromBytes(b []byte) (Oid, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("oid: need 8 bytes, got %d", len(b))
	}
	return Oid(binary.BigEndian.Uint64(b)), nil
}

// parseHex64 parses exactly 16 hex digits.
func parseHex64(what, s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("%s %q: want 16 hex digits", what, s)
	}
	x, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: invalid hex", what, s)
	}
	return x, nil
}

// ParseTid parses the 16-hex-digit form printed by String.
func ParseTid(s string) (Tid, error) {
	x, err := parseHex64("tid", s)
	return Tid(x), err
}

// ParseOid parses the 16-hex-digit form printed by String.
func ParseOid(s string) (Oid, error) {
	x, err := parseHex64("oid", s)
	return Oid(x), err
}

// reprHex is ZODB's tid_repr/oid_repr: "0x" + hex without leading zeros,
// padded to an even number of digits ("0x00" for zero).
func reprHex(x uint64) string {
	s := strconv.FormatUint(x, 16)
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return "0x" + s
}

// Repr returns ZODB's oid_repr form, e.g. "0x01".
func (oid Oid) Repr() string { return reprHex(uint64(oid)) }

// Repr returns ZODB's tid_repr form, e.g. "0x03f6ed…".
func (tid Tid) Repr() string { return reprHex(uint64(tid)) }

// ParseOidRepr accepts what ZODB's repr_to_oid accepts: hex digits with an
// optional "0x" prefix, left-padded with zeros to 8 bytes.
func ParseOidRepr(s string) (Oid, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if h == "" || len(h) > 16 {
		return 0, fmt.Errorf("oid %q: invalid", s)
	}
	x, err := strconv.ParseUint(h, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("oid %q: invalid hex", s)
	}
	return Oid(x), nil
}

// Xid names one revision of an object as seen at a point in time: the
// revision of Oid that was current at tid At (the latest one with serial ≤ At).
type Xid struct {
	Oid Oid
	At  Tid
}

// String returns "oid@at", the form zodbtools accept.
func (xid Xid) String() string { return xid.Oid.String() + "@" + xid.At.String() }

// ParseXid parses "oid@at" (16 hex digits each).
func ParseXid(s string) (Xid, error) {
	o, a, ok := strings.Cut(s, "@")
	if !ok {
		return Xid{}, fmt.Errorf("xid %q: want oid@tid", s)
	}
	oid, err := ParseOid(o)
	if err != nil {
		return Xid{}, fmt.Errorf("xid %q: %w", s, err)
	}
	at, err := ParseTid(a)
	if err != nil {
		return Xid{}, fmt.Errorf("xid %q: %w", s, err)
	}
	return Xid{Oid: oid, At: at}, nil
}
