package zodbtools

import (
	"context"
	"fmt"
	"io"

	"github.com/neozodb/neo/zodb"
)

// Watch prints the commits of stor to w until ctx is done or the event
// stream breaks, in the format of zodb watch:
//
//	# at <tid>
//	txn <tid>
//	obj <oid>     (verbose only: every object changed, then an empty line)
//
// "# at" tells the head when watching starts: every transaction after it
// is reported. started, if not nil, is called once the watch is in place
// (after "# at <tid>" is written).
func Watch(ctx context.Context, stor *zodb.Storage, w io.Writer, verbose bool, started func(at0 zodb.Tid)) error {
	watchq := make(chan zodb.Event)
	at0 := stor.AddWatch(watchq)
	defer stor.DelWatch(watchq)
	if _, err := fmt.Fprintf(w, "# at %s\n", at0); err != nil {
		return err
	}
	if started != nil {
		started(at0)
	}
	for {
		var ev zodb.Event
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev = <-watchq:
		}
		switch ev := ev.(type) {
		case *zodb.EventError:
			return fmt.Errorf("%s: watch: %w", stor.URL(), ev.Err)
		case *zodb.CommitEvent:
			var b []byte
			b = append(b, "txn "...)
			b = append(b, ev.Tid.String()...)
			b = append(b, '\n')
			if verbose {
				for _, oid := range ev.Changed {
					b = append(b, "obj "...)
					b = append(b, oid.String()...)
					b = append(b, '\n')
				}
				b = append(b, '\n')
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
	}
}
