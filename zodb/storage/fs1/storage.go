package fs1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync"

	"github.com/neozodb/neo/zodb"
)

func init() {
	zodb.RegisterDriver("file", openURL)
}

func openURL(ctx context.Context, u *url.URL, opt *zodb.DriverOptions) (zodb.IStorageDriver, zodb.Tid, error) {
	path := u.Path
	if path == "" {
		path = u.Opaque
	}
	if path == "" {
		return nil, 0, fmt.Errorf("fs1: %s: no file path", u)
	}
	s, err := Open(ctx, path, opt)
	if err != nil {
		return nil, 0, err
	}
	s.url = u.String()
	return s, s.lastTid, nil
}

// FileStorage is a ZODB FileStorage (Data.fs) opened as a storage driver.
type FileStorage struct {
	url      string
	path     string
	readOnly bool
	watchq   chan<- zodb.Event
	resolver zodb.ConflictResolver
	log      *slog.Logger

	lockFile *os.File // Data.fs.lock, read-write opens only

	// mu guards the committed view that readers use.
	mu      sync.RWMutex
	file    *os.File
	magic   string
	index   *Index // index.TopPos is the committed end of the file
	lastTid zodb.Tid
	gen     int // incremented when pack replaces the file
	closed  bool

	oidMu  sync.Mutex
	maxOid zodb.Oid // largest oid used or allocated

	// commitSem is the commit lock: held from Begin to Finish/Abort, and
	// by Pack.
	commitSem chan struct{}
	// opMu serialises the operations that write the file with Close.
	opMu sync.Mutex
	cur  *txn // transaction holding the commit lock, if any
	// txnPos maps tid → transaction position, built on first use by
	// Restore (which looks up dataTid) and kept up to date by Finish and
	// Pack; nil until then. Guarded by opMu.
	txnPos map[zodb.Tid]int64

	noSync bool // tests only: no fsync on commit

	down      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
}

var (
	_ zodb.IStorageDriver = (*FileStorage)(nil)
	_ zodb.IUndoer        = (*FileStorage)(nil)
	_ zodb.IPacker        = (*FileStorage)(nil)
)

// Open opens the FileStorage at path. See the package documentation for
// what happens to side files and damaged tails.
func Open(ctx context.Context, path string, opt *zodb.DriverOptions) (_ *FileStorage, err error) {
	if opt == nil {
		opt = &zodb.DriverOptions{}
	}
	s := &FileStorage{
		url:       "file://" + path,
		path:      path,
		readOnly:  opt.ReadOnly,
		watchq:    opt.Watchq,
		resolver:  opt.Resolver,
		log:       slog.Default(),
		commitSem: make(chan struct{}, 1),
		down:      make(chan struct{}),
	}
	if opt.Logger != nil {
		s.log = opt.Logger
	}
	defer func() {
		if err != nil {
			if s.file != nil {
				s.file.Close()
			}
			if s.lockFile != nil {
				s.lockFile.Close()
			}
			err = fmt.Errorf("fs1: open %s: %w", path, err)
		}
	}()

	if s.readOnly {
		s.file, err = os.Open(path)
		if err != nil {
			return nil, err
		}
	} else {
		if opt.NoCreate {
			if _, err := os.Stat(path); err != nil {
				return nil, err
			}
		}
		s.lockFile, err = lockFile(path + ".lock")
		if err != nil {
			return nil, err
		}
		flags := os.O_RDWR
		if !opt.NoCreate {
			flags |= os.O_CREATE
		}
		s.file, err = os.OpenFile(path, flags, 0o666)
		if err != nil {
			return nil, err
		}
	}
	fi, err := s.file.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size == 0 && !s.readOnly {
		if _, err := s.file.WriteAt([]byte(Magic), 0); err != nil {
			return nil, err
		}
		if err := s.file.Sync(); err != nil {
			return nil, err
		}
		size = FileHeaderSize
	}
	s.magic, err = ReadFileHeader(s.file)
	if err != nil {
		return nil, err
	}

	// Index: the saved one if it is sane, else a full scan.
	x, lastTid, fromDisk := s.loadSavedIndex(size)
	if x == nil {
		x = NewIndex()
	}
	res, err := ScanIndex(ctx, s.file, size, x, x.TopPos, lastTid, s.log)
	if err != nil {
		return nil, err
	}
	if res.Tail != nil {
		if s.readOnly {
			s.log.Warn("fs1: ignoring incomplete tail", "file", path, "pos", res.End, "reason", res.Tail)
		} else {
			s.log.Warn("fs1: truncating incomplete tail", "file", path, "pos", res.End, "reason", res.Tail)
			if err := truncateTail(s.file, path, res.End, size); err != nil {
				return nil, err
			}
		}
	}
	x.TopPos = res.End
	s.index = x
	s.lastTid = res.LastTid
	s.maxOid, _ = x.MaxOid()
	if !s.readOnly && (!fromDisk || res.End != size) {
		if err := x.SaveFile(path + ".index"); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// loadSavedIndex loads Data.fs.index when it passes ZODB's sanity check.
func (s *FileStorage) loadSavedIndex(size int64) (*Index, zodb.Tid, bool) {
	x, err := LoadIndexFile(s.path + ".index")
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("fs1: ignoring unreadable index", "file", s.path, "err", err)
		}
		return nil, 0, false
	}
	tid, err := checkIndexSanity(s.file, size, x)
	if err != nil {
		s.log.Info("fs1: ignoring index", "file", s.path, "reason", err)
		return nil, 0, false
	}
	return x, tid, true
}

