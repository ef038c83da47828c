package zeo

// Blobs over ZEO, as ZEO's ClientStorage does without a shared blob
// directory.
//
// Upload, within a transaction (all one-way):
//
//	storea(oid, serial, data, txn)
//	storeBlobStart()
//	storeBlobChunk(bytes)            ≤ blobChunkSize bytes each, none for an empty blob
//	storeBlobEnd(oid, serial, data, txn)
//
// Download: sendBlob(oid, serial) → None; before the reply the server
// sends, one-way, receiveBlobStart(oid, serial), receiveBlobChunk(oid,
// serial, bytes)…, receiveBlobStop(oid, serial).
//
// There is no client blob cache (as there is no object cache): ZEO's
// blob_dir has no counterpart, and every LoadBlob downloads the blob. The
// download is buffered in memory up to blobSpoolMax bytes and beyond that
// in a temporary file (os.TempDir), removed when the reader is closed.
// Blobs stored in a transaction are not kept by the client at all: the
// server holds them until the transaction commits or aborts.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/neozodb/neo/zodb"
)

var _ zodb.IBlobTxn = (*txn)(nil)

// blobChunkSize is the size of the chunks ZEO's client and server cut
// blobs into.
const blobChunkSize = 59000

// blobSpoolMax is how much of a downloaded blob is kept in memory before
// it goes to a temporary file.
var blobSpoolMax = 1 << 20

// StoreBlob stores the blob object oid: storea with its record, then the
// content of blob in chunks (storeBlobStart, storeBlobChunk…,
// storeBlobEnd). Like Store, conflicts show at Vote. If reading blob
// fails, or ctx is done midway, the transaction fails: abort it.
func (t *txn) StoreBlob(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte, blob io.Reader) error {
	if blob == nil {
		return t.opErr("storeBlob", oid, errors.New("no blob content (nil reader)"))
	}
	if data == nil {
		data = []byte{}
	}
	if err := t.checkOpen("storeBlob"); err != nil {
		return t.opErr("storeBlob", oid, err)
	}
	fail := func(err error) error {
		t.mu.Lock()
		t.state = txnFailed
		t.mu.Unlock()
		return t.opErr("storeBlob", oid, err)
	}
	if err := t.c.async("storea", tuple{oid.Bytes(), serial.Bytes(), data, t.id}); err != nil {
		return fail(err)
	}
	t.noteChanged(oid)
	if err := t.c.async("storeBlobStart", tuple{}); err != nil {
		return fail(err)
	}
	buf := make([]byte, blobChunkSize)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return fail(fmt.Errorf("after %d bytes of blob: %w", total, err))
		}
		n, rerr := io.ReadFull(blob, buf)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return fail(fmt.Errorf("read blob after %d bytes: %w", total+int64(n), rerr))
		}
		if n > 0 {
			// The message is encoded before async returns: buf
			// can be reused.
			if err := t.c.async("storeBlobChunk", tuple{buf[:n]}); err != nil {
				return fail(err)
			}
			total += int64(n)
		}
		if rerr != nil {
			break
		}
	}
	if err := t.c.async("storeBlobEnd", tuple{oid.Bytes(), serial.Bytes(), data, t.id}); err != nil {
		return fail(err)
	}
	return nil
}

// blobKey names one blob revision in messages.
func blobKey(oid, serial []byte) string { return string(oid) + string(serial) }

// blobRecv collects one blob the server streams before its reply to
// sendBlob. The reader goroutine writes to it; the caller of LoadBlob
// takes it over once the reply came, or discards it.
type blobRecv struct {
	mu      sync.Mutex
	sp      spool
	started bool
	stopped bool
	err     error         // first error writing the content
	dropped bool          // the caller gave up or took the content: ignore what comes
	done    chan struct{} // closed when the download is over

	// guarded by conn.mu
	abandoned bool  // the caller gave up before the reply
	cl        *call // its sendBlob call, once abandoned
}

