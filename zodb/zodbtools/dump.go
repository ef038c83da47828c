package zodbtools

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/neozodb/neo/zodb"
)

// The dump format (zodbtools' raw format, binary safe):
//
//	txn <tid> <status|quote>
//	user <user|quote>
//	description <description|quote>
//	extension <raw extension|quote>
//	obj <oid> (delete | from <tid> | <size> <hashfunc>:<hash> (-|LF <raw data>)) LF
//	obj ...
//	LF
//	txn ...
//
// Objects of a transaction are sorted by oid.

// DumpObjKind tells what an object entry of a dump holds.
type DumpObjKind int

const (
	ObjData   DumpObjKind = iota // data (or only its hash)
	ObjCopy                      // "from <tid>": the data of an older revision
	ObjDelete                    // "delete": the object is deleted
)

// DumpObj is one "obj" entry of a dump.
type DumpObj struct {
	Oid  zodb.Oid
	Kind DumpObjKind

	// For ObjData:
	Data     []byte // nil when HashOnly
	HashOnly bool   // the entry has only the hash ("-")
	Size     int64  // size of the data
	HashFunc string // "sha1", "sha256", ...
	Hash     []byte

	// For ObjCopy: the tid of the revision whose data is reused.
	CopyFrom zodb.Tid
}

// DumpTxn is one transaction of a dump.
type DumpTxn struct {
	zodb.TxnInfo
	Objs []DumpObj
}

// AppendDump appends the dump form of txn to b.
func (txn *DumpTxn) AppendDump(b []byte) []byte {
	b = appendTxnHeader(b, &txn.TxnInfo)
	for i := range txn.Objs {
		o := &txn.Objs[i]
		b = append(b, "obj "...)
		b = append(b, o.Oid.String()...)
		switch o.Kind {
		case ObjDelete:
			b = append(b, " delete"...)
		case ObjCopy:
			b = append(b, " from "...)
			b = append(b, o.CopyFrom.String()...)
		default:
			b = append(b, ' ')
			b = strconv.AppendInt(b, o.Size, 10)
			b = append(b, ' ')
			b = append(b, o.HashFunc...)
			b = append(b, ':')
			b = hex.AppendEncode(b, o.Hash)
			if o.HashOnly {
				b = append(b, " -"...)
			} else {
				b = append(b, '\n')
				b = append(b, o.Data...)
			}
		}
		b = append(b, '\n')
	}
	return append(b, '\n')
}

func appendTxnHeader(b []byte, txn *zodb.TxnInfo) []byte {
	b = append(b, "txn "...)
	b = append(b, txn.Tid.String()...)
	b = append(b, ' ')
	b = AppendQuote(b, []byte{byte(txn.Status)})
	b = append(b, "\nuser "...)
	b = AppendQuote(b, txn.User)
	b = append(b, "\ndescription "...)
	b = AppendQuote(b, txn.Description)
	b = append(b, "\nextension "...)
	b = AppendQuote(b, txn.Extension)
	return append(b, '\n')
}

// Iterator is what Dump reads: a storage's transaction iteration.
type Iterator interface {
	Iterate(ctx context.Context, tidMin, tidMax zodb.Tid) zodb.ITxnIterator
}

// DumpOptions tune Dump.
type DumpOptions struct {
	HashOnly bool // print only the hash of object data
	// Pretty selects how data is shown: "" or "raw" (the dump format
	// restore reads), or "zpickledis" (pickles disassembled as Python's
	// pickletools.dis, for people to read).
	Pretty string
}

