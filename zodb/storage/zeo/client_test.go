package zeo

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

// Tests of behaviour the recordings do not show, against a scripted server.

const testTimeout = 10 * time.Second

type scriptServer struct {
	t      *testing.T
	ln     net.Listener
	letter byte
}

type scriptConn struct {
	t  *testing.T
	nc net.Conn
	fr *frameReader
	cd codec
}

func newScriptServer(t *testing.T, network, addr string, letter byte) *scriptServer {
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &scriptServer{t: t, ln: ln, letter: letter}
}

// url is zeo://host:port, or zeo:///path for a Unix socket.
func (ss *scriptServer) url() string { return "zeo://" + ss.ln.Addr().String() }

// accept takes the next connection and does the server's handshake.
func (ss *scriptServer) accept() *scriptConn {
	ss.t.Helper()
	if tl, ok := ss.ln.(interface{ SetDeadline(time.Time) error }); ok {
		tl.SetDeadline(time.Now().Add(testTimeout))
	}
	nc, err := ss.ln.Accept()
	if err != nil {
		ss.t.Fatalf("accept: %v", err)
	}
	ss.t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(testTimeout))
	c := &scriptConn{t: ss.t, nc: nc, fr: &frameReader{r: nc}}
	c.cd, _ = codecFor(ss.letter)
	if _, err := nc.Write(appendFrame(nil, []byte{ss.letter, '5'})); err != nil {
		ss.t.Fatal(err)
	}
	hs, err := c.fr.readFrame()
	if err != nil || string(hs) != string([]byte{ss.letter, '5'}) {
		ss.t.Fatalf("client handshake %q, %v", hs, err)
	}
	return c
}

func (c *scriptConn) recv() *msg {
	c.t.Helper()
	p, err := c.fr.readFrame()
	if err != nil {
		c.t.Fatalf("server: read: %v", err)
	}
	v, err := c.cd.decode(p)
	if err != nil {
		c.t.Fatalf("server: %v", err)
	}
	m, err := msgFromValue(v)
	if err != nil {
		c.t.Fatalf("server: %v", err)
	}
	return m
}

func (c *scriptConn) expect(method string) *msg {
	c.t.Helper()
	m := c.recv()
	if m.method != method {
		c.t.Fatalf("server: got %s%s, want %s", m.method, formatValue(m.args), method)
	}
	return m
}

