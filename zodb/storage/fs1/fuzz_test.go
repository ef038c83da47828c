package fs1

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// addSmallSeeds adds the reference files up to limit bytes to the corpus.
func addSmallSeeds(f *testing.F, suffix string, limit int) {
	paths, _ := filepath.Glob(filepath.Join(dataDir(), "*.fs"+suffix))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && len(b) <= limit {
			f.Add(b)
		}
	}
}

// FuzzOpen opens arbitrary bytes as Data.fs read-only and reads all it
// offers: errors are fine, panics and hangs are not.
func FuzzOpen(f *testing.F) {
	addSmallSeeds(f, "", 16<<10)
	// one file rewritten for every input: read-only opens write nothing
	path := filepath.Join(f.TempDir(), "Data.fs")
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		if err := os.WriteFile(path, data, 0o666); err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, path, &zodb.DriverOptions{ReadOnly: true})
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("open: error without position: %v", err)
			}
			return
		}
		defer s.Close()
		it := s.Iterate(ctx, 0, zodb.TidMax)
		for {
			_, dit, err := it.NextTxn(ctx)
			if err != nil {
				break
			}
			for {
				if _, err := dit.NextData(ctx); err != nil {
					break
				}
			}
		}
		for _, oid := range s.index.Oids() {
			s.Load(ctx, zodb.Xid{Oid: oid, At: zodb.TidMax})
			s.History(ctx, oid, 0)
		}
		s.UndoLog(ctx, 0, 100, nil)
		// the low-level iterator too, over the whole file
		lit := NewIter(s.file, int64(len(data)))
		for lit.NextTxn() == nil {
			for lit.NextData() == nil {
				LoadData(s.file, lit.Data)
			}
		}
	})
}

// FuzzIndex decodes arbitrary bytes as a .index file; what decodes must
// encode back to something that decodes to the same index.
func FuzzIndex(f *testing.F) {
	addSmallSeeds(f, ".index", 64<<10)
	if dir, ok := sharedUpstream(); ok {
		paths, _ := filepath.Glob(filepath.Join(dir, "*", "*", "data.fs.index"))
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := DecodeIndex(data)
		if err != nil {
			return
		}
		var buf writerBuf
		if _, err := x.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		y, err := DecodeIndex(buf)
		if err != nil {
			t.Fatalf("re-decoding written index: %v", err)
		}
		if !x.Equal(y) {
			t.Fatalf("index changed by a write/read round trip")
		}
	})
}

type writerBuf []byte

func (w *writerBuf) Write(b []byte) (int, error) { *w = append(*w, b...); return len(b), nil }

var _ io.Writer = (*writerBuf)(nil)
