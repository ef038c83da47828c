package stress

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/internal/histcheck"
	"github.com/neozodb/neo/zodb"
)

// Objects of a run: counters and append-lists, created before the faults.
const (
	numCounters = 2
	numLists    = 2
)

// opTimeout bounds one operation: a blackholed link makes it fail instead
// of hanging.
const opTimeout = 10 * time.Second

// Object records: "C <n>" for a counter, "L <token> <token>..." for a
// list. A prefix keeps them non-empty.
func encode(kind histcheck.ObjKind, v histcheck.Value) []byte {
	if kind == histcheck.Counter {
		return []byte("C " + strconv.FormatInt(v.Count, 10))
	}
	return []byte(strings.Join(append([]string{"L"}, v.Tokens...), " "))
}

func decode(kind histcheck.ObjKind, data []byte) (histcheck.Value, error) {
	f := strings.Fields(string(data))
	switch {
	case kind == histcheck.Counter && len(f) == 2 && f[0] == "C":
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return histcheck.Value{}, fmt.Errorf("counter record %q: %w", data, err)
		}
		return histcheck.Value{Count: n}, nil
	case kind == histcheck.List && len(f) >= 1 && f[0] == "L":
		return histcheck.Value{Tokens: f[1:]}, nil
	}
	return histcheck.Value{}, fmt.Errorf("%v record %q: malformed", kind, data)
}

// recorder collects the history of every client.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	h     histcheck.History
	bad   []string // records that could not be decoded
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) add(op histcheck.Op) {
	r.mu.Lock()
	r.h.Add(op)
	r.mu.Unlock()
}

func (r *recorder) corrupt(format string, args ...any) {
	r.mu.Lock()
	r.bad = append(r.bad, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// store is what the workload needs of a storage.
type store interface {
	zodb.Loader
	LastTid(ctx context.Context) (zodb.Tid, error)
	Begin(ctx context.Context, meta zodb.TxnMeta) (zodb.ITxn, error)
}

// worker is one client of the workload.
type worker struct {
	name string
	stor store
	rng  *rand.Rand
	rec  *recorder
	objs []zodb.Oid
	kind map[zodb.Oid]histcheck.ObjKind
	seq  int
}

// run does operations until stop is closed.
func (w *worker) run(ctx context.Context, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		oid := w.objs[w.rng.Intn(len(w.objs))]
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		if w.rng.Intn(4) == 0 {
			w.read(octx, oid, w.rng.Intn(2) == 0)
		} else {
			w.write(octx, oid)
		}
		cancel()
	}
}

// load reads oid at the client's last tid.
func (w *worker) load(ctx context.Context, op *histcheck.Op) (zodb.Tid, error) {
	at, err := w.stor.LastTid(ctx)
	if err != nil {
		return 0, err
	}
	data, serial, _, err := w.stor.Load(ctx, zodb.Xid{Oid: op.Obj, At: at})
	if err != nil {
		return 0, err
	}
	v, err := decode(w.kind[op.Obj], data)
	if err != nil {
		w.rec.corrupt("%s: load %v at %v: %v", w.name, op.Obj, at, err)
		return 0, err
	}
	op.At, op.Value = at, v
	return serial, nil
}

// read is a plain read; with verify, a vote with CheckCurrentSerial then
// checks that what was read is still current.
func (w *worker) read(ctx context.Context, oid zodb.Oid, verify bool) {
	op := histcheck.Op{Client: w.name, Kind: histcheck.Read, Obj: oid, Call: w.rec.now()}
	serial, err := w.load(ctx, &op)
	if err == nil && verify {
		op.Current = w.checkCurrent(ctx, oid, serial)
	}
	op.Outcome = histcheck.OK
	if err != nil {
		op.Outcome, op.Err = histcheck.Aborted, err.Error()
	}
	op.Return = w.rec.now()
	w.rec.add(op)
}

func (w *worker) checkCurrent(ctx context.Context, oid zodb.Oid, serial zodb.Tid) bool {
	txn, err := w.stor.Begin(ctx, zodb.TxnMeta{Description: []byte("check " + w.name)})
	if err != nil {
		return false
	}
	defer abortTxn(txn)
	if err := txn.CheckCurrentSerial(ctx, oid, serial); err != nil {
		return false
	}
	_, err = txn.Vote(ctx)
	return err == nil
}

// write increments a counter or appends a token to a list.
func (w *worker) write(ctx context.Context, oid zodb.Oid) {
	kind := w.kind[oid]
	op := histcheck.Op{Client: w.name, Kind: histcheck.Increment, Obj: oid, Call: w.rec.now()}
	if kind == histcheck.List {
		w.seq++
		op.Kind, op.Token = histcheck.Append, fmt.Sprintf("%s.%d", w.name, w.seq)
	}
	defer func() {
		op.Return = w.rec.now()
		w.rec.add(op)
	}()
	abort := func(err error) {
		op.Outcome, op.Err = histcheck.Aborted, err.Error()
		if isConflict(err) {
			op.Err = conflictPrefix + op.Err
		}
	}
	serial, err := w.load(ctx, &op)
	if err != nil {
		op.At = 0
		abort(err)
		return
	}
	next := op.Value
	if kind == histcheck.List {
		next.Tokens = append(append([]string(nil), next.Tokens...), op.Token)
	} else {
		next.Count++
	}
	desc := fmt.Sprintf("%s %v %s", w.name, op.Kind, op.Token)
	txn, err := w.stor.Begin(ctx, zodb.TxnMeta{Description: []byte(desc)})
	if err != nil {
		abort(err)
		return
	}
	if err := txn.Store(ctx, oid, serial, encode(kind, next)); err != nil {
		abortTxn(txn)
		abort(err)
		return
	}
	if _, err := txn.Vote(ctx); err != nil {
		abortTxn(txn)
		abort(err)
		return
	}
	tid, err := txn.Finish(ctx)
	if err != nil {
		// The finish may have reached the master: unknown.
		abortTxn(txn)
		op.Outcome, op.Err = histcheck.Unknown, err.Error()
		return
	}
	op.Outcome, op.Tid = histcheck.OK, tid
}

// abortTxn aborts txn, within a bound: its links may be blackholed.
func abortTxn(txn zodb.ITxn) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	txn.Abort(ctx)
}

// conflictPrefix marks the errors of conflicts in the history.
const conflictPrefix = "conflict: "

// isConflict tells a conflict (a normal outcome) from other errors.
func isConflict(err error) bool {
	var ce *zodb.ConflictError
	var rce *zodb.ReadConflictError
	return errors.As(err, &ce) || errors.As(err, &rce)
}
