package zeo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/neozodb/neo/zodb"
	_ "github.com/neozodb/neo/zodb/storage/mem"
	"github.com/neozodb/neo/zodb/storagetest"
)

// A small ZEO server over a mem:// storage, in the test only: it lets the
// conformance suite run over the wire without Python. It follows the
// server's protocol as the spec and the recordings show it (one-way
// transaction calls logged until vote, a commit lock from vote to
// finish/abort, invalidations to the other connections, getInvalidations
// from a queue, conflicts handed back to the client as with the server
// option client-conflict-resolution, blobs uploaded and streamed in
// chunks and kept in a map beside the mem storage), and nothing more. The real server
// is exercised by the transcripts (TestReplay) and by TestConformance with
// ZEO_SERVER.

type testServer struct {
	t      testing.TB
	ln     net.Listener
	letter byte
	stor   *zodb.Storage

	commitLock sync.Mutex

	mu    sync.Mutex
	conns map[*tsConn]bool
	invq  []zodb.CommitEvent // committed transactions, for getInvalidations
	blobs map[string][]byte  // committed blobs by oid+tid bytes (mem keeps none)
	first zodb.Tid           // getInvalidations knows changes after this tid
	wg    sync.WaitGroup
}

type tsConn struct {
	srv *testServer
	nc  net.Conn
	cd  codec
	wmu sync.Mutex

	txnID   any
	log     []tuple // one-way calls of the open transaction
	meta    zodb.TxnMeta
	txn     zodb.ITxn // between vote and finish/abort
	changed []zodb.Oid
	iters   map[int64]zodb.ITxnIterator
	recs    map[int64]zodb.IDataIterator
	nextIID int64

	blobUp   []byte              // blob being uploaded (storeBlobStart..End)
	txnBlobs map[zodb.Oid][]byte // blobs of the open transaction
}

var memSeq atomic.Int64

func startTestServer(t testing.TB, letter byte) *testServer {
	// The server resolves conflicts itself, as a ZEO server does for
	// classes it can import.
	stor, err := zodb.Open(context.Background(), fmt.Sprintf("mem://zeotest%d", memSeq.Add(1)), &zodb.OpenOptions{Resolver: storagetest.CounterResolver})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, ln: ln, letter: letter, stor: stor, conns: map[*tsConn]bool{}, blobs: map[string][]byte{}}
	s.first, _ = stor.LastTid(context.Background())
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		stor.Close()
	})
	return s
}

func (s *testServer) url() string { return "zeo://" + s.ln.Addr().String() }

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &tsConn{srv: s, nc: nc, iters: map[int64]zodb.ITxnIterator{}, recs: map[int64]zodb.IDataIterator{}}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.serve()
			c.abortTxn()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			nc.Close()
		}()
	}
}

