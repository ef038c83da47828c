package histcheck

import (
	"fmt"
	"slices"

	"github.com/neozodb/neo/zodb"
)

// readSomething tells that operation i read a value that must be checked.
func (c *checker) readSomething(i int) bool {
	op := &c.h.Ops[i]
	return op.At != 0 && (op.Kind != Read || op.Outcome == OK)
}

// checkCounter checks the operations on counter oid.
func (c *checker) checkCounter(oid zodb.Oid, fo *FinalObject) {
	ops := c.opsOn(oid)
	init := c.initial(fo).Count
	known := fo.Revisions != nil
	lost := 0
	if known {
		revs := c.revisionsAfterStart(oid, fo)
		byTid := map[zodb.Tid]int{}
		for k, r := range revs {
			byTid[r.Tid] = k
		}
		used := map[int]bool{}
		for _, i := range ops {
			op := &c.h.Ops[i]
			if op.Kind != Increment || op.Outcome != OK {
				continue
			}
			k, ok := byTid[op.Tid]
			if !ok {
				c.add(Lost, i, "no revision of %v at %v in the final state", oid, op.Tid)
				lost++
				continue
			}
			used[k] = true
			if revs[k].Value.Count != op.Value.Count+1 {
				c.add(WrongWrite, i, "read %d and wrote %d, but its revision holds %d", op.Value.Count, op.Value.Count+1, revs[k].Value.Count)
			}
		}
		// A revision that no acknowledged commit made is one of an
		// unknown outcome, of the value it would write.
		for k, r := range revs {
			if used[k] {
				continue
			}
			cand, aborted := -1, -1
			for _, i := range ops {
				op := &c.h.Ops[i]
				if op.Kind != Increment || op.At == 0 || op.At >= r.Tid || op.Value.Count+1 != r.Value.Count {
					continue
				}
				if _, done := c.tidOf[i]; done {
					continue
				}
				switch op.Outcome {
				case Unknown:
					if cand < 0 {
						cand = i
					}
				case Aborted:
					aborted = i
				}
			}
			switch {
			case cand >= 0:
				c.tidOf[cand] = r.Tid
				c.r.Resolved++
			case aborted >= 0:
				c.add(Phantom, aborted, "reported aborted, yet a revision of %v at %v holds the value it would write (%d), and no acknowledged or unknown increment wrote it", oid, r.Tid, r.Value.Count)
			default:
				c.add(Phantom, -1, "revision of %v at %v (value %d) was written by no acknowledged or unknown increment", oid, r.Tid, r.Value.Count)
			}
		}
		if n := len(fo.Revisions); n > 0 && fo.Revisions[n-1].Value.Count != fo.Value.Count {
			c.add(CountWrong, -1, "counter %v: final value %d differs from its last revision %d at %v", oid, fo.Value.Count, fo.Revisions[n-1].Value.Count, fo.Revisions[n-1].Tid)
		}
	}
	committed := c.committedInOrder(oid, ops)
	// Unknown outcomes not resolved may have committed anywhere: values
	// are then checked within a range.
	pending := 0
	if !known {
		for _, i := range ops {
			if c.h.Ops[i].Kind == Increment && c.h.Ops[i].Outcome == Unknown {
				pending++
			}
		}
	}
	tids := make([]zodb.Tid, len(committed))
	for k, i := range committed {
		tids[k] = c.tidOf[i]
	}
	// countUpTo returns how many commits have a tid ≤ t, and the last one.
	countUpTo := func(t zodb.Tid) (int, int) {
		n, _ := slices.BinarySearch(tids, t+1)
		if n == 0 {
			return 0, -1
		}
		return n, committed[n-1]
	}
	for _, i := range ops {
		if !c.readSomething(i) {
			continue
		}
		op := &c.h.Ops[i]
		got := op.Value.Count
		if tid, ok := c.tidOf[i]; ok {
			n, last := countUpTo(tid - 1)
			if want := init + int64(n); got < want || got > want+int64(pending) {
				c.add(StaleRead, i, "read %d, but the %d commits before its tid make %d%s", got, n, want, lastBy(c.h, last))
				continue
			}
		}
		n, last := countUpTo(op.At)
		if want := init + int64(n); got < want || got > want+int64(pending) {
			c.add(StaleRead, i, "read %d at %v, but the %d commits up to it make %d%s", got, op.At, n, want, lastBy(c.h, last))
		}
	}
	final := fo.Value.Count
	lo := init + int64(len(committed))
	hi := lo + int64(pending)
	switch {
	case final < lo && lost == 0:
		n := int(lo - final)
		// In a serial history, the commits missing from the final
		// value are the ones that wrote more than it.
		var beyond []int
		for _, i := range committed {
			if c.h.Ops[i].Value.Count+1 > final {
				beyond = append(beyond, i)
			}
		}
		if pending == 0 && len(beyond) == n {
			for _, i := range beyond {
				if c.h.Ops[i].Outcome == OK {
					c.add(Lost, i, "wrote %d, but counter %v is %d in the final state", c.h.Ops[i].Value.Count+1, oid, final)
				} else if !known {
					c.add(CountWrong, i, "wrote %d, but counter %v is %d in the final state", c.h.Ops[i].Value.Count+1, oid, final)
				}
			}
			break
		}
		c.add(Lost, -1, "counter %v is %d, but %d increments from %d were acknowledged: %d lost", oid, final, len(committed), init, n)
		c.r.Lost += n - 1
	case final > hi:
		c.add(CountWrong, -1, "counter %v is %d, but at most %d increments from %d can have committed (%d committed, %d of unknown outcome)", oid, final, hi-init, init, len(committed), pending)
	}
}

