package zeo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// Blob behaviour the recordings do not show, against a scripted server.

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// serveBlob answers a sendBlob call as ZEO's server does, with chunks of
// the given sizes.
func (c *scriptConn) serveBlob(m *msg, blob []byte, chunk int) {
	c.t.Helper()
	a := m.args.(tuple)
	c.send("receiveBlobStart", a[0], a[1])
	for len(blob) > 0 {
		n := min(chunk, len(blob))
		c.send("receiveBlobChunk", a[0], a[1], blob[:n])
		blob = blob[n:]
	}
	c.send("receiveBlobStop", a[0], a[1])
	c.reply(m, nil)
}

type loadResult struct {
	data []byte
	rc   io.ReadCloser
	err  error
}

func loadBlobAsync(s *Storage, t *testing.T, oid zodb.Oid, serial zodb.Tid) <-chan loadResult {
	ch := make(chan loadResult, 1)
	go func() {
		rc, err := s.LoadBlob(ctxT(t), oid, serial)
		if err != nil {
			ch <- loadResult{err: err}
			return
		}
		data, err := io.ReadAll(rc)
		ch <- loadResult{data: data, rc: rc, err: err}
	}()
	return ch
}

func TestLoadBlob(t *testing.T) {
	for _, letter := range []byte{'Z', 'M'} {
		t.Run(string(letter), func(t *testing.T) { testLoadBlob(t, letter) })
	}
}

