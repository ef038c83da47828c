package ctl

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// The formats below are those of NEO/py's tools, which print Python values:
// a datetime as str(datetime) does, None as "None", enums by name.

// tidFields are the calendar fields NEO/py reads from a tid
// (datetimeFromTID): the seconds' fraction in microseconds, truncated.
func tidFields(tid zodb.Tid) (year, month, day, hour, minute, sec, micro int64) {
	high, low := uint64(tid)>>32, uint64(tid)&0xffffffff
	minute = int64(high % 60)
	high /= 60
	hour = int64(high % 24)
	high /= 24
	day = int64(high%31 + 1)
	high /= 31
	month = int64(high%12 + 1)
	year = int64(high/12 + 1900)
	s, rem := (low*60)>>32, (low*60)&0xffffffff
	const microFromUint32 = 1e6 / (1 << 32)
	return year, month, day, hour, minute, int64(s), int64(float64(rem) * microFromUint32)
}

// TidDatetime formats the time of tid as NEO/py prints it (str of the
// datetime NEO computes from a tid): "YYYY-MM-DD HH:MM:SS" followed by
// ".ffffff" when the microseconds (truncated) are not 0.
func TidDatetime(tid zodb.Tid) string {
	return pyDatetime(tidFields(tid))
}

// TidTime is the time of tid as NEO/py computes it (datetimeFromTID), to the
// microsecond, truncated. NEO/py's monitoring compares such times.
func TidTime(tid zodb.Tid) time.Time {
	year, month, day, hour, minute, sec, micro := tidFields(tid)
	return time.Date(int(year), time.Month(month), int(day), int(hour), int(minute), int(sec), int(micro)*1000, time.UTC)
}

func pyDatetime(year, month, day, hour, minute, sec, micro int64) string {
	s := fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", year, month, day, hour, minute, sec)
	if micro != 0 {
		s += fmt.Sprintf(".%06d", micro)
	}
	return s
}

// unixDatetime formats Unix seconds as Python's
// str(datetime.utcfromtimestamp(t)): microseconds rounded half to even.
func unixDatetime(t float64) string {
	if math.IsNaN(t) || math.IsInf(t, 0) || math.Abs(t) > 1e15 {
		return strconv.FormatFloat(t, 'g', -1, 64)
	}
	ip, frac := math.Modf(t)
	us := math.RoundToEven(frac * 1e6)
	if us >= 1e6 {
		us -= 1e6
		ip++
	} else if us < 0 {
		us += 1e6
		ip--
	}
	tm := time.Unix(int64(ip), 0).UTC()
	return pyDatetime(int64(tm.Year()), int64(tm.Month()), int64(tm.Day()),
		int64(tm.Hour()), int64(tm.Minute()), int64(tm.Second()), int64(us))
}

// tidFromTime converts Unix seconds to a tid as NEO/py's tidFromTime: the
// calendar fields of gmtime(t) down to the minute, and the seconds (with t's
// fraction) scaled to 2^32 per minute, capped.
func tidFromTime(t float64) (zodb.Tid, error) {
	if math.IsNaN(t) || math.IsInf(t, 0) || t < -2208988800 || t >= 1<<40 {
		return 0, fmt.Errorf("timestamp %v out of range", t)
	}
	tm := time.Unix(int64(math.Floor(t)), 0).UTC()
	if tm.Year() < 1900 {
		return 0, fmt.Errorf("timestamp %v before 1900", t)
	}
	high := ((((uint64(tm.Year()-1900)*12+uint64(tm.Month()-1))*31+
		uint64(tm.Day()-1))*24+uint64(tm.Hour()))*60 + uint64(tm.Minute()))
	if high >= 1<<32 {
		return 0, fmt.Errorf("timestamp %v out of range", t)
	}
	const secondFromUint32 = 60.0 / (1 << 32)
	frac := t - math.Trunc(t)
	low := math.Trunc((float64(tm.Second()) + frac) / secondFromUint32)
	if low > math.MaxUint32 {
		low = math.MaxUint32
	} else if low < 0 {
		low = 0
	}
	return zodb.Tid(high<<32 | uint64(low)), nil
}

