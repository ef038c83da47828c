//go:build unix && !linux

package fs1

import (
	"os"
	"syscall"
)

func lockExclusive(f *os.File) error {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	return syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
}