func testLoadBlob(t *testing.T, letter byte) {
	defer func(n int) { blobSpoolMax = n }(blobSpoolMax)
	blobSpoolMax = 1000

	ss := newScriptServer(t, "tcp", "127.0.0.1:0", letter)
	ch := openAsync(t, ss.url(), &zodb.DriverOptions{})
	c := ss.accept()
	c.register(0x10)
	s := mustStorage(t, ch)

	// In memory, then spooled to a temporary file that Close removes.
	for _, size := range []int{0, 999, 2500} {
		blob := randBytes(uint64(size), size)
		res := loadBlobAsync(s, t, 1, 0x10)
		m := c.expect("sendBlob")
		if want := (tuple{zodb.Oid(1).Bytes(), zodb.Tid(0x10).Bytes()}); !equalValue(m.args, want) {
			t.Fatalf("sendBlob%s, want %s", formatValue(m.args), formatValue(want))
		}
		c.serveBlob(m, blob, 400)
		r := <-res
		if r.err != nil || !bytes.Equal(r.data, blob) {
			t.Fatalf("blob of %d bytes: got %d bytes, %v", size, len(r.data), r.err)
		}
		tf, spooled := r.rc.(*tempFile)
		if spooled != (size > blobSpoolMax) {
			t.Errorf("blob of %d bytes: in a temporary file: %v", size, spooled)
		}
		if err := r.rc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if spooled {
			if _, err := os.Stat(tf.f.Name()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temporary file left after Close: %v", err)
			}
		}
	}

	// A missing blob: POSKeyError("No blob file", oid, serial), with the
	// exception's args or its __dict__.
	for _, details := range []any{
		tuple{"No blob file", zodb.Oid(2).Bytes(), zodb.Tid(0x10).Bytes()},
		&dict{items: []kv{{"args", tuple{zodb.Oid(2).Bytes(), zodb.Tid(0x10).Bytes()}}}},
	} {
		res := loadBlobAsync(s, t, 2, 0x10)
		c.replyError(c.expect("sendBlob"), "ZODB.POSException.POSKeyError", details)
		r := <-res
		var e *zodb.NoBlobError
		var op *zodb.OpError
		if !errors.As(r.err, &e) || e.Oid != 2 || e.Serial != 0x10 || !errors.As(r.err, &op) {
			t.Errorf("missing blob: %v (%T), want a NoBlobError in an OpError", r.err, r.err)
		}
	}

	// Two downloads at once, their messages interleaved, replies in the
	// other order.
	b1, b2 := randBytes(1, 1500), randBytes(2, 700)
	res1 := loadBlobAsync(s, t, 1, 0x10)
	res2 := loadBlobAsync(s, t, 3, 0x10)
	calls := map[zodb.Oid]*msg{}
	for range 2 {
		m := c.expect("sendBlob")
		calls[mustOid(m.args.(tuple)[0])] = m
	}
	if calls[1] == nil || calls[3] == nil {
		t.Fatalf("sendBlob calls for %v", calls)
	}
	k1, k2 := calls[1].args.(tuple), calls[3].args.(tuple)
	c.send("receiveBlobStart", k1[0], k1[1])
	c.send("receiveBlobStart", k2[0], k2[1])
	c.send("receiveBlobChunk", k1[0], k1[1], b1[:1000])
	c.send("receiveBlobChunk", k2[0], k2[1], b2)
	c.send("receiveBlobChunk", k1[0], k1[1], b1[1000:])
	c.send("receiveBlobStop", k2[0], k2[1])
	c.send("receiveBlobStop", k1[0], k1[1])
	c.reply(calls[3], nil)
	c.reply(calls[1], nil)
	for i, r := range []loadResult{<-res1, <-res2} {
		want := [][]byte{b1, b2}[i]
		if r.err != nil || !bytes.Equal(r.data, want) {
			t.Errorf("download %d: %d bytes, %v; want %d bytes", i+1, len(r.data), r.err, len(want))
		}
		if r.rc != nil {
			r.rc.Close()
		}
	}

	// A download given up (context done) ignores what comes later.
	ctx, cancel := context.WithCancel(ctxT(t))
	resc := make(chan error, 1)
	go func() {
		_, err := s.LoadBlob(ctx, 1, 0x10)
		resc <- err
	}()
	m0 := c.expect("sendBlob")
	cancel()
	if err := <-resc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled LoadBlob: %v", err)
	}
	c.serveBlob(m0, b1, 400)

	// A reply without the whole blob is a protocol error; blob messages
	// nobody waits for are ignored.
	res := loadBlobAsync(s, t, 1, 0x10)
	m := c.expect("sendBlob")
	c.send("receiveBlobChunk", zodb.Oid(9).Bytes(), zodb.Tid(9).Bytes(), []byte("stray"))
	c.send("receiveBlobStart", m.args.(tuple)[0], m.args.(tuple)[1])
	c.reply(m, nil)
	var perr *ProtocolError
	if r := <-res; !errors.As(r.err, &perr) {
		t.Errorf("reply without receiveBlobStop: %v, want ProtocolError", r.err)
	}
	// The connection is still good.
	pingDone := make(chan error, 1)
	go func() { pingDone <- s.ping(ctxT(t)) }()
	c.reply(c.expect("ping"), nil)
	if err := <-pingDone; err != nil {
		t.Errorf("ping after the blob errors: %v", err)
	}

	// A chunk outside of start/stop breaks the protocol: the connection
	// is closed.
	res = loadBlobAsync(s, t, 1, 0x10)
	m = c.expect("sendBlob")
	c.send("receiveBlobChunk", m.args.(tuple)[0], m.args.(tuple)[1], []byte("x"))
	var derr *DisconnectedError
	if r := <-res; !errors.As(r.err, &derr) || !errors.As(r.err, &perr) {
		t.Errorf("chunk before receiveBlobStart: %v, want DisconnectedError from a ProtocolError", r.err)
	}
	c.expectEOF()
}

// errReader returns its data, then err.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestStoreBlob(t *testing.T) {
	for _, letter := range []byte{'Z', 'M'} {
		t.Run(string(letter), func(t *testing.T) { testStoreBlob(t, letter) })
	}
}

