package transaction

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// recorder is a data manager that logs the calls it gets and fails the
// one named in failAt.
type recorder struct {
	key    string
	failAt string
	log    *[]string
}

func (r *recorder) call(op string) error {
	*r.log = append(*r.log, r.key+"."+op)
	if op == r.failAt {
		return fmt.Errorf("%s refuses %s", r.key, op)
	}
	return nil
}

func (r *recorder) SortKey() string                                   { return r.key }
func (r *recorder) Abort(ctx context.Context, txn *Transaction) error { return r.call("abort") }
func (r *recorder) TPCBegin(ctx context.Context, txn *Transaction) error {
	return r.call("begin")
}
func (r *recorder) Commit(ctx context.Context, txn *Transaction) error  { return r.call("commit") }
func (r *recorder) TPCVote(ctx context.Context, txn *Transaction) error { return r.call("vote") }
func (r *recorder) TPCFinish(ctx context.Context, txn *Transaction) error {
	return r.call("finish")
}
func (r *recorder) TPCAbort(ctx context.Context, txn *Transaction) error {
	return r.call("tpc_abort")
}
func (r *recorder) AfterCompletion(txn *Transaction) { *r.log = append(*r.log, r.key+".done") }

func split(s string) []string { return strings.Fields(s) }

func TestCommitOrder(t *testing.T) {
	var log []string
	txn, ctx := New(context.Background())
	if Current(ctx) != txn {
		t.Fatal("Current does not return the transaction")
	}
	// joined out of order: the commit sorts them
	for _, k := range []string{"b", "a"} {
		if err := txn.Join(&recorder{key: k, log: &log}); err != nil {
			t.Fatal(err)
		}
	}
	var hooks []string
	txn.AddBeforeCommitHook(func(ctx context.Context, txn *Transaction) error {
		hooks = append(hooks, "before")
		return nil
	})
	txn.AddAfterCommitHook(func(ctx context.Context, txn *Transaction, ok bool) {
		hooks = append(hooks, fmt.Sprint("after ", ok))
	})
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want := split("a.begin b.begin a.commit b.commit a.vote b.vote a.finish b.finish a.done b.done")
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls\ngot  %v\nwant %v", log, want)
	}
	if !reflect.DeepEqual(hooks, []string{"before", "after true"}) {
		t.Errorf("hooks %v", hooks)
	}
	if txn.Status() != Committed {
		t.Errorf("status %v", txn.Status())
	}
	if err := txn.Commit(ctx); err == nil {
		t.Error("second commit succeeded")
	}
	if err := txn.Join(&recorder{key: "c", log: &log}); err == nil {
		t.Error("join after commit succeeded")
	}
}

// A failure at any phase before finish aborts every data manager: those
// that began get tpc_abort, the others abort.
func TestCommitFailure(t *testing.T) {
	for _, tc := range []struct {
		failDM, failAt string
		want           string
	}{
		{"b", "vote", "a.begin b.begin c.begin a.commit b.commit c.commit a.vote b.vote a.tpc_abort b.tpc_abort c.tpc_abort"},
		{"a", "commit", "a.begin b.begin c.begin a.commit a.tpc_abort b.tpc_abort c.tpc_abort"},
		{"b", "begin", "a.begin b.begin a.tpc_abort b.abort c.abort"},
	} {
		t.Run(tc.failDM+"."+tc.failAt, func(t *testing.T) {
			var log []string
			txn, ctx := New(context.Background())
			for _, k := range []string{"c", "a", "b"} {
				r := &recorder{key: k, log: &log}
				if k == tc.failDM {
					r.failAt = tc.failAt
				}
				txn.Join(r)
			}
			var ok []bool
			txn.AddAfterCommitHook(func(ctx context.Context, txn *Transaction, committed bool) { ok = append(ok, committed) })
			err := txn.Commit(ctx)
			if err == nil || !strings.Contains(err.Error(), "refuses") {
				t.Fatalf("commit: %v", err)
			}
			want := append(split(tc.want), "a.done", "b.done", "c.done")
			if !reflect.DeepEqual(log, want) {
				t.Errorf("calls\ngot  %v\nwant %v", log, want)
			}
			if txn.Status() != Aborted || !reflect.DeepEqual(ok, []bool{false}) {
				t.Errorf("status %v, after hook %v", txn.Status(), ok)
			}
		})
	}
}

func TestFinishFailureIsHeuristic(t *testing.T) {
	var log []string
	txn, ctx := New(context.Background())
	txn.Join(&recorder{key: "a", log: &log, failAt: "finish"})
	txn.Join(&recorder{key: "b", log: &log})
	err := txn.Commit(ctx)
	var h *HeuristicError
	if !errors.As(err, &h) {
		t.Fatalf("commit: %v, want HeuristicError", err)
	}
	want := split("a.begin b.begin a.commit b.commit a.vote b.vote a.finish b.finish a.done b.done")
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls\ngot  %v\nwant %v", log, want)
	}
}

