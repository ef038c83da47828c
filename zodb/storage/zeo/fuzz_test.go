package zeo

import (
	"bytes"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// Fuzz targets for everything that reads bytes from the server: framing,
// both message decoders, and the dispatch of decoded messages (replies,
// error replies, server calls). Seeds are the recorded frames.

func seedFrames(f *testing.F, marshaller string) {
	for _, tr := range loadTranscripts(f) {
		for _, fr := range tr.Frames {
			// Large frames (blob chunks) only slow the minimization of
			// interesting inputs down.
			if fr.node != nil && len(fr.payload) <= maxSeed && (marshaller == "" || codecOf(fr) == codecFor2(marshaller)) {
				f.Add(fr.payload)
			}
		}
	}
}

// maxSeed bounds the size of the seeds taken from the recordings.
const maxSeed = 4096

func codecFor2(m string) codec {
	if m == "msgpack" {
		return msgpackCodec{}
	}
	return pickleCodec{}
}

// fuzzConn is a connection that is never dialled: handleFrame runs on it
// with calls pending under the ids the seeds use.
func fuzzConn(cd codec) *conn {
	s := &Storage{
		addr:      "fuzz",
		log:       discardLogger,
		connected: make(chan struct{}),
		headMoved: make(chan struct{}),
		evReady:   make(chan struct{}, 1),
		closed:    make(chan struct{}),
	}
	c := newConn(s, nil, cd)
	for id := int64(-1); id < 64; id++ {
		key, _ := msgKey(id)
		c.pending[key] = &call{done: make(chan struct{})}
	}
	// A blob download under way, for the seeds of FuzzFrame.
	c.blobs = map[string]*blobRecv{fuzzBlobKey: {done: make(chan struct{})}}
	return c
}

var fuzzBlobKey = blobKey(zodb.Oid(1).Bytes(), zodb.Tid(1).Bytes())

// dropFuzzBlob releases what a fuzz input downloaded.
func dropFuzzBlob(c *conn) {
	if br := c.blobs[fuzzBlobKey]; br != nil {
		br.drop()
	}
}

// valueSize counts the nodes of v, up to budget (decoded pickles may share
// substructures through the memo).
func valueSize(v any, budget int) int {
	n := 1
	var kids []any
	switch v := v.(type) {
	case tuple:
		kids = v
	case *list:
		kids = v.items
	case *dict:
		for _, e := range v.items {
			kids = append(kids, e.k, e.v)
		}
	case *reduce:
		kids = []any{v.fn, v.args, v.state}
	}
	for _, k := range kids {
		if n > budget {
			return n
		}
		n += valueSize(k, budget-n)
	}
	return n
}

func fuzzDecode(t *testing.T, cd codec, data []byte) {
	v, err := cd.decode(data)
	if err != nil {
		if v != nil {
			t.Fatalf("value %v with error %v", v, err)
		}
	} else {
		_ = formatValue(v)
		if valueSize(v, 10000) < 10000 {
			enc, err := cd.encode(v)
			if err == nil {
				v2, err := cd.decode(enc)
				if err != nil {
					t.Fatalf("re-decoding %x (from %x): %v", enc, data, err)
				}
				if valueSize(v, 1000) < 1000 && !equalValue(v, v2) {
					t.Fatalf("round trip: %s != %s", formatValue(v), formatValue(v2))
				}
			}
		}
	}
	// The whole receiving path: must not panic; an error closes the
	// connection in real use.
	c := fuzzConn(cd)
	defer dropFuzzBlob(c)
	_ = c.handleFrame(data)
}

func FuzzDecodePickleMsg(f *testing.F) {
	seedFrames(f, "pickle")
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, pickleCodec{}, data) })
}

func FuzzDecodeMsgpackMsg(f *testing.F) {
	seedFrames(f, "msgpack")
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, msgpackCodec{}, data) })
}

// FuzzFrame reads a byte stream as frames and dispatches them, as a
// connection's reader does.
func FuzzFrame(f *testing.F) {
	for _, tr := range loadTranscripts(f) {
		for _, c := range tr.Connections {
			var stream []byte
			for _, fr := range tr.byConn[c.Conn] {
				if fr.Dir == "s2c" && fr.N > 0 && len(stream)+len(fr.payload) <= maxSeed {
					stream = appendFrame(stream, fr.payload)
				}
			}
			f.Add(stream, tr.Marshaller == "msgpack")
		}
	}
	// A blob streamed to the download fuzzConn waits for.
	for _, cd := range []codec{pickleCodec{}, msgpackCodec{}} {
		oid, serial := zodb.Oid(1).Bytes(), zodb.Tid(1).Bytes()
		var stream []byte
		for _, m := range []tuple{
			{int64(0), true, "receiveBlobStart", tuple{oid, serial}},
			{int64(0), true, "receiveBlobChunk", tuple{oid, serial, []byte("chunk 1")}},
			{int64(0), true, "receiveBlobChunk", tuple{oid, serial, []byte("chunk 2")}},
			{int64(0), true, "receiveBlobStop", tuple{oid, serial}},
			{int64(1), int64(0), ".reply", nil},
		} {
			p, err := cd.encode(m)
			if err != nil {
				f.Fatal(err)
			}
			stream = appendFrame(stream, p)
		}
		_, isMsgpack := cd.(msgpackCodec)
		f.Add(stream, isMsgpack)
	}
	f.Fuzz(func(t *testing.T, stream []byte, msgpack bool) {
		var cd codec = pickleCodec{}
		if msgpack {
			cd = msgpackCodec{}
		}
		c := fuzzConn(cd)
		defer dropFuzzBlob(c)
		fr := &frameReader{r: bytes.NewReader(stream)}
		for {
			p, err := fr.readFrame()
			if err != nil {
				return
			}
			if len(p) > len(stream) {
				t.Fatalf("frame of %d bytes from a stream of %d", len(p), len(stream))
			}
			if c.handleFrame(p) != nil {
				return
			}
		}
	})
}