func lastBy(h *History, i int) string {
	if i < 0 {
		return ""
	}
	return " (the last by " + Describe(h, i) + ")"
}

// checkList checks the operations on append-list oid.
func (c *checker) checkList(oid zodb.Oid, fo *FinalObject) {
	ops := c.opsOn(oid)
	owner := map[string]int{}
	for _, i := range ops {
		if c.h.Ops[i].Kind == Append {
			owner[c.h.Ops[i].Token] = i
		}
	}
	ownerOf := func(t string) int {
		if i, ok := owner[t]; ok {
			return i
		}
		return -1
	}
	final := fo.Value.Tokens
	pos := map[string]int{}
	for p, t := range final {
		if q, dup := pos[t]; dup {
			c.add(Duplicate, ownerOf(t), "token %s is twice in the final list of %v, at %d and %d", t, oid, q, p)
			continue
		}
		pos[t] = p
	}
	known := fo.Revisions != nil
	if known {
		prev := c.initial(fo).Tokens
		for _, r := range c.revisionsAfterStart(oid, fo) {
			if len(r.Value.Tokens) != len(prev)+1 || !slices.Equal(r.Value.Tokens[:len(prev)], prev) {
				c.add(WrongWrite, -1, "revision of %v at %v is %s, not the previous one %s plus one token", oid, r.Tid, FormatValue(List, r.Value), FormatValue(List, Value{Tokens: prev}))
				prev = r.Value.Tokens
				continue
			}
			prev = r.Value.Tokens
			t := prev[len(prev)-1]
			i := ownerOf(t)
			switch {
			case i < 0:
				c.add(Phantom, -1, "revision of %v at %v adds token %s, which no operation appended", oid, r.Tid, t)
			case c.h.Ops[i].Outcome == OK:
				if c.h.Ops[i].Tid != r.Tid {
					c.add(WrongWrite, i, "its token was added by the revision at %v", r.Tid)
				}
			case c.h.Ops[i].Outcome == Unknown:
				if _, done := c.tidOf[i]; !done {
					c.tidOf[i] = r.Tid
					c.r.Resolved++
				}
			default:
				c.add(Phantom, i, "reported aborted, yet its token was committed at %v", r.Tid)
			}
		}
		if n := len(fo.Revisions); n > 0 && !slices.Equal(fo.Revisions[n-1].Value.Tokens, final) {
			c.add(WrongWrite, -1, "list %v: final value %s differs from its last revision %s at %v", oid, FormatValue(List, fo.Value), FormatValue(List, fo.Revisions[n-1].Value), fo.Revisions[n-1].Tid)
		}
	}
	// Tokens of unknown outcome found in the list whose tid is not known
	// may be anywhere: reads are compared without them.
	vague := map[string]bool{}
	for _, i := range ops {
		op := &c.h.Ops[i]
		if op.Kind != Append {
			continue
		}
		_, inFinal := pos[op.Token]
		_, hasTid := c.tidOf[i]
		switch op.Outcome {
		case OK:
			if !inFinal {
				c.add(Lost, i, "token missing from the final list of %v", oid)
			}
		case Unknown:
			// With every revision known, one that is in none did
			// not commit.
			if !hasTid && !known {
				vague[op.Token] = true
				if inFinal {
					c.r.Resolved++
				}
			}
		case Aborted:
			if inFinal && !known {
				c.add(Phantom, i, "reported aborted, yet its token is in the final list of %v", oid)
			}
		}
	}
	for _, t := range final {
		if ownerOf(t) < 0 && !known {
			c.add(Phantom, -1, "token %s in the final list of %v was appended by no operation", t, oid)
		}
	}
	committed := c.committedInOrder(oid, ops)
	prevPos, prevOp := -1, -1
	for _, i := range committed {
		p, ok := pos[c.h.Ops[i].Token]
		if !ok {
			continue
		}
		if p < prevPos {
			c.add(Reordered, i, "its token is at %d in the final list of %v, before the token of %s, committed earlier", p, oid, Describe(c.h, prevOp))
			continue
		}
		prevPos, prevOp = p, i
	}
	tids := make([]zodb.Tid, len(committed))
	for k, i := range committed {
		tids[k] = c.tidOf[i]
	}
	// The list after the first k commits is seq[:len(initial)+k].
	initial := c.initial(fo).Tokens
	seq := slices.Clone(initial)
	for _, i := range committed {
		seq = append(seq, c.h.Ops[i].Token)
	}
	stateUpTo := func(t zodb.Tid) []string {
		n, _ := slices.BinarySearch(tids, t+1)
		return seq[:len(initial)+n]
	}
	for _, i := range ops {
		if !c.readSomething(i) {
			continue
		}
		op := &c.h.Ops[i]
		got := op.Value.Tokens
		if len(vague) > 0 {
			got = slices.DeleteFunc(slices.Clone(got), func(t string) bool { return vague[t] })
		}
		var want []string
		var at string
		if tid, ok := c.tidOf[i]; ok {
			want = stateUpTo(tid - 1)
			if !slices.Equal(got, want) {
				at = " before its tid"
			}
		}
		if at == "" {
			want = stateUpTo(op.At)
			at = fmt.Sprintf(" up to %v", op.At)
		}
		if slices.Equal(got, want) {
			continue
		}
		if t, dup := firstDuplicate(op.Value.Tokens); dup {
			c.add(Duplicate, i, "read token %s twice", t)
			continue
		}
		if at == " before its tid" {
			c.add(StaleRead, i, "read %s, but the commits before its tid make %s", FormatValue(List, Value{Tokens: got}), FormatValue(List, Value{Tokens: want}))
		} else {
			c.add(StaleRead, i, "read %s at %v, but the commits up to it make %s", FormatValue(List, Value{Tokens: got}), op.At, FormatValue(List, Value{Tokens: want}))
		}
	}
}

// firstDuplicate returns a token that is twice in v.
func firstDuplicate(v []string) (string, bool) {
	seen := map[string]bool{}
	for _, t := range v {
		if seen[t] {
			return t, true
		}
		seen[t] = true
	}
	return "", false
}
