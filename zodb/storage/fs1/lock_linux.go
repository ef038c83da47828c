package fs1

import (
	"os"
	"syscall"
)

// fOFDSetLK is F_OFD_SETLK: a record lock owned by the open file, so that
// two opens in one process exclude each other too; it conflicts with the
// classic fcntl locks ZODB/py (zc.lockfile) takes.
const fOFDSetLK = 37

func lockExclusive(f *os.File) error {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	err := syscall.FcntlFlock(f.Fd(), fOFDSetLK, &lk)
	if err == syscall.EINVAL { // kernel without OFD locks
		err = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
	}
	return err
}
