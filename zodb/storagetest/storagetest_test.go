package storagetest_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/neozodb/neo/zodb"
	"github.com/neozodb/neo/zodb/storage/mem"
	"github.com/neozodb/neo/zodb/storagetest"
)

// The suite must catch broken drivers: each fault below is a wrapper of
// the mem driver with one defect, and the subtests named must fail on it
// (while the wrapper without fault passes everything).

var faults = []struct {
	name    string
	failing []string // subtests that must fail
}{
	{"drop-event", []string{"Watch", "Concurrent"}},
	{"reorder-events", []string{"Watch", "Concurrent", "WatchLoadRace"}},
	{"missing-oid", []string{"Watch", "Concurrent"}},
	{"buffer-events", []string{"WatchLastTid"}},
	{"load-latest", []string{"MVCC", "Delete", "Undo"}},
	{"load-wrong-next", []string{"MVCC", "Basic"}},
	{"no-nodata", []string{"MVCC", "Delete"}},
	{"dup-oid", []string{"NewOids"}},
	{"no-conflict", []string{"Conflict", "Delete"}},
	{"no-read-conflict", []string{"ReadConflict"}},
	{"iterate-exclusive", []string{"Iterate"}},
	{"history-reversed", []string{"History"}},
	{"abort-commits", []string{"Abort", "TPCMisuse"}},
	{"store-after-vote", []string{"TPCMisuse"}},
	{"pack-no-gc", []string{"PackGC"}},
	{"pack-nothing", []string{"Pack"}},
	{"undo-no-datatid", []string{"Undo"}},
	{"undo-log-oldest-first", []string{"UndoLog"}},
	{"readonly-ignored", []string{"ReadOnly"}},
	{"close-noop", []string{"Closed"}},
	{"metadata-lost", []string{"Metadata", "Iterate"}},
}

const brokenEnv = "STORAGETEST_BROKEN"

func init() {
	zodb.RegisterDriver("broken", openBroken)
}

// TestBrokenChild runs the suite against the faulty driver named by
// $STORAGETEST_BROKEN; TestBrokenDrivers runs it in a child process.
func TestBrokenChild(t *testing.T) {
	fault := os.Getenv(brokenEnv)
	if fault == "" {
		t.Skip("run by TestBrokenDrivers with $" + brokenEnv + " set")
	}
	storagetest.Run(t, func(testing.TB) string { return "broken://" + fault })
}

func runChild(t *testing.T, fault, pattern string) (out string, failed bool) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenChild$/"+pattern, "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), brokenEnv+"="+fault)
	b, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run child: %v", err)
	}
	return string(b), err != nil
}

func TestBrokenDrivers(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		out, failed := runChild(t, "none", "")
		if failed {
			t.Fatalf("the wrapper without fault fails the suite:\n%s", out)
		}
	})
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			out, failed := runChild(t, f.name, "^("+strings.Join(f.failing, "|")+")$")
			if !failed {
				t.Errorf("the suite passes a driver with fault %s:\n%s", f.name, out)
				return
			}
			for _, sub := range f.failing {
				if !strings.Contains(out, "--- FAIL: TestBrokenChild/"+sub+" ") {
					t.Errorf("subtest %s does not fail with fault %s:\n%s", sub, f.name, out)
				}
			}
		})
	}
}

// brokenDriver wraps a mem storage with one fault.
type brokenDriver struct {
	zodb.IStorageDriver
	fault string

	watchq  chan<- zodb.Event
	innerq  chan zodb.Event
	closed  chan struct{}
	fwdDone chan struct{}
	close   sync.Once

	mu        sync.Mutex
	oidCall   int
	lastNew   []zodb.Oid
	forwarded zodb.Tid      // newest tid whose event was passed on (or the tid at open)
	fwdNotify chan struct{} // closed and replaced when forwarded changes
}

func openBroken(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
	d := &brokenDriver{fault: u.Host, watchq: opt.Watchq, closed: make(chan struct{}), fwdDone: make(chan struct{})}
	inner := *opt
	if d.fault == "readonly-ignored" {
		inner.ReadOnly = false
	}
	if opt.Watchq != nil {
		d.innerq = make(chan zodb.Event)
		inner.Watchq = d.innerq
	}
	drv, at0, err := mem.OpenDriver(ctx, &url.URL{Scheme: "mem"}, &inner)
	if err != nil {
		return nil, 0, err
	}
	d.IStorageDriver = drv
	d.forwarded = at0
	d.fwdNotify = make(chan struct{})
	if d.innerq != nil {
		go d.forward()
	} else {
		close(d.fwdDone)
	}
	return d, at0, nil
}

