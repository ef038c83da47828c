package wks

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/zodb"
)

// Every well-known scheme reaches its driver: opening an address nothing
// listens on fails in the driver, not for want of one.
func TestSchemes(t *testing.T) {
	for _, url := range []string{
		"neo://test@127.0.0.1:1",
		"zeo://127.0.0.1:1",
		"mem://wks-test",
		"file://" + t.TempDir() + "/Data.fs",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		stor, err := zodb.Open(ctx, url, &zodb.OpenOptions{})
		cancel()
		if err == nil {
			stor.Close()
			continue
		}
		if strings.Contains(err.Error(), "no driver") {
			t.Errorf("%s: %v", url, err)
		}
	}
}
