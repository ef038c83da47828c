package zeo

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/neozodb/neo/internal/testdir"
)

// The transcripts (testdata/zeo, see its README) are recordings of the real
// ZEO client and server. These helpers load them; the tests check our
// codecs and framing against every frame, and replay_test.go plays the
// server side to our client.

type transcript struct {
	file        string
	Scenario    string            `json:"scenario"`
	Marshaller  string            `json:"marshaller"`
	Connections []tConn           `json:"connections"`
	Steps       []tStep           `json:"steps"`
	Vars        map[string]tVar   `json:"vars"`
	Frames      []*tFrame         `json:"frames"`
	Server      map[string]any    `json:"server"`
	byConn      map[int][]*tFrame // frames of each connection, in order
}

type tConn struct {
	Conn    int            `json:"conn"`
	Peer    string         `json:"peer"`
	Client  string         `json:"client"`
	Server  string         `json:"server"`
	Options map[string]any `json:"options"`
	Note    string         `json:"note"`
	Streams map[string]struct {
		Bytes  int    `json:"bytes"`
		Frames int    `json:"frames"`
		SHA1   string `json:"sha1"`
	} `json:"streams"`
	End []struct {
		Seq  int    `json:"seq"`
		Type string `json:"type"`
		Dir  string `json:"dir"`
	} `json:"end"`
}

type tStep struct {
	Step   int    `json:"step"`
	Label  string `json:"label"`
	Call   string `json:"call"`
	Frames []int  `json:"frames"`
}

type tVar struct {
	Kind string `json:"kind"`
	Hex  string `json:"hex"`
}

type tFrame struct {
	I         int             `json:"i"`
	Seq       int             `json:"seq"`
	Conn      int             `json:"conn"`
	Dir       string          `json:"dir"`
	N         int             `json:"n"`
	Step      int             `json:"step"`
	Size      int             `json:"size"`
	Hex       string          `json:"hex"`
	Kind      string          `json:"kind"`
	Handshake string          `json:"handshake"`
	Method    string          `json:"method"`
	Msg       json.RawMessage `json:"msg"`
	Reply     *int            `json:"reply"`
	ReplyTo   *int            `json:"reply_to"`
	Text      string          `json:"text"`
	Encoding  string          `json:"encoding"`

	payload []byte
	node    *tnode
}

// tnode is a typed value of the transcripts.
type tnode struct {
	T      string          `json:"t"`
	V      json.RawMessage `json:"v"`
	Bits   string          `json:"bits"`
	Var    string          `json:"var"`
	Kind   string          `json:"kind"`
	Elided bool            `json:"elided"`
	N      int             `json:"n"`
	Off    int             `json:"off"`
	Module string          `json:"module"`
	Name   string          `json:"name"`
	Func   *tnode          `json:"func"`
	Args   *tnode          `json:"args"`
	State  *tnode          `json:"state"`
}

func transcriptDir() string { return testdir.Dir("ZEO_TRANSCRIPTS", "zeo") }

// loadTranscripts loads every *.json of the directory except the manifest.
func loadTranscripts(t testing.TB) []*transcript {
	t.Helper()
	dir := transcriptDir()
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*transcript
	for _, p := range paths {
		if filepath.Base(p) == "manifest.json" {
			continue
		}
		tr, err := loadTranscript(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, tr)
	}
	if len(out) == 0 {
		t.Fatalf("no transcripts in %s", dir)
	}
	return out
}

func loadTranscript(path string) (*transcript, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tr := &transcript{file: filepath.Base(path)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(tr); err != nil {
		return nil, err
	}
	tr.byConn = map[int][]*tFrame{}
	for _, f := range tr.Frames {
		if f.payload, err = hex.DecodeString(f.Hex); err != nil {
			return nil, fmt.Errorf("frame %d: %w", f.I, err)
		}
		if len(f.Msg) > 0 {
			f.node = &tnode{}
			d := json.NewDecoder(bytes.NewReader(f.Msg))
			d.UseNumber()
			if err := d.Decode(f.node); err != nil {
				return nil, fmt.Errorf("frame %d: msg: %w", f.I, err)
			}
		}
		tr.byConn[f.Conn] = append(tr.byConn[f.Conn], f)
	}
	for _, fs := range tr.byConn {
		sort.Slice(fs, func(i, j int) bool {
			if fs[i].Dir != fs[j].Dir {
				return fs[i].Dir < fs[j].Dir
			}
			return fs[i].N < fs[j].N
		})
	}
	return tr, nil
}

func (n *tnode) items() []*tnode {
	var v []*tnode
	d := json.NewDecoder(bytes.NewReader(n.V))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		panic(fmt.Sprintf("node %s: %v", n.T, err))
	}
	return v
}

func (n *tnode) pairs() [][2]*tnode {
	var v [][2]*tnode
	d := json.NewDecoder(bytes.NewReader(n.V))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		panic(fmt.Sprintf("node %s: %v", n.T, err))
	}
	return v
}

func (n *tnode) str() string {
	var s string
	if err := json.Unmarshal(n.V, &s); err != nil {
		panic(err)
	}
	return s
}

