package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/neozodb/neo/neo/ctl"
	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// Monitoring: "neoctl print summary" reports the health of this cluster and
// of the backup clusters this admin monitors (Config.MonitorBackup). The
// admin of a backup cluster learns from its master where the upstream
// cluster's admin is (NotifyUpstreamAdmin), connects to it, identifies with
// its cluster name and pushes its cluster state, number of storages down and
// cell state counts (NotifyMonitorInformation) whenever they change; the
// upstream admin asks it, over the same connection, for its last ids when it
// builds a summary.

// monitorTimeout bounds how long the admin waits for last ids when it
// builds a summary (NEO/py's MONITOR_TIMEOUT).
const monitorTimeout = 60 * time.Second

// health is what a cluster's admin reports about it.
type health struct {
	state     proto.Opt[proto.ClusterState]
	down      int                     // storages of the partition table not running
	ptSummary map[proto.CellState]int // cells per state; nil: not known
}

func (h health) equal(o health) bool {
	return h.state == o.state && h.down == o.down && (h.ptSummary == nil) == (o.ptSummary == nil) &&
		maps.Equal(h.ptSummary, o.ptSummary)
}

func (h health) operational() bool {
	return h.state.Ok && (h.state.V == proto.ClusterRunning || h.state.V == proto.ClusterBackingUp)
}

