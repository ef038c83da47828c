package storage

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/neozodb/neo/neo/neonet"
	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// fill sets v (a pointer's element) to random values: small numbers
// mostly, so that they hit existing oids, tids and partitions.
func fill(rng *rand.Rand, v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(rng.IntN(8)) - 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		switch rng.IntN(4) {
		case 0:
			v.SetUint(rng.Uint64())
		default:
			v.SetUint(uint64(rng.IntN(0x210)))
		}
	case reflect.Float64:
		v.SetFloat(rng.Float64() * 10)
	case reflect.String:
		v.SetString([]string{"", cluster, "x"}[rng.IntN(3)])
	case reflect.Slice:
		if depth > 3 {
			return
		}
		n := rng.IntN(4)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := 0; i < n; i++ {
			fill(rng, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(rng, v.Index(i), depth+1)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(rng, v.Field(i), depth+1)
			}
		}
	}
}

// TestRandomPackets sends every request and notification type, zero and
// with random arguments, from clients, a storage peer and the master: the
// node must go on (links may be closed), and still serve a client.
func TestRandomPackets(t *testing.T) {
	ctx, fm, n, ml, c := single(t)
	commit(ctx, t, c, ml, 0x100, 0x104, nil, map[zodb.Oid]string{1: "x"})
	rng := rand.New(rand.NewPCG(1, 2))
	stats := map[string]int{}
	var peer *client
	for round := 0; round < 3; round++ {
		for _, info := range proto.Packets() {
			if info.Kind != proto.KindRequest && info.Kind != proto.KindNotification || info.Code == proto.CodeRequestIdentification {
				continue
			}
			m, err := proto.NewMsg(info.Code)
			if err != nil {
				t.Fatal(err)
			}
			if round > 0 {
				fill(rng, reflect.ValueOf(m).Elem(), 0)
			}
			if c.link.Err() != nil {
				c = dialClient(ctx, t, n.s.Addr(), c1, 2)
			}
			if peer == nil || peer.link.Err() != nil {
				peer = dialPeer(ctx, t, n.s.Addr())
			}
			for _, l := range []*neonet.Link{c.link, peer.link} {
				send(ctx, stats, l, info, m)
			}
		}
	}
	t.Logf("answers: %v", stats)
	if stats["answer"] == 0 || stats["closed"] == 0 {
		t.Fatalf("the packets did not reach the node: %v", stats)
	}
	c = dialClient(ctx, t, n.s.Addr(), c1, 2)
	checkObject(t, load(ctx, t, c, 1, zodb.InvalidTid, zodb.InvalidTid), 0x104, zodb.InvalidTid, "x")

	// the master's turn, last: its link is closed at the first error
	for _, info := range proto.Packets() {
		if info.Kind != proto.KindRequest && info.Kind != proto.KindNotification {
			continue
		}
		switch info.Code {
		case proto.CodeNotifyNodeInformation, proto.CodeTruncate:
			continue // they stop or truncate the node, as they should
		}
		m, _ := proto.NewMsg(info.Code)
		fill(rng, reflect.ValueOf(m).Elem(), 0)
		if ml.link.Err() != nil {
			break
		}
		send(ctx, stats, ml.link, info, m)
	}
	// the node goes on: it identifies again
	ml.link.Close()
	fm.accept(ctx, s1)
	select {
	case err := <-n.done:
		t.Fatalf("Run returned: %v", err)
	default:
	}
}

func send(ctx context.Context, stats map[string]int, l *neonet.Link, info proto.PacketInfo, m proto.Msg) {
	if info.Kind == proto.KindRequest {
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		// any answer, or none (delayed), or the link closed
		_, err := l.Ask(sctx, m)
		var pe *proto.Error
		switch {
		case err == nil:
			stats["answer"]++
		case errors.As(err, &pe):
			stats["error "+pe.Code.String()]++
		case l.Err() != nil:
			stats["closed"]++
		default:
			stats["no answer"]++
		}
		return
	}
	l.Notify(ctx, m)
}

// dialPeer links with the node as storage S2 (known to it).
func dialPeer(ctx context.Context, t *testing.T, addr string) *client {
	t.Helper()
	link, err := neonet.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	if _, err := link.Ask(ctx, &proto.RequestIdentification{NodeType: proto.Storage, NID: s2, ClusterName: cluster,
		IDTimestamp: proto.Some(4.0), Extra: proto.Dict{}}); err != nil {
		t.Fatalf("peer identification: %v", err)
	}
	return &client{t: t, nid: s2, link: link}
}
