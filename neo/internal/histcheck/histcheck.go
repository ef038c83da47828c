// Package histcheck checks histories of operations recorded by clients of a
// ZODB storage while faults happen: that no acknowledged commit is lost, that
// the committed transactions form a serial history in tid order, and that
// acknowledged commits are seen by everything that starts after them.
//
// A history is made of operations on a few objects of two kinds:
//
//   - counters, changed by Increment: read the value v at a snapshot tid, then
//     commit v+1;
//   - append-lists, changed by Append: read the list at a snapshot tid, then
//     commit it with the operation's own unique token added at its end;
//
// plus plain Reads of either kind at a snapshot tid. Every operation records
// when it was invoked and when it returned (Call, Return, in any monotonic
// unit), and its outcome: a write is Committed (the finish was acknowledged
// with a tid), Aborted (it failed before its finish, e.g. on a conflict: it
// cannot have committed) or Unknown (it failed during its finish: it may or
// may not have committed).
//
// After the faults, the final state of every object is read (Final): its value
// and, when the storage can tell, every revision of it with its tid. Check
// compares the two and reports, naming the operations involved:
//
//   - Lost: an acknowledged commit whose effect is missing from the final
//     state (its token is not in the list, its revision is not in the
//     object's history, or the counter is smaller than the number of
//     acknowledged increments);
//   - every other anomaly: a read that does not see exactly the state made by
//     the commits before its snapshot (stale read), a duplicated or reordered
//     token, a counter that counts more increments than can have committed, a
//     commit from an operation reported aborted, or an order that goes against
//     real time (an operation that began after another's commit was
//     acknowledged committed before it or did not see it).
//
// Unknown outcomes are resolved from the final state where it tells: a token
// found in a list, a revision that only that operation can have written. An
// unresolved one may count as committed or not.
package histcheck

import (
	"fmt"
	"slices"
	"strings"

	"github.com/neozodb/neo/zodb"
)

// ObjKind is the kind of an object of a history.
type ObjKind uint8

const (
	Counter ObjKind = iota + 1 // an integer that Increment adds 1 to
	List                       // a list of tokens that Append adds to
)

func (k ObjKind) String() string {
	switch k {
	case Counter:
		return "counter"
	case List:
		return "list"
	}
	return fmt.Sprintf("ObjKind(%d)", uint8(k))
}

// OpKind is what an operation does.
type OpKind uint8

const (
	Increment OpKind = iota + 1 // read-modify-write of a counter
	Append                      // append of a token to a list
	Read                        // plain read of a counter or a list
)