// Dump writes the transactions tidMin ≤ tid ≤ tidMax of stor to w in
// zodbtools' raw dump format.
func Dump(ctx context.Context, w io.Writer, stor Iterator, tidMin, tidMax zodb.Tid, opt DumpOptions) error {
	pickleDis := false
	switch opt.Pretty {
	case "", "raw":
	case "zpickledis":
		pickleDis = true
	default:
		return fmt.Errorf("dump: invalid pretty format %q", opt.Pretty)
	}
	bw := bufio.NewWriterSize(w, 64*1024)
	it := stor.Iterate(ctx, tidMin, tidMax)
	var recs []*zodb.DataInfo
	var buf []byte
	for {
		txn, dit, err := it.NextTxn(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		recs = recs[:0]
		for {
			d, err := dit.NextData(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("dump: txn %v: %w", txn.Tid, err)
			}
			recs = append(recs, d)
		}
		sort.SliceStable(recs, func(i, j int) bool { return recs[i].Oid < recs[j].Oid })

		buf = appendTxnHeader(buf[:0], txn)
		if pickleDis && len(txn.Extension) > 0 {
			buf = buf[:bytes.LastIndex(buf[:len(buf)-1], []byte("\n"))+1]
			dis, err := DisassembleExtension(txn.Extension, "  ")
			if err != nil {
				return fmt.Errorf("dump: txn %v: extension: %w", txn.Tid, err)
			}
			buf = append(buf, "extension\n"...)
			buf = append(buf, dis...)
		}
		for _, d := range recs {
			buf = append(buf, "obj "...)
			buf = append(buf, d.Oid.String()...)
			writeData := false
			switch {
			case d.Data == nil:
				buf = append(buf, " delete"...)
			case d.DataTid != 0:
				buf = append(buf, " from "...)
				buf = append(buf, d.DataTid.String()...)
			default:
				h := sha1.Sum(d.Data)
				buf = append(buf, ' ')
				buf = strconv.AppendInt(buf, int64(len(d.Data)), 10)
				buf = append(buf, " sha1:"...)
				buf = hex.AppendEncode(buf, h[:])
				writeData = true
			}
			if writeData {
				if opt.HashOnly {
					buf = append(buf, " -"...)
				} else {
					buf = append(buf, '\n')
					// large records go straight to the writer
					if _, err := bw.Write(buf); err != nil {
						return err
					}
					buf = buf[:0]
					data := d.Data
					if pickleDis {
						var err error
						data, err = DisassembleRecord(d.Data, "  ")
						if err != nil {
							return fmt.Errorf("dump: txn %v: obj %v: %w", txn.Tid, d.Oid, err)
						}
					}
					if _, err := bw.Write(data); err != nil {
						return err
					}
				}
			}
			buf = append(buf, '\n')
		}
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// DumpReader reads transactions in zodbtools' dump format.
type DumpReader struct {
	r      *bufio.Reader
	name   string // for error messages
	lineno int
	line   []byte // last line read, for error messages
}

// NewDumpReader returns a reader of the dump in r; name is used in error
// messages (e.g. the file name, or "stdin").
func NewDumpReader(r io.Reader, name string) *DumpReader {
	return &DumpReader{r: bufio.NewReaderSize(r, 64*1024), name: name}
}

// DumpError reports a malformed dump.
type DumpError struct {
	Name string
	Line int
	Msg  string
}

func (e *DumpError) Error() string { return fmt.Sprintf("%s+%d: %s", e.Name, e.Line, e.Msg) }

func (d *DumpReader) badline(msg string) error {
	if d.line == nil {
		return &DumpError{d.name, d.lineno, fmt.Sprintf("invalid line: %s (EOF)", msg)}
	}
	return &DumpError{d.name, d.lineno, fmt.Sprintf("invalid line: %s (%s)", msg, Quote(d.line))}
}

// readline returns the next line without its LF, or nil at EOF.
func (d *DumpReader) readline() ([]byte, error) {
	l, err := d.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		full := append([]byte(nil), l...)
		for err == bufio.ErrBufferFull {
			l, err = d.r.ReadSlice('\n')
			full = append(full, l...)
		}
		l = full
	} else if err == nil || len(l) > 0 {
		l = append([]byte(nil), l...)
	}
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s+%d: %w", d.name, d.lineno, err)
	}
	if len(l) == 0 && err == io.EOF {
		d.line = nil
		return nil, nil
	}
	d.lineno++
	l = bytes.TrimSuffix(l, []byte("\n"))
	d.line = l
	return l, nil
}

// ReadTxn reads the next transaction. It returns io.EOF at the end of the
// input. Object data is checked against its hash.
func (d *DumpReader) ReadTxn() (*DumpTxn, error) {
	l, err := d.readline()
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, io.EOF
	}
	// txn <tid16> "<status>"
	//
	// zodbtools quotes the status when writing but takes the byte between
	// the quotes as is when reading; accept both so that any status
	// written is read back.
	if len(l) < 4+16+4 || !bytes.HasPrefix(l, []byte("txn ")) || l[20] != ' ' {
		return nil, d.badline("no txn start")
	}
	tid, ok := parseHex16(l[4:20])
	if !ok {
		return nil, d.badline("no txn start")
	}
	q := l[21:]
	status, err := Unquote(q)
	if len(q) == 3 && q[0] == '"' && q[2] == '"' {
		status, err = q[1:2], nil
	}
	if err != nil || len(status) != 1 {
		return nil, d.badline("no txn start")
	}
	txn := &DumpTxn{}
	txn.Tid = zodb.Tid(tid)
	txn.Status = zodb.TxnStatus(status[0])
	return d.readTxnBody(txn)
}

// ReadTxnBody reads a transaction without its "txn" line (the input of
// zodb commit): user, description, extension and objects.
func (d *DumpReader) ReadTxnBody() (*DumpTxn, error) {
	return d.readTxnBody(&DumpTxn{TxnInfo: zodb.TxnInfo{Status: zodb.TxnComplete}})
}