func (c *tsConn) write(v any) error {
	p, err := c.cd.encode(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.nc.Write(appendFrame(nil, p))
	return err
}

func (c *tsConn) serve() {
	fr := &frameReader{r: c.nc}
	if _, err := c.nc.Write(appendFrame(nil, []byte{c.srv.letter, '5'})); err != nil {
		return
	}
	hs, err := fr.readFrame()
	if err != nil || len(hs) != 2 || hs[1] != '5' {
		return
	}
	var ok bool
	if c.cd, ok = codecFor(hs[0]); !ok {
		return
	}
	for {
		p, err := fr.readFrame()
		if err != nil {
			return
		}
		v, err := c.cd.decode(p)
		if err != nil {
			return
		}
		m, err := msgFromValue(v)
		if err != nil {
			return
		}
		if equalValue(m.id, int64(-1)) {
			continue // heartbeat
		}
		args, _ := m.args.(tuple)
		res, err := c.handle(m.method, args)
		if m.flag == true { // one-way
			if err != nil {
				return // as ZEO: a failing one-way call closes the connection
			}
			continue
		}
		if err != nil {
			cls, details := exceptionOf(err)
			err = c.write(tuple{m.id, int64(2), ".reply", tuple{cls, details}})
		} else {
			err = c.write(tuple{m.id, int64(0), ".reply", res})
		}
		if err != nil {
			return
		}
	}
}

// exceptionOf is what ZEO's server sends for an error.
func exceptionOf(err error) (string, any) {
	var noobj *zodb.NoObjectError
	var nodata *zodb.NoDataError
	var cerr *zodb.ConflictError
	var rerr *zodb.ReadConflictError
	var uerr *zodb.UndoError
	var terr *zodb.TransactionError
	var berr *zodb.NoBlobError
	switch {
	case errors.As(err, &berr):
		return posException + "POSKeyError", tuple{"No blob file", berr.Oid.Bytes(), berr.Serial.Bytes()}
	case errors.As(err, &noobj):
		return posException + "POSKeyError", tuple{noobj.Oid.Bytes()}
	case errors.As(err, &nodata):
		return posException + "POSKeyError", tuple{nodata.Oid.Bytes()}
	case errors.As(err, &rerr):
		return posException + "ReadConflictError", &dict{items: []kv{{"oid", rerr.Oid.Bytes()}, {"serials", tuple{rerr.CommittedSerial.Bytes(), rerr.ReadSerial.Bytes()}}}}
	case errors.As(err, &cerr):
		return posException + "ConflictError", &dict{items: []kv{{"oid", cerr.Oid.Bytes()}, {"serials", tuple{cerr.CommittedSerial.Bytes(), cerr.ReadSerial.Bytes()}}}}
	case errors.As(err, &uerr):
		return posException + "UndoError", &dict{items: []kv{{"_reason", uerr.Reason}, {"_oid", uerr.Oid.Bytes()}}}
	case errors.As(err, &terr):
		return posException + "StorageTransactionError", tuple{terr.Msg}
	case errors.Is(err, zodb.ErrReadOnly):
		return posException + "ReadOnlyError", tuple{}
	}
	return "builtins.Exception", tuple{err.Error()}
}

func tidOrNone(tid zodb.Tid) any {
	if tid == 0 {
		return nil
	}
	return tid.Bytes()
}

func (c *tsConn) others(fn func(o *tsConn)) {
	c.srv.mu.Lock()
	var os []*tsConn
	for o := range c.srv.conns {
		if o != c {
			os = append(os, o)
		}
	}
	c.srv.mu.Unlock()
	for _, o := range os {
		fn(o)
	}
}

func (c *tsConn) abortTxn() {
	if c.txn != nil {
		c.txn.Abort(context.Background())
		c.txn = nil
		c.srv.commitLock.Unlock()
	}
	c.txnID, c.log, c.txnBlobs = nil, nil, nil
}

func (c *tsConn) handle(method string, a tuple) (res any, err error) {
	defer func() {
		if r := recover(); r != nil { // a bad argument in the test server
			err = fmt.Errorf("%s: %v", method, r)
		}
	}()
	ctx := context.Background()
	st := c.srv.stor
	switch method {
	case "register":
		tid, err := st.LastTid(ctx)
		return tid.Bytes(), err
	case "get_info":
		return &dict{items: []kv{{"name", "mem"}, {"supportsUndo", true}}}, nil
	case "lastTransaction":
		tid, err := st.LastTid(ctx)
		return tid.Bytes(), err
	case "ping", "set_client_label", "iterator_gc":
		return nil, nil
	case "new_oids":
		oids, err := st.NewOids(ctx, 100)
		if err != nil {
			return nil, err
		}
		l := &list{}
		for _, o := range oids {
			l.items = append(l.items, o.Bytes())
		}
		return l, nil
	case "loadBefore":
		before := mustTid(a[1])
		data, serial, next, err := st.Load(ctx, zodb.Xid{Oid: mustOid(a[0]), At: before - 1})
		var nodata *zodb.NoDataError
		if errors.As(err, &nodata) && nodata.DeletedAt == 0 {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return tuple{data, serial.Bytes(), tidOrNone(next)}, nil
	case "loadSerial":
		serial := mustTid(a[1])
		data, got, _, err := st.Load(ctx, zodb.Xid{Oid: mustOid(a[0]), At: serial})
		if err == nil && got != serial {
			err = &zodb.NoObjectError{Oid: mustOid(a[0])}
		}
		return data, err
	case "history":
		h, err := st.History(ctx, mustOid(a[0]), int(mustInt(a[1])))
		if err != nil {
			return nil, err
		}
		l := &list{}
		for _, e := range h {
			d, err := decodeExtension(e.Extension)
			if err != nil {
				return nil, err
			}
			d.items = append(d.items, kv{"time", e.Tid.UnixTime()}, kv{"user_name", e.User}, kv{"description", e.Description},
				kv{"tid", e.Tid.Bytes()}, kv{"size", int64(e.Size)})
			l.items = append(l.items, d)
		}
		return l, nil
	case "undoLog":
		u, err := st.UndoLog(ctx, int(mustInt(a[0])), int(mustInt(a[1])), nil)
		if err != nil {
			return nil, err
		}
		l := &list{}
		for _, e := range u {
			d := &dict{items: []kv{{"id", undoID(e.Tid)}, {"time", e.Tid.UnixTime()}, {"user_name", e.User}, {"size", e.Size}, {"description", e.Description}}}
			ext, err := decodeExtension(e.Extension)
			if err != nil {
				return nil, err
			}
			d.items = append(d.items, ext.items...)
			l.items = append(l.items, d)
		}
		return l, nil
	case "pack":
		t := a[0].(float64)
		return nil, st.Pack(ctx, zodb.TidFromUnix(t), true)
	case "getInvalidations":
		after := mustTid(a[0])
		c.srv.mu.Lock()
		defer c.srv.mu.Unlock()
		if after < c.srv.first {
			return nil, nil
		}
		var last zodb.Tid
		seen := map[zodb.Oid]bool{}
		l := &list{}
		for _, ev := range c.srv.invq {
			if ev.Tid > after {
				last = ev.Tid
				for _, o := range ev.Changed {
					if !seen[o] {
						seen[o] = true
						l.items = append(l.items, o.Bytes())
					}
				}
			}
		}
		if last == 0 {
			last = after
		}
		return tuple{last.Bytes(), l}, nil

	case "tpc_begin":
		if c.txnID != nil {
			if equalValue(c.txnID, a[0]) {
				return nil, nil
			}
			return nil, errors.New("second tpc_begin")
		}
		ext, _ := a[3].(*dict)
		e, err := encodeExtension(ext)
		if err != nil {
			return nil, err
		}
		c.txnID = a[0]
		c.meta = zodb.TxnMeta{User: a[1].([]byte), Description: a[2].([]byte), Extension: e}
		if a[4] != nil {
			c.meta.Tid = mustTid(a[4])
		}
		if s := a[5].(string); s != " " {
			c.meta.Status = zodb.TxnStatus(s[0])
		}
		return nil, nil
	case "storea", "deleteObject", "checkCurrentSerialInTransaction", "restorea", "undoa":
		if !equalValue(c.txnID, a[len(a)-1]) {
			return nil, errors.New("one-way call for another transaction")
		}
		c.log = append(c.log, append(tuple{method}, a...))
		return nil, nil
	case "storeBlobStart":
		c.blobUp = []byte{}
		return nil, nil
	case "storeBlobChunk":
		if c.blobUp == nil {
			return nil, errors.New("storeBlobChunk without storeBlobStart")
		}
		c.blobUp = append(c.blobUp, a[0].([]byte)...)
		return nil, nil
	case "storeBlobEnd":
		if c.blobUp == nil || !equalValue(c.txnID, a[3]) {
			return nil, errors.New("storeBlobEnd without storeBlobStart or for another transaction")
		}
		if c.txnBlobs == nil {
			c.txnBlobs = map[zodb.Oid][]byte{}
		}
		c.txnBlobs[mustOid(a[0])] = c.blobUp
		c.blobUp = nil
		return nil, nil
	case "sendBlob":
		c.srv.mu.Lock()
		blob, ok := c.srv.blobs[string(a[0].([]byte))+string(a[1].([]byte))]
		c.srv.mu.Unlock()
		if !ok {
			return nil, &zodb.NoBlobError{Oid: mustOid(a[0]), Serial: mustTid(a[1])}
		}
		c.write(tuple{int64(0), true, "receiveBlobStart", tuple{a[0], a[1]}})
		for len(blob) > 0 {
			n := min(len(blob), blobChunkSize)
			c.write(tuple{int64(0), true, "receiveBlobChunk", tuple{a[0], a[1], blob[:n]}})
			blob = blob[n:]
		}
		c.write(tuple{int64(0), true, "receiveBlobStop", tuple{a[0], a[1]}})
		return nil, nil
	case "vote":
		if c.txnID == nil || !equalValue(c.txnID, a[0]) {
			return nil, &zodb.TransactionError{Msg: "vote: not the current transaction"}
		}
		return c.vote(ctx)
	case "tpc_finish":
		if c.txn == nil || !equalValue(c.txnID, a[0]) {
			return nil, &zodb.TransactionError{Msg: "tpc_finish without vote"}
		}
		tid, err := c.txn.Finish(ctx)
		blobs := c.txnBlobs
		c.txn = nil
		c.txnID, c.log, c.txnBlobs = nil, nil, nil
		if err != nil {
			c.srv.commitLock.Unlock()
			return nil, err
		}
		changed := c.changed
		c.srv.mu.Lock()
		for oid, b := range blobs {
			c.srv.blobs[string(oid.Bytes())+string(tid.Bytes())] = b
		}
		c.srv.invq = append(c.srv.invq, zodb.CommitEvent{Tid: tid, Changed: changed})
		c.srv.mu.Unlock()
		c.write(tuple{int64(0), true, "info", tuple{&dict{}}})
		// The other clients hear of it before the lock is released.
		l := &list{}
		for _, o := range changed {
			l.items = append(l.items, o.Bytes())
		}
		c.others(func(o *tsConn) { o.write(tuple{int64(0), true, "invalidateTransaction", tuple{tid.Bytes(), l}}) })
		// The reply goes out after the invalidations are queued, then
		// the lock is released.
		defer c.srv.commitLock.Unlock()
		return tid.Bytes(), nil
	case "tpc_abort":
		c.abortTxn()
		return nil, nil
	case "iterator_start":
		var lo, hi zodb.Tid = 0, zodb.TidMax
		if a[0] != nil {
			lo = mustTid(a[0])
		}
		if a[1] != nil {
			hi = mustTid(a[1])
		}
		id := c.nextIID
		c.nextIID++
		c.iters[id] = st.Iterate(ctx, lo, hi)
		return id, nil
	case "iterator_next":
		id := mustInt(a[0])
		it := c.iters[id]
		if it == nil {
			return nil, fmt.Errorf("KeyError %d", id)
		}
		info, di, err := it.NextTxn(ctx)
		if err == io.EOF {
			delete(c.iters, id)
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		c.recs[id] = di
		ext, err := decodeExtension(info.Extension)
		if err != nil {
			return nil, err
		}
		return tuple{info.Tid.Bytes(), string(rune(info.Status)), info.User, info.Description, ext}, nil
	case "iterator_record_start":
		di := c.recs[mustInt(a[0])]
		if di == nil {
			return nil, errors.New("KeyError")
		}
		id := c.nextIID
		c.nextIID++
		c.recs[id] = di
		return id, nil
	case "iterator_record_next":
		di := c.recs[mustInt(a[0])]
		if di == nil {
			return nil, errors.New("KeyError")
		}
		rec, err := di.NextData(ctx)
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var data any
		if rec.Data != nil {
			data = rec.Data
		}
		return tuple{rec.Oid.Bytes(), rec.Tid.Bytes(), data, tidOrNone(rec.DataTid)}, nil
	}
	return nil, fmt.Errorf("unknown method %s", method)
}

// vote takes the commit lock, replays the logged calls into the storage
// and votes. A write conflict is handed back to the client as a conflict
// dict (client-conflict-resolution); the client stores again and votes
// again.
func (c *tsConn) vote(ctx context.Context) (any, error) {
	c.srv.commitLock.Lock()
	unlock := true
	defer func() {
		if unlock {
			c.srv.commitLock.Unlock()
		}
	}()
	txn, err := c.srv.stor.Begin(ctx, c.meta)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (any, error) {
		txn.Abort(ctx)
		var cerr *zodb.ConflictError
		if errors.As(err, &cerr) {
			for i := len(c.log) - 1; i >= 0; i-- {
				op := c.log[i]
				if op[0] == "storea" && mustOid(op[1]) == cerr.Oid {
					return newList(&dict{items: []kv{{"oid", op[1]}, {"serials", tuple{cerr.CommittedSerial.Bytes(), cerr.ReadSerial.Bytes()}}, {"data", op[3]}}}), nil
				}
			}
		}
		c.txnID, c.log, c.txnBlobs = nil, nil, nil
		return nil, err
	}
	changed := []zodb.Oid{}
	seen := map[zodb.Oid]bool{}
	note := func(o zodb.Oid) {
		if !seen[o] {
			seen[o] = true
			changed = append(changed, o)
		}
	}
	// The latest store of each oid wins (a re-store after a conflict).
	last := map[zodb.Oid]int{}
	for i, op := range c.log {
		if op[0] == "storea" {
			last[mustOid(op[1])] = i
		}
	}
	var result []any
	for i, op := range c.log {
		var err error
		switch op[0] {
		case "storea":
			if last[mustOid(op[1])] != i {
				continue
			}
			err = txn.Store(ctx, mustOid(op[1]), mustTid(op[2]), op[3].([]byte))
			note(mustOid(op[1]))
		case "deleteObject":
			err = txn.Delete(ctx, mustOid(op[1]), mustTid(op[2]))
			note(mustOid(op[1]))
		case "checkCurrentSerialInTransaction":
			err = txn.CheckCurrentSerial(ctx, mustOid(op[1]), mustTid(op[2]))
		case "restorea":
			var data []byte
			if op[3] != nil {
				data = op[3].([]byte)
			}
			var prev zodb.Tid
			if op[4] != nil {
				prev = mustTid(op[4])
			}
			err = txn.Restore(ctx, mustOid(op[1]), data, prev)
			note(mustOid(op[1]))
		case "undoa":
			var tid zodb.Tid
			if tid, err = tidFromUndoID(op[1]); err == nil {
				var oids []zodb.Oid
				oids, err = txn.Undo(ctx, tid)
				for _, o := range oids {
					note(o)
					result = append(result, o.Bytes())
				}
			}
		}
		if err != nil {
			return fail(err)
		}
	}
	resolved, err := txn.Vote(ctx)
	if err != nil {
		return fail(err)
	}
	for _, o := range resolved {
		result = append(result, o.Bytes())
	}
	c.txn = txn
	c.changed = changed
	unlock = false
	return &list{items: result}, nil
}

// TestConformanceOverWire runs the conformance suite through our client
// against the test server, in both encodings.
//
// It is not part of the default run: some subtests fail on differences
// the ZEO protocol itself imposes, the same with a real server:
//   - Metadata, Iterate, UndoLog: a transaction's extension travels as a
//     dict, so the extension bytes come back re-pickled, not as stored;
//   - Delete, Restore, Undo: a revision that deletes an object is reported
//     as POSKeyError (*zodb.NoObjectError), not *zodb.NoDataError;
//   - Undo: the objects an undo changes are known only at vote.
//
// Everything else passes; run it with ZEO_TEST_SUITE_OVER_WIRE=1.
func TestConformanceOverWire(t *testing.T) {
	if os.Getenv("ZEO_TEST_SUITE_OVER_WIRE") == "" {
		t.Skip("set ZEO_TEST_SUITE_OVER_WIRE=1 to run the conformance suite against the in-test ZEO server " +
			"(known failures from ZEO's protocol: extension bytes, deletions as POSKeyError, undo oids at vote; see the doc comment)")
	}
	for _, letter := range []byte{'Z', 'M'} {
		t.Run(string(letter), func(t *testing.T) {
			storagetest.Run(t, func(t testing.TB) string {
				return startTestServer(t, letter).url()
			}, storagetest.SharedHandles())
		})
	}
}
