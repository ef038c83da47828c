package zodbtools

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/neozodb/neo/zodb"
)

// AnalyzeReport is what Analyze finds: per class, how many records and
// bytes the transactions hold, split into the latest revision of each
// object seen ("current") and the older ones ("old").
type AnalyzeReport struct {
	TidMin, TidMax zodb.Tid // first and last transaction analyzed
	Txns           int      // transactions
	Records        int      // data records, deletions included
	Bytes          int64    // bytes of data

	CurrentObjects int
	CurrentBytes   int64
	OldObjects     int
	OldBytes       int64

	classes []*ClassStats          // in order of first appearance
	byName  map[string]*ClassStats // name → stats
	objects map[zodb.Oid]objInfo   // class and size of the last revision
}

// ClassStats is the usage of one class.
type ClassStats struct {
	Name                   string
	Count                  int // records
	Bytes                  int64
	CurrentCount, OldCount int
	CurrentBytes, OldBytes int64
}

type objInfo struct {
	class string
	size  int64
}

// Analyze computes the usage report of the transactions tidMin ≤ tid ≤
// tidMax of stor, as zodb analyze does.
func Analyze(ctx context.Context, stor Iterator, tidMin, tidMax zodb.Tid) (*AnalyzeReport, error) {
	r := &AnalyzeReport{byName: map[string]*ClassStats{}, objects: map[zodb.Oid]objInfo{}}
	it := stor.Iterate(ctx, tidMin, tidMax)
	for {
		txn, dit, err := it.NextTxn(ctx)
		if err == io.EOF {
			return r, nil
		}
		if err != nil {
			return nil, fmt.Errorf("analyze: %w", err)
		}
		if r.Txns == 0 {
			r.TidMin = txn.Tid
		}
		r.TidMax = txn.Tid
		r.Txns++
		for {
			d, err := dit.NextData(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("analyze: txn %v: %w", txn.Tid, err)
			}
			r.add(d)
		}
	}
}

func (r *AnalyzeReport) class(name string) *ClassStats {
	c := r.byName[name]
	if c == nil {
		c = &ClassStats{Name: name}
		r.byName[name] = c
		r.classes = append(r.classes, c)
	}
	return c
}

func (r *AnalyzeReport) add(d *zodb.DataInfo) {
	r.Records++
	if d.Data == nil {
		return // deletion: no data
	}
	size := int64(len(d.Data))
	r.Bytes += size
	prev, seen := r.objects[d.Oid]
	var c *ClassStats
	if !seen {
		name := zodb.PickleClass(d.Data)
		if name == "" {
			name = "."
		}
		c = r.class(name)
		r.CurrentObjects++
		r.CurrentBytes += size
		c.CurrentCount++
		c.CurrentBytes += size
	} else {
		// The class is the one of the object's first record seen.
		c = r.class(prev.class)
		r.OldObjects++
		r.OldBytes += prev.size
		r.CurrentBytes += size - prev.size
		c.OldCount++
		c.OldBytes += prev.size
		c.CurrentBytes += size - prev.size
	}
	r.objects[d.Oid] = objInfo{class: c.Name, size: size}
	c.Count++
	c.Bytes += size
}

// Classes returns the per-class stats in the report's order: by total
// bytes, ties in order of first appearance.
func (r *AnalyzeReport) Classes() []*ClassStats {
	v := append([]*ClassStats(nil), r.classes...)
	sort.SliceStable(v, func(i, j int) bool { return v[i].Bytes < v[j].Bytes })
	return v
}

// WriteCSV writes the report in zodb analyze --csv format.
func (r *AnalyzeReport) WriteCSV(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Class Name,T.Count,T.Bytes,Pct,AvgSize,C.Count,C.Bytes,O.Count,O.Bytes\n")
	for _, c := range r.Classes() {
		fmt.Fprintf(&b, "%s,%d,%d,%f%%,%f,%d,%d,%d,%d\n", c.Name, c.Count, c.Bytes,
			float64(c.Bytes)*100/float64(r.Bytes), float64(c.Bytes)/float64(c.Count),
			c.CurrentCount, c.CurrentBytes, c.OldCount, c.OldBytes)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// shorten cuts leading dotted components of a class name to fit n
// characters, marking the cut with "...".
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for len(s)+3 > n {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return s[len(s)-n:]
		}
		s = s[i+1:]
	}
	return "..." + s
}

// WriteText writes the report in zodb analyze's table format.
func (r *AnalyzeReport) WriteText(w io.Writer) error {
	var b strings.Builder
	if r.Txns == 0 {
		b.WriteString("# ø\nNo transactions processed\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "# %s..%s\n", r.TidMin, r.TidMax)
	fmt.Fprintf(&b, "Processed %d records in %d transactions\n", r.Records, r.Txns)
	fmt.Fprintf(&b, "Average record size is %7.2f bytes\n", float64(r.Bytes)/float64(r.Records))
	fmt.Fprintf(&b, "Average transaction size is %7.2f bytes\n", float64(r.Bytes)/float64(r.Txns))
	b.WriteString("Types used:\n")
	const fmtHdr = "%-46s %7s %9s %6s %7s %7s %9s %7s %9s\n"
	fmt.Fprintf(&b, fmtHdr, "Class Name", "T.Count", "T.Bytes", "Pct", "AvgSize", "C.Count", "C.Bytes", "O.Count", "O.Bytes")
	d := strings.Repeat
	fmt.Fprintf(&b, fmtHdr, d("-", 46), d("-", 7), d("-", 9), d("-", 5), d("-", 7), d("-", 7), d("-", 9), d("-", 7), d("-", 9))
	cumpct := 0.0
	for _, c := range r.Classes() {
		pct := float64(c.Bytes) * 100 / float64(r.Bytes)
		cumpct += pct
		fmt.Fprintf(&b, "%-46s %7d %9d %5.1f%% %7.2f %7d %9d %7d %9d\n", shorten(c.Name, 46), c.Count, c.Bytes,
			pct, float64(c.Bytes)/float64(c.Count), c.CurrentCount, c.CurrentBytes, c.OldCount, c.OldBytes)
	}
	fmt.Fprintf(&b, fmtHdr, d("=", 46), d("=", 7), d("=", 9), d("=", 5), d("=", 7), d("=", 7), d("=", 9), d("=", 7), d("=", 9))
	const fmtSum = "%46s %7d %8dk %5.1f%% %7.2f\n"
	fmt.Fprintf(&b, "%46s %7d %9s %6s %6.2fk\n", "Total Transactions", r.Txns, " ", " ", float64(r.Bytes)/float64(r.Txns)/1024)
	fmt.Fprintf(&b, fmtSum, "Total Records", r.Records, r.Bytes/1024, cumpct, float64(r.Bytes)/float64(r.Records))
	fmt.Fprintf(&b, fmtSum, "Current Objects", r.CurrentObjects, r.CurrentBytes/1024,
		float64(r.CurrentBytes)*100/float64(r.Bytes), float64(r.CurrentBytes)/float64(r.CurrentObjects))
	if r.OldObjects > 0 {
		fmt.Fprintf(&b, fmtSum, "Old Objects", r.OldObjects, r.OldBytes/1024,
			float64(r.OldBytes)*100/float64(r.Bytes), float64(r.OldBytes)/float64(r.OldObjects))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
