package fs1

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("FS1_TEST_LOG") == "" {
		// Damaged files and ignored indexes are logged: keep test output
		// readable.
		slog.SetDefault(discardLog)
	}
	os.Exit(m.Run())
}