func (c *scriptConn) write(v any) {
	c.t.Helper()
	p, err := c.cd.encode(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.nc.Write(appendFrame(nil, p)); err != nil {
		c.t.Fatalf("server: write: %v", err)
	}
}

func (c *scriptConn) reply(m *msg, v any) { c.write(tuple{m.id, int64(0), ".reply", v}) }
func (c *scriptConn) replyError(m *msg, cls string, details any) {
	c.write(tuple{m.id, int64(2), ".reply", tuple{cls, details}})
}
func (c *scriptConn) send(method string, args ...any) {
	c.write(tuple{int64(0), true, method, tuple(args)})
}

// register serves register and get_info; it returns the register call.
func (c *scriptConn) register(last zodb.Tid) *msg {
	c.t.Helper()
	m := c.expect("register")
	c.reply(m, last.Bytes())
	c.reply(c.expect("get_info"), &dict{items: []kv{{"name", "test"}}})
	return m
}

func (c *scriptConn) expectEOF() {
	c.t.Helper()
	if p, err := c.fr.readFrame(); !errors.Is(err, io.EOF) {
		c.t.Fatalf("server: got %q, %v; want the client to close", p, err)
	}
}

// openAsync opens the storage at u while the script serves the connection.
func openAsync(t *testing.T, u string, opt *zodb.DriverOptions) <-chan *Storage {
	ch := make(chan *Storage, 1)
	go func() {
		pu, err := url.Parse(u)
		if err != nil {
			t.Error(err)
			ch <- nil
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		drv, _, err := open(ctx, pu, opt)
		if err != nil {
			t.Errorf("open %s: %v", u, err)
			ch <- nil
			return
		}
		ch <- drv.(*Storage)
	}()
	return ch
}

func mustStorage(t *testing.T, ch <-chan *Storage) *Storage {
	t.Helper()
	s := <-ch
	if s == nil {
		t.FailNow()
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url, network, addr, storage, label, err string
	}{
		{url: "zeo://localhost:8100", network: "tcp", addr: "localhost:8100", storage: "1"},
		{url: "zeo://127.0.0.1:8100?storage=main", network: "tcp", addr: "127.0.0.1:8100", storage: "main"},
		{url: "zeo://[::1]:8100/?client_label=x%20y", network: "tcp", addr: "[::1]:8100", storage: "1", label: "x y"},
		{url: "zeo:///run/zeo.sock?storage=2", network: "unix", addr: "/run/zeo.sock", storage: "2"},
		{url: "zeo://localhost", err: "missing port"},
		{url: "zeo://", err: "no address"},
		{url: "zeo://h:1?bogus=1", err: "unknown URL option"},
		{url: "zeo://h:1?blob_dir=/tmp/b", err: "keeps no blob directory"},
		{url: "zeo://h:1/path", err: "no path"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		network, addr, storage, label, err := parseURL(u)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil || network != tc.network || addr != tc.addr || storage != tc.storage || label != tc.label {
			t.Errorf("%s: %q %q %q %q %v", tc.url, network, addr, storage, label, err)
		}
	}
}

// TestUnixSocketAndOpen opens a server on a Unix socket through zodb.Open.
func TestUnixSocketAndOpen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "zeo.sock")
	ss := newScriptServer(t, "unix", sock, 'M')
	done := make(chan *zodb.Storage, 1)
	go func() {
		st, err := zodb.Open(ctxT(t), "zeo://"+sock+"?storage=main", &zodb.OpenOptions{ReadOnly: true})
		if err != nil {
			t.Errorf("open: %v", err)
		}
		done <- st
	}()
	c := ss.accept()
	reg := c.register(0x0300)
	if a := reg.args.(tuple); a[0] != "main" || a[1] != true {
		t.Errorf("register%s, want ('main', True)", formatValue(reg.args))
	}
	st := <-done
	if st == nil {
		t.FailNow()
	}
	tid, err := st.LastTid(ctxT(t))
	if err != nil || tid != 0x0300 {
		t.Errorf("LastTid = %v, %v", tid, err)
	}
	if _, err := st.Begin(ctxT(t), zodb.TxnMeta{}); !errors.Is(err, zodb.ErrReadOnly) {
		t.Errorf("Begin on a read-only storage: %v", err)
	}
	st.Close()
	c.expectEOF()
}

// TestOutOfOrderReplies: replies are matched by message id.
func TestOutOfOrderReplies(t *testing.T) {
	ss := newScriptServer(t, "tcp", "127.0.0.1:0", 'Z')
	ch := openAsync(t, ss.url(), &zodb.DriverOptions{})
	c := ss.accept()
	c.register(0x10)
	s := mustStorage(t, ch)

	type res struct {
		data []byte
		err  error
	}
	results := make([]chan res, 3)
	for i := range results {
		results[i] = make(chan res, 1)
		oid := zodb.Oid(i + 1)
		go func() {
			d, _, _, err := s.Load(ctxT(t), zodb.Xid{Oid: oid, At: 0x10})
			results[oid-1] <- res{d, err}
		}()
	}
	var calls []*msg
	for range results {
		calls = append(calls, c.expect("loadBefore"))
	}
	// Reply in reverse order, one of them an error.
	for i := len(calls) - 1; i >= 0; i-- {
		m := calls[i]
		oid := m.args.(tuple)[0].([]byte)
		if oid[7] == 2 {
			c.replyError(m, "ZODB.POSException.POSKeyError", tuple{oid})
			continue
		}
		c.reply(m, tuple{[]byte{'d', oid[7]}, zodb.Tid(0x10).Bytes(), nil})
	}
	for i, ch := range results {
		r := <-ch
		var nobj *zodb.NoObjectError
		switch {
		case i == 1:
			if !errors.As(r.err, &nobj) || nobj.Oid != 2 {
				t.Errorf("load oid 2: %v, want NoObjectError", r.err)
			}
		case r.err != nil || string(r.data) != string([]byte{'d', byte(i + 1)}):
			t.Errorf("load oid %d: %q, %v", i+1, r.data, r.err)
		}
	}
}

// TestProtocolErrorReconnects: a frame that does not decode closes the
// connection; the client reconnects, verifies, and goes on.
func TestProtocolErrorReconnects(t *testing.T) {
	for _, letter := range []byte{'Z', 'M'} {
		t.Run(string(letter), func(t *testing.T) {
			ss := newScriptServer(t, "tcp", "127.0.0.1:0", letter)
			watchq := make(chan zodb.Event, 10)
			ch := openAsync(t, ss.url(), &zodb.DriverOptions{Watchq: watchq})
			c := ss.accept()
			c.register(0x10)
			s := mustStorage(t, ch)

			loadErr := make(chan error, 1)
			go func() {
				_, _, _, err := s.Load(ctxT(t), zodb.Xid{Oid: 1, At: 0x10})
				loadErr <- err
			}()
			c.expect("loadBefore")
			if _, err := c.nc.Write(appendFrame(nil, []byte("\xc1garbage"))); err != nil {
				t.Fatal(err)
			}
			c.expectEOF()
			var derr *DisconnectedError
			var perr *ProtocolError
			if err := <-loadErr; !errors.As(err, &derr) || !errors.As(err, &perr) || !strings.Contains(err.Error(), "offset") {
				t.Errorf("load on the broken connection: %v, want a DisconnectedError with the ProtocolError", err)
			}

			// Reconnection: the server is ahead; getInvalidations tells
			// what changed, and an invalidation arriving meanwhile is
			// delivered after it.
			c2 := ss.accept()
			c2.reply(c2.expect("register"), zodb.Tid(0x30).Bytes())
			gi := c2.expect("getInvalidations")
			if a := gi.args.(tuple); !equalValue(a[0], zodb.Tid(0x10).Bytes()) {
				t.Errorf("getInvalidations%s, want the last tid 0x10", formatValue(gi.args))
			}
			c2.send("invalidateTransaction", zodb.Tid(0x40).Bytes(), newList(zodb.Oid(7).Bytes()))
			c2.reply(gi, tuple{zodb.Tid(0x30).Bytes(), newList(zodb.Oid(1).Bytes(), zodb.Oid(2).Bytes())})
			c2.reply(c2.expect("get_info"), &dict{})
			expectEvent(t, watchq, 0x30, 1, 2)
			expectEvent(t, watchq, 0x40, 7)
			lastTid(t, s, c2, 0x40)

			// A server behind us is refused; the client tries again.
			c2.nc.Close()
			c3 := ss.accept()
			c3.reply(c3.expect("register"), zodb.Tid(0x20).Bytes())
			c3.expectEOF()
			c4 := ss.accept()
			c4.reply(c4.expect("register"), zodb.Tid(0x40).Bytes())
			c4.reply(c4.expect("get_info"), &dict{})
			lastTid(t, s, c4, 0x40)

			// The server no longer knows what changed: full invalidation.
			c4.nc.Close()
			c5 := ss.accept()
			c5.reply(c5.expect("register"), zodb.Tid(0x50).Bytes())
			c5.reply(c5.expect("getInvalidations"), nil)
			c5.reply(c5.expect("get_info"), &dict{})
			select {
			case ev := <-watchq:
				if _, ok := ev.(*zodb.EventError); !ok {
					t.Errorf("event %v, want an EventError", ev)
				}
			case <-time.After(testTimeout):
				t.Fatal("no event")
			}
			lastTid(t, s, c5, 0x50)
			s.Close()
			c5.expectEOF()
		})
	}
}

func expectEvent(t *testing.T, watchq <-chan zodb.Event, tid zodb.Tid, oids ...zodb.Oid) {
	t.Helper()
	select {
	case ev := <-watchq:
		ce, ok := ev.(*zodb.CommitEvent)
		if !ok || ce.Tid != tid || len(ce.Changed) != len(oids) {
			t.Fatalf("event %+v, want commit %v %v", ev, tid, oids)
		}
		for i := range oids {
			if ce.Changed[i] != oids[i] {
				t.Fatalf("event %+v, want commit %v %v", ev, tid, oids)
			}
		}
	case <-time.After(testTimeout):
		t.Fatalf("no event, want commit %v", tid)
	}
}

// lastTid checks LastTid once the events up to want were delivered.
func lastTid(t *testing.T, s *Storage, c *scriptConn, want zodb.Tid) {
	t.Helper()
	if _, err := s.conn(ctxT(t)); err != nil { // connection set up
		t.Fatal(err)
	}
	if err := s.waitHead(ctxT(t), want); err != nil {
		t.Fatal(err)
	}
	if tid, err := s.LastTid(ctxT(t)); tid != want || err != nil {
		t.Errorf("LastTid = %v, %v; want %v", tid, err, want)
	}
}

// TestCommitEventOrder: our own commit is reported in order with the
// invalidations of others, and LastTid waits for the event's delivery.
func TestCommitEventOrder(t *testing.T) {
	ss := newScriptServer(t, "tcp", "127.0.0.1:0", 'M')
	watchq := make(chan zodb.Event) // unbuffered: delivery waits for us
	ch := openAsync(t, ss.url(), &zodb.DriverOptions{Watchq: watchq})
	c := ss.accept()
	c.register(0x10)
	s := mustStorage(t, ch)

	txn, err := s.Begin(ctxT(t), zodb.TxnMeta{User: []byte("u"), Description: []byte("d")})
	if err != nil {
		t.Fatal(err)
	}
	c.expect("tpc_begin")
	if err := txn.Store(ctxT(t), 5, 0x10, []byte("data")); err != nil {
		t.Fatal(err)
	}
	c.expect("storea")
	voted := make(chan error, 1)
	go func() { _, err := txn.Vote(ctxT(t)); voted <- err }()
	vote := c.expect("vote")
	// Another client's commit comes first (our vote waits for the lock).
	c.send("invalidateTransaction", zodb.Tid(0x20).Bytes(), newList(zodb.Oid(3).Bytes()))
	c.reply(vote, newList())
	if err := <-voted; err != nil {
		t.Fatal(err)
	}
	finished := make(chan zodb.Tid, 1)
	go func() {
		tid, err := txn.Finish(ctxT(t))
		if err != nil {
			t.Error(err)
		}
		finished <- tid
	}()
	c.send("info", &dict{})
	c.reply(c.expect("tpc_finish"), zodb.Tid(0x30).Bytes())
	select {
	case <-finished:
		t.Fatal("Finish returned before its event was delivered")
	case <-time.After(50 * time.Millisecond):
	}
	expectEvent(t, watchq, 0x20, 3)
	expectEvent(t, watchq, 0x30, 5)
	if tid := <-finished; tid != 0x30 {
		t.Errorf("Finish = %v", tid)
	}
	// Calls after Finish are misuse.
	var terr *zodb.TransactionError
	if err := txn.Store(ctxT(t), 5, 0x30, nil); !errors.As(err, &terr) {
		t.Errorf("Store after Finish: %v", err)
	}
	if err := txn.Abort(ctxT(t)); err != nil {
		t.Errorf("Abort after Finish: %v", err)
	}
}

// TestCloseUnblocks: Close fails calls waiting for a reply.
func TestCloseUnblocks(t *testing.T) {
	ss := newScriptServer(t, "tcp", "127.0.0.1:0", 'Z')
	ch := openAsync(t, ss.url(), &zodb.DriverOptions{Watchq: make(chan zodb.Event)})
	c := ss.accept()
	c.register(0x10)
	s := mustStorage(t, ch)
	errc := make(chan error, 1)
	go func() { _, err := s.History(ctxT(t), 1, 1); errc <- err }()
	c.expect("history")
	// An invalidation nobody reads must not keep Close from returning.
	c.send("invalidateTransaction", zodb.Tid(0x20).Bytes(), newList())
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	for cur.nread.Load() < 3 { // register, get_info, invalidateTransaction
		runtime.Gosched()
	}
	s.Close()
	if err := <-errc; !errors.Is(err, zodb.ErrClosed) {
		t.Errorf("history during Close: %v, want ErrClosed", err)
	}
	if _, err := s.History(ctxT(t), 1, 1); !errors.Is(err, zodb.ErrClosed) {
		t.Errorf("history after Close: %v, want ErrClosed", err)
	}
	c.expectEOF()
}

func TestHandshakeVersions(t *testing.T) {
	for _, tc := range []struct {
		server, answer string
	}{
		{"Z5", "Z5"}, {"M5", "M5"}, {"Z6", "Z5"}, {"M6", "M5"}, {"M10", ""} /* "10" < "5" as bytes */, {"Z4", ""}, {"X5", ""}, {"Z", ""},
	} {
		a, b := net.Pipe()
		go func() {
			b.Write(appendFrame(nil, []byte(tc.server)))
		}()
		got := make(chan string, 1)
		go func() {
			p, err := (&frameReader{r: b}).readFrame()
			if err != nil {
				got <- ""
				return
			}
			got <- string(p)
		}()
		cd, err := handshake(ctxT(t), a, &frameReader{r: a})
		a.Close()
		ans := <-got
		b.Close()
		if tc.answer == "" {
			if err == nil {
				t.Errorf("server %q: accepted", tc.server)
			}
			continue
		}
		if err != nil || cd.letter() != tc.server[0] || ans != tc.answer {
			t.Errorf("server %q: answer %q, %v", tc.server, ans, err)
		}
	}
}

func TestErrorReplies(t *testing.T) {
	oid := zodb.Oid(7).Bytes()
	t1, t2 := zodb.Tid(0x10).Bytes(), zodb.Tid(0x20).Bytes()
	for _, tc := range []struct {
		cls     string
		details any
		check   func(error) bool
	}{
		{"ZODB.POSException.POSKeyError", tuple{oid}, func(err error) bool {
			var e *zodb.NoObjectError
			return errors.As(err, &e) && e.Oid == 7
		}},
		{"ZODB.POSException.ConflictError", &dict{items: []kv{{"oid", oid}, {"serials", tuple{t2, t1}}}}, func(err error) bool {
			var e *zodb.ConflictError
			return errors.As(err, &e) && e.Oid == 7 && e.CommittedSerial == 0x20 && e.ReadSerial == 0x10
		}},
		{"ZODB.POSException.ReadConflictError", &dict{items: []kv{{"oid", oid}, {"serials", tuple{t2, t1}}}}, func(err error) bool {
			var e *zodb.ReadConflictError
			return errors.As(err, &e) && e.Oid == 7 && e.CommittedSerial == 0x20 && e.ReadSerial == 0x10
		}},
		{"ZODB.POSException.ReadOnlyError", tuple{}, func(err error) bool { return errors.Is(err, zodb.ErrReadOnly) }},
		{"ZODB.POSException.UndoError", &dict{items: []kv{{"_reason", "no"}, {"_oid", oid}}}, func(err error) bool {
			var e *zodb.UndoError
			return errors.As(err, &e) && e.Oid == 7 && e.Reason == "no"
		}},
		{"ZODB.POSException.StorageTransactionError", tuple{nil, int64(3)}, func(err error) bool {
			var e *zodb.TransactionError
			return errors.As(err, &e)
		}},
		{"builtins.KeyError", tuple{int64(99)}, func(err error) bool {
			var e *ServerError
			return errors.As(err, &e) && e.Class == "builtins.KeyError" && e.Details == "(99,)"
		}},
	} {
		if err := errorFromReply(tuple{tc.cls, tc.details}); !tc.check(err) {
			t.Errorf("%s: %v (%T)", tc.cls, err, err)
		}
	}
}

// TestTxnAcrossDisconnect: a transaction whose connection dropped fails;
// Abort is then a no-op and the next transaction runs on the new
// connection.
func TestTxnAcrossDisconnect(t *testing.T) {
	ss := newScriptServer(t, "tcp", "127.0.0.1:0", 'Z')
	ch := openAsync(t, ss.url(), &zodb.DriverOptions{})
	c := ss.accept()
	c.register(0x10)
	s := mustStorage(t, ch)

	txn, err := s.Begin(ctxT(t), zodb.TxnMeta{})
	if err != nil {
		t.Fatal(err)
	}
	c.expect("tpc_begin")
	c.nc.Close()
	c2 := ss.accept()
	c2.reply(c2.expect("register"), zodb.Tid(0x10).Bytes())
	c2.reply(c2.expect("get_info"), &dict{})
	var derr *DisconnectedError
	if _, err := txn.Vote(ctxT(t)); !errors.As(err, &derr) {
		if err2 := txn.Store(ctxT(t), 1, 0, []byte("x")); !errors.As(err2, &derr) {
			t.Errorf("vote after the connection dropped: %v; store: %v; want DisconnectedError", err, err2)
		}
	}
	if err := txn.Abort(ctxT(t)); err != nil {
		t.Errorf("abort: %v", err)
	}
	// The next transaction goes to the new connection.
	done := make(chan error, 1)
	go func() {
		txn, err := s.Begin(ctxT(t), zodb.TxnMeta{})
		if err == nil {
			err = txn.Abort(ctxT(t))
		}
		done <- err
	}()
	c2.expect("tpc_begin")
	c2.reply(c2.expect("tpc_abort"), nil)
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// The decoders are on the path of every load.
func BenchmarkDecodeLoadReply(b *testing.B) {
	data := make([]byte, 200)
	reply := tuple{tuple{zodb.Oid(1).Bytes(), zodb.TidMax.Bytes()}, int64(0), ".reply", tuple{data, zodb.Tid(0x03).Bytes(), nil}}
	for _, cd := range []codec{pickleCodec{}, msgpackCodec{}} {
		p, err := cd.encode(reply)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(cd.letter()), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if _, err := cd.decode(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeLoadCall(b *testing.B) {
	call := tuple{tuple{zodb.Oid(1).Bytes(), zodb.TidMax.Bytes()}, false, "loadBefore", tuple{zodb.Oid(1).Bytes(), zodb.TidMax.Bytes()}}
	for _, cd := range []codec{pickleCodec{}, msgpackCodec{}} {
		b.Run(string(cd.letter()), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cd.encode(call); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
