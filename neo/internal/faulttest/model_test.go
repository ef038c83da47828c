package faulttest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/storage/backend"
	"github.com/neozodb/neo/neo/storage/backend/sqlite"
	"github.com/neozodb/neo/zodb"
)

// workload commits transactions that each write every object of one group
// with data naming the transaction ("txn <seq> oid <oid>"), so that a read
// of the group at any tid tells whether it saw a transaction in part.
type workload struct {
	mu     sync.Mutex
	oids   []zodb.Oid
	serial map[zodb.Oid]zodb.Tid // last committed serial, as the workload knows it
	stale  bool                  // an outcome is unknown: serials must be read again
	seq    int
	acked  map[zodb.Tid]int // acknowledged commits: tid → seq
}

func newWorkload(t *testing.T, cl *client.Client, n int) *workload {
	t.Helper()
	oids, err := cl.NewOids(t.Context(), n)
	if err != nil {
		t.Fatalf("new oids: %v", err)
	}
	return &workload{oids: oids, serial: map[zodb.Oid]zodb.Tid{}, acked: map[zodb.Tid]int{}}
}

func data(seq int, oid zodb.Oid) []byte { return fmt.Appendf(nil, "txn %d oid %d", seq, uint64(oid)) }

// parseData returns the seq and oid data names.
func parseData(b []byte) (seq int, oid uint64, err error) {
	f := strings.Fields(string(b))
	if len(f) != 4 || f[0] != "txn" || f[2] != "oid" {
		return 0, 0, fmt.Errorf("data %q not written by the workload", b)
	}
	seq, err1 := strconv.Atoi(f[1])
	oid, err2 := strconv.ParseUint(f[3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("data %q: %w", b, err)
	}
	return seq, oid, nil
}

// txn is a transaction of the workload under way.
type txn struct {
	w   *workload
	seq int
	zodb.ITxn
}

// begin starts a transaction and stores the whole group.
func (w *workload) begin(ctx context.Context, cl *client.Client) (*txn, error) {
	w.mu.Lock()
	stale := w.stale
	w.mu.Unlock()
	if stale {
		if err := w.resync(ctx, cl); err != nil {
			return nil, err
		}
	}
	w.mu.Lock()
	w.seq++
	seq := w.seq
	serial := maps.Clone(w.serial)
	w.mu.Unlock()
	it, err := cl.Begin(ctx, zodb.TxnMeta{Description: fmt.Appendf(nil, "txn %d", seq)})
	if err != nil {
		return nil, fmt.Errorf("begin txn %d: %w", seq, err)
	}
	x := &txn{w: w, seq: seq, ITxn: it}
	for _, oid := range w.oids {
		if err := it.Store(ctx, oid, serial[oid], data(seq, oid)); err != nil {
			x.fail(ctx)
			return nil, fmt.Errorf("txn %d: store %v: %w", seq, oid, err)
		}
	}
	return x, nil
}

// fail aborts the transaction, whose outcome is then unknown.
func (x *txn) fail(ctx context.Context) {
	x.Abort(ctx)
	x.w.mu.Lock()
	x.w.stale = true
	x.w.mu.Unlock()
}

// finish votes and finishes; the commit is recorded when acknowledged.
func (x *txn) finish(ctx context.Context) (zodb.Tid, error) {
	if _, err := x.Vote(ctx); err != nil {
		x.fail(ctx)
		return 0, fmt.Errorf("txn %d: vote: %w", x.seq, err)
	}
	return x.finishOnly(ctx)
}

func (x *txn) finishOnly(ctx context.Context) (zodb.Tid, error) {
	tid, err := x.Finish(ctx)
	if err != nil {
		x.fail(ctx)
		return 0, fmt.Errorf("txn %d: finish: %w", x.seq, err)
	}
	x.w.ack(x.seq, tid)
	return tid, nil
}

func (w *workload) ack(seq int, tid zodb.Tid) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acked[tid] = seq
	for _, oid := range w.oids {
		if w.serial[oid] < tid {
			w.serial[oid] = tid
		}
	}
}

// commit runs one whole transaction.
func (w *workload) commit(ctx context.Context, cl *client.Client) (zodb.Tid, error) {
	x, err := w.begin(ctx, cl)
	if err != nil {
		return 0, err
	}
	return x.finish(ctx)
}

// commitN commits n transactions, failing the test on an error.
func (w *workload) commitN(t *testing.T, cl *client.Client, n int) {
	t.Helper()
	for range n {
		if _, err := w.commit(t.Context(), cl); err != nil {
			t.Fatal(err)
		}
	}
}

