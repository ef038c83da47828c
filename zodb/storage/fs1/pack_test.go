package fs1

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/neozodb/neo/zodb"
)

// TestPackGolden packs the file each packed reference file was made from,
// at the same time and with the same gc setting, and compares the result,
// and the index saved with it, with what ZODB wrote.
func TestPackGolden(t *testing.T) {
	m := readManifest(t)
	if len(m.Extra.Pack) == 0 {
		t.Fatal("manifest has no pack entries")
	}
	ctx := context.Background()
	for name, p := range m.Extra.Pack {
		t.Run(name, func(t *testing.T) {
			packTid := zodb.TidFromUnix(p.PackTime)
			if packTid != mustTid(t, p.PackTid) {
				t.Fatalf("pack time %v gives tid %v, manifest says %s", p.PackTime, packTid, p.PackTid)
			}
			dir := t.TempDir()
			src := filepath.Join(dataDir(), p.PackedFrom)
			path := copyFile(t, src, dir, "Data.fs")
			s, err := Open(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Pack(ctx, packTid, p.GC); err != nil {
				t.Fatal(err)
			}
			// still usable after the file was replaced
			if _, _, _, err := s.Load(ctx, zodb.Xid{Oid: 0, At: zodb.TidMax}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for _, ext := range []string{"", ".index"} {
				got, err := os.ReadFile(path + ext)
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(filepath.Join(dataDir(), name) + ext)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("Data.fs%s after pack differs from %s%s (%d vs %d bytes)", ext, name, ext, len(got), len(want))
				}
			}
			old, _ := os.ReadFile(path + ".old")
			orig, _ := os.ReadFile(src)
			if !bytes.Equal(old, orig) {
				t.Errorf("Data.fs.old is not the file before pack")
			}

			// packing again at the same time changes nothing
			s, err = Open(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			if err := s.Pack(ctx, packTid, p.GC); err != nil {
				t.Fatal(err)
			}
			s.Close()
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Errorf("second pack at the same time changed the file")
			}
		})
	}
}
