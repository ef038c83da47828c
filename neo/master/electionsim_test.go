package master

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/proto"
)

// An in-memory network of master cores for election tests: links keep
// their order (as TCP does), while what happens on different links and
// connection attempts interleave at random (from a seed).

type simEnd struct {
	core int
	link LinkID
}

type simPacket struct {
	ev    Event // EvRecv or EvAnswer, for the receiving end
	close bool  // the sender closed the link after what it sent before
}

type simConn struct {
	ends  [2]simEnd
	q     [2][]simPacket // q[i]: packets travelling to ends[i]
	asks  [2]map[uint32]uint64
	msgID [2]uint32
	down  [2]bool // EvLinkDown delivered to ends[i]
}

type simNet struct {
	t      *testing.T
	rnd    *rand.Rand
	now    time.Time
	cores  []*Core
	addrs  []proto.Address
	dead   []bool
	conns  map[simEnd]*simConn
	local  [][]Event // events for a core from its own network layer (EvDialed, EvLinkDown)
	nextID LinkID
	log    []string
	cut    map[[2]int]bool // pairs of masters that cannot reach each other
}

func newSimNet(t *testing.T, n int, seed int64) *simNet {
	s := &simNet{t: t, rnd: rand.New(rand.NewSource(seed)), now: testEpoch, conns: map[simEnd]*simConn{}}
	for i := range n {
		s.addrs = append(s.addrs, proto.Address{Host: "127.0.0.1", Port: uint16(10000 + i)})
	}
	s.local = make([][]Event, n)
	s.dead = make([]bool, n)
	for i := range n {
		c := newCore(coreConfig{Cluster: "test", Addr: s.addrs[i], Masters: s.addrs, Partitions: 2, Logger: quietLogger()}, s.now)
		s.cores = append(s.cores, c)
	}
	for i, c := range s.cores {
		s.apply(i, c.Start())
	}
	return s
}

func (s *simNet) side(e simEnd) (*simConn, int) {
	c := s.conns[e]
	if c == nil {
		return nil, 0
	}
	if c.ends[0] == e {
		return c, 0
	}
	return c, 1
}

func (s *simNet) apply(i int, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case ActDial:
			j := -1
			for k, ad := range s.addrs {
				if ad.String() == a.Addr {
					j = k
				}
			}
			if j < 0 || s.dead[j] || s.dead[i] || s.cut[[2]int{i, j}] {
				s.local[i] = append(s.local[i], EvDialed{Tag: a.Tag, Err: errTest})
				continue
			}
			s.nextID++
			la := s.nextID
			s.nextID++
			lb := s.nextID
			c := &simConn{ends: [2]simEnd{{i, la}, {j, lb}}, asks: [2]map[uint32]uint64{{}, {}}}
			s.conns[c.ends[0]] = c
			s.conns[c.ends[1]] = c
			s.local[i] = append(s.local[i], EvDialed{Tag: a.Tag, Link: la})
		case ActSend:
			s.send(i, a.Link, a.Msg, 0, false)
		case ActAsk:
			s.send(i, a.Link, a.Msg, a.Tag, false)
		case ActReply:
			s.reply(i, a.Link, a.MsgID, a.Msg, false)
		case ActAbort:
			s.reply(i, a.Link, a.MsgID, a.Msg, true)
		case ActClose:
			s.closeEnd(i, a.Link)
		case ActExit:
			s.kill(i)
		}
	}
}

func (s *simNet) send(i int, l LinkID, m proto.Msg, tag uint64, _ bool) {
	c, k := s.side(simEnd{i, l})
	if c == nil || c.down[k] {
		return
	}
	c.msgID[k]++
	id := c.msgID[k]
	if tag != 0 {
		c.asks[k][id] = tag
	}
	o := 1 - k
	c.q[o] = append(c.q[o], simPacket{ev: EvRecv{Link: c.ends[o].link, MsgID: id, Msg: m}})
}

func (s *simNet) reply(i int, l LinkID, msgID uint32, m proto.Msg, closeAfter bool) {
	c, k := s.side(simEnd{i, l})
	if c == nil || c.down[k] {
		return
	}
	o := 1 - k
	if tag, ok := c.asks[o][msgID]; ok {
		if _, isNPM := m.(*proto.NotPrimaryMaster); isNPM {
			// Not an answer: the asker receives it as a packet.
			c.q[o] = append(c.q[o], simPacket{ev: EvRecv{Link: c.ends[o].link, MsgID: msgID, Msg: m}})
		} else {
			delete(c.asks[o], msgID)
			c.q[o] = append(c.q[o], simPacket{ev: EvAnswer{Link: c.ends[o].link, Tag: tag, Msg: m}})
		}
	}
	if closeAfter {
		s.closeEnd(i, l)
	}
}