// resync reads the current serials of the group.
func (w *workload) resync(ctx context.Context, cl *client.Client) error {
	head, err := cl.LastTid(ctx)
	if err != nil {
		return err
	}
	serial := map[zodb.Oid]zodb.Tid{}
	for _, oid := range w.oids {
		_, s, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: head})
		var noObj *zodb.NoObjectError
		var noData *zodb.NoDataError
		switch {
		case errors.As(err, &noObj), errors.As(err, &noData):
		case err != nil:
			return fmt.Errorf("resync: load %v: %w", oid, err)
		default:
			serial[oid] = s
		}
	}
	w.mu.Lock()
	w.serial = serial
	w.stale = false
	w.mu.Unlock()
	return nil
}

func (w *workload) ackedTids() []zodb.Tid {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(maps.Keys(w.acked))
}

// history is what one replica holds of the group: tid → seq, for every
// transaction that wrote it.
type history map[zodb.Tid]int

// readReplica reads the group's whole history through a client that
// reaches only the given storage, and checks that every transaction is
// there whole: each tid wrote every object of the group, with the data of
// one and the same transaction.
func (w *workload) readReplica(t *testing.T, c *tcluster, name string) history {
	t.Helper()
	cname := "V" + name
	for _, n := range c.storages {
		if n.name != name {
			c.net.Cut(cname, n.name)
			c.net.Cut(n.name, cname)
		}
	}
	defer func() {
		for _, n := range c.storages {
			c.net.Heal(cname, n.name)
			c.net.Heal(n.name, cname)
		}
	}()
	cl := c.client(cname)
	defer cl.Close()
	ctx := t.Context()
	h := history{}
	perOid := map[zodb.Oid]map[zodb.Tid]int{}
	for _, oid := range w.oids {
		hist, err := cl.History(ctx, oid, 0)
		if err != nil {
			t.Fatalf("%s: history of %v: %v", name, oid, err)
		}
		perOid[oid] = map[zodb.Tid]int{}
		for _, e := range hist {
			b, serial, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: e.Tid})
			if err != nil {
				t.Fatalf("%s: load %v at %v: %v", name, oid, e.Tid, err)
			}
			if serial != e.Tid {
				t.Errorf("%s: load %v at %v: serial %v", name, oid, e.Tid, serial)
			}
			seq, doid, err := parseData(b)
			if err != nil || doid != uint64(oid) {
				t.Errorf("%s: %v at %v: %q (%v)", name, oid, e.Tid, b, err)
				continue
			}
			perOid[oid][e.Tid] = seq
			if s, ok := h[e.Tid]; ok && s != seq {
				t.Errorf("%s: torn transaction %v: data of txn %d and txn %d", name, e.Tid, s, seq)
			}
			h[e.Tid] = seq
		}
	}
	for tid := range h {
		for _, oid := range w.oids {
			if _, ok := perOid[oid][tid]; !ok {
				t.Errorf("%s: torn transaction %v (txn %d): no revision of %v", name, tid, h[tid], oid)
			}
		}
	}
	return h
}

// verify checks, on every running storage alone, that every acknowledged
// commit is there and that no transaction is there in part, and that the
// replicas hold the same transactions.
func (w *workload) verify(t *testing.T, c *tcluster) history {
	t.Helper()
	w.mu.Lock()
	acked := maps.Clone(w.acked)
	w.mu.Unlock()
	var first history
	var firstName string
	for _, n := range c.storages {
		if !n.running() {
			continue
		}
		h := w.readReplica(t, c, n.name)
		for tid, seq := range acked {
			if got, ok := h[tid]; !ok {
				t.Errorf("%s: acknowledged commit %v (txn %d) missing", n.name, tid, seq)
			} else if got != seq {
				t.Errorf("%s: acknowledged commit %v holds txn %d, want txn %d", n.name, tid, got, seq)
			}
		}
		seqs := map[int]zodb.Tid{}
		for tid, seq := range h {
			if other, ok := seqs[seq]; ok {
				t.Errorf("%s: txn %d committed twice, as %v and %v", n.name, seq, other, tid)
			}
			seqs[seq] = tid
		}
		if first == nil {
			first, firstName = h, n.name
		} else if !maps.Equal(first, h) {
			t.Errorf("replicas differ: %s %v, %s %v", firstName, first, n.name, h)
		}
	}
	if first == nil {
		t.Errorf("no storage running to verify")
	}
	t.Logf("verified: %d acknowledged commits, %d transactions on each replica", len(acked), len(first))
	return first
}

// tidOf returns the tid under which txn seq is in h.
func (h history) tidOf(seq int) (zodb.Tid, bool) {
	for tid, s := range h {
		if s == seq {
			return tid, true
		}
	}
	return 0, false
}

