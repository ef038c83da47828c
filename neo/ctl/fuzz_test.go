package ctl

import (
	"fmt"
	"testing"
)

// FuzzParseTid: any argument is a tid or an error, and "tid:<n>" round-trips.
func FuzzParseTid(f *testing.F) {
	for _, s := range []string{"tid:0x3937af2eeeeeeee", "TID:12", "1325421296", "1764016257.25", "-5", "1e300", "tid:0b1_0", "nan", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tid, err := parseTid(s)
		if err != nil {
			return
		}
		_ = TidDatetime(tid)
		back, err := parseTid("tid:" + uint64String(uint64(tid)))
		if err != nil || back != tid {
			t.Fatalf("%q → %x → %x, %v", s, uint64(tid), uint64(back), err)
		}
	})
}

func uint64String(n uint64) string { return fmt.Sprintf("%#x", n) }

// FuzzCheckArgs: the arguments of check never crash the parser.
func FuzzCheckArgs(f *testing.F) {
	f.Add("0:S1", "3:", "1325421296")
	f.Add(":S2", "tid:1", "tid:2")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		for _, s := range []string{a, b, c} {
			parseTid(s)
			parseDecimal(s)
			parsePyInt(s)
			withDefaultPort(s)
		}
	})
}
