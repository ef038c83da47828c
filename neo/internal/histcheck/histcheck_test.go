package histcheck

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

const (
	cnt  zodb.Oid = 1 // a counter
	lst  zodb.Oid = 2 // a list
	cnt2 zodb.Oid = 3 // another counter
)

func newHistory() *History {
	return &History{Objects: map[zodb.Oid]ObjKind{cnt: Counter, lst: List, cnt2: Counter}, Start: 10}
}

func inc(client string, call, ret int64, at zodb.Tid, read int64, out Outcome, tid zodb.Tid) Op {
	return Op{Client: client, Kind: Increment, Obj: cnt, Call: call, Return: ret, At: at, Value: Value{Count: read}, Outcome: out, Tid: tid}
}

func app(client string, call, ret int64, at zodb.Tid, read []string, token string, out Outcome, tid zodb.Tid) Op {
	return Op{Client: client, Kind: Append, Obj: lst, Call: call, Return: ret, At: at, Value: Value{Tokens: read}, Token: token, Outcome: out, Tid: tid}
}

func readCnt(client string, call, ret int64, at zodb.Tid, v int64, current bool) Op {
	return Op{Client: client, Kind: Read, Obj: cnt, Call: call, Return: ret, At: at, Value: Value{Count: v}, Outcome: OK, Current: current}
}

func readLst(client string, call, ret int64, at zodb.Tid, v []string) Op {
	return Op{Client: client, Kind: Read, Obj: lst, Call: call, Return: ret, At: at, Value: Value{Tokens: v}, Outcome: OK}
}

func L(t ...string) []string { return t }

// good is a valid history: two clients on a counter and a list, with a
// conflict, an unknown outcome that committed and one that did not.
func good() (*History, Final) {
	h := newHistory()
	h.Add(inc("C1", 1, 5, 10, 0, OK, 20))       // 0: 0 → 1 at 20
	h.Add(inc("C2", 2, 6, 10, 0, Aborted, 0))   // 1: conflict with #0
	h.Add(inc("C2", 7, 9, 20, 1, OK, 30))       // 2: 1 → 2 at 30
	h.Add(inc("C1", 8, 12, 30, 2, Unknown, 0))  // 3: committed at 40 (final tells)
	h.Add(readCnt("C3", 13, 14, 40, 3, true))   // 4
	h.Add(inc("C3", 15, 16, 40, 3, Unknown, 0)) // 5: did not commit
	h.Add(app("C1", 1, 3, 10, L(), "a", OK, 15))
	h.Add(app("C2", 2, 4, 10, L(), "x", Aborted, 0))
	h.Add(app("C2", 5, 8, 15, L("a"), "b", OK, 25))
	h.Add(app("C3", 6, 11, 25, L("a", "b"), "c", Unknown, 0)) // committed at 35
	h.Add(readLst("C1", 12, 13, 25, L("a", "b")))             // an older snapshot is fine
	h.Add(readLst("C1", 12, 13, 35, L("a", "b", "c")))
	h.Add(Op{Client: "C1", Kind: Increment, Obj: cnt2, Call: 1, Return: 2, At: 10, Value: Value{Count: 0}, Outcome: OK, Tid: 12})
	f := Final{
		cnt:  {Value: Value{Count: 3}, Revisions: []Revision{{5, Value{Count: 0}}, {20, Value{Count: 1}}, {30, Value{Count: 2}}, {40, Value{Count: 3}}}},
		lst:  {Value: Value{Tokens: L("a", "b", "c")}, Revisions: []Revision{{5, Value{}}, {15, Value{Tokens: L("a")}}, {25, Value{Tokens: L("a", "b")}}, {35, Value{Tokens: L("a", "b", "c")}}}},
		cnt2: {Value: Value{Count: 1}, Revisions: []Revision{{12, Value{Count: 1}}}},
	}
	return h, f
}

// withoutRevisions returns f with only the final values.
func withoutRevisions(f Final) Final {
	g := Final{}
	for oid, o := range f {
		g[oid] = &FinalObject{Value: o.Value}
	}
	return g
}