func (k OpKind) String() string {
	switch k {
	case Increment:
		return "increment"
	case Append:
		return "append"
	case Read:
		return "read"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Outcome is how an operation ended.
type Outcome uint8

const (
	// OK: a write's finish was acknowledged with Op.Tid; a read returned
	// Op.Value.
	OK Outcome = iota + 1
	// Aborted: a write failed before its finish (conflict, error), so it
	// did not commit; a read failed (it is not checked).
	Aborted
	// Unknown: a write failed during its finish: it may have committed.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Aborted:
		return "aborted"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Value is the value of an object: Count for a counter, Tokens for a list.
type Value struct {
	Count  int64
	Tokens []string
}

// Op is one recorded operation.
type Op struct {
	Client string
	Kind   OpKind
	Obj    zodb.Oid
	// Call and Return are the real times the operation was invoked and
	// returned at, in one monotonic unit for the whole history.
	Call, Return int64
	// At is the snapshot the object was read at, and Value what was read
	// there (for a write: the value before its change). At is 0 when the
	// operation failed before it read anything.
	At    zodb.Tid
	Value Value
	// Token is what an Append adds; unique in the history.
	Token string
	// Current tells that a Read was checked to be still current at some
	// moment between Call and Return (e.g. by a vote with
	// CheckCurrentSerial): it then must see every commit acknowledged
	// before Call.
	Current bool
	Outcome Outcome
	Tid     zodb.Tid // the commit's tid when a write is OK
	Err     string   // the error of an Aborted or Unknown operation
}

// History is what the clients recorded.
type History struct {
	// Objects are the objects operated on, and their kinds.
	Objects map[zodb.Oid]ObjKind
	// Start is the tid of the state the history starts from: the initial
	// value of each object is its revision at Start in Final (zero values
	// when there is none).
	Start zodb.Tid
	Ops   []Op
}

// Add appends op to the history and returns its index, which names it in
// reports.
func (h *History) Add(op Op) int {
	h.Ops = append(h.Ops, op)
	return len(h.Ops) - 1
}

// Revision is one committed revision of an object.
type Revision struct {
	Tid   zodb.Tid
	Value Value
}

// FinalObject is the state of one object read after the faults.
type FinalObject struct {
	Value Value
	// Revisions are every revision of the object, oldest first, when the
	// storage can list them (nil: only Value is checked).
	Revisions []Revision
}

// Final is the state of every object read after the faults.
type Final map[zodb.Oid]*FinalObject

// AnomalyKind classifies what Check found.
type AnomalyKind uint8

const (
	Lost       AnomalyKind = iota + 1 // an acknowledged commit is missing
	StaleRead                         // a read does not see the state at its snapshot
	Duplicate                         // a token appears twice
	Reordered                         // list order differs from tid order
	CountWrong                        // counter not within the possible commits
	Phantom                           // a commit nobody can have made
	RealTime                          // order against real time
	WrongWrite                        // a revision does not hold what its commit wrote
	BadHistory                        // the history itself is inconsistent
)

func (k AnomalyKind) String() string {
	switch k {
	case Lost:
		return "lost commit"
	case StaleRead:
		return "stale read"
	case Duplicate:
		return "duplicate token"
	case Reordered:
		return "reordered list"
	case CountWrong:
		return "counter mismatch"
	case Phantom:
		return "phantom commit"
	case RealTime:
		return "real-time order"
	case WrongWrite:
		return "wrong write"
	case BadHistory:
		return "bad history"
	}
	return fmt.Sprintf("AnomalyKind(%d)", uint8(k))
}

// Anomaly is one problem found in a history.
type Anomaly struct {
	Kind AnomalyKind
	Op   int // index of the operation at fault in History.Ops, -1 for none
	Msg  string
}

func (a Anomaly) String() string { return a.Kind.String() + ": " + a.Msg }

// Report is the result of Check.
type Report struct {
	Acked     int // writes acknowledged
	Unknown   int // writes of unknown outcome
	Resolved  int // ... of which the final state tells they committed
	Lost      int // acknowledged commits missing
	Anomalies []Anomaly
}

// Ok tells that nothing was found.
func (r *Report) Ok() bool { return len(r.Anomalies) == 0 }

// Others returns the number of anomalies that are not lost commits.
func (r *Report) Others() int { return len(r.Anomalies) - r.Lost }

// Err returns nil if nothing was found, else an error listing the anomalies.
func (r *Report) Err() error {
	if r.Ok() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "history: %d lost, %d other anomalies", r.Lost, r.Others())
	for _, a := range r.Anomalies {
		b.WriteString("\n\t")
		b.WriteString(a.String())
	}
	return fmt.Errorf("%s", b.String())
}

// Describe names operation i of h in messages.
func Describe(h *History, i int) string {
	if i < 0 || i >= len(h.Ops) {
		return fmt.Sprintf("op #%d", i)
	}
	op := &h.Ops[i]
	s := fmt.Sprintf("op #%d (%s %s %v", i, op.Client, op.Kind, op.Obj)
	if op.Kind == Append {
		s += " token " + op.Token
	}
	if op.Kind == Read || op.At != 0 {
		s += fmt.Sprintf(" at %v", op.At)
	}
	switch {
	case op.Kind == Read:
	case op.Outcome == OK:
		s += fmt.Sprintf(", committed %v", op.Tid)
	default:
		s += ", " + op.Outcome.String()
	}
	return s + ")"
}

// FormatValue formats a value of an object of kind k for messages.
func FormatValue(k ObjKind, v Value) string {
	if k == List {
		return "[" + strings.Join(v.Tokens, " ") + "]"
	}
	return fmt.Sprint(v.Count)
}

func isWrite(k OpKind) bool { return k == Increment || k == Append }

// checker holds the state of one Check.
type checker struct {
	h      *History
	f      Final
	r      Report
	tidOf  map[int]zodb.Tid // committed writes (acknowledged and resolved): their tid
	reason map[int]string   // why an unknown write is taken as committed
}

func (c *checker) add(kind AnomalyKind, op int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if op >= 0 {
		msg = Describe(c.h, op) + ": " + msg
	}
	c.r.Anomalies = append(c.r.Anomalies, Anomaly{Kind: kind, Op: op, Msg: msg})
	if kind == Lost {
		c.r.Lost++
	}
}

// Check checks history h against the final state f.
func Check(h *History, f Final) *Report {
	c := &checker{h: h, f: f, tidOf: map[int]zodb.Tid{}, reason: map[int]string{}}
	c.checkOps()
	oids := make([]zodb.Oid, 0, len(h.Objects))
	for oid := range h.Objects {
		oids = append(oids, oid)
	}
	slices.Sort(oids)
	for _, oid := range oids {
		fo := f[oid]
		if fo == nil {
			c.add(Lost, -1, "object %v: missing from the final state", oid)
			continue
		}
		switch h.Objects[oid] {
		case Counter:
			c.checkCounter(oid, fo)
		case List:
			c.checkList(oid, fo)
		default:
			c.add(BadHistory, -1, "object %v: unknown kind %v", oid, h.Objects[oid])
		}
	}
	c.checkRealTime()
	return &c.r
}

// checkOps checks each operation on its own and counts the outcomes.
func (c *checker) checkOps() {
	tokens := map[string]int{}
	for i := range c.h.Ops {
		op := &c.h.Ops[i]
		kind, ok := c.h.Objects[op.Obj]
		switch {
		case !ok:
			c.add(BadHistory, i, "object is not in the history's objects")
			continue
		case op.Kind == Increment && kind != Counter, op.Kind == Append && kind != List:
			c.add(BadHistory, i, "operation on a %v", kind)
			continue
		case op.Return < op.Call:
			c.add(BadHistory, i, "returned (%d) before it was called (%d)", op.Return, op.Call)
		}
		if op.Kind == Append {
			if j, dup := tokens[op.Token]; dup {
				c.add(BadHistory, i, "token already used by %s", Describe(c.h, j))
			}
			tokens[op.Token] = i
		}
		if !isWrite(op.Kind) {
			continue
		}
		switch op.Outcome {
		case OK:
			c.r.Acked++
			c.tidOf[i] = op.Tid
			if op.Tid <= op.At {
				c.add(BadHistory, i, "committed at %v, not after its snapshot", op.Tid)
			}
		case Unknown:
			c.r.Unknown++
		}
	}
}

// opsOn returns the indices of the operations on oid.
func (c *checker) opsOn(oid zodb.Oid) []int {
	var v []int
	for i := range c.h.Ops {
		if c.h.Ops[i].Obj == oid {
			v = append(v, i)
		}
	}
	return v
}

// initial returns the value of an object at the history's start.
func (c *checker) initial(fo *FinalObject) Value {
	var v Value
	for _, r := range fo.Revisions {
		if r.Tid <= c.h.Start {
			v = r.Value
		}
	}
	return v
}

// revisionsAfterStart returns the revisions made during the history, and
// reports revisions out of tid order.
func (c *checker) revisionsAfterStart(oid zodb.Oid, fo *FinalObject) []Revision {
	var v []Revision
	for i, r := range fo.Revisions {
		if i > 0 && r.Tid <= fo.Revisions[i-1].Tid {
			c.add(BadHistory, -1, "object %v: revisions out of order: %v after %v", oid, r.Tid, fo.Revisions[i-1].Tid)
		}
		if r.Tid > c.h.Start {
			v = append(v, r)
		}
	}
	return v
}

// committedInOrder returns the committed writes among ops, in tid order, and
// reports two commits of one object under one tid.
func (c *checker) committedInOrder(oid zodb.Oid, ops []int) []int {
	var v []int
	for _, i := range ops {
		if _, ok := c.tidOf[i]; ok && isWrite(c.h.Ops[i].Kind) {
			v = append(v, i)
		}
	}
	slices.SortStableFunc(v, func(a, b int) int { return cmpTid(c.tidOf[a], c.tidOf[b]) })
	for k := 1; k < len(v); k++ {
		if c.tidOf[v[k]] == c.tidOf[v[k-1]] {
			c.add(BadHistory, v[k], "object %v committed twice at %v, also by %s", oid, c.tidOf[v[k]], Describe(c.h, v[k-1]))
		}
	}
	return v
}

func cmpTid(a, b zodb.Tid) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkRealTime checks that committed writes and current reads are ordered
// consistently with real time: an operation invoked after a commit was
// acknowledged commits after it and sees it, and no snapshot holds a commit
// invoked after the snapshot's operation returned.
func (c *checker) checkRealTime() {
	ops := c.h.Ops
	// Acknowledged commits by return time, with the running maximum of
	// their tids: over all objects, and per object.
	var acked []int
	for i := range ops {
		if isWrite(ops[i].Kind) && ops[i].Outcome == OK {
			acked = append(acked, i)
		}
	}
	slices.SortFunc(acked, func(a, b int) int { return cmpInt(ops[a].Return, ops[b].Return) })
	type prefix struct {
		ret  []int64 // return times, ascending
		best []int   // the op with the greatest tid among the first k+1
	}
	build := func(idx []int) *prefix {
		p := &prefix{}
		for k, j := range idx {
			p.ret = append(p.ret, ops[j].Return)
			if k == 0 || ops[j].Tid > ops[p.best[k-1]].Tid {
				p.best = append(p.best, j)
			} else {
				p.best = append(p.best, p.best[k-1])
			}
		}
		return p
	}
	// before returns the acknowledged commit of greatest tid that
	// returned before call, -1 if none.
	before := func(p *prefix, call int64) int {
		n, _ := slices.BinarySearch(p.ret, call) // returns < call
		if n == 0 {
			return -1
		}
		return p.best[n-1]
	}
	all := build(acked)
	perObj := map[zodb.Oid]*prefix{}
	for oid := range c.h.Objects {
		var idx []int
		for _, j := range acked {
			if ops[j].Obj == oid {
				idx = append(idx, j)
			}
		}
		perObj[oid] = build(idx)
	}
	for i := range ops {
		op := &ops[i]
		if tid, ok := c.tidOf[i]; ok {
			if j := before(all, op.Call); j >= 0 && ops[j].Tid >= tid {
				c.add(RealTime, i, "began after %s was acknowledged, yet committed at %v, not after it", Describe(c.h, j), tid)
			}
		}
		if op.Kind == Read && op.Outcome == OK && op.Current && perObj[op.Obj] != nil {
			if j := before(perObj[op.Obj], op.Call); j >= 0 && ops[j].Tid > op.At {
				c.add(RealTime, i, "read as current, but misses %s, acknowledged before the read began", Describe(c.h, j))
			}
		}
	}
	// Committed writes by invocation time, with the minimum of their tids
	// over every suffix.
	var committed []int
	for i := range c.tidOf {
		committed = append(committed, i)
	}
	slices.SortFunc(committed, func(a, b int) int { return cmpInt(ops[a].Call, ops[b].Call) })
	calls := make([]int64, len(committed))
	least := make([]int, len(committed))
	for k := len(committed) - 1; k >= 0; k-- {
		j := committed[k]
		calls[k] = ops[j].Call
		least[k] = j
		if k+1 < len(committed) && c.tidOf[least[k+1]] < c.tidOf[j] {
			least[k] = least[k+1]
		}
	}
	for i := range ops {
		if !c.readSomething(i) {
			continue
		}
		op := &ops[i]
		k, _ := slices.BinarySearch(calls, op.Return+1) // calls > Return
		if k < len(committed) && c.tidOf[least[k]] <= op.At {
			c.add(RealTime, i, "its snapshot %v holds %s, invoked after it returned", op.At, Describe(c.h, least[k]))
		}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