// forward passes the events of the inner driver on, with the fault.
func (d *brokenDriver) forward() {
	defer close(d.fwdDone)
	var queue []zodb.Event
	var held zodb.Event
	n := 0
	for {
		var out chan<- zodb.Event
		var first zodb.Event
		if len(queue) > 0 {
			out, first = d.watchq, queue[0]
		}
		select {
		case <-d.closed:
			return
		case out <- first:
			d.passed(first)
			queue = queue[1:]
			continue
		case ev := <-d.innerq:
			n++
			c := ev.(*zodb.CommitEvent)
			switch d.fault {
			case "drop-event":
				if n == 3 {
					d.passed(ev)
					continue
				}
			case "reorder-events":
				if n == 2 {
					d.passed(ev) // let its commit finish
					held = ev
					continue
				}
			case "missing-oid":
				if len(c.Changed) > 1 {
					c.Changed = c.Changed[:len(c.Changed)-1]
				}
			}
			queue = append(queue, ev)
			if held != nil && n == 3 {
				queue = append(queue, held)
				held = nil
			}
		}
		if d.fault == "buffer-events" {
			continue // take the next event without waiting
		}
		for len(queue) > 0 {
			select {
			case d.watchq <- queue[0]:
				d.passed(queue[0])
				queue = queue[1:]
			case <-d.closed:
				return
			}
		}
	}
}

func (d *brokenDriver) passed(ev zodb.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := ev.(*zodb.CommitEvent); ok && c.Tid > d.forwarded {
		d.forwarded = c.Tid
		close(d.fwdNotify)
		d.fwdNotify = make(chan struct{})
	}
}

// waitPassed waits until the event of tid was passed on.
func (d *brokenDriver) waitPassed(tid zodb.Tid) {
	if d.watchq == nil {
		return
	}
	for {
		d.mu.Lock()
		done, notify := d.forwarded >= tid, d.fwdNotify
		d.mu.Unlock()
		if done {
			return
		}
		select {
		case <-notify:
		case <-d.closed:
			return
		}
	}
}