// blobMessage handles receiveBlobStart/Chunk/Stop from the server.
func (c *conn) blobMessage(m *msg) error {
	args, _ := m.args.(tuple)
	want := 2
	if m.method == "receiveBlobChunk" {
		want = 3
	}
	if len(args) != want {
		return fmt.Errorf("%s: bad arguments %.200s", m.method, formatValue(m.args))
	}
	oid, ok1 := args[0].([]byte)
	serial, ok2 := args[1].([]byte)
	if !ok1 || !ok2 || len(oid) != 8 || len(serial) != 8 {
		return fmt.Errorf("%s: bad oid or serial %.200s", m.method, formatValue(m.args))
	}
	var chunk []byte
	if want == 3 {
		var ok bool
		if chunk, ok = args[2].([]byte); !ok {
			return fmt.Errorf("%s: chunk is %.100s", m.method, formatValue(args[2]))
		}
	}
	c.mu.Lock()
	br := c.blobs[blobKey(oid, serial)]
	c.mu.Unlock()
	if br == nil {
		c.s.log.Debug("zeo: blob data nobody waits for", "addr", c.s.addr, "method", m.method)
		return nil
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.dropped {
		return nil
	}
	switch m.method {
	case "receiveBlobStart":
		if br.started {
			return fmt.Errorf("receiveBlobStart twice for %x@%x", oid, serial)
		}
		br.started = true
	case "receiveBlobChunk":
		if !br.started || br.stopped {
			return fmt.Errorf("receiveBlobChunk outside of receiveBlobStart/Stop for %x@%x", oid, serial)
		}
		if br.err == nil {
			br.err = br.sp.write(chunk)
		}
	case "receiveBlobStop":
		if !br.started || br.stopped {
			return fmt.Errorf("receiveBlobStop without receiveBlobStart for %x@%x", oid, serial)
		}
		br.stopped = true
	}
	return nil
}

// drop discards what was received.
func (br *blobRecv) drop() {
	br.mu.Lock()
	defer br.mu.Unlock()
	br.dropped = true
	br.sp.discard()
}

// LoadBlob downloads the blob of oid@serial (sendBlob). The content is
// buffered before LoadBlob returns (see the package's blob notes); the
// reader must be closed.
func (s *Storage) LoadBlob(ctx context.Context, oid zodb.Oid, serial zodb.Tid) (io.ReadCloser, error) {
	xid := zodb.Xid{Oid: oid, At: serial}
	if s.isClosed() {
		return nil, s.opErr("loadBlob", xid, zodb.ErrClosed)
	}
	rc, err := s.loadBlob(ctx, oid, serial)
	return rc, s.opErr("loadBlob", xid, err)
}

func (s *Storage) loadBlob(ctx context.Context, oid zodb.Oid, serial zodb.Tid) (io.ReadCloser, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	key := blobKey(oid.Bytes(), serial.Bytes())
	br := &blobRecv{done: make(chan struct{})}
	// One download of a given blob at a time on a connection: the
	// server's messages name the blob, not the call.
	for {
		c.mu.Lock()
		busy := c.blobs[key]
		if busy == nil {
			if c.blobs == nil {
				c.blobs = map[string]*blobRecv{}
			}
			c.blobs[key] = br
			c.mu.Unlock()
			break
		}
		wait := busy.done
		if busy.abandoned {
			// Its messages may still come, until its reply.
			wait = busy.cl.done
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		if busy.abandoned && c.blobs[key] == busy && isDone(busy.cl.done) {
			delete(c.blobs, key)
		}
		c.mu.Unlock()
	}
	release := func() {
		c.mu.Lock()
		delete(c.blobs, key)
		c.mu.Unlock()
		close(br.done)
	}

	cl, _, err := c.start("sendBlob", tuple{oid.Bytes(), serial.Bytes()}, nil)
	if err != nil {
		release()
		return nil, err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		// The key stays taken until the reply (or the end of the
		// connection), so that the messages still to come do not mix
		// with a later download of the same blob; that download
		// releases it.
		br.drop()
		c.mu.Lock()
		br.cl, br.abandoned = cl, true
		c.mu.Unlock()
		close(br.done) // waiters now wait for the reply
		return nil, ctx.Err()
	}
	defer release()
	if err := cl.err; err != nil {
		br.drop()
		if isPOSKeyError(err) {
			return nil, &zodb.NoBlobError{Oid: oid, Serial: serial}
		}
		return nil, err
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	switch {
	case br.err != nil:
		br.dropped = true
		br.sp.discard()
		return nil, fmt.Errorf("buffer blob: %w", br.err)
	case !br.stopped:
		br.dropped = true
		br.sp.discard()
		return nil, &ProtocolError{Addr: s.addr, Err: fmt.Errorf("sendBlob(%v, %v) replied without sending the whole blob", oid, serial)}
	}
	br.dropped = true // taken over
	return br.sp.reader()
}

// isPOSKeyError tells whether err is the server's POSKeyError, which
// loadBlob raises for a missing blob file ("No blob file", oid, serial).
func isPOSKeyError(err error) bool {
	var noObj *zodb.NoObjectError
	if errors.As(err, &noObj) {
		return true
	}
	var se *ServerError
	return errors.As(err, &se) && se.Class == posException+"POSKeyError"
}

// spool holds bytes in memory up to blobSpoolMax, then in a temporary file.
type spool struct {
	mem []byte
	f   *os.File
}

func (sp *spool) write(p []byte) error {
	if sp.f == nil && len(sp.mem)+len(p) <= blobSpoolMax {
		sp.mem = append(sp.mem, p...)
		return nil
	}
	if sp.f == nil {
		f, err := os.CreateTemp("", "zeo-blob-*")
		if err != nil {
			return err
		}
		sp.f = f
		if _, err := f.Write(sp.mem); err != nil {
			return err
		}
		sp.mem = nil
	}
	_, err := sp.f.Write(p)
	return err
}

func (sp *spool) discard() {
	sp.mem = nil
	if sp.f != nil {
		sp.f.Close()
		os.Remove(sp.f.Name())
		sp.f = nil
	}
}

// reader hands the content over; the spool is empty afterwards.
func (sp *spool) reader() (io.ReadCloser, error) {
	if sp.f == nil {
		r := io.NopCloser(bytes.NewReader(sp.mem))
		sp.mem = nil
		return r, nil
	}
	f := sp.f
	sp.f = nil
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("buffer blob: %w", err)
	}
	return &tempFile{f}, nil
}

// tempFile is a temporary file removed when closed.
type tempFile struct{ f *os.File }

func (t *tempFile) Read(p []byte) (int, error) { return t.f.Read(p) }

func (t *tempFile) Close() error {
	err := t.f.Close()
	if rerr := os.Remove(t.f.Name()); err == nil {
		err = rerr
	}
	return err
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