// value converts a node to our value model; payload resolves elided bytes.
func (n *tnode) value(payload []byte) (any, error) {
	switch n.T {
	case "nil":
		return nil, nil
	case "bool":
		return string(n.V) == "true", nil
	case "int":
		s := string(n.V)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		bi, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("bad int %s", s)
		}
		return nil, fmt.Errorf("int %v out of range", bi)
	case "float":
		u, err := strconv.ParseUint(n.Bits, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("bad float bits %q", n.Bits)
		}
		return math.Float64frombits(u), nil
	case "str":
		return n.str(), nil
	case "bin":
		if n.Elided {
			if n.Off < 0 || n.Off+n.N > len(payload) {
				return nil, fmt.Errorf("elided bytes out of the frame")
			}
			return bytes.Clone(payload[n.Off : n.Off+n.N]), nil
		}
		return hex.DecodeString(n.str())
	case "tuple", "array", "list":
		var out []any
		for _, x := range n.items() {
			v, err := x.value(payload)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		if n.T == "list" {
			return &list{items: out}, nil
		}
		if out == nil {
			out = []any{}
		}
		return tuple(out), nil
	case "map":
		d := &dict{}
		for _, p := range n.pairs() {
			k, err := p[0].value(payload)
			if err != nil {
				return nil, err
			}
			v, err := p[1].value(payload)
			if err != nil {
				return nil, err
			}
			d.add(k, v)
		}
		return d, nil
	case "global":
		return global{n.Module, n.Name}, nil
	case "reduce":
		fn, err := n.Func.value(payload)
		if err != nil {
			return nil, err
		}
		args, err := n.Args.value(payload)
		if err != nil {
			return nil, err
		}
		r := &reduce{fn: fn, args: args}
		if n.State != nil {
			r.hasState = true
			if r.state, err = n.State.value(payload); err != nil {
				return nil, err
			}
		}
		return r, nil
	}
	return nil, fmt.Errorf("unknown node type %q", n.T)
}

// hasVars tells whether a node holds run-dependent variables.
func (n *tnode) hasVars() bool {
	if n.Var != "" {
		return true
	}
	switch n.T {
	case "tuple", "array", "list":
		for _, x := range n.items() {
			if x.hasVars() {
				return true
			}
		}
	case "map":
		for _, p := range n.pairs() {
			if p[0].hasVars() || p[1].hasVars() {
				return true
			}
		}
	case "reduce":
		return n.Func.hasVars() || n.Args.hasVars() || (n.State != nil && n.State.hasVars())
	}
	return false
}

// codecOf returns the encoding of a frame (a connection may use the other
// encoding than the file's server announced).
func codecOf(f *tFrame) codec {
	if f.Encoding == "msgpack" {
		return msgpackCodec{}
	}
	return pickleCodec{}
}

// TestCodecVectors decodes every recorded frame and compares it with the
// typed value of the transcript, and encodes that value back to the
// recorded bytes.
func TestCodecVectors(t *testing.T) {
	for _, tr := range loadTranscripts(t) {
		t.Run(tr.file, func(t *testing.T) {
			n := 0
			for _, f := range tr.Frames {
				if f.node == nil {
					continue
				}
				cd := codecOf(f)
				want, err := f.node.value(f.payload)
				if err != nil {
					t.Fatalf("frame %d: %v", f.I, err)
				}
				got, err := cd.decode(f.payload)
				if err != nil {
					t.Errorf("frame %d (%s): decode: %v", f.I, f.Text, err)
					continue
				}
				if !equalValue(got, want) {
					t.Errorf("frame %d (%s): decoded\n%s\nwant\n%s", f.I, f.Text, formatValue(got), formatValue(want))
				}
				enc, err := cd.encode(want)
				if err != nil {
					t.Errorf("frame %d: encode: %v", f.I, err)
					continue
				}
				if !bytes.Equal(enc, f.payload) {
					t.Errorf("frame %d (%s): encoded\n%x\nwant\n%x", f.I, f.Text, enc, f.payload)
				}
				if _, err := msgFromValue(got); err != nil {
					t.Errorf("frame %d: %v", f.I, err)
				}
				n++
			}
			if n == 0 {
				t.Fatal("no message frames")
			}
		})
	}
}

// TestFraming rebuilds each recorded byte stream and reads it back in
// random splits.
func TestFraming(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tr := range loadTranscripts(t) {
		t.Run(tr.file, func(t *testing.T) {
			for _, c := range tr.Connections {
				for _, dir := range []string{"c2s", "s2c"} {
					var stream []byte
					var frames [][]byte
					for _, f := range tr.byConn[c.Conn] {
						if f.Dir == dir {
							stream = appendFrame(stream, f.payload)
							frames = append(frames, f.payload)
						}
					}
					if want := c.Streams[dir].SHA1; want != "" {
						if got := fmt.Sprintf("%x", sha1.Sum(stream)); got != want {
							t.Errorf("conn %d %s: stream sha1 %s, want %s", c.Conn, dir, got, want)
						}
					}
					readers := []io.Reader{
						bytes.NewReader(stream),
						iotest.OneByteReader(bytes.NewReader(stream)),
						&randomSplitReader{b: stream, rng: rng},
					}
					for ri, r := range readers {
						fr := &frameReader{r: r}
						for i, want := range frames {
							got, err := fr.readFrame()
							if err != nil {
								t.Fatalf("conn %d %s reader %d frame %d: %v", c.Conn, dir, ri, i, err)
							}
							if !bytes.Equal(got, want) {
								t.Fatalf("conn %d %s reader %d frame %d differs", c.Conn, dir, ri, i)
							}
						}
						if _, err := fr.readFrame(); err != io.EOF {
							t.Fatalf("conn %d %s reader %d: after the last frame: %v, want EOF", c.Conn, dir, ri, err)
						}
					}
				}
			}
		})
	}
}

type randomSplitReader struct {
	b   []byte
	rng *rand.Rand
}

func (r *randomSplitReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), 1+r.rng.IntN(64), len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

func TestFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"\x00\x00", "truncated length prefix"},
		{"\x00\x00\x00\x05ab", "truncated after 2"},
		{"\xff\xff\xff\xff", "exceeds the limit"},
	} {
		fr := &frameReader{r: strings.NewReader(tc.in)}
		_, err := fr.readFrame()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}