func testStoreBlob(t *testing.T, letter byte) {
	ss := newScriptServer(t, "tcp", "127.0.0.1:0", letter)
	ch := openAsync(t, ss.url(), &zodb.DriverOptions{})
	c := ss.accept()
	c.register(0x10)
	s := mustStorage(t, ch)
	record := []byte("blob record")

	begin := func() (zodb.IBlobTxn, int64) {
		t.Helper()
		txn, err := s.Begin(ctxT(t), zodb.TxnMeta{})
		if err != nil {
			t.Fatal(err)
		}
		m := c.expect("tpc_begin")
		return txn.(zodb.IBlobTxn), mustInt(m.args.(tuple)[0])
	}
	expectUpload := func(id int64, oid zodb.Oid, serial zodb.Tid, chunks ...[]byte) {
		t.Helper()
		args := tuple{oid.Bytes(), serial.Bytes(), record, id}
		if m := c.expect("storea"); !equalValue(m.args, args) {
			t.Errorf("storea%s, want %s", formatValue(m.args), formatValue(args))
		}
		if m := c.expect("storeBlobStart"); !equalValue(m.args, tuple{}) {
			t.Errorf("storeBlobStart%s, want ()", formatValue(m.args))
		}
		for i, want := range chunks {
			if m := c.expect("storeBlobChunk"); !equalValue(m.args, tuple{want}) {
				t.Errorf("chunk %d: %d bytes, want %d", i, len(m.args.(tuple)[0].([]byte)), len(want))
			}
		}
		if m := c.expect("storeBlobEnd"); !equalValue(m.args, args) {
			t.Errorf("storeBlobEnd%s, want %s", formatValue(m.args), formatValue(args))
		}
	}

	// An empty blob has no chunks; a large one is cut in chunks of
	// 59000 bytes whatever the reads return; Vote and Finish as usual.
	txn, id := begin()
	big := randBytes(3, 2*blobChunkSize+12000)
	go func() {
		if err := txn.StoreBlob(ctxT(t), 5, 0, record, bytes.NewReader(nil)); err != nil {
			t.Error(err)
		}
		if err := txn.StoreBlob(ctxT(t), 6, 0x0f, record, &trickle{b: big, n: 7000}); err != nil {
			t.Error(err)
		}
	}()
	expectUpload(id, 5, 0)
	expectUpload(id, 6, 0x0f, big[:blobChunkSize], big[blobChunkSize:2*blobChunkSize], big[2*blobChunkSize:])
	done := make(chan error, 1)
	go func() {
		itxn := txn.(zodb.ITxn)
		_, err := itxn.Vote(ctxT(t))
		if err == nil {
			_, err = itxn.Finish(ctxT(t))
		}
		done <- err
	}()
	c.reply(c.expect("vote"), tuple{})
	c.reply(c.expect("tpc_finish"), zodb.Tid(0x20).Bytes())
	if err := <-done; err != nil {
		t.Fatalf("commit: %v", err)
	}

	// A reader failing midway fails the transaction; the server drops
	// what it got at tpc_abort.
	txn, id = begin()
	readErr := fmt.Errorf("disk on fire")
	go func() {
		err := txn.StoreBlob(ctxT(t), 7, 0, record, &errReader{data: big[:blobChunkSize+10], err: readErr})
		if !errors.Is(err, readErr) {
			t.Errorf("StoreBlob with a failing reader: %v, want %v", err, readErr)
		}
		var te *zodb.TransactionError
		if _, err := txn.(zodb.ITxn).Vote(ctxT(t)); !errors.As(err, &te) {
			t.Errorf("vote after a failed StoreBlob: %v, want TransactionError", err)
		}
		done <- txn.(zodb.ITxn).Abort(ctxT(t))
	}()
	c.expect("storea")
	c.expect("storeBlobStart")
	c.expect("storeBlobChunk")
	if m := c.expect("tpc_abort"); mustInt(m.args.(tuple)[0]) != id {
		t.Errorf("tpc_abort%s, want transaction %d", formatValue(m.args), id)
	} else {
		c.reply(m, nil)
	}
	if err := <-done; err != nil {
		t.Errorf("abort: %v", err)
	}
}