func TestGood(t *testing.T) {
	for _, revs := range []bool{true, false} {
		h, f := good()
		if !revs {
			f = withoutRevisions(f)
		}
		r := Check(h, f)
		if !r.Ok() {
			t.Errorf("revisions %v: valid history rejected: %v", revs, r.Err())
		}
		if r.Acked != 5 || r.Unknown != 3 {
			t.Errorf("revisions %v: acked %d unknown %d, want 5 and 3", revs, r.Acked, r.Unknown)
		}
		if revs && r.Resolved != 2 {
			t.Errorf("resolved %d, want 2", r.Resolved)
		}
	}
}

// The initial value of an object is its revision at the history's start.
func TestInitialValue(t *testing.T) {
	h := newHistory()
	h.Add(Op{Client: "C1", Kind: Increment, Obj: cnt2, Call: 1, Return: 2, At: 10, Value: Value{Count: 7}, Outcome: OK, Tid: 12})
	h.Add(app("C1", 3, 4, 12, L("p"), "q", OK, 13))
	f := Final{
		cnt:  {Revisions: []Revision{}},
		cnt2: {Value: Value{Count: 8}, Revisions: []Revision{{4, Value{Count: 6}}, {5, Value{Count: 7}}, {12, Value{Count: 8}}}},
		lst:  {Value: Value{Tokens: L("p", "q")}, Revisions: []Revision{{9, Value{Tokens: L("p")}}, {13, Value{Tokens: L("p", "q")}}}},
	}
	if r := Check(h, f); !r.Ok() {
		t.Fatal(r.Err())
	}
	f[cnt2].Revisions[1].Value.Count = 6
	if r := Check(h, f); r.Ok() {
		t.Fatal("a wrong initial value not detected")
	}
}

// The unknown increment may count 0 or 1 without revisions.
func TestUnknownCounts0or1(t *testing.T) {
	for _, final := range []int64{2, 3} {
		h := newHistory()
		h.Add(inc("C1", 1, 2, 10, 0, OK, 20))
		h.Add(inc("C1", 3, 4, 20, 1, OK, 30))
		h.Add(inc("C2", 3, 6, 30, 2, Unknown, 0))
		f := Final{cnt: {Value: Value{Count: final}}, lst: {}, cnt2: {}}
		if r := Check(h, f); !r.Ok() {
			t.Errorf("final %d: %v", final, r.Err())
		}
	}
}

// bad is one invalid history: the anomaly it must show, on which op.
type bad struct {
	name   string
	build  func() (*History, Final)
	kind   AnomalyKind
	op     int    // the op the anomaly names (-1: none)
	substr string // in the message
	// lostToo: the history also loses a commit's effect (a lost update).
	lostToo bool
}