// parseTid parses neoctl's tid argument: "tid:<integer>" (decimal, 0x hex,
// 0o octal or 0b binary) or a Unix timestamp.
func parseTid(s string) (zodb.Tid, error) {
	if len(s) >= 4 && strings.EqualFold(s[:4], "tid:") {
		n, err := parsePyInt(s[4:])
		if err != nil {
			return 0, fmt.Errorf("invalid tid %q", s)
		}
		return zodb.Tid(n), nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("invalid tid %q: neither tid:<integer> nor a Unix timestamp", s)
	}
	return tidFromTime(f)
}

// parsePyInt parses a non-negative integer literal as Python's int(s, 0)
// reads it: decimal, or 0x / 0o / 0b prefixed, underscores allowed between
// digits.
func parsePyInt(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(t, "+")
	base := 10
	if len(t) > 2 && t[0] == '0' {
		switch t[1] {
		case 'x', 'X':
			base, t = 16, t[2:]
		case 'o', 'O':
			base, t = 8, t[2:]
		case 'b', 'B':
			base, t = 2, t[2:]
		}
	}
	if base == 10 && len(t) > 1 && t[0] == '0' && strings.Trim(t, "0_") != "" {
		return 0, fmt.Errorf("invalid integer %q", s) // Python refuses leading zeros
	}
	if strings.HasPrefix(t, "_") || strings.HasSuffix(t, "_") || strings.Contains(t, "__") {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	n, err := strconv.ParseUint(strings.ReplaceAll(t, "_", ""), base, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	return n, nil
}

// parseDecimal parses an integer as Python's int(s): decimal, surrounding
// spaces, a sign and underscores between digits allowed.
func parseDecimal(s string) (int64, error) {
	t := strings.TrimSpace(s)
	neg := false
	if t != "" && (t[0] == '+' || t[0] == '-') {
		neg, t = t[0] == '-', t[1:]
	}
	if t == "" || t[0] == '_' || strings.HasSuffix(t, "_") || strings.Contains(t, "__") {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(t, "_", ""), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	if neg {
		n = -n
	}
	return n, nil
}

// formatAddress is NEO/py's formatAddress: host:port, brackets around an
// IPv6 host, empty when there is no address.
func formatAddress(a proto.Opt[proto.Address]) string {
	if !a.Ok {
		return ""
	}
	if strings.Contains(a.V.Host, ":") {
		return "[" + a.V.Host + "]:" + strconv.Itoa(int(a.V.Port))
	}
	return a.V.Host + ":" + strconv.Itoa(int(a.V.Port))
}

// formatNodeList renders nodes as NEO/py's formatNodeList: one line per
// node (id, type, address, state, identification time), columns padded to
// their widest value and separated by " | "; sorted by id, nodes without
// id last, by address.
func formatNodeList(nodes []proto.NodeInfo) []string {
	if len(nodes) == 0 {
		return nil
	}
	nodes = slices.Clone(nodes)
	slices.SortStableFunc(nodes, func(a, b proto.NodeInfo) int {
		an, bn := a.NID == proto.NoNode, b.NID == proto.NoNode
		switch {
		case an != bn:
			if an {
				return 1
			}
			return -1
		case !an:
			return cmpInt(int64(a.NID), int64(b.NID))
		}
		return compareAddr(a.Addr, b.Addr)
	})
	rows := make([][5]string, len(nodes))
	var width [4]int
	for i, n := range nodes {
		idTime := "None"
		if n.IDTime.Ok {
			if n.IDTime.V == 0 {
				idTime = "0.0"
			} else {
				idTime = unixDatetime(n.IDTime.V)
			}
		}
		rows[i] = [5]string{n.NID.String(), n.Type.String(), formatAddress(n.Addr), n.State.String(), idTime}
		for j := range width {
			width[j] = max(width[j], len(rows[i][j]))
		}
	}
	lines := make([]string, len(rows))
	for i, r := range rows {
		var b strings.Builder
		for j := range width {
			fmt.Fprintf(&b, "%-*s | ", width[j], r[j])
		}
		b.WriteString(r[4])
		lines[i] = b.String()
	}
	return lines
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareAddr(a, b proto.Opt[proto.Address]) int {
	switch {
	case a.Ok != b.Ok:
		if !a.Ok {
			return -1
		}
		return 1
	case !a.Ok:
		return 0
	}
	if c := strings.Compare(a.V.Host, b.V.Host); c != 0 {
		return c
	}
	return cmpInt(int64(a.V.Port), int64(b.V.Port))
}

var cellLetter = map[proto.CellState]byte{
	proto.CellUpToDate:  'U',
	proto.CellOutOfDate: 'O',
	proto.CellFeeding:   'F',
	proto.CellDiscarded: 'D',
	proto.CellCorrupted: 'C',
}

var nodeStateLetter = map[proto.NodeState]byte{
	proto.NodeRunning: 'R',
	proto.NodeDown:    'D',
	proto.NodeUnknown: 'U',
	proto.NodePending: 'P',
}

func letter(m map[proto.NodeState]byte, s proto.NodeState) byte {
	if c, ok := m[s]; ok {
		return c
	}
	return '?'
}

// formatPartitionTable renders a whole partition table compactly, as
// NEO/py's neoctl does: one line per storage having cells or running
// (id, state letter, one letter per partition: U, O, F, C or '.' for no
// cell), sorted by id, after a ruler marking every 10th partition when there
// are more than 10. storages is the storage list of the cluster.
func formatPartitionTable(rows [][]proto.CellInfo, storages []proto.NodeInfo) string {
	np := len(rows)
	state := map[proto.NodeID]proto.NodeState{}
	for _, n := range storages {
		if n.NID != proto.NoNode {
			state[n.NID] = n.State
		}
	}
	cells := map[proto.NodeID][]byte{}
	var ids []proto.NodeID
	node := func(nid proto.NodeID) []byte {
		line, ok := cells[nid]
		if !ok {
			line = []byte(strings.Repeat(".", np))
			cells[nid] = line
			ids = append(ids, nid)
		}
		return line
	}
	for p, row := range rows {
		for _, c := range row {
			l, ok := cellLetter[c.State]
			if !ok {
				l = '?'
			}
			node(c.NID)[p] = l
		}
	}
	for _, n := range storages {
		if n.NID != proto.NoNode && n.State == proto.NodeRunning {
			node(n.NID)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	slices.Sort(ids)
	w := len(ids[len(ids)-1].String())
	var lines []string
	if np > 10 {
		var b strings.Builder
		b.WriteString(strings.Repeat(" ", w+4))
		for x := 10; x < np; x += 10 {
			fmt.Fprintf(&b, "%9dv", x)
		}
		lines = append(lines, b.String())
	}
	for _, nid := range ids {
		st, ok := state[nid]
		if !ok {
			st = proto.NodeUnknown // not in the node list
		}
		lines = append(lines, fmt.Sprintf("%-*s %c %s", w, nid.String(), letter(nodeStateLetter, st), cells[nid]))
	}
	return strings.Join(lines, "\n")
}

// formatRowList renders partition rows one per line, as
// "007 | S1 - UP_TO_DATE | S2 - OUT_OF_DATE |".
func formatRowList(rows [][]proto.CellInfo, first uint32) string {
	lines := make([]string, len(rows))
	for i, row := range rows {
		var b strings.Builder
		fmt.Fprintf(&b, "%03d |", uint64(first)+uint64(i))
		for _, c := range row {
			fmt.Fprintf(&b, " %s - %s |", c.NID, c.State)
		}
		lines[i] = b.String()
	}
	return strings.Join(lines, "\n")
}

// pyJSONString encodes s as Python's json.dumps does by default (ASCII
// only, \uXXXX escapes).
func pyJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		s = s[n:]
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || r > 0x7e:
			if r >= 0x10000 {
				r1, r2 := utf16.EncodeRune(r)
				fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// severityJSON is the first line of "print summary" after "# ": the
// non-empty lists of cluster names by severity (null for this cluster), as
// Python's json.dumps writes the dict.
func severityJSON(warnings, problems []proto.Opt[string]) string {
	var parts []string
	for _, s := range []struct {
		key   string
		names []proto.Opt[string]
	}{{"warning", warnings}, {"problem", problems}} {
		if len(s.names) == 0 {
			continue
		}
		var items []string
		for _, n := range s.names {
			if n.Ok {
				items = append(items, pyJSONString(n.V))
			} else {
				items = append(items, "null")
			}
		}
		parts = append(parts, pyJSONString(s.key)+": ["+strings.Join(items, ", ")+"]")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