// truncateTail saves the bytes of f from pos on to path.trN (the first N
// not in use) and truncates f at pos.
func truncateTail(f *os.File, path string, pos, size int64) error {
	for i := 0; ; i++ {
		name := path + ".tr" + strconv.Itoa(i)
		o, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("saving truncated tail: %w", err)
		}
		_, err = io.Copy(o, io.NewSectionReader(f, pos, size-pos))
		if err == nil {
			err = o.Sync()
		}
		if err2 := o.Close(); err == nil {
			err = err2
		}
		if err != nil {
			return fmt.Errorf("saving truncated tail to %s: %w", name, err)
		}
		break
	}
	if err := f.Truncate(pos); err != nil {
		return err
	}
	return f.Sync()
}

// URL returns the address the storage was opened with.
func (s *FileStorage) URL() string { return s.url }

// Path returns the path of the data file.
func (s *FileStorage) Path() string { return s.path }

func (s *FileStorage) opErr(op string, args any, err error) error {
	return &zodb.OpError{URL: s.url, Op: op, Args: args, Err: err}
}

// rlock takes the read lock of the committed view, failing when closed.
func (s *FileStorage) rlock() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return zodb.ErrClosed
	}
	return nil
}

// LastTid returns the tid of the last committed transaction.
func (s *FileStorage) LastTid(ctx context.Context) (zodb.Tid, error) {
	if err := s.rlock(); err != nil {
		return 0, s.opErr("lastTid", nil, err)
	}
	defer s.mu.RUnlock()
	return s.lastTid, nil
}

// Size returns the size of the committed part of the file: the position
// just after the last finished transaction (ZODB's getSize()).
func (s *FileStorage) Size(ctx context.Context) (int64, error) {
	if err := s.rlock(); err != nil {
		return 0, s.opErr("size", nil, err)
	}
	defer s.mu.RUnlock()
	return s.index.TopPos, nil
}

// NewOids allocates n new oids after the largest oid in use.
func (s *FileStorage) NewOids(ctx context.Context, n int) ([]zodb.Oid, error) {
	if s.readOnly {
		return nil, s.opErr("newOids", nil, zodb.ErrReadOnly)
	}
	if err := s.rlock(); err != nil {
		return nil, s.opErr("newOids", nil, err)
	}
	s.mu.RUnlock()
	s.oidMu.Lock()
	defer s.oidMu.Unlock()
	v := make([]zodb.Oid, 0, max(n, 0))
	for i := 0; i < n; i++ {
		s.maxOid++ // oid 0 is the root: the first new oid is 1
		v = append(v, s.maxOid)
	}
	return v, nil
}

// noteOid raises the oid counter to oid.
func (s *FileStorage) noteOid(oid zodb.Oid) {
	s.oidMu.Lock()
	if oid > s.maxOid {
		s.maxOid = oid
	}
	s.oidMu.Unlock()
}

// Load returns the revision of xid.Oid current at xid.At.
func (s *FileStorage) Load(ctx context.Context, xid zodb.Xid) (data []byte, serial, nextSerial zodb.Tid, err error) {
	if err := s.rlock(); err != nil {
		return nil, 0, 0, s.opErr("load", xid, err)
	}
	defer s.mu.RUnlock()
	data, serial, nextSerial, err = s.load(xid)
	if err != nil {
		return nil, 0, 0, s.opErr("load", xid, err)
	}
	return data, serial, nextSerial, nil
}

