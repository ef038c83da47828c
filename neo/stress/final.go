package stress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/neozodb/neo/neo/client"
	"github.com/neozodb/neo/neo/internal/histcheck"
	"github.com/neozodb/neo/neo/pt"
	"github.com/neozodb/neo/zodb"
)

// readFinal reads the final state with a fresh client.
func (r *runner) readFinal(ctx context.Context) (histcheck.Final, error) {
	cl, err := r.newClient(ctx, "CF")
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return r.readObjects(ctx, cl, r.objs)
}

// readObjects reads the value and every revision of objs.
func (r *runner) readObjects(ctx context.Context, cl *client.Client, objs []zodb.Oid) (histcheck.Final, error) {
	ctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	at, err := cl.LastTid(ctx)
	if err != nil {
		return nil, err
	}
	f := histcheck.Final{}
	for _, oid := range objs {
		kind := r.kind[oid]
		fo := &histcheck.FinalObject{Revisions: []histcheck.Revision{}}
		data, _, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: at})
		if err != nil {
			return nil, fmt.Errorf("load %v at %v: %w", oid, at, err)
		}
		if fo.Value, err = decode(kind, data); err != nil {
			return nil, fmt.Errorf("load %v at %v: %w", oid, at, err)
		}
		hist, err := cl.History(ctx, oid, 0)
		if err != nil {
			return nil, fmt.Errorf("history of %v: %w", oid, err)
		}
		for j := len(hist) - 1; j >= 0; j-- {
			tid := hist[j].Tid
			data, serial, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: tid})
			if err != nil {
				return nil, fmt.Errorf("load %v at %v: %w", oid, tid, err)
			}
			if serial != tid {
				// The storage that answered misses the revision: the
				// check reports it missing.
				msg := fmt.Sprintf("history of %v lists a revision at %v, but a load there gives serial %v", oid, tid, serial)
				r.res.Anomalies++
				r.res.Details = append(r.res.Details, msg)
				r.logf("%s", msg)
				continue
			}
			v, err := decode(kind, data)
			if err != nil {
				return nil, fmt.Errorf("load %v at %v: %w", oid, tid, err)
			}
			fo.Revisions = append(fo.Revisions, histcheck.Revision{Tid: tid, Value: v})
		}
		f[oid] = fo
	}
	return f, nil
}

// readChains reads the value and every revision of objs by loads alone,
// from the newest revision back (History would also read the transactions'
// metadata, which other partitions hold).
func (r *runner) readChains(ctx context.Context, cl *client.Client, objs []zodb.Oid) (histcheck.Final, error) {
	ctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	head, err := cl.LastTid(ctx)
	if err != nil {
		return nil, err
	}
	f := histcheck.Final{}
	for _, oid := range objs {
		kind := r.kind[oid]
		fo := &histcheck.FinalObject{Revisions: []histcheck.Revision{}}
		at := head
		for first := true; ; first = false {
			data, serial, _, err := cl.Load(ctx, zodb.Xid{Oid: oid, At: at})
			var nd *zodb.NoDataError
			if !first && errors.As(err, &nd) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("load %v at %v: %w", oid, at, err)
			}
			v, err := decode(kind, data)
			if err != nil {
				return nil, fmt.Errorf("load %v at %v: %w", oid, at, err)
			}
			if first {
				fo.Value = v
			}
			fo.Revisions = append(fo.Revisions, histcheck.Revision{Tid: serial, Value: v})
			if serial == 0 {
				break
			}
			at = serial - 1
		}
		slices.Reverse(fo.Revisions)
		f[oid] = fo
	}
	return f, nil
}

// check checks the recorded history against the final state.
func (r *runner) check(final histcheck.Final) {
	r.rec.mu.Lock()
	h := &r.rec.h
	rep := histcheck.Check(h, final)
	var ops, reads, current, conflicts, failed, timeouts int
	var longest int64
	for _, op := range h.Ops {
		ops++
		longest = max(longest, op.Return-op.Call)
		switch {
		case op.Kind == histcheck.Read && op.Outcome == histcheck.OK:
			reads++
			if op.Current {
				current++
			}
		case op.Outcome == histcheck.Aborted && op.Kind != histcheck.Read:
			if isConflictMsg(op.Err) {
				conflicts++
			} else {
				failed++
				if strings.Contains(op.Err, "deadline exceeded") {
					timeouts++
				}
			}
		}
	}
	bad := slices.Clone(r.rec.bad)
	r.rec.mu.Unlock()
	r.logf("history: %d operations: %d commits acknowledged, %d of unknown outcome (%d found committed), %d conflicts, %d other failures (%d timeouts), %d reads (%d checked current); longest operation %v",
		ops, rep.Acked, rep.Unknown, rep.Resolved, conflicts, failed, timeouts, reads, current, time.Duration(longest).Round(time.Millisecond))
	r.res.Acked = rep.Acked
	// Lost commits are counted once each, whichever check finds them.
	named := 0
	for _, a := range rep.Anomalies {
		if a.Kind == histcheck.Lost && a.Op >= 0 {
			r.lostOp(a.Op)
			named++
		}
	}
	r.res.Lost += rep.Lost - named
	r.res.Anomalies += rep.Others() + len(bad)
	for _, a := range rep.Anomalies {
		r.res.Details = append(r.res.Details, a.String())
		r.logf("%v", a)
	}
	for _, b := range bad {
		r.res.Details = append(r.res.Details, "corrupt record: "+b)
		r.logf("corrupt record: %s", b)
	}
}

func isConflictMsg(s string) bool {
	return strings.HasPrefix(s, conflictPrefix)
}

