package master

import (
	"math/rand/v2"
	"testing"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// Whatever nodes send, in whatever state, the core does not panic and
// keeps its invariants.
func TestAnyPacketAnyState(t *testing.T) {
	var codes []uint16
	for _, info := range proto.Packets() {
		if info.Kind == proto.KindRequest || info.Kind == proto.KindNotification {
			codes = append(codes, info.Code)
		}
	}
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		h := newHarness(t, 1+rng.IntN(5), rng.IntN(2), 0)
		var links []LinkID
		if seed%2 == 0 {
			storages, admin := h.startNewCluster(1 + rng.IntN(3))
			links = append(storages, admin)
			cl := h.connect(clientRI())
			links = append(links, cl)
			h.begin(cl, 1)
		} else {
			links = append(links, h.connect(h.adminRI()), h.connect(storageRI(proto.NoNode, h.newAddr())))
		}
		for i := 0; i < 300; i++ {
			l := links[rng.IntN(len(links))]
			switch rng.IntN(10) {
			case 0:
				h.step(EvLinkDown{Link: l})
			case 1:
				h.step(EvTick{})
			default:
				m, err := proto.NewMsg(codes[rng.IntN(len(codes))])
				if err != nil {
					t.Fatal(err)
				}
				fill(m, rng)
				h.step(EvRecv{Link: l, MsgID: uint32(i), Msg: m})
			}
			// answer whatever the master asked, sometimes
			for _, ll := range links {
				for _, a := range h.take(ll) {
					if ask, ok := a.(ActAsk); ok && rng.IntN(2) == 0 {
						h.step(EvAnswer{Link: ll, Tag: ask.Tag, Msg: answerFor(ask.Msg, rng)})
					}
				}
			}
			if h.c.pt.PTid != 0 && h.c.state == proto.ClusterRunning && !h.c.pt.Filled() {
				t.Fatalf("seed %d: running with an incomplete partition table", seed)
			}
		}
	}
}

// fill sets a few fields of common packets to plausible random values.
func fill(m proto.Msg, rng *rand.Rand) {
	nid := proto.NewNodeID(proto.Storage, int32(1+rng.IntN(3)))
	switch m := m.(type) {
	case *proto.SetNodeState:
		m.NID, m.State = nid, proto.NodeState(rng.IntN(5))
	case *proto.SetClusterState:
		m.State = proto.ClusterState(rng.IntN(8))
	case *proto.AddPendingNodes:
		m.NIDs = []proto.NodeID{nid}
	case *proto.TweakPartitionTable:
		m.DryRun = rng.IntN(2) == 0
	case *proto.AskFinishTransaction:
		m.TTid = zodb.Tid(rng.Uint64())
		m.Oids = []zodb.Oid{zodb.Oid(rng.IntN(10))}
		m.Deleted = []uint32{uint32(rng.IntN(10))}
	case *proto.NotifyReplicationDone:
		m.Partition = uint32(rng.IntN(6))
	case *proto.AskUnfinishedTransactions:
		m.Partitions = []uint32{0, 1, 2, 3, 99}
	case *proto.Truncate:
		m.Tid = zodb.Tid(rng.Uint64())
	case *proto.AskBeginTransaction:
		m.Tid = zodb.InvalidTid
		if rng.IntN(3) == 0 {
			m.Tid = zodb.Tid(rng.Uint64())
		}
	case *proto.AskNewOIDs:
		m.NumOids = uint32(rng.IntN(5))
	case *proto.RequestIdentification:
		m.NodeType = proto.NodeType(rng.IntN(5))
		m.ClusterName = "test"
		m.NID = nid
	}
}

func answerFor(req proto.Msg, rng *rand.Rand) proto.Msg {
	switch req := req.(type) {
	case *proto.AskRecovery:
		return &proto.AnswerRecovery{PTid: proto.Some(proto.PTid(rng.IntN(3))), BackupTid: zodb.InvalidTid, TruncateTid: zodb.InvalidTid}
	case *proto.AskPartitionTable:
		return &proto.AnswerPartitionTable{PTid: proto.Some(proto.PTid(rng.IntN(3))), Rows: [][]proto.CellInfo{{{NID: 1, State: proto.CellUpToDate}}}}
	case *proto.AskLockedTransactions:
		return &proto.AnswerLockedTransactions{Transactions: []proto.LockedTransaction{{TTid: 5, Tid: zodb.InvalidTid}}}
	case *proto.AskFinalTID:
		return &proto.AnswerFinalTID{Tid: zodb.InvalidTid}
	case *proto.AskLastIDs:
		return &proto.AnswerLastIDs{LastTid: zodb.InvalidTid, LastOid: zodb.InvalidOid, FirstTid: zodb.TidMax}
	case *proto.AskPackOrders:
		return &proto.AnswerPackOrders{}
	case *proto.AskLockInformation:
		return &proto.AnswerInformationLocked{TTid: req.TTid}
	}
	return proto.Err(proto.ProtocolError, "no")
}