func (s *FileStorage) load(xid zodb.Xid) (data []byte, serial, nextSerial zodb.Tid, err error) {
	pos, ok := s.index.Get(xid.Oid)
	if !ok {
		return nil, 0, 0, &zodb.NoObjectError{Oid: xid.Oid}
	}
	limit := s.index.TopPos
	for {
		dh, err := ReadDataHeader(s.file, pos, limit)
		if err != nil {
			return nil, 0, 0, err
		}
		if dh.Oid != xid.Oid {
			return nil, 0, 0, fmtErr(pos, nil, "record of %v where %v was expected", dh.Oid, xid.Oid)
		}
		if dh.Tid <= xid.At {
			if dh.IsDeletion() {
				return nil, 0, 0, &zodb.NoDataError{Oid: xid.Oid, DeletedAt: dh.Tid}
			}
			data, _, err := LoadData(s.file, dh)
			if err != nil {
				return nil, 0, 0, err
			}
			if data == nil {
				return nil, 0, 0, &zodb.NoDataError{Oid: xid.Oid, DeletedAt: dh.Tid}
			}
			return data, dh.Tid, nextSerial, nil
		}
		nextSerial = dh.Tid
		if dh.PrevPos == 0 {
			return nil, 0, 0, &zodb.NoDataError{Oid: xid.Oid, DeletedAt: 0}
		}
		limit = pos
		pos = dh.PrevPos
	}
}

// History returns up to size revisions of oid, newest first (all of them
// when size <= 0). Size is the record's data length as FileStorage reports
// it: 0 for records that point to the data of another revision.
func (s *FileStorage) History(ctx context.Context, oid zodb.Oid, size int) ([]zodb.HistoryEntry, error) {
	if err := s.rlock(); err != nil {
		return nil, s.opErr("history", oid, err)
	}
	defer s.mu.RUnlock()
	pos, ok := s.index.Get(oid)
	if !ok {
		return nil, s.opErr("history", oid, &zodb.NoObjectError{Oid: oid})
	}
	var v []zodb.HistoryEntry
	limit := s.index.TopPos
	for pos != 0 && (size <= 0 || len(v) < size) {
		if err := ctx.Err(); err != nil {
			return nil, s.opErr("history", oid, err)
		}
		dh, err := ReadDataHeader(s.file, pos, limit)
		if err == nil && dh.Oid != oid {
			err = fmtErr(pos, nil, "record of %v where %v was expected", dh.Oid, oid)
		}
		if err != nil {
			return nil, s.opErr("history", oid, err)
		}
		th, err := ReadTxnHeader(s.file, dh.TxnPos, s.index.TopPos, LoadMeta)
		if err != nil {
			return nil, s.opErr("history", oid, err)
		}
		info := th.Info()
		info.Tid = dh.Tid
		v = append(v, zodb.HistoryEntry{TxnInfo: *info, Size: int(dh.DataLen)})
		limit = pos
		pos = dh.PrevPos
	}
	return v, nil
}

// Close closes the storage: an unfinished transaction is aborted, the index
// is saved (read-write opens), and the lock released.
func (s *FileStorage) Close() error {
	s.closeOnce.Do(func() {
		close(s.down)
		s.opMu.Lock()
		defer s.opMu.Unlock()
		var errs []error
		if t := s.cur; t != nil {
			if t.state == txnVoted {
				if err := s.file.Truncate(t.tpos); err != nil {
					errs = append(errs, err)
				}
			}
			t.state = txnDone
			s.cur = nil
		}
		s.mu.Lock()
		s.closed = true
		if !s.readOnly {
			if err := s.index.SaveFile(s.path + ".index"); err != nil {
				errs = append(errs, err)
			}
		}
		if err := s.file.Close(); err != nil {
			errs = append(errs, err)
		}
		s.mu.Unlock()
		if s.lockFile != nil {
			if err := s.lockFile.Close(); err != nil { // releases the lock
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = s.opErr("close", nil, err)
		}
	})
	return s.closeErr
}

// lockFile takes the exclusive non-blocking lock of a read-write open, like
// zc.lockfile: the file holds " <pid>\n".
func lockFile(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	if err := lockExclusive(f); err != nil {
		holder := ""
		if b, err2 := os.ReadFile(name); err2 == nil {
			holder = fmt.Sprintf(" (held by pid%s)", trimSpace(string(b)))
		}
		f.Close()
		return nil, fmt.Errorf("storage is locked by another writer%s: %s: %w", holder, name, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(" "+strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[0] != ' ' {
		s = " " + s
	}
	return s
}

// sync makes the written data durable.
func (s *FileStorage) sync() error {
	if s.noSync {
		return nil
	}
	return s.file.Sync()
}