// checkReplicas reads the objects from each storage alone (the client's
// links to the others cut) and compares them with the final state: every
// replica must hold every revision.
func (r *runner) checkReplicas(ctx context.Context, final histcheck.Final) error {
	st, err := r.mon.ask(ctx)
	if err != nil {
		return fmt.Errorf("replica check: %w", err)
	}
	np := len(st.rows)
	if np == 0 {
		return fmt.Errorf("replica check: no partition table")
	}
	acked := map[zodb.Oid]map[zodb.Tid]int{}
	r.rec.mu.Lock()
	for i, op := range r.rec.h.Ops {
		if op.Outcome == histcheck.OK && op.Kind != histcheck.Read {
			if acked[op.Obj] == nil {
				acked[op.Obj] = map[zodb.Tid]int{}
			}
			acked[op.Obj][op.Tid] = i
		}
	}
	r.rec.mu.Unlock()
	// Every revision some copy holds must be on every replica.
	type replica struct {
		name string
		f    histcheck.Final
	}
	var replicas []replica
	for si, s := range r.c.stors {
		ni, ok := st.nodeByAddr(s.addr)
		if !ok {
			return fmt.Errorf("replica check: %s (%s) not in the node list: %v", s.name, s.addr, st)
		}
		var objs []zodb.Oid
		for _, oid := range r.objs {
			for _, cell := range st.rows[pt.Partition(uint64(oid), np)] {
				if cell.NID == ni.NID {
					objs = append(objs, oid)
				}
			}
		}
		if len(objs) == 0 {
			continue
		}
		name := fmt.Sprintf("CF%d", si+1)
		for _, o := range r.c.stors {
			if o != s {
				r.c.net.Cut(name, o.name)
			}
		}
		f, err := func() (histcheck.Final, error) {
			cl, err := r.newClient(ctx, name)
			if err != nil {
				return nil, err
			}
			defer cl.Close()
			return r.readChains(ctx, cl, objs)
		}()
		for _, o := range r.c.stors {
			r.c.net.Heal(name, o.name)
		}
		if err != nil {
			return fmt.Errorf("replica check of %s: %w", s.name, err)
		}
		replicas = append(replicas, replica{s.name, f})
	}
	for _, oid := range r.objs {
		all := map[zodb.Tid]bool{}
		for _, rev := range final[oid].Revisions {
			all[rev.Tid] = true
		}
		for _, rp := range replicas {
			if fo := rp.f[oid]; fo != nil {
				for _, rev := range fo.Revisions {
					all[rev.Tid] = true
				}
			}
		}
		var tids []zodb.Tid
		for tid := range all {
			tids = append(tids, tid)
		}
		slices.Sort(tids)
		for _, rp := range replicas {
			if fo := rp.f[oid]; fo != nil {
				r.compareReplica(rp.name, oid, tids, fo, final[oid], acked[oid])
			}
		}
	}
	return nil
}

// lostOp counts operation i as lost, once.
func (r *runner) lostOp(i int) {
	if r.lost == nil {
		r.lost = map[int]bool{}
	}
	if !r.lost[i] {
		r.lost[i] = true
		r.res.Lost++
	}
}

// compareReplica checks that a storage holds every revision of oid that
// some copy holds (tids), and the same final value as the cluster.
func (r *runner) compareReplica(stor string, oid zodb.Oid, tids []zodb.Tid, got, final *histcheck.FinalObject, acked map[zodb.Tid]int) {
	have := map[zodb.Tid]bool{}
	for _, rev := range got.Revisions {
		have[rev.Tid] = true
	}
	r.rec.mu.Lock()
	h := &r.rec.h
	defer r.rec.mu.Unlock()
	var missing []string
	for _, tid := range tids {
		if have[tid] {
			continue
		}
		if i, ok := acked[tid]; ok {
			msg := fmt.Sprintf("lost commit: %s: replica %s of %v misses the revision at %v", histcheck.Describe(h, i), stor, oid, tid)
			r.lostOp(i)
			r.res.Details = append(r.res.Details, msg)
			r.logf("%s", msg)
			continue
		}
		missing = append(missing, tid.String())
	}
	kind := r.kind[oid]
	if len(missing) > 0 || fmt.Sprint(got.Value) != fmt.Sprint(final.Value) {
		msg := fmt.Sprintf("replicas differ: %s holds %d revisions of %v, value %s; the cluster read %s; %d revisions of no acknowledged commit missing: %v",
			stor, len(got.Revisions), oid, histcheck.FormatValue(kind, got.Value), histcheck.FormatValue(kind, final.Value), len(missing), missing)
		r.res.Anomalies++
		r.res.Details = append(r.res.Details, msg)
		r.logf("%s", msg)
	}
}

// ring keeps the last lines of the nodes' logs, shown when a run fails.
type ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newRing(n int) *ring { return &ring{lines: make([]string, n)} }

func (g *ring) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		g.lines[g.next] = l
		g.next = (g.next + 1) % len(g.lines)
		if g.next == 0 {
			g.full = true
		}
	}
	return len(p), nil
}

// last returns up to n last lines, oldest first.
func (g *ring) last(n int) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var all []string
	if g.full {
		all = append(all, g.lines[g.next:]...)
	}
	all = append(all, g.lines[:g.next]...)
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// dumpLogs writes the last lines of the nodes' logs to the run's log.
func (r *runner) dumpLogs() {
	if r.opt.Log == nil {
		return
	}
	lines := r.logs.last(1500)
	fmt.Fprintf(r.opt.Log, "stress: last %d lines of the nodes' logs:\n", len(lines))
	for _, l := range lines {
		fmt.Fprintf(r.opt.Log, "\t%s\n", l)
	}
}