// closeEnd closes a link from one end: what it sent still arrives, what
// was coming to it is lost.
func (s *simNet) closeEnd(i int, l LinkID) {
	c, k := s.side(simEnd{i, l})
	if c == nil || c.down[k] {
		return
	}
	o := 1 - k
	c.q[k] = nil
	c.down[k] = true
	s.local[i] = append(s.local[i], EvLinkDown{Link: l})
	if !c.down[o] {
		c.q[o] = append(c.q[o], simPacket{close: true})
	}
}

// cutPair closes the links between masters i and j and makes them unable
// to connect to each other until heal.
func (s *simNet) cutPair(i, j int) {
	if s.cut == nil {
		s.cut = map[[2]int]bool{}
	}
	s.cut[[2]int{i, j}] = true
	s.cut[[2]int{j, i}] = true
	for e, c := range s.conns {
		if e.core == i && (c.ends[0].core == j || c.ends[1].core == j) {
			s.closeEnd(i, e.link)
		}
	}
}

func (s *simNet) heal() { s.cut = nil }

func (s *simNet) kill(i int) {
	if s.dead[i] {
		return
	}
	s.dead[i] = true
	for e := range s.conns {
		if e.core == i {
			s.closeEnd(i, e.link)
		}
	}
	s.local[i] = nil
}

func (s *simNet) step(i int, ev Event) {
	if s.dead[i] {
		return
	}
	acts := s.cores[i].Step(s.now, ev)
	if _, tick := ev.(EvTick); !tick {
		var names []string
		for _, a := range acts {
			if d, ok := a.(ActDial); ok {
				names = append(names, "dial "+d.Addr)
				continue
			}
			names = append(names, actionName(a))
		}
		e := fmt.Sprintf("%T%+v", ev, ev)
		if r, ok := ev.(EvRecv); ok {
			e = fmt.Sprintf("recv link %d %T%+v", r.Link, r.Msg, r.Msg)
		}
		s.log = append(s.log, fmt.Sprintf("%v M%d: %s -> %v", s.now.Sub(testEpoch), i, e, names))
		if len(s.log) > 400 {
			s.log = s.log[len(s.log)-300:]
		}
	}
	s.apply(i, acts)
}

// run delivers events at random for d of simulated time, with a tick per
// second to every master.
func (s *simNet) run(d time.Duration, done func() bool) bool {
	end := s.now.Add(d)
	nextTick := s.now.Add(time.Second)
	for s.now.Before(end) {
		if done != nil && done() {
			return true
		}
		s.now = s.now.Add(time.Millisecond)
		if !s.now.Before(nextTick) {
			nextTick = nextTick.Add(time.Second)
			for i := range s.cores {
				s.step(i, EvTick{})
			}
		}
		type choice struct {
			core int
			conn *simConn
			k    int
		}
		var choices []choice
		for i := range s.cores {
			if len(s.local[i]) > 0 {
				choices = append(choices, choice{core: i})
			}
		}
		seen := map[*simConn]bool{}
		for _, c := range s.conns {
			if seen[c] {
				continue
			}
			seen[c] = true
			for k := range 2 {
				if len(c.q[k]) > 0 {
					choices = append(choices, choice{conn: c, k: k})
				}
			}
		}
		if len(choices) == 0 {
			continue
		}
		ch := choices[s.rnd.Intn(len(choices))]
		if ch.conn == nil {
			ev := s.local[ch.core][0]
			s.local[ch.core] = s.local[ch.core][1:]
			s.step(ch.core, ev)
			continue
		}
		c, k := ch.conn, ch.k
		p := c.q[k][0]
		c.q[k] = c.q[k][1:]
		e := c.ends[k]
		if p.close {
			c.down[k] = true
			c.q[1-k] = nil
			s.step(e.core, EvLinkDown{Link: e.link})
			continue
		}
		s.step(e.core, p.ev)
	}
	return done != nil && done()
}

