package zodbtools

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/neozodb/neo/zodb"
)

const sampleDump = "txn 0285cbac258bf266 \" \"\nuser \"Jürgen\"\ndescription \"a\\nb \\\"q\\\" \\xff\"\nextension \"\"\n" +
	"obj 0000000000000001 3 null:00\nabc\n" +
	"obj 0000000000000002 from 0285cbac258bf265\n" +
	"obj 0000000000000003 delete\n" +
	"obj 0000000000000004 4 sha1:a9993e364706816aba3e25717850c26c9cd0d89d -\n" +
	"\n" +
	"txn 0285cbac258bf267 \"p\"\nuser \"\"\ndescription \"\"\nextension \"\\x80\\x03}q\\x00.\"\n\n"

func readAll(t testing.TB, in []byte) ([]*DumpTxn, error) {
	r := NewDumpReader(bytes.NewReader(in), "test")
	var txns []*DumpTxn
	for {
		txn, err := r.ReadTxn()
		if err == io.EOF {
			return txns, nil
		}
		if err != nil {
			return txns, err
		}
		txns = append(txns, txn)
	}
}

func TestDumpReader(t *testing.T) {
	txns, err := readAll(t, []byte(sampleDump))
	if err != nil {
		t.Fatal(err)
	}
	if len(txns) != 2 {
		t.Fatalf("%d txns", len(txns))
	}
	t0 := txns[0]
	if t0.Tid != 0x0285cbac258bf266 || t0.Status != ' ' || string(t0.User) != "Jürgen" || string(t0.Description) != "a\nb \"q\" \xff" || len(t0.Extension) != 0 {
		t.Errorf("txn 0: %+v", t0.TxnInfo)
	}
	want := []DumpObj{
		{Oid: 1, Kind: ObjData, Data: []byte("abc"), Size: 3, HashFunc: "null", Hash: []byte{0}},
		{Oid: 2, Kind: ObjCopy, CopyFrom: 0x0285cbac258bf265},
		{Oid: 3, Kind: ObjDelete},
		{Oid: 4, Kind: ObjData, Size: 4, HashOnly: true, HashFunc: "sha1", Hash: []byte{0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50, 0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d}},
	}
	if len(t0.Objs) != len(want) {
		t.Fatalf("objs: %+v", t0.Objs)
	}
	for i, o := range t0.Objs {
		w := want[i]
		if o.Oid != w.Oid || o.Kind != w.Kind || !bytes.Equal(o.Data, w.Data) || o.Size != w.Size || o.HashOnly != w.HashOnly ||
			o.HashFunc != w.HashFunc || !bytes.Equal(o.Hash, w.Hash) || o.CopyFrom != w.CopyFrom {
			t.Errorf("obj %d: %+v, want %+v", i, o, w)
		}
	}
	if t1 := txns[1]; t1.Status != zodb.TxnPacked || string(t1.Extension) != "\x80\x03}q\x00." || len(t1.Objs) != 0 {
		t.Errorf("txn 1: %+v", t1)
	}
	// AppendDump gives back the input
	var out []byte
	for _, txn := range txns {
		out = txn.AppendDump(out)
	}
	if string(out) != sampleDump {
		t.Errorf("AppendDump:\n%q\nwant\n%q", out, sampleDump)
	}
}

func TestDumpReaderErrorLine(t *testing.T) {
	in := "txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000001 3 null:00\na\nc\nobj 0000000000000001 zz\n\n"
	_, err := readAll(t, []byte(in))
	var de *DumpError
	if !errors.As(err, &de) || de.Line != 8 {
		t.Fatalf("error %v, want one at line 8", err)
	}
}

// FuzzDumpReader: any input gives transactions or an error, never a panic;
// what parses dumps back to something that parses the same.
func FuzzDumpReader(f *testing.F) {
	f.Add([]byte(sampleDump))
	f.Add([]byte("txn 0285cbac258bf266 \" \"\nuser \"\"\ndescription \"\"\nextension \"\"\nobj 0000000000000001 99999999999 null:00\n"))
	f.Add([]byte("txn 0285cbac258bf266 \" \"\nuser \"\\x\"\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		txns, _ := readAll(t, in)
		var out []byte
		for _, txn := range txns {
			out = txn.AppendDump(out)
		}
		txns2, err := readAll(t, out)
		if err != nil {
			t.Fatalf("re-reading %q: %v", out, err)
		}
		var out2 []byte
		for _, txn := range txns2 {
			out2 = txn.AppendDump(out2)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%q\n%q", out, out2)
		}
	})
}

// Long metadata lines (up to 4 bytes of quoting per byte) are read back.
func TestDumpReaderLongLine(t *testing.T) {
	desc := bytes.Repeat([]byte{0xff, 'a', '\n'}, 65535/3)
	txn := &DumpTxn{TxnInfo: zodb.TxnInfo{Tid: 1, Status: ' ', User: []byte("u"), Description: desc, Extension: []byte{}}}
	txn.Objs = []DumpObj{{Oid: 1, Kind: ObjData, Data: bytes.Repeat([]byte("x\n"), 100000), Size: 200000, HashFunc: "null", Hash: []byte{0}}}
	in := txn.AppendDump(nil)
	got, err := readAll(t, in)
	if err != nil || len(got) != 1 {
		t.Fatalf("%d txns, %v", len(got), err)
	}
	if !bytes.Equal(got[0].Description, desc) || !bytes.Equal(got[0].Objs[0].Data, txn.Objs[0].Data) {
		t.Errorf("round trip differs")
	}
}