func TestBad(t *testing.T) {
	cases := []bad{
		{"lost list token", func() (*History, Final) {
			h, f := good()
			f[lst] = &FinalObject{Value: Value{Tokens: L("a", "c")}}
			return h, f
		}, Lost, 8, "token missing from the final list", false},
		{"lost counter revision", func() (*History, Final) {
			h, f := good()
			o := f[cnt]
			o.Revisions = append(o.Revisions[:2:2], o.Revisions[3])
			return h, f
		}, Lost, 2, "no revision of 0000000000000001 at 000000000000001e", false},
		{"lost increments, final value only", func() (*History, Final) {
			h, f := good()
			f = withoutRevisions(f)
			f[cnt].Value.Count = 1
			return h, f
		}, Lost, -1, "counter 0000000000000001 is 1, but 2 increments from 0 were acknowledged: 1 lost", false},
		{"final counter behind its revisions", func() (*History, Final) {
			h := newHistory()
			h.Add(inc("C1", 1, 2, 10, 0, OK, 20))
			h.Add(inc("C2", 3, 4, 20, 1, OK, 30))
			f := Final{cnt: {Value: Value{Count: 1}, Revisions: []Revision{{20, Value{Count: 1}}, {30, Value{Count: 2}}}}, lst: {}, cnt2: {}}
			return h, f
		}, Lost, 1, "wrote 2, but counter 0000000000000001 is 1 in the final state", false},
		{"stale plain read", func() (*History, Final) {
			h, f := good()
			h.Ops[4].Value.Count = 2 // at 40 the counter is 3
			return h, f
		}, StaleRead, 4, "read 2 at 0000000000000028, but the 3 commits up to it make 3", false},
		{"lost update (stale read committed)", func() (*History, Final) {
			h := newHistory()
			h.Add(inc("C1", 1, 2, 10, 0, OK, 20))
			h.Add(inc("C2", 3, 4, 10, 0, OK, 30)) // read 0, but #0 committed before it
			f := Final{cnt: {Value: Value{Count: 1}, Revisions: []Revision{{20, Value{Count: 1}}, {30, Value{Count: 1}}}}, lst: {}, cnt2: {}}
			return h, f
		}, StaleRead, 1, "read 0, but the 1 commits before its tid make 1", true},
		{"stale list read", func() (*History, Final) {
			h, f := good()
			h.Ops[11].Value.Tokens = L("a", "b")
			return h, f
		}, StaleRead, 11, "read [a b] at 0000000000000023, but the commits up to it make [a b c]", false},
		{"duplicated token", func() (*History, Final) {
			h, f := good()
			f = withoutRevisions(f)
			f[lst].Value.Tokens = L("a", "b", "b", "c")
			return h, f
		}, Duplicate, 8, "token b is twice in the final list", false},
		{"duplicated token in a revision", func() (*History, Final) {
			h, f := good()
			f[lst].Revisions = append(f[lst].Revisions, Revision{36, Value{Tokens: L("a", "b", "c", "a")}})
			f[lst].Value.Tokens = L("a", "b", "c", "a")
			return h, f
		}, Duplicate, 6, "token a is twice in the final list", false},
		{"duplicated token in a read", func() (*History, Final) {
			h, f := good()
			h.Ops[11].Value.Tokens = L("a", "b", "b", "c")
			return h, f
		}, Duplicate, 11, "read token b twice", false},
		{"reordered list", func() (*History, Final) {
			h, f := good()
			f = withoutRevisions(f)
			f[lst].Value.Tokens = L("b", "a", "c")
			return h, f
		}, Reordered, 8, "its token is at 0 in the final list of 0000000000000002, before the token of op #6", false},
		{"counter off by one", func() (*History, Final) {
			h, f := good()
			f = withoutRevisions(f)
			f[cnt].Value.Count = 5 // 2 acknowledged + 2 unknown at most
			return h, f
		}, CountWrong, -1, "counter 0000000000000001 is 5, but at most 4 increments", false},
		{"aborted append committed", func() (*History, Final) {
			h, f := good()
			f = withoutRevisions(f)
			f[lst].Value.Tokens = L("a", "b", "c", "x")
			return h, f
		}, Phantom, 7, "reported aborted, yet its token is in the final list", false},
		{"committed before an earlier acknowledged commit", func() (*History, Final) {
			h := newHistory()
			h.Add(inc("C1", 1, 2, 10, 0, OK, 30))
			h.Add(Op{Client: "C2", Kind: Increment, Obj: cnt2, Call: 3, Return: 4, At: 10, Outcome: OK, Tid: 20})
			f := Final{cnt: {Value: Value{Count: 1}}, cnt2: {Value: Value{Count: 1}}, lst: {}}
			return h, f
		}, RealTime, 1, "began after op #0 (C1 increment 0000000000000001 at 000000000000000a, committed 000000000000001e) was acknowledged", false},
		{"current read misses an acknowledged commit", func() (*History, Final) {
			h := newHistory()
			h.Add(inc("C1", 1, 2, 10, 0, OK, 20))
			h.Add(readCnt("C2", 3, 4, 10, 0, true))
			f := Final{cnt: {Value: Value{Count: 1}}, cnt2: {}, lst: {}}
			return h, f
		}, RealTime, 1, "read as current, but misses op #0", false},
		{"read of the future", func() (*History, Final) {
			h := newHistory()
			h.Add(readCnt("C2", 1, 2, 20, 1, false))
			h.Add(inc("C1", 3, 4, 10, 0, OK, 20))
			f := Final{cnt: {Value: Value{Count: 1}}, cnt2: {}, lst: {}}
			return h, f
		}, RealTime, 0, "holds op #1", false},
		{"read of a token that never committed", func() (*History, Final) {
			h, f := good()
			h.Add(app("C2", 20, 21, 35, L("a", "b", "c"), "u", Unknown, 0))
			h.Add(readLst("C1", 22, 23, 35, L("a", "b", "c", "u")))
			return h, f
		}, StaleRead, 14, "read [a b c u] at 0000000000000023, but the commits up to it make [a b c]", false},
		{"revision nobody wrote", func() (*History, Final) {
			h, f := good()
			o := f[cnt]
			o.Revisions = append(o.Revisions, Revision{50, Value{Count: 9}})
			o.Value.Count = 9
			return h, f
		}, Phantom, -1, "revision of 0000000000000001 at 0000000000000032 (value 9) was written by no acknowledged or unknown increment", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, f := tc.build()
			r := Check(h, f)
			if r.Ok() {
				t.Fatalf("not detected")
			}
			found := false
			for _, a := range r.Anomalies {
				if a.Kind == tc.kind && a.Op == tc.op && strings.Contains(a.Msg, tc.substr) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want %v on op %d with %q; got:\n%v", tc.kind, tc.op, tc.substr, r.Err())
			}
			if tc.op >= 0 && !strings.Contains(r.Err().Error(), Describe(h, tc.op)) {
				t.Errorf("the report does not name %s:\n%v", Describe(h, tc.op), r.Err())
			}
			if (tc.kind == Lost || tc.lostToo) != (r.Lost > 0) {
				t.Errorf("lost %d for a %v", r.Lost, tc.kind)
			}
			t.Logf("%v", r.Err())
		})
	}
}