// settled tells whether the live masters agree on one primary, every
// other one being its identified secondary.
func (s *simNet) settled() bool {
	primary := -1
	for i, c := range s.cores {
		if s.dead[i] || c.exiting {
			continue
		}
		if c.role == rolePrimary {
			if primary >= 0 {
				return false
			}
			primary = i
		}
	}
	if primary < 0 {
		return false
	}
	for i, c := range s.cores {
		if s.dead[i] || c.exiting || i == primary {
			continue
		}
		if c.role != roleSecondary || !c.primaryIdentified() || c.primary.addr != proto.Some(s.addrs[primary]) {
			return false
		}
	}
	return true
}

func (s *simNet) primary() int {
	for i, c := range s.cores {
		if !s.dead[i] && !c.exiting && c.role == rolePrimary {
			return i
		}
	}
	return -1
}

func (s *simNet) describe() string {
	var b strings.Builder
	for i, c := range s.cores {
		role := "primary"
		if c.role == roleSecondary {
			role = "secondary"
		}
		if s.dead[i] {
			role = "dead"
		} else if c.exiting {
			role = "exited"
		}
		fmt.Fprintf(&b, "[M%d %s", i, role)
		if c.role == roleSecondary && c.primary != nil {
			fmt.Fprintf(&b, " of %v link %d identified %v", c.primary.addr, c.primaryLink, c.primaryIdentified())
		}
		fmt.Fprintf(&b, " dialing %d dials %d peers %d local %d state %v]\n", len(c.dialing), len(c.dials), len(c.peers), len(s.local[i]), c.state)
		for n := range c.dialing {
			fmt.Fprintf(&b, "   dialing %v\n", n.addr)
		}
	}
	return b.String()
}

// Election liveness: masters started together elect one primary, whatever
// the order in which packets and connection attempts interleave; when the
// primary is lost, the others elect another one; a restarted master joins
// as secondary. Every situation must settle within a bounded time, never
// leave every master waiting for another.
func TestElectionLiveness(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	for _, n := range []int{2, 3, 4} {
		failovers := 0
		defer func() {
			if failovers < seeds/2 {
				t.Errorf("%d masters: only %d of %d runs reached the failover", n, failovers, seeds)
			}
		}()
		for seed := range int64(seeds) {
			s := newSimNet(t, n, seed)
			if !s.run(60*time.Second, s.settled) {
				t.Fatalf("%d masters, seed %d: no primary after the start: %s", n, seed, s.describe())
			}
			// Let it run a little more, then kill the primary.
			s.run(time.Duration(s.rnd.Intn(200))*time.Millisecond, nil)
			if !s.settled() {
				continue // a later election went on; not what is tested here
			}
			p := s.primary()
			failovers++
			s.kill(p)
			if n > 1 && !s.run(60*time.Second, s.settled) {
				t.Fatalf("%d masters, seed %d: no primary after M%d was lost: %s\n%s", n, seed, p, s.describe(), strings.Join(s.log[max(0, len(s.log)-120):], "\n"))
			}
			// The lost master comes back.
			s.dead[p] = false
			c := newCore(coreConfig{Cluster: "test", Addr: s.addrs[p], Masters: s.addrs, Partitions: 2, Logger: quietLogger()}, s.now)
			s.cores[p] = c
			s.apply(p, c.Start())
			if !s.run(60*time.Second, s.settled) {
				t.Fatalf("%d masters, seed %d: no single primary after M%d came back: %s", n, seed, p, s.describe())
			}
		}
	}
}

// Masters cut from each other for a while elect primaries on each side;
// once healed, they settle on one primary again.
func TestElectionAfterCut(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 30
	}
	for _, n := range []int{2, 3} {
		for seed := range int64(seeds) {
			s := newSimNet(t, n, seed)
			if !s.run(60*time.Second, s.settled) {
				t.Fatalf("%d masters, seed %d: no primary after the start: %s", n, seed, s.describe())
			}
			p := s.primary()
			for i := range n {
				if i != p {
					s.cutPair(p, i)
				}
			}
			// Long enough for the others to give up on p.
			s.run(time.Duration(1000+s.rnd.Intn(5000))*time.Millisecond, nil)
			s.heal()
			if !s.run(60*time.Second, s.settled) {
				t.Fatalf("%d masters, seed %d: no single primary after the cut from M%d healed: %s\n%s", n, seed, p, s.describe(),
					strings.Join(s.log[max(0, len(s.log)-80):], "\n"))
			}
		}
	}
}
