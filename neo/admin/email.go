package admin

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/mail"
	"net/smtp"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"
)

// E-mail notifications (Config.MonitorEmail): whenever the health of this
// cluster or of a monitored backup cluster changes, the admin builds the
// summary "neoctl print summary" shows and mails it, with the worst
// severity and the clusters concerned in the subject. While this cluster
// and a backup cluster are operational, it checks again every 10 minutes
// (a backup may start lagging without any change of state), and it retries
// a notification that could not be sent as often.

// recheckPeriod is how often the health is checked again without a change.
const recheckPeriod = 600 * time.Second

// smtpTimeout bounds a mail delivery.
const smtpTimeout = 60 * time.Second

// mailState is what the notifier remembers between two checks.
type mailState struct {
	sent    bool              // a check has been done since the start
	own     health            // this cluster's health at the last check
	backups map[string]health // and the backup clusters'
	lagging map[string]bool
	failure string // why the last notification could not be sent; "" if it was
}

// emailFrom is NEO/py's sender: $EMAIL, else user@host.
func emailFrom() string {
	if s := os.Getenv("EMAIL"); s != "" {
		return s
	}
	u, err := user.Current()
	if err != nil {
		return ""
	}
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	if cname, err := net.LookupCNAME(host); err == nil && cname != "" {
		host = strings.TrimSuffix(cname, ".")
	}
	return u.Username + "@" + host
}

// notifyByMail runs the e-mail notifications until ctx ends.
func (a *Admin) notifyByMail(ctx context.Context) {
	var st mailState
	var recheck <-chan time.Time
	for {
		select {
		case <-a.mailSignal:
		case <-recheck:
		case <-ctx.Done():
			return
		}
		recheck = nil
		rearm, ok := a.checkAndMail(ctx, &st)
		if ctx.Err() != nil {
			return
		}
		if ok && rearm {
			recheck = time.After(recheckPeriod)
		}
	}
}

// checkAndMail builds the summary and mails it if something changed (or a
// previous notification failed). ok is false when there was nothing to check
// (connected to a master whose cluster state is not known yet); rearm tells
// whether to check again later.
func (a *Admin) checkAndMail(ctx context.Context, st *mailState) (rearm, ok bool) {
	a.mu.Lock()
	master := a.master
	connected := master != nil
	everConnected := a.everConnected
	a.mu.Unlock()
	if !everConnected {
		return false, false
	}

	var body string
	var severity [3][]string
	changed := map[string]bool{}
	var info *monitorReport
	name := a.cfg.Cluster
	if !connected {
		body = notConnected
		severity[2] = append(severity[2], name)
		own := health{}
		if !st.sent || !own.equal(st.own) {
			changed[name] = true
		}
		st.own = own
	} else {
		info = a.buildReport(ctx, master)
		body = info.body
		severity = info.severity
		severity[info.ownSeverity] = append(slices.Clone(severity[info.ownSeverity]), name)
		if !st.sent || !info.own.equal(st.own) {
			changed[name] = true
		}
		st.own = info.own
		if st.backups == nil {
			st.backups, st.lagging = map[string]health{}, map[string]bool{}
		}
		for _, b := range info.backups {
			prev, seen := st.backups[b.name]
			if !seen || !b.health.equal(prev) || b.lagging != st.lagging[b.name] {
				changed[b.name] = true
			}
			st.backups[b.name], st.lagging[b.name] = b.health, b.lagging
		}
	}
	st.sent = true

	if len(changed) == 0 && st.failure == "" {
		return true, true
	}
	subject := mailSubject(severity, changed)
	date := time.Now().UTC().Format("Mon, 02 Jan 2006 15:04:05 -0000") // as Python's formatdate()
	text := body
	if st.failure != "" {
		text += st.failure
	}
	err := a.sendMail(ctx, subject, date, text)
	if a.onMail != nil {
		defer a.onMail(err)
	}
	if err != nil {
		a.log().Error("e-mail notification failed", "err", err)
		if len(changed) > 0 || st.failure == "" {
			st.failure = fmt.Sprintf("\n\nA notification could not be sent at %s:\n\n%s", date, err)
		}
		a.setMailFailure(st.failure)
		return true, true
	}
	st.failure = ""
	a.setMailFailure("")
	// Checking again is only useful to see a backup start lagging.
	lagMonitoring := info != nil && info.own.operational()
	if lagMonitoring {
		lagMonitoring = false
		for _, b := range info.backups {
			lagMonitoring = lagMonitoring || b.health.operational()
		}
	}
	return lagMonitoring, true
}

func (a *Admin) setMailFailure(s string) {
	a.mu.Lock()
	a.mailFailure = s
	a.mu.Unlock()
}

// mailSubject is "NEO monitoring: OK", or "WARNING" / "PROBLEM" followed by
// the changed clusters having a warning or a problem.
func mailSubject(severity [3][]string, changed map[string]bool) string {
	clusters := severity[1]
	var x string
	switch {
	case len(severity[2]) > 0:
		clusters = append(slices.Clone(clusters), severity[2]...)
		x = "PROBLEM"
	case len(clusters) > 0:
		x = "WARNING"
	default:
		return "NEO monitoring: OK"
	}
	var names []string
	for _, c := range clusters {
		if changed[c] && !slices.Contains(names, c) {
			names = append(names, c)
		}
	}
	slices.Sort(names)
	if len(names) > 0 {
		x += " (" + strings.Join(names, ", ") + ")"
	}
	return "NEO monitoring: " + x
}

// sendMail delivers a notification to every recipient.
func (a *Admin) sendMail(ctx context.Context, subject, date, body string) error {
	ctx, cancel := context.WithTimeout(ctx, smtpTimeout)
	defer cancel()
	host := a.cfg.SMTP
	if host == "" {
		host = "localhost"
	}
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(host, "25")
	} else {
		host, _, _ = net.SplitHostPort(host)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if a.cfg.SMTPTLS {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if a.cfg.SMTPAuth != "" {
		u, p, _ := strings.Cut(a.cfg.SMTPAuth, ":")
		if err := c.Auth(smtp.PlainAuth("", u, p, host)); err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
	}
	if err := c.Mail(""); err != nil {
		return err
	}
	for _, to := range a.cfg.MonitorEmail {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("recipient %s: %w", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	from := (&mail.Address{Name: "NEO " + a.cfg.Cluster, Address: a.emailFrom}).String()
	msg := "MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=\"utf-8\"\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"Date: " + date + "\r\n" +
		"Subject: " + subject + "\r\n" +
		"From: " + from + "\r\n" +
		"To: " + strings.Join(a.cfg.MonitorEmail, ", ") + "\r\n" +
		"\r\n" + strings.ReplaceAll(body, "\n", "\r\n") + "\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
