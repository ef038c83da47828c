//go:build unix

package fs1

import (
	"os"
	"syscall"
)

// lockExclusive takes the writer's lock on Data.fs.lock the way ZODB/py
// (zc.lockfile) does: an exclusive, non-blocking flock. flock locks belong
// to the open file, so two opens in one process exclude each other too,
// and a ZODB/py process and a Go one exclude each other.
func lockExclusive(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
