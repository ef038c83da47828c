package neonet

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/neozodb/neo/internal/testdir"
	"github.com/neozodb/neo/neo/proto"
)

type streamVectors struct {
	Hex     string `json:"hex"`
	Packets []struct {
		Offset int    `json:"offset"`
		Size   int    `json:"size"`
		MsgID  uint32 `json:"msg_id"`
		Code   uint16 `json:"code"`
		Name   string `json:"name"`
	} `json:"packets"`
}

type handshakeVectors struct {
	Cases []struct {
		Label  string `json:"label"`
		Hex    string `json:"hex"`
		Result string `json:"neo_result"`
	} `json:"cases"`
}

func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	f, err := os.Open(filepath.Join(testdir.Dir("NEO_PROTO_VECTORS", "neo-proto"), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func loadStream(t testing.TB) ([]byte, streamVectors) {
	var sv streamVectors
	loadVectors(t, "stream.json", &sv)
	b, err := hex.DecodeString(sv.Hex)
	if err != nil {
		t.Fatal(err)
	}
	return b, sv
}

// parseStream parses a whole stream (handshake then packets) fed in pieces
// of at most maxChunk bytes, with the scanner as the link uses it, and
// returns the packets' headers and offsets.
func parseStream(stream []byte, chunk func() int) (pkts []header, offsets []int, err error) {
	var s scanner
	var buf []byte
	start, off := 0, 0 // start of the current packet in buf; its stream offset
	handshaken := false
	for fed := 0; fed < len(stream); {
		n := min(chunk(), len(stream)-fed)
		buf = append(buf, stream[fed:fed+n]...)
		fed += n
		if !handshaken {
			n, err := checkHandshake(buf)
			if err == errIncomplete {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			handshaken, start, off = true, n, n
		}
		for {
			n, err := s.next(buf[start:])
			if err == errIncomplete {
				if s.need <= len(buf)-start {
					return nil, nil, errors.New("scanner asks for bytes it has")
				}
				break
			}
			if err != nil {
				return nil, nil, err
			}
			h, err := parseHeader(buf[start : start+n])
			if err != nil {
				return nil, nil, err
			}
			if _, err := decodeMsg(h.code, h.args); err != nil {
				return nil, nil, err
			}
			pkts = append(pkts, h)
			offsets = append(offsets, off)
			start += n
			off += n
		}
	}
	if start != len(buf) {
		return nil, nil, errIncomplete
	}
	return pkts, offsets, nil
}

// TestStreamVectors parses NEO/py's stream in one piece and in random small
// pieces: every packet must come out whole, at its offset, with its id and
// code.
func TestStreamVectors(t *testing.T) {
	stream, sv := loadStream(t)
	rng := rand.New(rand.NewPCG(1, 2))
	chunkings := map[string]func() int{
		"whole":     func() int { return len(stream) },
		"1 byte":    func() int { return 1 },
		"random":    func() int { return 1 + rng.IntN(40) },
		"random 4K": func() int { return 1 + rng.IntN(4096) },
	}
	for name, chunk := range chunkings {
		t.Run(name, func(t *testing.T) {
			pkts, offsets, err := parseStream(stream, chunk)
			if err != nil {
				t.Fatal(err)
			}
			if len(pkts) != len(sv.Packets) {
				t.Fatalf("got %d packets, want %d", len(pkts), len(sv.Packets))
			}
			for i, want := range sv.Packets {
				h := pkts[i]
				if offsets[i] != want.Offset || h.msgID != want.MsgID || h.code != want.Code {
					t.Errorf("packet %d (%s): offset %d msg id %d code 0x%04x, want %d %d 0x%04x",
						i, want.Name, offsets[i], h.msgID, h.code, want.Offset, want.MsgID, want.Code)
				}
				if i+1 < len(sv.Packets) && sv.Packets[i+1].Offset-want.Offset != want.Size {
					t.Errorf("packet %d: vectors inconsistent", i)
				}
			}
		})
	}
}

func TestHandshakeVectors(t *testing.T) {
	var hv handshakeVectors
	loadVectors(t, "handshake.json", &hv)
	for _, c := range hv.Cases {
		b, _ := hex.DecodeString(c.Hex)
		n, err := checkHandshake(b)
		var got string
		var verr *proto.VersionError
		switch {
		case err == nil && n == len(b):
			got = "accepted"
		case err == nil:
			got = "accepted+packet"
		case err == errIncomplete:
			got = "incomplete"
		case errors.As(err, &verr):
			got = "version_mismatch"
		case errors.Is(err, proto.ErrNotNEO):
			got = "not_neo"
		default:
			got = err.Error()
		}
		if got != c.Result {
			t.Errorf("%s (%s): got %s, want %s", c.Label, c.Hex, got, c.Result)
		}
	}
}

// TestScannerAgreesWithProto checks the resumable scanner against
// proto.PacketLen on every packet of the vectors.
func TestScannerAgreesWithProto(t *testing.T) {
	stream, sv := loadStream(t)
	for _, p := range sv.Packets {
		b := stream[p.Offset : p.Offset+p.Size]
		var s scanner
		n, err := s.next(b)
		pn, perr := proto.PacketLen(b)
		if err != nil || perr != nil || n != pn || n != p.Size {
			t.Errorf("%s: scanner %d %v, proto %d %v, want %d", p.Name, n, err, pn, perr, p.Size)
		}
		// Every strict prefix is incomplete, and asks for more than it has.
		for _, cut := range []int{0, 1, p.Size / 2, p.Size - 1} {
			var s scanner
			if _, err := s.next(b[:cut]); err != errIncomplete || s.need <= cut || s.need > p.Size {
				t.Errorf("%s cut at %d: %v, need %d", p.Name, cut, err, s.need)
			}
		}
	}
}

func TestScannerMalformed(t *testing.T) {
	for _, tt := range []struct {
		name, hex, want string
	}{
		{"not an array", "c0", "not a 3-element array"},
		{"4-array", "9400000090", "not a 3-element array"},
		{"reserved byte", "9300c190", "reserved msgpack byte"},
		{"bin32 over limit", "930002c6ffffffff", "exceeds"},
		{"bin32 just over limit", "930002c604000000", "more than"},
		{"str32 over limit", "930002dbffffffff", "exceeds"},
		{"array32 huge", "930002ddffffffff", "cannot fit"},
		{"map32 huge", "930002df7fffffff", "cannot fit"},
		{"too deep", "930002" + strings.Repeat("91", 100), "nested deeper"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tt.hex)
			var s scanner
			_, err := s.next(b)
			if err == nil || err == errIncomplete || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseHeaderMalformed(t *testing.T) {
	for _, tt := range []struct {
		name, hex, want string
	}{
		{"negative msg id", "93ff0290", "negative"},
		{"msg id too big", "93cf000000010000000002 90", "out of 32-bit range"},
		{"code too big", "9300ce0001000090", "out of 16-bit range"},
		{"bin msg id", "93c4010002 90", "not an integer"},
		{"args not array", "930002c0", "not an array"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := hex.DecodeString(strings.ReplaceAll(tt.hex, " ", ""))
			var s scanner
			n, err := s.next(b)
			if err != nil || n != len(b) {
				t.Fatalf("scanner: %d %v", n, err)
			}
			_, err = parseHeader(b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestAppendPacket(t *testing.T) {
	// Worked examples of the spec: Ping msg id 0, Pong, AskObject msg id 300.
	for _, tt := range []struct {
		id   uint32
		m    Msg
		want string
	}{
		{0, &proto.Ping{}, "93000290"},
		{0, &proto.Pong{}, "9300cd800290"},
		{7, &proto.Error{Code: proto.ProtocolError, Message: "x"}, "9307cd80009206c40178"},
		{1<<32 - 1, &proto.Ping{}, "93ceffffffff0290"},
	} {
		got := hex.EncodeToString(appendPacket(nil, tt.id, tt.m))
		if got != tt.want {
			t.Errorf("%T id %d: %s, want %s", tt.m, tt.id, got, tt.want)
		}
	}
}
