package zodb

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// DriverOpener opens a storage at u. It returns the driver and the tid of
// the last committed transaction at the time of opening: the driver's watch
// events start after it.
type DriverOpener func(ctx context.Context, u *url.URL, opt *DriverOptions) (drv IStorageDriver, at0 Tid, err error)

var (
	driverMu sync.Mutex
	drivers  = map[string]DriverOpener{}
)

// RegisterDriver makes a driver available under a URL scheme. Drivers call
// it from init; registering a scheme twice panics.
func RegisterDriver(scheme string, opener DriverOpener) {
	driverMu.Lock()
	defer driverMu.Unlock()
	if _, dup := drivers[scheme]; dup {
		panic("zodb: driver registered twice: " + scheme)
	}
	drivers[scheme] = opener
}

// Drivers returns the registered URL schemes.
func Drivers() []string {
	driverMu.Lock()
	defer driverMu.Unlock()
	var v []string
	for k := range drivers {
		v = append(v, k)
	}
	sort.Strings(v)
	return v
}

// OpenOptions is what a storage is opened with.
type OpenOptions struct {
	ReadOnly bool
	NoCreate bool             // fail instead of creating a new storage
	Resolver ConflictResolver // conflict resolution, nil for none
	Logger   *slog.Logger     // driver warnings; nil for slog.Default()
}

// ParseURL parses a storage URL. A string without "scheme://" (or
// "scheme:" for a known scheme) is a FileStorage path.
func ParseURL(zurl string) (*url.URL, error) {
	if !strings.Contains(zurl, "://") {
		scheme, _, ok := strings.Cut(zurl, ":")
		driverMu.Lock()
		_, known := drivers[scheme]
		driverMu.Unlock()
		if !ok || !known {
			return &url.URL{Scheme: "file", Path: zurl}, nil
		}
	}
	u, err := url.Parse(zurl)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "file" && u.Host != "" && u.Host != "localhost" {
		// file://relative/path: take host as the first path element.
		u.Path = u.Host + u.Path
		u.Host = ""
	}
	return u, nil
}

// Open opens the storage at zurl with the driver registered for its
// scheme: "mem://", "file:///path/Data.fs" or a plain path, and any other
// registered one ("neo://", "zeo://").
func Open(ctx context.Context, zurl string, opt *OpenOptions) (*Storage, error) {
	if opt == nil {
		opt = &OpenOptions{}
	}
	u, err := ParseURL(zurl)
	if err != nil {
		return nil, fmt.Errorf("zodb: open %s: %w", zurl, err)
	}
	driverMu.Lock()
	opener := drivers[u.Scheme]
	driverMu.Unlock()
	if opener == nil {
		return nil, fmt.Errorf("zodb: open %s: no driver for scheme %q", zurl, u.Scheme)
	}
	// The driver's events are taken from the start, while it opens too: a
	// driver may learn of commits before it can tell its head (a NEO
	// client catching up with its master), and it blocks on Watchq.
	// There are no watchers yet: such events only move the head.
	watchq := make(chan Event)
	s := &Storage{
		watchq:   watchq,
		watchers: map[chan<- Event]*watcher{},
		down:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go s.watchLoop()
	drv, at0, err := opener(ctx, u, &DriverOptions{
		ReadOnly: opt.ReadOnly,
		NoCreate: opt.NoCreate,
		Watchq:   watchq,
		Resolver: opt.Resolver,
		Logger:   opt.Logger,
	})
	if err != nil {
		close(s.down)
		<-s.loopDone
		return nil, fmt.Errorf("zodb: open %s: %w", zurl, err)
	}
	s.mu.Lock()
	s.IStorageDriver = drv
	if at0 > s.head {
		s.head = at0
	}
	s.mu.Unlock()
	return s, nil
}

// Storage is a storage opened by Open: the driver's operations plus the
// fan-out of its commit events to any number of watchers.
type Storage struct {
	IStorageDriver

	watchq chan Event

	mu       sync.Mutex
	head     Tid // tid of the last event dispatched
	watchers map[chan<- Event]*watcher

	closeOnce sync.Once
	closeErr  error
	down      chan struct{}
	loopDone  chan struct{}
}

type watcher struct {
	ch   chan<- Event
	gone chan struct{} // closed by DelWatch
}

// watchLoop owns the reading of the driver's events until Close.
func (s *Storage) watchLoop() {
	defer close(s.loopDone)
	for {
		var ev Event
		select {
		case <-s.down:
			return
		case ev = <-s.watchq:
		}
		s.mu.Lock()
		if c, ok := ev.(*CommitEvent); ok && c.Tid > s.head {
			s.head = c.Tid
		}
		ws := make([]*watcher, 0, len(s.watchers))
		for _, w := range s.watchers {
			ws = append(ws, w)
		}
		s.mu.Unlock()
		for _, w := range ws {
			select {
			case w.ch <- ev:
			case <-w.gone:
			case <-s.down:
				return
			}
		}
	}
}

// AddWatch subscribes ch to commit events. It returns the tid from which
// on events are sent: every transaction committed after at0 is reported on
// ch, in order. The storage blocks until ch takes each event, so the
// receiver must keep reading until DelWatch.
func (s *Storage) AddWatch(ch chan<- Event) (at0 Tid) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers[ch] = &watcher{ch: ch, gone: make(chan struct{})}
	return s.head
}

// DelWatch unsubscribes ch. After it returns, nothing more is sent on ch.
func (s *Storage) DelWatch(ch chan<- Event) {
	s.mu.Lock()
	w := s.watchers[ch]
	delete(s.watchers, ch)
	s.mu.Unlock()
	if w != nil {
		close(w.gone)
	}
}

// Close closes the driver and stops event delivery.
func (s *Storage) Close() error {
	s.closeOnce.Do(func() {
		close(s.down)
		s.closeErr = s.IStorageDriver.Close()
		<-s.loopDone
	})
	return s.closeErr
}

// NewOid allocates one new object id.
func (s *Storage) NewOid(ctx context.Context) (Oid, error) {
	v, err := s.NewOids(ctx, 1)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// Driver returns the underlying driver.
func (s *Storage) Driver() IStorageDriver { return s.IStorageDriver }

// UndoLog lists undoable transactions (see IUndoer).
func (s *Storage) UndoLog(ctx context.Context, first, last int, filter func(*UndoInfo) bool) ([]UndoInfo, error) {
	u, ok := s.IStorageDriver.(IUndoer)
	if !ok {
		return nil, &OpError{URL: s.URL(), Op: "undoLog", Err: ErrUnsupported}
	}
	return u.UndoLog(ctx, first, last, filter)
}

// Pack packs the storage (see IPacker).
func (s *Storage) Pack(ctx context.Context, packTid Tid, gc bool) error {
	p, ok := s.IStorageDriver.(IPacker)
	if !ok {
		return &OpError{URL: s.URL(), Op: "pack", Err: ErrUnsupported}
	}
	return p.Pack(ctx, packTid, gc)
}