// LastTid does not report what the watchers were not told yet: the inner
// driver's events are taken from it before they are passed on.
func (d *brokenDriver) LastTid(ctx context.Context) (zodb.Tid, error) {
	last, err := d.IStorageDriver.LastTid(ctx)
	if err != nil || d.fault == "buffer-events" || d.watchq == nil {
		return last, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return min(last, d.forwarded), nil
}

func (d *brokenDriver) Close() error {
	if d.fault == "close-noop" {
		return nil
	}
	var err error
	d.close.Do(func() {
		close(d.closed)
		err = d.IStorageDriver.Close()
		<-d.fwdDone
	})
	return err
}

func (d *brokenDriver) Load(ctx context.Context, xid zodb.Xid) ([]byte, zodb.Tid, zodb.Tid, error) {
	if d.fault == "load-latest" {
		xid.At = zodb.TidMax
	}
	data, serial, next, err := d.IStorageDriver.Load(ctx, xid)
	if d.fault == "load-wrong-next" && next != 0 {
		next++
	}
	var e *zodb.NoDataError
	if d.fault == "no-nodata" && errors.As(err, &e) {
		err = &zodb.NoObjectError{Oid: xid.Oid}
	}
	return data, serial, next, err
}

func (d *brokenDriver) NewOids(ctx context.Context, n int) ([]zodb.Oid, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.oidCall++
	if d.fault == "dup-oid" && d.oidCall%3 == 0 && len(d.lastNew) >= n {
		return slices.Clone(d.lastNew[:n]), nil
	}
	v, err := d.IStorageDriver.NewOids(ctx, n)
	d.lastNew = v
	return v, err
}

func (d *brokenDriver) History(ctx context.Context, oid zodb.Oid, size int) ([]zodb.HistoryEntry, error) {
	h, err := d.IStorageDriver.History(ctx, oid, size)
	if d.fault == "history-reversed" {
		slices.Reverse(h)
	}
	return h, err
}

func (d *brokenDriver) Iterate(ctx context.Context, tidMin, tidMax zodb.Tid) zodb.ITxnIterator {
	if d.fault == "iterate-exclusive" && tidMax > tidMin {
		tidMax--
	}
	return &brokenIter{d: d, ITxnIterator: d.IStorageDriver.Iterate(ctx, tidMin, tidMax)}
}

type brokenIter struct {
	zodb.ITxnIterator
	d *brokenDriver
}

func (it *brokenIter) NextTxn(ctx context.Context) (*zodb.TxnInfo, zodb.IDataIterator, error) {
	info, dit, err := it.ITxnIterator.NextTxn(ctx)
	if err != nil {
		return info, dit, err
	}
	if it.d.fault == "metadata-lost" {
		info.Extension = nil
	}
	return info, &brokenDataIter{d: it.d, IDataIterator: dit}, nil
}

type brokenDataIter struct {
	zodb.IDataIterator
	d *brokenDriver
}

func (it *brokenDataIter) NextData(ctx context.Context) (*zodb.DataInfo, error) {
	r, err := it.IDataIterator.NextData(ctx)
	if err == nil && it.d.fault == "undo-no-datatid" {
		r.DataTid = 0
	}
	return r, err
}

func (d *brokenDriver) UndoLog(ctx context.Context, first, last int, filter func(*zodb.UndoInfo) bool) ([]zodb.UndoInfo, error) {
	v, err := d.IStorageDriver.(zodb.IUndoer).UndoLog(ctx, first, last, filter)
	if d.fault == "undo-log-oldest-first" {
		slices.Reverse(v)
	}
	return v, err
}

func (d *brokenDriver) Pack(ctx context.Context, packTid zodb.Tid, gc bool) error {
	switch d.fault {
	case "pack-no-gc":
		gc = false
	case "pack-nothing":
		return nil
	}
	return d.IStorageDriver.(zodb.IPacker).Pack(ctx, packTid, gc)
}

func (d *brokenDriver) Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error) {
	txn, err := d.IStorageDriver.Begin(ctx, meta)
	if err != nil {
		return nil, err
	}
	return &brokenTxn{ITxn: txn, d: d}, nil
}

type brokenTxn struct {
	zodb.ITxn
	d     *brokenDriver
	voted bool
}

func (t *brokenTxn) Store(ctx context.Context, oid zodb.Oid, serial zodb.Tid, data []byte) error {
	if t.d.fault == "store-after-vote" && t.voted {
		return nil
	}
	if t.d.fault == "no-conflict" {
		if _, cur, _, err := t.d.IStorageDriver.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax}); err == nil {
			serial = cur
		}
	}
	return t.ITxn.Store(ctx, oid, serial, data)
}

func (t *brokenTxn) Delete(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	if t.d.fault == "no-conflict" {
		if _, cur, _, err := t.d.IStorageDriver.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax}); err == nil {
			serial = cur
		}
	}
	return t.ITxn.Delete(ctx, oid, serial)
}

func (t *brokenTxn) CheckCurrentSerial(ctx context.Context, oid zodb.Oid, serial zodb.Tid) error {
	if t.d.fault == "no-read-conflict" {
		return nil
	}
	return t.ITxn.CheckCurrentSerial(ctx, oid, serial)
}

func (t *brokenTxn) Vote(ctx context.Context) ([]zodb.Oid, error) {
	if t.d.fault == "store-after-vote" && t.voted {
		return nil, nil
	}
	v, err := t.ITxn.Vote(ctx)
	if err == nil {
		t.voted = true
	}
	return v, err
}

// Finish returns once the watchers have the event, as LastTid reports it.
func (t *brokenTxn) Finish(ctx context.Context) (zodb.Tid, error) {
	tid, err := t.ITxn.Finish(ctx)
	if err == nil && t.d.fault != "buffer-events" {
		t.d.waitPassed(tid)
	}
	return tid, err
}

func (t *brokenTxn) Abort(ctx context.Context) error {
	if t.d.fault == "abort-commits" {
		if _, err := t.ITxn.Vote(ctx); err == nil {
			t.ITxn.Finish(ctx)
		}
	}
	return t.ITxn.Abort(ctx)
}