func TestBeforeHookFailure(t *testing.T) {
	var log []string
	txn, ctx := New(context.Background())
	txn.Join(&recorder{key: "a", log: &log})
	txn.AddBeforeCommitHook(func(ctx context.Context, txn *Transaction) error { return errors.New("no") })
	if err := txn.Commit(ctx); err == nil {
		t.Fatal("commit succeeded")
	}
	if want := split("a.abort a.done"); !reflect.DeepEqual(log, want) {
		t.Errorf("calls %v, want %v", log, want)
	}
}

func TestAbort(t *testing.T) {
	var log []string
	txn, ctx := New(context.Background())
	txn.Join(&recorder{key: "b", log: &log})
	txn.Join(&recorder{key: "a", log: &log})
	if err := txn.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if want := split("a.abort b.abort a.done b.done"); !reflect.DeepEqual(log, want) {
		t.Errorf("calls %v, want %v", log, want)
	}
}

type transientErr struct{}

func (transientErr) Error() string   { return "try again" }
func (transientErr) Transient() bool { return true }

func TestRetry(t *testing.T) {
	ctx := context.Background()
	n := 0
	err := Retry(ctx, 5, func(ctx context.Context, txn *Transaction) error {
		n++
		if Current(ctx) != txn {
			t.Error("f's context does not carry its transaction")
		}
		if n < 3 {
			return fmt.Errorf("attempt %d: %w", n, transientErr{})
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Errorf("Retry: %v after %d attempts, want success after 3", err, n)
	}

	n = 0
	err = Retry(ctx, 2, func(ctx context.Context, txn *Transaction) error { n++; return transientErr{} })
	if !errors.Is(err, transientErr{}) || n != 2 {
		t.Errorf("Retry: %v after %d attempts, want the transient error after 2", err, n)
	}

	n = 0
	permanent := errors.New("permanent")
	err = Retry(ctx, 5, func(ctx context.Context, txn *Transaction) error { n++; return permanent })
	if !errors.Is(err, permanent) || n != 1 {
		t.Errorf("Retry: %v after %d attempts, want the permanent error after 1", err, n)
	}

	// a commit failing with a transient error is retried too
	n = 0
	var log []string
	err = Retry(ctx, 3, func(ctx context.Context, txn *Transaction) error {
		n++
		r := &recorder{key: "a", log: &log}
		if n == 1 {
			r.failAt = "vote"
		}
		txn.Join(voteErr{r})
		return nil
	})
	if err != nil || n != 2 {
		t.Errorf("Retry over commit: %v after %d attempts", err, n)
	}
}

// voteErr turns its recorder's vote failure into a transient error.
type voteErr struct{ *recorder }

func (v voteErr) TPCVote(ctx context.Context, txn *Transaction) error {
	if err := v.recorder.TPCVote(ctx, txn); err != nil {
		return fmt.Errorf("%v: %w", err, transientErr{})
	}
	return nil
}

func TestMeta(t *testing.T) {
	txn, _ := New(context.Background())
	txn.SetUser("erin", "/")
	txn.Note("one")
	txn.Note("two")
	txn.SetExtension("k", 1)
	txn.SetExtension("j", "x")
	txn.SetExtension("k", 2)
	if txn.User() != "/ erin" || txn.Description() != "one\ntwo" {
		t.Errorf("user %q description %q", txn.User(), txn.Description())
	}
	if got := txn.Extension(); !reflect.DeepEqual(got, []ExtensionItem{{"k", 2}, {"j", "x"}}) {
		t.Errorf("extension %v", got)
	}
}

func TestSavepointNeedsSupport(t *testing.T) {
	var log []string
	txn, ctx := New(context.Background())
	txn.Join(&recorder{key: "a", log: &log})
	if _, err := txn.Savepoint(ctx); err == nil {
		t.Error("savepoint of a data manager without savepoints succeeded")
	}
}

type spRecorder struct {
	*recorder
}

type spState struct {
	r    *spRecorder
	name string
}

func (s spState) Rollback(ctx context.Context) error { return s.r.call("rollback-" + s.name) }

func (r *spRecorder) Savepoint(ctx context.Context, txn *Transaction) (DataManagerSavepoint, error) {
	n := 0
	for _, l := range *r.log {
		if strings.HasPrefix(l, r.key+".savepoint") {
			n++
		}
	}
	name := fmt.Sprint(n + 1)
	return spState{r, name}, r.call("savepoint" + name)
}

func TestSavepointRollback(t *testing.T) {
	var log []string
	txn, ctx := New(context.Background())
	txn.Join(&spRecorder{&recorder{key: "a", log: &log}})
	sp1, err := txn.Savepoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txn.Join(&spRecorder{&recorder{key: "b", log: &log}})
	sp2, err := txn.Savepoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp1.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sp2.Rollback(ctx); err == nil {
		t.Error("rollback to a savepoint taken after the one rolled back to succeeded")
	}
	want := split("a.savepoint1 a.savepoint2 b.savepoint1 a.rollback-1 b.abort")
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls\ngot  %v\nwant %v", log, want)
	}
}
