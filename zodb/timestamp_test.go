package zodb

import (
	"testing"
	"time"
)

func TestTidFromTime(t *testing.T) {
	// Values from the zodbtools tid-range examples (time parsed to UTC, then
	// converted with microsecond seconds).
	for _, tc := range []struct {
		t   time.Time
		tid Tid
	}{
		{time.Date(2018, 1, 1, 10, 30, 0, 0, time.UTC), 0x03c4857600000000},
		{time.Date(1985, 4, 12, 23, 20, 50, 520000000, time.UTC), 0x02b914f8d78d4fdf},
		{time.Date(1996, 12, 20, 0, 39, 57, 0, time.UTC), 0x03189927f3333333},
		{time.Date(1976, 8, 26, 14, 29, 0, 0, time.UTC), 0x02728aa500000000},
	} {
		if got := TidFromTime(tc.t); got != tc.tid {
			t.Errorf("TidFromTime(%v) = %v, want %v", tc.t, got, tc.tid)
		}
	}
}

func TestTidTimeRoundTrip(t *testing.T) {
	tid := Tid(0x03f6ed08c0cccccc)
	tm := tid.Time()
	if back := TidFromTime(tm); back != tid && back+1 != tid {
		t.Errorf("%v -> %v -> %v", tid, tm, back)
	}
	if s := Tid(0x03c4857600000000).TimeString(); s != "2018-01-01 10:30:00.000000" {
		t.Errorf("TimeString = %q", s)
	}
	if u := Tid(0x03c4857600000000).UnixTime(); u != 1514802600 {
		t.Errorf("UnixTime = %v", u)
	}
}

func TestLaterThan(t *testing.T) {
	if got := Tid(10).LaterThan(5); got != 10 {
		t.Errorf("got %v", got)
	}
	if got := Tid(5).LaterThan(5); got != 6 {
		t.Errorf("got %v", got)
	}
	// Overflow of the low word rolls to the next minute, with calendar rules:
	// 2023-12-31 23:59 -> 2024-01-01 00:00.
	prev, _ := TidFromFields(2023, 12, 31, 23, 59, 0)
	prev |= 0xffffffff
	want, _ := TidFromFields(2024, 1, 1, 0, 0, 0)
	if got := Tid(0).LaterThan(prev); got != want {
		t.Errorf("got %v (%s), want %v", got, got.TimeString(), want)
	}
	// 2024-02-29 23:59 (leap year) -> 2024-03-01.
	prev, _ = TidFromFields(2024, 2, 29, 23, 59, 0)
	prev |= 0xffffffff
	want, _ = TidFromFields(2024, 3, 1, 0, 0, 0)
	if got := Tid(0).LaterThan(prev); got != want {
		t.Errorf("got %s, want %s", got.TimeString(), want.TimeString())
	}
}

func TestTidFromFieldsValidates(t *testing.T) {
	if _, err := TidFromFields(2023, 2, 29, 0, 0, 0); err == nil {
		t.Error("Feb 29 2023 accepted")
	}
	if _, err := TidFromFields(1899, 1, 1, 0, 0, 0); err == nil {
		t.Error("year 1899 accepted")
	}
}

func TestReprForms(t *testing.T) {
	if s := Oid(0).Repr(); s != "0x00" {
		t.Error(s)
	}
	if s := Oid(0x123).Repr(); s != "0x0123" {
		t.Error(s)
	}
	if o, err := ParseOidRepr("0x0123"); err != nil || o != 0x123 {
		t.Error(o, err)
	}
	x, err := ParseXid("0000000000000001@03f6ed08c0cccccc")
	if err != nil || x.Oid != 1 || x.At != 0x03f6ed08c0cccccc || x.String() != "0000000000000001@03f6ed08c0cccccc" {
		t.Error(x, err)
	}
	if _, err := ParseTid("123"); err == nil {
		t.Error("short tid accepted")
	}
}
