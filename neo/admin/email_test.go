package admin

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// fakeSMTP is an SMTP server that keeps what it is sent.
type fakeSMTP struct {
	ln         net.Listener
	mails      chan string // envelope and message of each mail
	refuseRcpt atomic.Bool
	wg         sync.WaitGroup
}

func startSMTP(t *testing.T) *fakeSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSMTP{ln: ln, mails: make(chan string, 16)}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *fakeSMTP) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	r := bufio.NewReader(c)
	reply := func(line string) { c.Write([]byte(line + "\r\n")) }
	reply("220 fake ESMTP")
	var envelope []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch verb {
		case "EHLO", "HELO":
			reply("250 fake")
		case "MAIL":
			envelope = append(envelope, line)
			reply("250 OK")
		case "RCPT":
			if s.refuseRcpt.Load() {
				reply("550 no such user")
				continue
			}
			envelope = append(envelope, line)
			reply("250 OK")
		case "DATA":
			reply("354 go on")
			var msg []string
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				l = strings.TrimRight(l, "\r\n")
				if l == "." {
					break
				}
				msg = append(msg, l)
			}
			s.mails <- strings.Join(envelope, "\n") + "\n\n" + strings.Join(msg, "\n")
			envelope = nil
			reply("250 queued")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 not implemented")
		}
	}
}

func TestEmail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	t.Setenv("EMAIL", "neo@example.org")
	smtpd := startSMTP(t)
	m := newFakeMaster(t)
	results := make(chan error, 16)
	ta := startAdminConfig(t, Config{Masters: []string{m.addr()},
		MonitorEmail: []string{"ops@example.org", "dev@example.org"}, SMTP: smtpd.ln.Addr().String()},
		func(a *Admin) { a.onMail = func(err error) { results <- err } })

	mc, r := m.accept(ctx)
	identify(t, ctx, ta, mc, r, testNodes(m.addr(), ta), [][]proto.CellInfo{upToDate(s1), upToDate(s1)}, proto.ClusterRunning)
	// The master answers every question about the last tid.
	answering := make(chan struct{})
	go func() {
		defer close(answering)
		for r := range mc.reqs {
			if _, ok := r.Msg.(*proto.AskLastTransaction); !ok {
				t.Errorf("fake master: unexpected %T", r.Msg)
				continue
			}
			r.Reply(ctx, &proto.AnswerLastTransaction{Tid: 0x03f6b1c2d3e4f5a6})
		}
	}()
	defer func() {
		mc.close()
		<-answering
	}()

	wantMail := func(subject, body string) {
		t.Helper()
		var mail string
		select {
		case mail = <-smtpd.mails:
		case <-time.After(testTimeout):
			t.Fatalf("no mail (want %q)", subject)
		}
		for _, want := range []string{
			"MAIL FROM:<>", "RCPT TO:<ops@example.org>", "RCPT TO:<dev@example.org>",
			"\nSubject: " + subject + "\n",
			"\nFrom: \"NEO test\" <neo@example.org>\n",
			"\nTo: ops@example.org, dev@example.org\n",
			"\n\n" + body,
		} {
			if !strings.Contains(mail, want) {
				t.Errorf("mail lacks %q:\n%s", want, mail)
			}
		}
	}
	wantMail("NEO monitoring: OK", "RUNNING; UP_TO_DATE=2; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)")
	if err := <-results; err != nil {
		t.Fatal(err)
	}

	mc.notify(ctx, &proto.NotifyNodeInformation{Timestamp: 200, Nodes: []proto.NodeInfo{
		{Type: proto.Storage, Addr: addr("127.0.0.1:20001"), NID: s1, State: proto.NodeDown}}})
	wantMail("NEO monitoring: PROBLEM (test)", "RUNNING; UP_TO_DATE=2; DOWN=1; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)")
	if err := <-results; err != nil {
		t.Fatal(err)
	}

	// A notification that cannot be sent shows in the summary.
	smtpd.refuseRcpt.Store(true)
	mc.notify(ctx, &proto.NotifyNodeInformation{Timestamp: 201, Nodes: []proto.NodeInfo{
		{Type: proto.Storage, Addr: addr("127.0.0.1:20001"), NID: s1, State: proto.NodeRunning}}})
	if err := <-results; err == nil {
		t.Fatal("delivery to a refused recipient did not fail")
	}
	r2 := <-neoctl(ta.Admin, "print", "summary")
	if r2.err != nil {
		t.Fatal(r2.err)
	}
	if !strings.HasPrefix(r2.out, "# {\"problem\": [null]}\nRUNNING; UP_TO_DATE=2; ltid=03f6b1c2d3e4f5a6 (2024-02-21 20:50:49.662743)\n\nA notification could not be sent at ") ||
		!strings.Contains(r2.out, "550") {
		t.Errorf("summary after a failed notification:\n%s", r2.out)
	}
}

func TestMailSubject(t *testing.T) {
	for _, tc := range []struct {
		severity [3][]string
		changed  []string
		want     string
	}{
		{[3][]string{{"a", "b"}}, []string{"a"}, "NEO monitoring: OK"},
		{[3][]string{{"a"}, {"b"}}, []string{"a"}, "NEO monitoring: WARNING"},
		{[3][]string{{"a"}, {"c", "b"}}, []string{"c", "b"}, "NEO monitoring: WARNING (b, c)"},
		{[3][]string{nil, {"b"}, {"a"}}, []string{"a", "b"}, "NEO monitoring: PROBLEM (a, b)"},
		{[3][]string{nil, {"b"}, {"a"}}, nil, "NEO monitoring: PROBLEM"},
	} {
		changed := map[string]bool{}
		for _, c := range tc.changed {
			changed[c] = true
		}
		if got := mailSubject(tc.severity, changed); got != tc.want {
			t.Errorf("%v %v: got %q, want %q", tc.severity, tc.changed, got, tc.want)
		}
	}
}
