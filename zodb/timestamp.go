package zodb

import (
	"fmt"
	"math"
	"time"
)

// A tid is a ZODB TimeStamp: two big-endian uint32.
//
//	high = minutes since 1900-01-01 00:00 UTC in a calendar of 12 months of 31 days
//	low  = seconds within that minute scaled by 2^32/60 (truncated)
//
// The conversions below follow ZODB/py's C implementation (persistent's
// TimeStamp) bit for bit, including its float arithmetic, so that a tid made
// here from a time equals the one ZODB/py makes from the same time.

// secondScale is the duration of one unit of the low word, in seconds.
const secondScale = 60.0 / 65536.0 / 65536.0

type tsFields struct {
	year, month, day, hour, minute int
	low                            uint32
}

func (tid Tid) fields() tsFields {
	a := uint32(uint64(tid) >> 32)
	return tsFields{
		minute: int(a % 60),
		hour:   int(a / 60 % 24),
		day:    int(a/(60*24)%31) + 1,
		month:  int(a/(60*24*31)%12) + 1,
		year:   int(a/(60*24*31*12)) + 1900,
		low:    uint32(tid),
	}
}

func (f tsFields) tid() Tid {
	a := ((((f.year-1900)*12+(f.month-1))*31+(f.day-1))*24+f.hour)*60 + f.minute
	return Tid(uint64(uint32(a))<<32 | uint64(f.low))
}

func isLeap(year int) bool { return year%4 == 0 && (year%100 != 0 || year%400 == 0) }

func daysIn(year, month int) int {
	switch month {
	case 2:
		if isLeap(year) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// TidFromFields builds a tid from UTC calendar fields and the seconds within
// the minute, validating them like ZODB's TimeStamp constructor.
func TidFromFields(year, month, day, hour, minute int, second float64) (Tid, error) {
	switch {
	case year < 1900:
		return 0, fmt.Errorf("timestamp: year %d < 1900", year)
	case month < 1 || month > 12:
		return 0, fmt.Errorf("timestamp: month %d out of range", month)
	case day < 1 || day > daysIn(year, month):
		return 0, fmt.Errorf("timestamp: day %d out of range", day)
	case hour < 0 || hour > 23:
		return 0, fmt.Errorf("timestamp: hour %d out of range", hour)
	case minute < 0 || minute > 59:
		return 0, fmt.Errorf("timestamp: minute %d out of range", minute)
	}
	low := uint32(second / secondScale)
	return tsFields{year, month, day, hour, minute, low}.tid(), nil
}

// TidFromUnix converts Unix seconds to a tid the way ZODB/py does when it
// allocates a tid: the UTC calendar fields of gmtime(t), plus t mod 60 as the
// seconds.
func TidFromUnix(t float64) Tid {
	sec := math.Floor(t)
	tm := time.Unix(int64(sec), 0).UTC()
	s := math.Mod(t, 60)
	if s < 0 {
		s += 60
	}
	return tsFields{tm.Year(), int(tm.Month()), tm.Day(), tm.Hour(), tm.Minute(), uint32(s / secondScale)}.tid()
}

// TidFromTime converts a time to a tid with the seconds' full precision
// (down to the tid's resolution of about 14 ns).
func TidFromTime(t time.Time) Tid {
	t = t.UTC()
	s := float64(t.Second()) + float64(t.Nanosecond())/1e9
	return tsFields{t.Year(), int(t.Month()), t.Day(), t.Hour(), t.Minute(), uint32(s / secondScale)}.tid()
}

// Seconds returns the seconds within the minute encoded in the tid.
func (tid Tid) Seconds() float64 { return float64(uint32(tid)) * secondScale }

// UnixTime returns the tid's time as Unix seconds, as ZODB's timeTime().
func (tid Tid) UnixTime() float64 {
	f := tid.fields()
	days := time.Date(f.year, time.Month(f.month), f.day, 0, 0, 0, 0, time.UTC).Unix() / 86400
	return float64(days*86400+int64(f.hour)*3600+int64(f.minute)*60) + tid.Seconds()
}

// Time returns the tid's time (UTC).
func (tid Tid) Time() time.Time {
	f := tid.fields()
	base := time.Date(f.year, time.Month(f.month), f.day, f.hour, f.minute, 0, 0, time.UTC)
	return base.Add(time.Duration(tid.Seconds() * 1e9))
}

// TimeString formats the tid like str(TimeStamp):
// "YYYY-MM-DD HH:MM:SS.ffffff".
func (tid Tid) TimeString() string {
	f := tid.fields()
	return fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%09.6f", f.year, f.month, f.day, f.hour, f.minute, tid.Seconds())
}

// LaterThan returns tid if it is greater than prev, otherwise the smallest
// timestamp after prev: prev with the low word incremented, or, when that
// word would overflow, the start of the next minute. This is ZODB's
// TimeStamp.laterThan, which keeps tids increasing when the clock does not.
func (tid Tid) LaterThan(prev Tid) Tid {
	if tid > prev {
		return tid
	}
	if uint32(prev) != math.MaxUint32 {
		return prev + 1
	}
	f := prev.fields()
	f.low = 0
	f.minute++
	if f.minute == 60 {
		f.minute = 0
		f.hour++
		if f.hour == 24 {
			f.hour = 0
			f.day++
			if f.day > daysIn(f.year, f.month) {
				f.day = 1
				f.month++
				if f.month == 13 {
					f.month = 1
					f.year++
				}
			}
		}
	}
	return f.tid()
}

// NewTid returns the tid for a commit happening now, after last:
// TidFromUnix(now).LaterThan(last), as ZODB's storages allocate them.
func NewTid(now time.Time, last Tid) Tid {
	t := float64(now.Unix()) + float64(now.Nanosecond())/1e9
	return TidFromUnix(t).LaterThan(last)
}