// compareDatabases stops the cluster (neoctl set cluster STOPPING) and
// compares the storages' databases: same transactions and records in every
// partition, no locked transaction left unfinished.
func compareDatabases(t *testing.T, c *tcluster) {
	t.Helper()
	c.stopCluster()
	ctx := t.Context()
	type content struct {
		tids []zodb.Tid
		objs []string
	}
	var ref []content
	for i, n := range c.storages {
		db, err := sqlite.Open(ctx, n.dbPath, sqlite.Options{Name: c.name, NoLock: true})
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		unf, err := db.Unfinished(ctx)
		if err != nil {
			t.Errorf("%s: unfinished: %v", n.name, err)
		}
		for ttid, tid := range unf {
			if tid != zodb.InvalidTid {
				t.Errorf("%s: transaction %v locked as %v left unfinished", n.name, ttid, tid)
			} else {
				t.Logf("%s: voted transaction %v left in the temporary tables", n.name, ttid)
			}
		}
		var cs []content
		for p := range db.NP() {
			var ct content
			ct.tids, err = db.TIDsFrom(ctx, uint32(p), 0, zodb.TidMax, -1)
			if err != nil {
				t.Fatalf("%s: tids of %d: %v", n.name, p, err)
			}
			xids, err := db.ObjectsFrom(ctx, uint32(p), 0, zodb.TidMax, 0, 1<<30)
			if err != nil {
				t.Fatalf("%s: objects of %d: %v", n.name, p, err)
			}
			for _, x := range xids {
				var o backend.Object
				if err := db.Load(ctx, x.Oid, x.At, zodb.InvalidTid, &o); err != nil {
					t.Fatalf("%s: load %v: %v", n.name, x, err)
				}
				ct.objs = append(ct.objs, fmt.Sprintf("%v %x %d %x", x, o.Checksum, o.Compression, o.Data))
			}
			cs = append(cs, ct)
		}
		db.Close()
		if i == 0 {
			ref = cs
			continue
		}
		if len(cs) != len(ref) {
			t.Errorf("%s: %d partitions, %s: %d", n.name, len(cs), c.storages[0].name, len(ref))
			continue
		}
		for p := range cs {
			if !slices.Equal(cs[p].tids, ref[p].tids) {
				t.Errorf("partition %d: %s has tids %v, %s %v", p, n.name, cs[p].tids, c.storages[0].name, ref[p].tids)
			}
			if !slices.Equal(cs[p].objs, ref[p].objs) {
				t.Errorf("partition %d: %s has records %v, %s %v", p, n.name, cs[p].objs, c.storages[0].name, ref[p].objs)
			}
		}
	}
}

// commitRetry commits, reading the serials again after a conflict (the
// committer raced with a transaction whose outcome it did not know).
func (w *workload) commitRetry(ctx context.Context, cl *client.Client) (zodb.Tid, error) {
	for i := 0; ; i++ {
		tid, err := w.commit(ctx, cl)
		var conflict *zodb.ConflictError
		if err == nil || !errors.As(err, &conflict) || i == 5 {
			return tid, err
		}
	}
}

// waitAcked waits until n more commits are acknowledged.
func (w *workload) waitAcked(t *testing.T, n int) {
	t.Helper()
	w.mu.Lock()
	want := len(w.acked) + n
	w.mu.Unlock()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		w.mu.Lock()
		got := len(w.acked)
		w.mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits acknowledged in %v, want %d", got-want+n, waitTimeout, n)
		}
	}
}

// reader reads the whole group at the last tid again and again, until
// stop, checking that every snapshot holds one transaction's data for
// every object (each transaction writes the whole group). stop returns
// the number of consistent snapshots read and reports torn ones.
func (w *workload) reader(t *testing.T, cl *client.Client) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var n int
	var torn []string
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			head, err := cl.LastTid(ctx)
			if err != nil || head == 0 {
				continue
			}
			seqs := map[int]bool{}
			ok := true
			for _, oid := range w.oids {
				b, _, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: head})
				if err != nil {
					ok = false // unavailable meanwhile: not a snapshot
					break
				}
				seq, _, err := parseData(b)
				if err != nil {
					torn = append(torn, err.Error())
					ok = false
					break
				}
				seqs[seq] = true
			}
			if !ok {
				continue
			}
			if len(seqs) != 1 {
				torn = append(torn, fmt.Sprintf("snapshot at %v holds the data of txns %v", head, slices.Sorted(maps.Keys(seqs))))
			}
			n++
		}
	}()
	return func() int {
		cancel()
		<-done
		for _, s := range torn {
			t.Errorf("torn read: %s", s)
		}
		return n
	}
}