// Blobs end to end through two clients of the in-test server.
func TestBlobsOverWire(t *testing.T) {
	for _, letter := range []byte{'Z', 'M'} {
		t.Run(string(letter), func(t *testing.T) { testBlobsOverWire(t, letter) })
	}
}

func testBlobsOverWire(t *testing.T, letter byte) {
	defer func(n int) { blobSpoolMax = n }(blobSpoolMax)
	blobSpoolMax = 100_000

	srv := startTestServer(t, letter)
	openS := func() *Storage {
		u, _ := url.Parse(srv.url())
		drv, _, err := open(ctxT(t), u, &zodb.DriverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { drv.Close() })
		return drv.(*Storage)
	}
	a, b := openS(), openS()
	ctx := ctxT(t)
	record := []byte("\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N.")

	commit := func(s *Storage, abort bool, blobs map[zodb.Oid][]byte, serials map[zodb.Oid]zodb.Tid) zodb.Tid {
		t.Helper()
		txn, err := s.Begin(ctx, zodb.TxnMeta{})
		if err != nil {
			t.Fatal(err)
		}
		for oid, blob := range blobs {
			if err := txn.(zodb.IBlobTxn).StoreBlob(ctx, oid, serials[oid], record, bytes.NewReader(blob)); err != nil {
				t.Fatal(err)
			}
		}
		if abort {
			if err := txn.Abort(ctx); err != nil {
				t.Fatal(err)
			}
			return 0
		}
		if _, err := txn.Vote(ctx); err != nil {
			t.Fatal(err)
		}
		tid, err := txn.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tid
	}
	load := func(s *Storage, oid zodb.Oid, serial zodb.Tid) ([]byte, error) {
		rc, err := s.LoadBlob(ctx, oid, serial)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}

	oids, err := a.NewOids(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	v1 := map[zodb.Oid][]byte{oids[0]: randBytes(10, 0), oids[1]: randBytes(11, 1000), oids[2]: randBytes(12, 3*blobChunkSize+5)}
	tid1 := commit(a, false, v1, nil)
	v2 := map[zodb.Oid][]byte{oids[2]: randBytes(13, 70_000)}
	tid2 := commit(a, false, v2, map[zodb.Oid]zodb.Tid{oids[2]: tid1})
	// An aborted transaction's blob is gone with it.
	nblobs := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.blobs)
	}
	before := nblobs()
	commit(a, true, map[zodb.Oid][]byte{oids[1]: []byte("aborted")}, map[zodb.Oid]zodb.Tid{oids[1]: tid1})
	if n := nblobs(); n != before {
		t.Errorf("server holds %d blobs after an aborted transaction, want %d", n, before)
	}

	// Every revision from the other client, concurrently, twice each.
	type rev struct {
		oid  zodb.Oid
		tid  zodb.Tid
		want []byte
	}
	var revs []rev
	for oid, blob := range v1 {
		revs = append(revs, rev{oid, tid1, blob})
	}
	revs = append(revs, rev{oids[2], tid2, v2[oids[2]]})
	errc := make(chan error, 2*len(revs))
	for range 2 {
		for _, r := range revs {
			go func() {
				got, err := load(b, r.oid, r.tid)
				if err == nil && !bytes.Equal(got, r.want) {
					err = fmt.Errorf("%v@%v: %d bytes, want %d", r.oid, r.tid, len(got), len(r.want))
				}
				errc <- err
			}()
		}
	}
	for range 2 * len(revs) {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}

	// No blob at a revision that has none.
	var e *zodb.NoBlobError
	if _, err := load(b, oids[1], tid2); !errors.As(err, &e) || e.Oid != oids[1] || e.Serial != tid2 {
		t.Errorf("LoadBlob of a revision without blob: %v, want NoBlobError", err)
	}
	// The record is an ordinary object revision.
	data, serial, _, err := b.Load(ctx, zodb.Xid{Oid: oids[2], At: zodb.TidMax})
	if err != nil || serial != tid2 || !bytes.Equal(data, record) {
		t.Errorf("Load of the blob object: %q %v %v", data, serial, err)
	}
}
