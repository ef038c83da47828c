package zodb

import (
	"context"
	"io"
	"net/url"
	"sync"
	"testing"
	"time"
)

// fakeDriver is a driver whose commits are driven by the test: commit(tid)
// sends an event the way a real driver does.
type fakeDriver struct {
	u      string
	watchq chan<- Event
	down   chan struct{}
	mu     sync.Mutex
	last   Tid
}

func (d *fakeDriver) URL() string  { return d.u }
func (d *fakeDriver) Close() error { close(d.down); return nil }
func (d *fakeDriver) LastTid(context.Context) (Tid, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last, nil
}
func (d *fakeDriver) Load(context.Context, Xid) ([]byte, Tid, Tid, error) {
	return nil, 0, 0, &NoObjectError{}
}
func (d *fakeDriver) NewOids(context.Context, int) ([]Oid, error) { return nil, ErrUnsupported }
func (d *fakeDriver) History(context.Context, Oid, int) ([]HistoryEntry, error) {
	return nil, ErrUnsupported
}
func (d *fakeDriver) Iterate(context.Context, Tid, Tid) ITxnIterator { return fakeIter{} }
func (d *fakeDriver) Begin(context.Context, TxnMeta) (ITxn, error)   { return nil, ErrReadOnly }

type fakeIter struct{}

func (fakeIter) NextTxn(context.Context) (*TxnInfo, IDataIterator, error) { return nil, nil, io.EOF }

func (d *fakeDriver) commit(tid Tid, oids ...Oid) {
	select {
	case d.watchq <- &CommitEvent{Tid: tid, Changed: oids}:
	case <-d.down:
		return
	}
	d.mu.Lock()
	d.last = tid
	d.mu.Unlock()
}

var fakeDrivers = struct {
	sync.Mutex
	m map[string]*fakeDriver
}{m: map[string]*fakeDriver{}}

func init() {
	RegisterDriver("zodbtestfake", func(ctx context.Context, u *url.URL, opt *DriverOptions) (IStorageDriver, Tid, error) {
		d := &fakeDriver{u: u.String(), watchq: opt.Watchq, down: make(chan struct{}), last: 10}
		fakeDrivers.Lock()
		fakeDrivers.m[u.Host] = d
		fakeDrivers.Unlock()
		return d, 10, nil
	})
}

func TestOpenUnknownScheme(t *testing.T) {
	if _, err := Open(context.Background(), "nosuchscheme://x", nil); err == nil {
		t.Fatal("open of unknown scheme succeeded")
	}
}

func TestParseURL(t *testing.T) {
	for in, want := range map[string]string{
		"data/Data.fs":         "file|data/Data.fs",
		"/abs/Data.fs":         "file|/abs/Data.fs",
		"file:///abs/Data.fs":  "file|/abs/Data.fs",
		"file://rel/Data.fs":   "file|rel/Data.fs",
		"C:thing":              "file|C:thing",
		"zodbtestfake://h:1/x": "zodbtestfake|/x",
	} {
		u, err := ParseURL(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := u.Scheme + "|" + u.Path; got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// TestWatchFanOut checks that every watcher sees every commit after the
// at0 AddWatch returned, in order, and nothing after DelWatch.
func TestWatchFanOut(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "zodbtestfake://fanout", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fakeDrivers.Lock()
	d := fakeDrivers.m["fanout"]
	fakeDrivers.Unlock()

	const n = 100
	w1 := make(chan Event)
	if at0 := s.AddWatch(w1); at0 != 10 {
		t.Fatalf("at0 = %v, want 10", at0)
	}
	w2 := make(chan Event)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= n; i++ {
			d.commit(Tid(10+i), Oid(i))
		}
	}()
	// w2 joins midway: it must get exactly the commits after its at0.
	var at2 Tid
	for i := 1; i <= n; i++ {
		ev := (<-w1).(*CommitEvent)
		if ev.Tid != Tid(10+i) || len(ev.Changed) != 1 || ev.Changed[0] != Oid(i) {
			t.Fatalf("w1: event %d = %+v", i, ev)
		}
		if i == n/2 {
			at2 = s.AddWatch(w2)
			wg.Add(1)
			go func(at0 Tid) {
				defer wg.Done()
				for tid := at0 + 1; tid <= Tid(10+n); tid++ {
					ev := (<-w2).(*CommitEvent)
					if ev.Tid != tid {
						t.Errorf("w2: got %v, want %v", ev.Tid, tid)
						return
					}
				}
			}(at2)
		}
	}
	wg.Wait()
	if at2 < Tid(10+n/2) {
		t.Errorf("at2 = %v, before an event already delivered", at2)
	}
	// After DelWatch nothing is sent; a later commit must not block.
	s.DelWatch(w1)
	s.DelWatch(w2)
	d.commit(Tid(10+n+1), 1)
	if last, _ := s.LastTid(ctx); last != Tid(10+n+1) {
		t.Errorf("last = %v", last)
	}
}

func init() {
	// A driver that learns of two commits while it opens, and reports them
	// before it returns its head (as a NEO client catching up with its
	// master does).
	RegisterDriver("zodbtestearly", func(ctx context.Context, u *url.URL, opt *DriverOptions) (IStorageDriver, Tid, error) {
		d := &fakeDriver{u: u.String(), watchq: opt.Watchq, down: make(chan struct{}), last: 10}
		d.commit(11, 1)
		d.commit(12, 2)
		return d, 11, nil
	})
}

// Events a driver sends while it opens do not block Open: they move the
// head, and watchers start after them.
func TestEventsWhileOpening(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	var s *Storage
	go func() {
		var err error
		s, err = Open(ctx, "zodbtestearly://x", nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Open blocked by the driver's events")
	}
	defer s.Close()
	// The event of 12 was taken while opening; whether the head already
	// moved to it or not, a watcher starts right after what it was given.
	w := make(chan Event, 1)
	switch at0 := s.AddWatch(w); at0 {
	case 12:
	case 11:
		select {
		case ev := <-w:
			if c, ok := ev.(*CommitEvent); !ok || c.Tid != 12 {
				t.Fatalf("AddWatch at 11, then %v, want the commit of 12", ev)
			}
		case <-ctx.Done():
			t.Fatal("AddWatch at 11, and no event of 12")
		}
	default:
		t.Fatalf("AddWatch: at0 = %v, want 11 or 12", at0)
	}
}