func (d *DumpReader) readTxnBody(txn *DumpTxn) (*DumpTxn, error) {
	get := func(name string) ([]byte, error) {
		l, err := d.readline()
		if err != nil {
			return nil, err
		}
		if l == nil || !bytes.HasPrefix(l, []byte(name+" ")) {
			return nil, d.badline("no " + name)
		}
		v, err := Unquote(l[len(name)+1:])
		if err != nil {
			return nil, d.badline(name + ": " + err.Error())
		}
		return v, nil
	}
	var err error
	if txn.User, err = get("user"); err != nil {
		return nil, err
	}
	if txn.Description, err = get("description"); err != nil {
		return nil, err
	}
	if txn.Extension, err = get("extension"); err != nil {
		return nil, err
	}

	for {
		l, err := d.readline()
		if err != nil {
			return nil, err
		}
		if l != nil && len(l) == 0 {
			break // end of transaction
		}
		if l == nil || !bytes.HasPrefix(l, []byte("obj ")) {
			return nil, d.badline("no obj")
		}
		obj, err := d.parseObj(l)
		if err != nil {
			return nil, err
		}
		txn.Objs = append(txn.Objs, obj)
	}
	return txn, nil
}

// parseObj parses an obj line (and reads the data that follows it).
func (d *DumpReader) parseObj(l []byte) (DumpObj, error) {
	var obj DumpObj
	bad := func() (DumpObj, error) { return DumpObj{}, d.badline("invalid obj entry") }
	rest := l[4:]
	if len(rest) < 17 || rest[16] != ' ' {
		return bad()
	}
	oid, ok := parseHex16(rest[:16])
	if !ok {
		return bad()
	}
	obj.Oid = zodb.Oid(oid)
	rest = rest[17:]

	switch {
	case bytes.HasPrefix(rest, []byte("delete")):
		obj.Kind = ObjDelete
		return obj, nil
	case bytes.HasPrefix(rest, []byte("from ")):
		if len(rest) < 5+16 {
			return bad()
		}
		tid, ok := parseHex16(rest[5 : 5+16])
		if !ok {
			return bad()
		}
		obj.Kind = ObjCopy
		obj.CopyFrom = zodb.Tid(tid)
		return obj, nil
	}

	// <size> <hashfunc>:<hash>( -)?
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n >= len(rest) || rest[n] != ' ' {
		return bad()
	}
	size, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	if err != nil {
		return bad()
	}
	rest = rest[n+1:]
	colon := bytes.IndexByte(rest, ':')
	if colon <= 0 || !isWord(rest[:colon]) {
		return bad()
	}
	hashFunc := string(rest[:colon])
	rest = rest[colon+1:]
	n = 0
	for n < len(rest) && (rest[n] >= '0' && rest[n] <= '9' || rest[n] >= 'a' && rest[n] <= 'f') {
		n++
	}
	if n == 0 {
		return bad()
	}
	hashHex := rest[:n]
	hashOnly := bytes.HasPrefix(rest[n:], []byte(" -"))
	obj.Kind = ObjData
	obj.Size = size
	obj.HashFunc = hashFunc
	obj.HashOnly = hashOnly

	newHash, ok := hashes[hashFunc]
	if !ok {
		return DumpObj{}, d.badline("unknown hash function " + Quote([]byte(hashFunc)))
	}
	obj.Hash = make([]byte, hex.DecodedLen(len(hashHex)))
	if len(hashHex)%2 != 0 {
		return DumpObj{}, d.badline("odd-length hash")
	}
	hex.Decode(obj.Hash, hashHex)
	if hashOnly {
		return obj, nil
	}

	// data LF
	if size < 0 || size > 1<<40 {
		return bad()
	}
	data := make([]byte, 0, min(size+1, 1<<20))
	var chunk [64 * 1024]byte
	for need := size + 1; need > 0; {
		k, err := d.r.Read(chunk[:min(need, int64(len(chunk)))])
		data = append(data, chunk[:k]...)
		need -= int64(k)
		if err == io.EOF {
			if need > 0 {
				return DumpObj{}, &DumpError{d.name, d.lineno, fmt.Sprintf("obj %v: unexpected EOF in data", obj.Oid)}
			}
			break
		}
		if err != nil {
			return DumpObj{}, fmt.Errorf("%s+%d: %w", d.name, d.lineno, err)
		}
	}
	d.lineno += bytes.Count(data, []byte("\n"))
	d.line = nil
	if data[len(data)-1] != '\n' {
		return DumpObj{}, &DumpError{d.name, d.lineno, "no LF after obj data"}
	}
	data = data[:len(data)-1]
	h := newHash()
	h.Write(data)
	if sum := h.Sum(nil); !bytes.Equal(sum, obj.Hash) {
		return DumpObj{}, &DumpError{d.name, d.lineno, fmt.Sprintf("data corrupt: %s = %x, expected %x", hashFunc, sum, obj.Hash)}
	}
	obj.Data = data
	return obj, nil
}

func isWord(b []byte) bool {
	for _, c := range b {
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func parseHex16(b []byte) (uint64, bool) {
	if len(b) != 16 {
		return 0, false
	}
	var x uint64
	for _, c := range b {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		default:
			return 0, false
		}
		x = x<<4 | uint64(v)
	}
	return x, true
}

// errHashOnly is returned when a transaction to commit has hash-only data.
var errHashOnly = errors.New("cannot commit transaction with hashonly object")