func TestLostCount(t *testing.T) {
	h, f := good()
	f[lst] = &FinalObject{Value: Value{Tokens: L("c")}}
	r := Check(h, f)
	if r.Lost != 2 {
		t.Fatalf("lost %d, want 2: %v", r.Lost, r.Err())
	}
}

func TestBadHistory(t *testing.T) {
	h := newHistory()
	h.Add(app("C1", 1, 2, 10, nil, "a", OK, 20))
	h.Add(app("C2", 1, 2, 10, nil, "a", Aborted, 0))
	h.Add(Op{Client: "C1", Kind: Append, Obj: cnt, Token: "z", Outcome: Aborted})
	r := Check(h, Final{cnt: {}, cnt2: {}, lst: {Value: Value{Tokens: L("a")}}})
	var msgs []string
	for _, a := range r.Anomalies {
		if a.Kind == BadHistory {
			msgs = append(msgs, a.Msg)
		}
	}
	if len(msgs) != 2 {
		t.Fatalf("want 2 bad-history reports, got %q", msgs)
	}
}

// A long valid history is checked quickly (no quadratic passes).
func TestLargeHistory(t *testing.T) {
	h := newHistory()
	var revs []Revision
	var list []string
	tid := zodb.Tid(100)
	n := int64(0)
	for i := range 20000 {
		call := int64(2 * i)
		switch i % 4 {
		case 0:
			tid++
			h.Add(inc("C1", call, call+1, tid-1, n, OK, tid))
			n++
			revs = append(revs, Revision{tid, Value{Count: n}})
		case 1:
			tid++
			tok := fmt.Sprintf("t%d", i)
			h.Add(app("C2", call, call+1, tid-1, slices.Clone(list), tok, OK, tid))
			list = append(list, tok)
		case 2:
			h.Add(readCnt("C3", call, call+1, tid, n, true))
		default:
			h.Add(readLst("C4", call, call+1, tid, slices.Clone(list)))
		}
	}
	f := Final{cnt: {Value: Value{Count: n}, Revisions: revs}, lst: {Value: Value{Tokens: list}}, cnt2: {}}
	start := time.Now()
	r := Check(h, f)
	if !r.Ok() {
		t.Fatal(r.Err())
	}
	t.Logf("%d operations checked in %v", len(h.Ops), time.Since(start))
}