// text is the summary's first part: "STATE; UP_TO_DATE=n, ...; DOWN=n".
func (h health) text() string {
	var b strings.Builder
	b.WriteString(h.state.String())
	states := slices.Sorted(maps.Keys(h.ptSummary))
	for i, s := range states {
		if i == 0 {
			b.WriteString("; ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", s, h.ptSummary[s])
	}
	if h.down > 0 {
		fmt.Fprintf(&b, "; DOWN=%d", h.down)
	}
	return b.String()
}

// allUpToDate tells whether every cell is UP_TO_DATE.
func (h health) allUpToDate() bool {
	return len(h.ptSummary) == 1 && h.ptSummary[proto.CellUpToDate] > 0
}

// ownHealth is this cluster's health, from the admin's copy.
func (a *Admin) ownHealth() health {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.healthLocked()
}

func (a *Admin) healthLocked() health {
	h := health{state: a.clusterState}
	if a.pt != nil {
		h.ptSummary, h.down = ptSummary(a.pt, &a.nodes)
	}
	return h
}

// healthChanged tells the connection to an upstream admin, if any, that
// this cluster's health may have changed.
func (a *Admin) healthChanged() {
	for _, c := range []chan struct{}{a.healthSignal, a.mailSignal} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// backupChanged tells the e-mail notifier that a backup cluster's health may
// have changed.
func (a *Admin) backupChanged() {
	select {
	case a.mailSignal <- struct{}{}:
	default:
	}
}

// backupMonitor is what this admin knows of a monitored backup cluster.
type backupMonitor struct {
	name    string
	link    *neonet.Link // the backup admin's connection; nil if none
	health  health
	lagging bool
}

func (a *Admin) backup(name string) *backupMonitor {
	for _, b := range a.backups {
		if b.name == name {
			return b
		}
	}
	return nil
}

// acceptBackupAdmin serves RequestIdentification on the admin's listener:
// only the admins of monitored backup clusters may identify, once each. The
// connection then carries their reports until it ends.
func (a *Admin) acceptBackupAdmin(ctx context.Context, r *neonet.Request, ri *proto.RequestIdentification) {
	refuse := func(format string, args ...any) {
		r.Abort(ctx, proto.Err(proto.ProtocolError, format, args...))
	}
	if ri.NodeType != proto.Admin {
		refuse("reject non-admin node")
		return
	}
	a.mu.Lock()
	b := a.backup(ri.ClusterName)
	switch {
	case b == nil:
		a.mu.Unlock()
		refuse("unknown backup cluster %q", ri.ClusterName)
		return
	case b.link != nil:
		a.mu.Unlock()
		refuse("already connected")
		return
	}
	l := r.Link()
	b.link = l
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		*b = backupMonitor{name: b.name}
		a.mu.Unlock()
		a.backupChanged()
	}()
	if err := r.Reply(ctx, &proto.AcceptIdentification{NodeType: proto.Admin}); err != nil {
		return
	}
	a.log().Info("backup admin connected", "cluster", b.name)
	for {
		r, err := l.Recv(ctx)
		if err != nil {
			a.log().Info("backup admin gone", "cluster", b.name, "err", err)
			return
		}
		switch m := r.Msg.(type) {
		case *proto.NotifyMonitorInformation:
			a.mu.Lock()
			err = updateHealth(&b.health, m.Info)
			a.mu.Unlock()
			if err != nil {
				r.Abort(ctx, proto.Err(proto.ProtocolError, "%s", err))
				return
			}
			a.backupChanged()
			if a.onBackupReport != nil {
				a.onBackupReport(b.name)
			}
		case *proto.Error:
			a.log().Warn("error from a backup admin", "cluster", b.name, "code", m.Code, "message", m.Message)
		default:
			r.Abort(ctx, proto.Err(proto.ProtocolError, "unexpected packet %T from a backup admin", r.Msg))
			return
		}
	}
}

// updateHealth applies a NotifyMonitorInformation report.
func updateHealth(h *health, info proto.Dict) error {
	for _, it := range info {
		switch it.Key {
		case "cluster_state":
			switch v := it.Value.(type) {
			case nil:
				h.state = proto.Opt[proto.ClusterState]{}
			case proto.ClusterState:
				h.state = proto.Some(v)
			default:
				return fmt.Errorf("monitor information: cluster_state of type %T", it.Value)
			}
		case "down":
			n, ok := it.Value.(int64)
			if !ok || n < 0 {
				return fmt.Errorf("monitor information: down = %v", it.Value)
			}
			h.down = int(n)
		case "pt_summary":
			switch v := it.Value.(type) {
			case nil:
				h.ptSummary = nil
			case proto.Map:
				s := map[proto.CellState]int{}
				for _, e := range v {
					st, ok1 := e.Key.(proto.CellState)
					n, ok2 := e.Value.(int64)
					if !ok1 || !ok2 || n < 0 {
						return fmt.Errorf("monitor information: pt_summary entry %v: %v", e.Key, e.Value)
					}
					s[st] = int(n)
				}
				h.ptSummary = s
			default:
				return fmt.Errorf("monitor information: pt_summary of type %T", it.Value)
			}
		}
		// Other keys: from a newer peer; ignored.
	}
	return nil
}

// healthInfo is the NotifyMonitorInformation report of h, limited to what
// differs from prev (everything when prev is nil).
func healthInfo(h health, prev *health) proto.Dict {
	var d proto.Dict
	if prev == nil || h.state != prev.state {
		var v proto.Value
		if h.state.Ok {
			v = h.state.V
		}
		d = append(d, proto.DictItem{Key: "cluster_state", Value: v})
	}
	if prev == nil || h.down != prev.down {
		d = append(d, proto.DictItem{Key: "down", Value: h.down})
	}
	if prev == nil || (h.ptSummary == nil) != (prev.ptSummary == nil) || !maps.Equal(h.ptSummary, prev.ptSummary) {
		var v proto.Value
		if h.ptSummary != nil {
			m := proto.Map{}
			for _, s := range slices.Sorted(maps.Keys(h.ptSummary)) {
				m = append(m, proto.MapItem{Key: s, Value: h.ptSummary[s]})
			}
			v = m
		}
		d = append(d, proto.DictItem{Key: "pt_summary", Value: v})
	}
	return d
}

// lastIDs asks a cluster (through its master link, or its admin's link for
// a backup cluster) the tid its summary shows: the last tid, or the backup
// tid of a cluster BACKINGUP (InvalidTid when it cannot be had), and the
// last tid.
func (a *Admin) lastIDs(ctx context.Context, l *neonet.Link, state proto.ClusterState) (tid, ltid zodb.Tid) {
	tid, ltid = zodb.InvalidTid, zodb.InvalidTid
	if state == proto.ClusterBackingUp {
		ans, err := l.Ask(ctx, &proto.AskRecovery{})
		if err != nil {
			a.log().Warn("asking the backup tid", "peer", l, "err", err)
			return
		}
		if rec, ok := ans.(*proto.AnswerRecovery); ok {
			tid = rec.BackupTid
		}
	}
	ans, err := l.Ask(ctx, &proto.AskLastTransaction{})
	if err != nil {
		a.log().Warn("asking the last tid", "peer", l, "err", err)
		return
	}
	if lt, ok := ans.(*proto.AnswerLastTransaction); ok {
		ltid = lt.Tid
		if state != proto.ClusterBackingUp {
			tid = ltid
		}
	}
	return
}

// monitorReport is the health of this cluster and of the monitored backup
// clusters, as "neoctl print summary" and e-mails show it.
type monitorReport struct {
	own         health
	ownSeverity int // 0 OK, 1 warning, 2 problem
	body        string
	severity    [3][]string     // backup cluster names by severity
	backups     []backupMonitor // as they were
}

// buildReport builds the report, asking this cluster's master and the
// operational backup clusters' admins for their last tid (or backup tid).
// Severities: problem when storages are down or the cluster is not
// operational; warning when cells are not all up to date, a backup
// cluster is not BACKINGUP or lags more than MonitorMaxLag.
func (a *Admin) buildReport(ctx context.Context, master *neonet.Link) *monitorReport {
	mctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()

	own := a.ownHealth()
	rep := &monitorReport{own: own, body: own.text()}
	var upTime time.Time // the time of the upstream tid, for the lag
	upTid := zodb.InvalidTid
	if own.operational() {
		if tid, _ := a.lastIDs(mctx, master, own.state.V); tid != zodb.InvalidTid {
			rep.body += fmt.Sprintf("; ltid=%016x (%s)", uint64(tid), ctl.TidDatetime(tid))
			upTid, upTime = tid, ctl.TidTime(tid)
		}
	}
	switch {
	case own.down > 0 || !own.operational():
		rep.ownSeverity = 2
	case !own.allUpToDate():
		rep.ownSeverity = 1
	}

	a.mu.Lock()
	rep.backups = make([]backupMonitor, len(a.backups))
	for i, b := range a.backups {
		rep.backups[i] = *b
	}
	a.mu.Unlock()
	for i := range rep.backups {
		b := &rep.backups[i]
		h := b.health
		text := h.text()
		if h.operational() && b.link != nil {
			tid, _ := a.lastIDs(mctx, b.link, h.state.V)
			if tid != zodb.InvalidTid {
				text += fmt.Sprintf("; ltid=%016x", uint64(tid))
				if h.state.V == proto.ClusterBackingUp && upTid != zodb.InvalidTid {
					// As Python's timedelta.total_seconds().
					lag := float64(upTime.Sub(ctl.TidTime(tid)).Microseconds()) / 1e6
					if lag != 0 || tid >= upTid {
						text += "; lag=" + pyFloat(lag)
						b.lagging = a.cfg.MonitorMaxLag < lag
					} else {
						text += "; lag=ε"
						b.lagging = a.cfg.MonitorMaxLag <= 0
					}
				} else {
					text += " (" + ctl.TidDatetime(tid) + ")"
				}
			}
		}
		rep.body += "\n\n" + b.name + "\n    " + text
		s := 0
		switch {
		case h.down > 0 || !h.operational():
			s = 2
		case !h.allUpToDate() || h.state.V != proto.ClusterBackingUp:
			s = 1
		case b.lagging:
			s = 1
		}
		rep.severity[s] = append(rep.severity[s], b.name)
	}
	a.mu.Lock()
	for i := range rep.backups {
		if b := a.backups[i]; b.link == rep.backups[i].link {
			b.lagging = rep.backups[i].lagging
		}
	}
	a.mu.Unlock()
	return rep
}

// monitorInformation answers "neoctl print summary": the report, with this
// cluster as nil in the lists of severities, and a failed e-mail
// notification as a problem.
func (a *Admin) monitorInformation(ctx context.Context, master *neonet.Link) *proto.AnswerMonitorInformation {
	rep := a.buildReport(ctx, master)
	a.mu.Lock()
	failure := a.mailFailure
	a.mu.Unlock()
	if failure != "" {
		rep.ownSeverity = 2
		rep.body += failure
	}
	var severity [3][]proto.Opt[string]
	for s, names := range rep.severity {
		names = slices.Sorted(slices.Values(names))
		for _, n := range names {
			severity[s] = append(severity[s], proto.Some(n))
		}
	}
	severity[rep.ownSeverity] = slices.Insert(severity[rep.ownSeverity], 0, proto.Opt[string]{})
	return &proto.AnswerMonitorInformation{
		Warnings: append([]proto.Opt[string]{}, severity[1]...),
		Problems: append([]proto.Opt[string]{}, severity[2]...),
		Summary:  rep.body,
	}
}

// pyFloat formats f as Python's repr(float).
func pyFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	if abs := math.Abs(f); abs != 0 && (abs < 1e-4 || abs >= 1e16) {
		s := strconv.FormatFloat(f, 'e', -1, 64)
		return s
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// followUpstream keeps this admin connected to the admin of the upstream
// cluster, when the master names one (this cluster is then a backup), and
// reports this cluster's health to it.
func (a *Admin) followUpstream(ctx context.Context) {
	for {
		a.mu.Lock()
		addr := a.upstreamAddr
		a.mu.Unlock()
		if addr == "" {
			select {
			case <-a.upstreamSignal:
				continue
			case <-ctx.Done():
				return
			}
		}
		err := a.reportUpstream(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		a.log().Info("connection to the upstream admin ended", "addr", addr, "err", err)
	}
}

var errUpstreamMoved = errors.New("upstream admin moved")

// reportUpstream is one connection to the upstream admin at addr: identify,
// report the health, then report changes and serve the upstream admin's
// requests (as neoctl's) until the connection ends or the upstream admin
// moves.
func (a *Admin) reportUpstream(ctx context.Context, addr string) error {
	l, err := a.dialer.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer l.Close()
	ans, err := l.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Admin, ClusterName: a.cfg.Cluster, Extra: proto.Dict{}})
	if err != nil {
		return fmt.Errorf("identification: %w", err)
	}
	if acc, ok := ans.(*proto.AcceptIdentification); !ok || acc.NodeType != proto.Admin {
		return fmt.Errorf("identification: unexpected answer %T", ans)
	}
	a.log().Info("connected to the upstream admin", "addr", addr)

	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			r, err := l.Recv(ctx)
			if err != nil {
				return
			}
			if !a.handleNeoctl(ctx, r) {
				return
			}
		}
	}()
	defer func() {
		l.Close()
		<-served
	}()

	var sent *health
	for {
		h := a.ownHealth()
		if sent == nil || !h.equal(*sent) {
			if err := l.Notify(ctx, &proto.NotifyMonitorInformation{Info: healthInfo(h, sent)}); err != nil {
				return err
			}
			sent = &h
		}
		select {
		case <-a.healthSignal:
		case <-a.upstreamSignal:
			a.mu.Lock()
			moved := a.upstreamAddr != addr
			a.mu.Unlock()
			if moved {
				return errUpstreamMoved
			}
		case <-l.Done():
			return l.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
