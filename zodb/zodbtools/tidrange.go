package zodbtools

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/neozodb/neo/zodb"
)

// TimeRef is the reference for relative dates in tids ("yesterday",
// "3.days.ago", "noon today"): the current time and the local time zone.
type TimeRef struct {
	Now time.Time
	Loc *time.Location
}

func (ref TimeRef) now() time.Time {
	now := ref.Now
	if now.IsZero() {
		now = time.Now()
	}
	loc := ref.Loc
	if loc == nil {
		loc = time.Local
	}
	return now.In(loc)
}

// ParseTidRange parses zodbtools' <tidrange> "tidmin..tidmax" (both
// inclusive). An empty side means no bound: tidMin 0, tidMax zodb.TidMax.
// Each side is a tid as ParseTid accepts.
func ParseTidRange(s string, ref TimeRef) (tidMin, tidMax zodb.Tid, err error) {
	lo, hi, ok := strings.Cut(s, "..")
	if !ok || strings.Contains(hi, "..") {
		return 0, 0, fmt.Errorf("invalid tidrange %q: want tidmin..tidmax", s)
	}
	tidMin, tidMax = 0, zodb.TidMax
	if lo != "" {
		if tidMin, err = ParseTid(lo, ref); err != nil {
			return 0, 0, fmt.Errorf("invalid tidrange %q: %w", s, err)
		}
	}
	if hi != "" {
		if tidMax, err = ParseTid(hi, ref); err != nil {
			return 0, 0, fmt.Errorf("invalid tidrange %q: %w", s, err)
		}
	}
	return tidMin, tidMax, nil
}

// ParseTid parses a tid given as 16 hex digits or as a date/time:
//
//   - RFC 3339: 2018-01-01T10:30:00Z, 1985-04-12T23:20:50.52Z,
//     1996-12-19T16:39:57-08:00; also "2018-01-01 10:30:00 UTC",
//     "2018-01-02 UTC" and a date or date-time without zone (local time);
//   - RFC 822: "26 Aug 76 14:29 GMT", "26 Aug 76 14:29 +02:00" (the day name
//     may lead: "Thu, 26 Aug 76 ...");
//   - relative, in the local zone of ref: "now", "today", "yesterday", "tomorrow",
//     "<n> <unit> ago" with unit second, minute, hour, day, week, month or
//     year (singular or plural; dots or underscores may stand for spaces,
//     as in "3.days.ago"), a time of day ("3:00", "15:00", "6am", "6pm",
//     "noon", "midnight") alone or with "today"/"yesterday", and dates in
//     words such as "6AM, June 7, 2009".
//
// The time is converted to UTC, and then to a tid with microsecond
// precision, as zodbtools does.
func ParseTid(s string, ref TimeRef) (zodb.Tid, error) {
	// A tid in hex, also in ZODB's repr form "0x" + 16 digits.
	if h := strings.TrimPrefix(s, "0x"); len(h) == 16 && (len(s) == 16 || len(s) == 18) {
		if x, err := strconv.ParseUint(h, 16, 64); err == nil {
			return zodb.Tid(x), nil
		}
	}
	t, err := ParseTime(s, ref)
	if err != nil {
		return 0, err
	}
	return TidFromTimeMicro(t)
}

// TidFromTimeMicro converts t to a tid with the seconds truncated to
// microseconds, as zodbtools builds a TimeStamp from a parsed date.
func TidFromTimeMicro(t time.Time) (zodb.Tid, error) {
	t = t.UTC()
	sec := float64(t.Second()) + float64(t.Nanosecond()/1000)/1e6
	return zodb.TidFromFields(t.Year(), int(t.Month()), t.Day(), t.Hour(), t.Minute(), sec)
}

var absLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999 Z07:00",
	"2006-01-02 15:04:05.999999999 MST",
	"2006-01-02 15:04 MST",
	"2006-01-02 MST",
	"02 Jan 06 15:04 MST",
	"02 Jan 06 15:04 Z07:00",
	"02 Jan 06 15:04 -0700",
	"02 Jan 06 15:04:05 MST",
	"02 Jan 06 15:04:05 Z07:00",
	"02 Jan 06 15:04:05 -0700",
	"02 Jan 2006 15:04 MST",
	"02 Jan 2006 15:04:05 MST",
	"02 Jan 2006 15:04:05 -0700",
	"Mon, 02 Jan 06 15:04 MST",
	"Mon, 02 Jan 06 15:04:05 MST",
	"Mon, 02 Jan 06 15:04 -0700",
	"Mon, 02 Jan 06 15:04:05 -0700",
	"Mon, 02 Jan 2006 15:04:05 -0700",
}

// layouts without a zone: the time is local to ref.
var localLayouts = []string{
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02",
}

// ParseTime parses the date/time forms ParseTid accepts.
func ParseTime(s string, ref TimeRef) (time.Time, error) {
	s0 := s
	s = strings.TrimSpace(s)
	now := ref.now()
	for _, l := range absLayouts {
		if t, err := time.Parse(l, s); err == nil {
			// time.Parse gives zone abbreviations other than UTC/GMT an
			// unknown offset; only accept those it knows.
			if name, off := t.Zone(); off == 0 && name != "" && name != "UTC" && name != "GMT" && name != "Z" && !strings.Contains(l, "Z07") && !strings.Contains(l, "-0700") {
				continue
			}
			return t, nil
		}
	}
	for _, l := range localLayouts {
		if t, err := time.ParseInLocation(l, s, now.Location()); err == nil {
			return t, nil
		}
	}
	t, err := parseWords(s, now)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid tid or time %q: %w", s0, err)
	}
	return t, nil
}

var months = map[string]time.Month{
	"jan": 1, "january": 1, "feb": 2, "february": 2, "mar": 3, "march": 3,
	"apr": 4, "april": 4, "may": 5, "jun": 6, "june": 6, "jul": 7, "july": 7,
	"aug": 8, "august": 8, "sep": 9, "sept": 9, "september": 9, "oct": 10, "october": 10,
	"nov": 11, "november": 11, "dec": 12, "december": 12,
}

// parseWords handles the relative and worded forms.
func parseWords(s string, now time.Time) (time.Time, error) {
	s = strings.ToLower(s)
	if strings.Contains(s, "ago") {
		s = strings.NewReplacer(".", " ", "_", " ").Replace(s)
	}
	toks := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
	if len(toks) == 0 {
		return time.Time{}, fmt.Errorf("empty")
	}

	// "<n> <unit> ago"
	if len(toks) == 3 && toks[2] == "ago" {
		n, err := strconv.Atoi(toks[0])
		if err != nil || n < 0 {
			return time.Time{}, fmt.Errorf("invalid count %q", toks[0])
		}
		unit := strings.TrimSuffix(toks[1], "s")
		switch unit {
		case "second", "sec":
			return now.Add(-time.Duration(n) * time.Second), nil
		case "minute", "min":
			return now.Add(-time.Duration(n) * time.Minute), nil
		case "hour":
			return now.Add(-time.Duration(n) * time.Hour), nil
		case "day":
			return now.AddDate(0, 0, -n), nil
		case "week":
			return now.AddDate(0, 0, -7*n), nil
		case "month":
			return now.AddDate(0, -n, 0), nil
		case "year":
			return now.AddDate(-n, 0, 0), nil
		}
		return time.Time{}, fmt.Errorf("unknown unit %q", toks[1])
	}

	var (
		dayShift       = 0
		haveDay        = false // today/yesterday given
		year, day      = -1, -1
		month          time.Month
		hour, min, sec = -1, 0, 0
		pendingHour    = -1 // a bare number that an "am"/"pm" may follow
		pendingNumbers []int
	)
	setTime := func(h, m, s int) error {
		if hour >= 0 {
			return fmt.Errorf("two times of day")
		}
		hour, min, sec = h, m, s
		return nil
	}
	for i, tok := range toks {
		switch {
		case tok == "now":
			if len(toks) != 1 {
				return time.Time{}, fmt.Errorf("unexpected %q", tok)
			}
			return now, nil
		case tok == "today":
			haveDay = true
		case tok == "yesterday":
			haveDay = true
			dayShift = -1
		case tok == "tomorrow":
			haveDay = true
			dayShift = +1
		case tok == "noon":
			if err := setTime(12, 0, 0); err != nil {
				return time.Time{}, err
			}
		case tok == "midnight":
			if err := setTime(0, 0, 0); err != nil {
				return time.Time{}, err
			}
		case tok == "am" || tok == "pm":
			if pendingHour < 0 {
				return time.Time{}, fmt.Errorf("%q without hour", tok)
			}
			h, err := ampm(pendingHour, tok)
			if err != nil {
				return time.Time{}, err
			}
			pendingHour = -1
			if err := setTime(h, 0, 0); err != nil {
				return time.Time{}, err
			}
		case strings.HasSuffix(tok, "am") || strings.HasSuffix(tok, "pm"):
			n, err := strconv.Atoi(tok[:len(tok)-2])
			if err != nil {
				return time.Time{}, fmt.Errorf("unknown word %q", tok)
			}
			h, err := ampm(n, tok[len(tok)-2:])
			if err != nil {
				return time.Time{}, err
			}
			if err := setTime(h, 0, 0); err != nil {
				return time.Time{}, err
			}
		case strings.Contains(tok, ":"):
			parts := strings.Split(tok, ":")
			if len(parts) > 3 {
				return time.Time{}, fmt.Errorf("invalid time %q", tok)
			}
			var v [3]int
			for j, p := range parts {
				n, err := strconv.Atoi(p)
				if err != nil || n < 0 || len(p) > 2 {
					return time.Time{}, fmt.Errorf("invalid time %q", tok)
				}
				v[j] = n
			}
			if v[0] > 23 || v[1] > 59 || v[2] > 59 {
				return time.Time{}, fmt.Errorf("invalid time %q", tok)
			}
			if err := setTime(v[0], v[1], v[2]); err != nil {
				return time.Time{}, err
			}
		case months[tok] != 0:
			if month != 0 {
				return time.Time{}, fmt.Errorf("two months")
			}
			month = months[tok]
		default:
			t := strings.TrimRight(tok, "stndrh") // 1st 2nd 3rd 7th
			n, err := strconv.Atoi(t)
			if err != nil {
				return time.Time{}, fmt.Errorf("unknown word %q", tok)
			}
			if i+1 < len(toks) && (toks[i+1] == "am" || toks[i+1] == "pm") && t == tok {
				pendingHour = n
				continue
			}
			pendingNumbers = append(pendingNumbers, n)
		}
	}
	if pendingHour >= 0 {
		return time.Time{}, fmt.Errorf("dangling number")
	}
	for _, n := range pendingNumbers {
		switch {
		case n > 31 && year < 0:
			year = n
		case day < 0 && n >= 1 && n <= 31:
			day = n
		case year < 0:
			year = n
		default:
			return time.Time{}, fmt.Errorf("unexpected number %d", n)
		}
	}
	if (day >= 0 || year >= 0) && month == 0 {
		return time.Time{}, fmt.Errorf("day or year without month")
	}

	loc := now.Location()
	if month != 0 {
		if haveDay {
			return time.Time{}, fmt.Errorf("date with today/yesterday")
		}
		if year < 0 {
			year = now.Year()
		}
		if day < 0 {
			day = 1
		}
		if hour < 0 {
			hour = 0
		}
		t := time.Date(year, month, day, hour, min, sec, 0, loc)
		if t.Day() != day {
			return time.Time{}, fmt.Errorf("invalid day %d", day)
		}
		return t, nil
	}
	if hour < 0 {
		if !haveDay {
			return time.Time{}, fmt.Errorf("no date or time")
		}
		return now.AddDate(0, 0, dayShift), nil
	}
	d := now.AddDate(0, 0, dayShift)
	return time.Date(d.Year(), d.Month(), d.Day(), hour, min, sec, 0, loc), nil
}

func ampm(h int, which string) (int, error) {
	if h < 1 || h > 12 {
		return 0, fmt.Errorf("invalid hour %d%s", h, which)
	}
	if h == 12 {
		h = 0
	}
	if which == "pm" {
		h += 12
	}
	return h, nil
}
