//go:build ignore

// gen.go writes zproto.go: the packet types of the NEO protocol, their
// encoder, decoder and metadata, from the table below. Run "go generate".
//
// Field types are Go types, with these encodings:
//
//	zodb.Tid, zodb.Oid   8-byte bin; with a leading "?", nil = Invalid{Tid,Oid}
//	NodeID               int; with a leading "?", nil = NoNode
//	uint8..uint64, PTid  int (unsigned forms)
//	ErrorCode            int (only in Error)
//	CellState, ...       enum ext
//	bool, float64        bool, float64
//	string, []byte       bin
//	Checksum             20-byte bin
//	Dict                 map {bin: any}
//	Opt[T]               T or nil
//	[]T                  array of T; map when T is a pair record
//	a record name        array of its fields (tuple), or key/value (pair)
package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"sort"
	"strings"
)

// packet: a packet type. answer names the answer of a request ("Error" for
// requests only answered by Error); it is empty for notifications and
// answers. flags: "k" = a request kept when its connection closes
// (ignore_when_closed false), "b" = buffered (nodelay false).
type packet struct {
	name   string
	code   uint16
	answer string
	flags  string
	fields string
	doc    string
}

// record: a tuple (array with fixed positions) or a pair (one key/value of a
// map: the first field is the key; the value is the second field, or a tuple
// of the other fields).
type record struct {
	name   string
	pair   bool
	fields string
	doc    string
}

var records = []record{
	{"Address", false, `
		Host string
		Port uint16`, "Address is a listening address: a numeric host (IPv6 without brackets) and a port."},
	{"NodeInfo", false, `
		Type   NodeType
		Addr   Opt[Address] // nil for clients, and storages joining with --new-nid
		NID    ?NodeID
		State  NodeState
		IDTime Opt[float64] // id_timestamp; nil for nodes not identified by the master`,
		"NodeInfo describes a node in node lists."},
	{"CellInfo", false, `
		NID   NodeID
		State CellState`, "CellInfo is one cell of a partition table row."},
	{"CellChange", false, `
		Partition uint32
		NID       NodeID
		State     CellState // CellDiscarded removes the cell`,
		"CellChange is one change of NotifyPartitionChanges."},
	{"PackInfo", false, `
		Oids    Opt[[]zodb.Oid] // partial pack of these oids; nil = all
		PackTid zodb.Tid`,
		"PackInfo is a pack order carried by a commit."},
	{"PackOrder", false, `
		PackID   zodb.Tid
		Approved Opt[bool] // nil: not signed yet
		Partial  bool
		Oids     Opt[[]zodb.Oid]
		PackTid  zodb.Tid`,
		"PackOrder is a pack order as the master keeps it."},
	{"TxnPackInfo", false, `
		Approved Opt[bool]
		Partial  bool
		Oids     Opt[[]zodb.Oid]
		PackTid  zodb.Tid`,
		"TxnPackInfo is the pack order of a replicated transaction (PackOrder without its id, which is the tid)."},
	{"RelockConflict", false, `
		Serial         zodb.Tid
		ConflictSerial zodb.Tid
		Data           Opt[RelockData] // the data stored by the client, if any`,
		"RelockConflict tells that a relock failed: the store is cancelled."},
	{"RelockData", false, `
		Compression uint8
		Checksum    Checksum
		Data        []byte`,
		"RelockData is object data handed back by AnswerRelockObject."},
	{"HistoryEntry", false, `
		Serial zodb.Tid
		Size   uint64`,
		"HistoryEntry is one revision in AnswerObjectHistory."},
	{"CheckSource", false, `
		UpstreamName string // empty for internal checks
		Addr         Opt[Address] // nil: no reference`,
		"CheckSource is the reference of a replica check."},
	{"LockedTransaction", true, `
		TTid zodb.Tid
		Tid  ?zodb.Tid // final tid when locked; nil when only voted`,
		"LockedTransaction is an entry of AnswerLockedTransactions {ttid: tid}."},
	{"UndoSerial", true, `
		Oid           zodb.Oid
		CurrentSerial zodb.Tid
		UndoSerial    ?zodb.Tid
		IsCurrent     bool`,
		"UndoSerial is an entry of AnswerObjectUndoSerial {oid: (current, undo, is_current)}."},
	{"ReplicateSource", true, `
		Partition uint32
		Addr      Opt[Address] // nil: nothing new for this partition`,
		"ReplicateSource is an entry of Replicate {partition: address}."},
	{"CheckReplicasPartition", true, `
		Partition uint32
		Reference ?NodeID`,
		"CheckReplicasPartition is an entry of CheckReplicas {partition: reference}."},
	{"SerialOids", true, `
		Serial zodb.Tid
		Oids   []zodb.Oid`,
		"SerialOids is an entry of a {serial: [oid]} map of AskFetchObjects and AnswerFetchObjects."},
}

var packets = []packet{
	{"Error", 0x8000, "", "", `
		Code    ErrorCode
		Message string`,
		"answers any request with an error, or with Ack for the requests that have no answer type; it may also be sent as a notification."},
	{"RequestIdentification", 0x0001, "AcceptIdentification", "", `
		NodeType    NodeType
		NID         ?NodeID      // the id the sender has or wants
		Address     Opt[Address] // the sender's listening address
		ClusterName string
		IDTimestamp Opt[float64]
		Extra       Dict // read_only, backup, devpath, new_nid`,
		"It is the first request on a connection between nodes."},
	{"AcceptIdentification", 0x8001, "", "", `
		NodeType NodeType // of the answering node
		NID      ?NodeID  // of the answering node
		YourNID  ?NodeID  // assigned to the requester`, ""},
	{"Ping", 0x0002, "Pong", "", ``, "It is used as a barrier: when Pong arrives, the notifications the peer sent before were processed."},
	{"Pong", 0x8002, "", "", ``, ""},
	{"CloseClient", 0x0003, "", "", ``, "The sender no longer uses the connection as a client."},
	{"AskPrimary", 0x0004, "AnswerPrimary", "", ``, "It asks an admin which master is primary."},
	{"AnswerPrimary", 0x8004, "", "", `
		PrimaryNID NodeID`, ""},
	{"NotPrimaryMaster", 0x0005, "", "", `
		Primary      ?NodeID // index of the primary in KnownMasters, nil if unknown; index 0 reads as NoNode, so a sender lists itself first
		KnownMasters []Address`,
		"A secondary master sends it before it closes a connection."},
	{"NotifyNodeInformation", 0x0006, "", "", `
		Timestamp float64 // master monotonic time
		Nodes     []NodeInfo`,
		"It tells changes of nodes."},
	{"AskRecovery", 0x0007, "AnswerRecovery", "", ``, ""},
	{"AnswerRecovery", 0x8007, "", "", `
		PTid        Opt[PTid]
		BackupTid   ?zodb.Tid
		TruncateTid ?zodb.Tid`, ""},
	{"AskLastIDs", 0x0008, "AnswerLastIDs", "", ``, ""},
	{"AnswerLastIDs", 0x8008, "", "", `
		LastTid  ?zodb.Tid
		LastOid  ?zodb.Oid
		FirstTid zodb.Tid // zodb.TidMax when there is no transaction`, ""},
	{"AskPartitionTable", 0x0009, "AnswerPartitionTable", "", ``, ""},
	{"AnswerPartitionTable", 0x8009, "", "", `
		PTid        Opt[PTid]
		NumReplicas uint32
		Rows        [][]CellInfo // one row per partition`, ""},
	{"SendPartitionTable", 0x000a, "", "", `
		PTid        Opt[PTid] // nil when the master has no partition table yet
		NumReplicas uint32
		Rows        [][]CellInfo`, "It sends the whole partition table."},
	{"NotifyPartitionChanges", 0x000b, "", "", `
		PTid        PTid
		NumReplicas uint32
		Changes     []CellChange`, ""},
	{"StartOperation", 0x000c, "", "", `
		Backup bool`, ""},
	{"StopOperation", 0x000d, "", "", ``, ""},
	{"AskUnfinishedTransactions", 0x000e, "AnswerUnfinishedTransactions", "", `
		Partitions []uint32`, ""},
	{"AnswerUnfinishedTransactions", 0x800e, "", "", `
		MaxTid zodb.Tid
		TTids  []zodb.Tid`, ""},
	{"AskLockedTransactions", 0x000f, "AnswerLockedTransactions", "", ``, ""},
	{"AnswerLockedTransactions", 0x800f, "", "", `
		Transactions []LockedTransaction`, ""},
	{"AskFinalTID", 0x0010, "AnswerFinalTID", "", `
		TTid zodb.Tid`, ""},
	{"AnswerFinalTID", 0x8010, "", "", `
		Tid ?zodb.Tid // from the master: nil = unknown, zodb.TidMax = committed, ask storages`, ""},
	{"ValidateTransaction", 0x0011, "", "", `
		TTid zodb.Tid
		Tid  zodb.Tid`, ""},
	{"AskBeginTransaction", 0x0012, "AnswerBeginTransaction", "", `
		Tid ?zodb.Tid // wanted tid, or nil`, ""},
	{"AnswerBeginTransaction", 0x8012, "", "", `
		TTid zodb.Tid`, ""},
	{"FailedVote", 0x0013, "Error", "", `
		TTid   zodb.Tid
		Failed []NodeID`, ""},
	{"AskFinishTransaction", 0x0014, "AnswerTransactionFinished", "k", `
		TTid    zodb.Tid
		Oids    []zodb.Oid
		Deleted []uint32 // partitions of deleted oids
		Checked []uint32 // partitions of oids only checked
		Pack    Opt[PackInfo]`, ""},
	{"AnswerTransactionFinished", 0x8014, "", "", `
		TTid zodb.Tid
		Tid  zodb.Tid`, ""},
	{"AskLockInformation", 0x0015, "AnswerInformationLocked", "k", `
		TTid zodb.Tid
		Tid  zodb.Tid
		Pack bool`, ""},
	{"AnswerInformationLocked", 0x8015, "", "", `
		TTid zodb.Tid`, ""},
	{"InvalidateObjects", 0x0016, "", "", `
		Tid  zodb.Tid
		Oids []zodb.Oid`, ""},
	{"InvalidatePartitions", 0x0017, "", "", `
		Tid        zodb.Tid
		Partitions []uint32`, ""},
	{"NotifyUnlockInformation", 0x0018, "", "", `
		TTid zodb.Tid`, ""},
	{"AskNewOIDs", 0x0019, "AnswerNewOIDs", "", `
		NumOids uint32`, ""},
	{"AnswerNewOIDs", 0x8019, "", "", `
		Oids []zodb.Oid`, ""},
	{"NotifyDeadlock", 0x001a, "", "", `
		TTid zodb.Tid
		Oid  zodb.Oid`, ""},
	{"AskRelockObject", 0x001b, "AnswerRelockObject", "", `
		TTid zodb.Tid
		Oid  zodb.Oid`, ""},
	{"AnswerRelockObject", 0x801b, "", "", `
		Conflict Opt[RelockConflict] // nil: relocked`, ""},
	{"AskStoreObject", 0x001c, "AnswerStoreObject", "", `
		Oid         zodb.Oid
		Serial      zodb.Tid // the serial the client read
		Compression uint8
		Checksum    Checksum
		Data        []byte
		DataSerial  ?zodb.Tid // undo back-pointer
		TTid        ?zodb.Tid`, ""},
	{"AnswerStoreObject", 0x801c, "", "", `
		Conflict ?zodb.Tid // nil: locked; 0: stored without lock; else conflict with this serial`, ""},
	{"AbortTransaction", 0x001d, "", "", `
		TTid zodb.Tid
		NIDs []NodeID`, ""},
	{"AskStoreTransaction", 0x001e, "AnswerStoreTransaction", "", `
		TTid        zodb.Tid
		User        []byte
		Description []byte
		Extension   []byte
		Oids        []zodb.Oid
		Pack        Opt[PackInfo]`, ""},
	{"AnswerStoreTransaction", 0x801e, "", "", ``, ""},
	{"AskVoteTransaction", 0x001f, "AnswerVoteTransaction", "", `
		TTid zodb.Tid`, ""},
	{"AnswerVoteTransaction", 0x801f, "", "", ``, ""},
	{"AskObject", 0x0020, "AnswerObject", "", `
		Oid    zodb.Oid
		At     ?zodb.Tid // exact serial
		Before ?zodb.Tid // latest revision before this tid`,
		"It asks a storage for one revision of an object."},
	{"AnswerObject", 0x8020, "", "", `
		Oid         zodb.Oid
		Serial      zodb.Tid
		NextSerial  ?zodb.Tid
		Compression Opt[uint8] // nil for a record without data
		Checksum    Checksum
		Data        []byte
		DataSerial  ?zodb.Tid`, ""},
	{"AskTIDs", 0x0021, "AnswerTIDs", "", `
		First     uint64
		Last      uint64
		Partition uint32 // 0xffffffff: all readable partitions`, ""},
	{"AnswerTIDs", 0x8021, "", "", `
		Tids []zodb.Tid`, ""},
	{"AskTransactionInformation", 0x0022, "AnswerTransactionInformation", "", `
		Tid zodb.Tid`, ""},
	{"AnswerTransactionInformation", 0x8022, "", "", `
		Tid         zodb.Tid
		User        []byte
		Description []byte
		Extension   []byte
		Packed      bool
		Oids        []zodb.Oid`, ""},
	{"AskObjectHistory", 0x0023, "AnswerObjectHistory", "", `
		Oid   zodb.Oid
		First uint64
		Last  uint64`, ""},
	{"AnswerObjectHistory", 0x8023, "", "", `
		Oid     zodb.Oid
		History []HistoryEntry`, ""},
	{"AskPartitionList", 0x0024, "AnswerPartitionList", "", `
		MinOffset uint32
		MaxOffset uint32
		NID       ?NodeID`, ""},
	{"AnswerPartitionList", 0x8024, "", "", `
		PTid        Opt[PTid]
		NumReplicas uint32
		Rows        [][]CellInfo`, ""},
	{"AskNodeList", 0x0025, "AnswerNodeList", "", `
		NodeType Opt[NodeType] // nil: all`, ""},
	{"AnswerNodeList", 0x8025, "", "", `
		Nodes []NodeInfo`, ""},
	{"SetNodeState", 0x0026, "Error", "k", `
		NID   NodeID
		State NodeState`, ""},
	{"AddPendingNodes", 0x0027, "Error", "k", `
		NIDs []NodeID`, ""},
	{"TweakPartitionTable", 0x0028, "AnswerTweakPartitionTable", "", `
		DryRun  bool
		Exclude []NodeID`, ""},
	{"AnswerTweakPartitionTable", 0x8028, "", "", `
		Changed bool
		Rows    [][]CellInfo`, ""},
	{"SetNumReplicas", 0x0029, "Error", "k", `
		NumReplicas uint32`, ""},
	{"SetClusterState", 0x002a, "Error", "k", `
		State ClusterState`, ""},
	{"Repair", 0x002b, "Error", "", `
		NIDs   []NodeID
		DryRun bool`, ""},
	{"NotifyRepair", 0x002c, "", "", `
		DryRun bool`, ""},
	{"NotifyClusterInformation", 0x002d, "", "", `
		State ClusterState`, ""},
	{"AskClusterState", 0x002e, "AnswerClusterState", "", ``, ""},
	{"AnswerClusterState", 0x802e, "", "", `
		State Opt[ClusterState]`, ""},
	{"AskObjectUndoSerial", 0x002f, "AnswerObjectUndoSerial", "", `
		TTid      zodb.Tid
		LTid      zodb.Tid
		UndoneTid zodb.Tid
		Oids      []zodb.Oid`, ""},
	{"AnswerObjectUndoSerial", 0x802f, "", "", `
		Serials []UndoSerial`, ""},
	{"AskTIDsFrom", 0x0030, "AnswerTIDsFrom", "", `
		MinTid    zodb.Tid
		MaxTid    zodb.Tid
		Length    uint32
		Partition uint32`, ""},
	{"AnswerTIDsFrom", 0x8030, "", "", `
		Tids []zodb.Tid`, ""},
	{"AskOIDsFrom", 0x0031, "AnswerOIDsFrom", "", `
		Partition uint32
		Length    uint32
		MinOid    zodb.Oid
		Tid       zodb.Tid`, ""},
	{"AnswerOIDsFrom", 0x8031, "", "", `
		NextOid ?zodb.Oid
		Oids    []zodb.Oid`, ""},
	{"WaitForPack", 0x0032, "WaitedForPack", "", `
		PackID zodb.Tid`, ""},
	{"WaitedForPack", 0x8032, "", "", ``, ""},
	{"AskPackOrders", 0x0033, "AnswerPackOrders", "", `
		MinPackID zodb.Tid`, ""},
	{"AnswerPackOrders", 0x8033, "", "", `
		Orders []PackOrder`, ""},
	{"NotifyPackSigned", 0x0034, "", "", `
		Approved []zodb.Tid
		Rejected []zodb.Tid`, ""},
	{"NotifyPackCompleted", 0x0035, "", "", `
		PackID zodb.Tid`, ""},
	{"CheckReplicas", 0x0036, "Error", "", `
		Partitions []CheckReplicasPartition
		MinTid     zodb.Tid
		MaxTid     ?zodb.Tid`, ""},
	{"CheckPartition", 0x0037, "", "", `
		Partition uint32
		Source    CheckSource
		MinTid    zodb.Tid
		MaxTid    zodb.Tid`, ""},
	{"AskCheckTIDRange", 0x0038, "AnswerCheckTIDRange", "", `
		Partition uint32
		Length    uint32
		MinTid    zodb.Tid
		MaxTid    zodb.Tid`, ""},
	{"AnswerCheckTIDRange", 0x8038, "", "", `
		Count    uint64
		Checksum Checksum
		MaxTid   zodb.Tid`, ""},
	{"AskCheckSerialRange", 0x0039, "AnswerCheckSerialRange", "", `
		Partition uint32
		Length    uint32
		MinTid    zodb.Tid
		MaxTid    zodb.Tid
		MinOid    zodb.Oid`, ""},
	{"AnswerCheckSerialRange", 0x8039, "", "", `
		Count       uint64
		TidChecksum Checksum
		MaxTid      zodb.Tid
		OidChecksum Checksum
		MaxOid      zodb.Oid`, ""},
	{"NotifyPartitionCorrupted", 0x003a, "", "", `
		Partition uint32
		NIDs      []NodeID`, ""},
	{"NotifyReady", 0x003b, "", "", ``, ""},
	{"AskLastTransaction", 0x003c, "AnswerLastTransaction", "", ``, ""},
	{"AnswerLastTransaction", 0x803c, "", "", `
		Tid zodb.Tid`, ""},
	{"AskCheckCurrentSerial", 0x003d, "AnswerCheckCurrentSerial", "", `
		TTid   zodb.Tid
		Oid    zodb.Oid
		Serial zodb.Tid`, ""},
	{"AnswerCheckCurrentSerial", 0x803d, "", "", `
		Conflict ?zodb.Tid // as AnswerStoreObject.Conflict`, ""},
	{"NotifyTransactionFinished", 0x003e, "", "", `
		TTid   zodb.Tid
		MaxTid zodb.Tid`, ""},
	{"Replicate", 0x003f, "", "", `
		Tid          zodb.Tid
		UpstreamName string // empty for internal replication
		Sources      []ReplicateSource`, ""},
	{"NotifyReplicationDone", 0x0040, "", "", `
		Partition uint32
		Tid       zodb.Tid`, ""},
	{"AskFetchTransactions", 0x0041, "AnswerFetchTransactions", "", `
		Partition   uint32
		Length      uint32
		MinTid      zodb.Tid
		MaxTid      zodb.Tid
		Have        []zodb.Tid
		AskPackInfo bool`, ""},
	{"AnswerFetchTransactions", 0x8041, "", "", `
		NextTid       ?zodb.Tid
		Delete        []zodb.Tid
		CompletedPack ?zodb.Tid`, ""},
	{"AskFetchObjects", 0x0042, "AnswerFetchObjects", "", `
		Partition uint32
		Length    uint32
		MinTid    zodb.Tid
		MaxTid    zodb.Tid
		MinOid    zodb.Oid
		Have      []SerialOids`, ""},
	{"AnswerFetchObjects", 0x8042, "", "", `
		NextTid ?zodb.Tid
		NextOid ?zodb.Oid
		Delete  []SerialOids`, ""},
	{"AddTransaction", 0x0043, "", "b", `
		Tid         zodb.Tid
		User        []byte
		Description []byte
		Extension   []byte
		Packed      bool
		TTid        zodb.Tid
		Oids        []zodb.Oid
		Pack        Opt[TxnPackInfo]`,
		"It sends a transaction during replication, with the msg id of the AskFetchTransactions it serves."},
	{"AddObject", 0x0044, "", "b", `
		Oid         zodb.Oid
		Serial      zodb.Tid
		Compression uint8
		Checksum    Checksum
		Data        []byte
		DataSerial  ?zodb.Tid`,
		"It sends an object record during replication, with the msg id of the AskFetchObjects it serves."},
	{"Truncate", 0x0045, "Error", "", `
		Tid zodb.Tid`, ""},
	{"FlushLog", 0x0046, "", "", ``, ""},
	{"AskMonitorInformation", 0x0047, "AnswerMonitorInformation", "", ``, ""},
	{"AnswerMonitorInformation", 0x8047, "", "", `
		Warnings []Opt[string] // cluster names; nil = this cluster
		Problems []Opt[string]
		Summary  string`, ""},
	{"NotifyMonitorInformation", 0x0048, "", "", `
		Info Dict // cluster_state, down, pt_summary`, ""},
	{"NotifyUpstreamAdmin", 0x0049, "", "", `
		Address Address`, ""},
}

// ---- generator ----

type field struct {
	name, typ, comment string
}

func parseFields(s string) []field {
	var fs []field
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var comment string
		if i := strings.Index(line, "//"); i >= 0 {
			comment = strings.TrimSpace(line[i+2:])
			line = strings.TrimSpace(line[:i])
		}
		parts := strings.Fields(line)
		if len(parts) != 2 {
			log.Fatalf("bad field %q", line)
		}
		fs = append(fs, field{parts[0], parts[1], comment})
	}
	return fs
}

type gen struct {
	buf       bytes.Buffer
	requestOf map[string]string // answer name -> request name
	records   map[string]*record
	depth     int
}

func (g *gen) p(format string, args ...any) { fmt.Fprintf(&g.buf, format, args...) }

var uintMax = map[string]string{
	"uint8": "math.MaxUint8", "uint16": "math.MaxUint16", "uint32": "math.MaxUint32",
	"uint64": "math.MaxUint64", "PTid": "math.MaxUint64",
}

var enumExt = map[string]string{
	"CellState": "extCellState", "ClusterState": "extClusterState",
	"NodeState": "extNodeState", "NodeType": "extNodeType",
}

func goType(t string) string { return strings.TrimPrefix(t, "?") }

func optInner(t string) (string, bool) {
	if strings.HasPrefix(t, "Opt[") && strings.HasSuffix(t, "]") {
		return t[4 : len(t)-1], true
	}
	return "", false
}

func listElem(t string) (string, bool) {
	if strings.HasPrefix(t, "[]") && t != "[]byte" {
		return t[2:], true
	}
	return "", false
}

// minSize is the least number of bytes a value of type t takes on the wire.
func (g *gen) minSize(t string) int {
	switch t {
	case "zodb.Tid", "zodb.Oid":
		return 10
	case "float64":
		return 5 // float32 is accepted too
	case "string", "[]byte":
		return 2
	case "Checksum":
		return 22
	}
	if _, ok := enumExt[t]; ok {
		return 3
	}
	if r, ok := g.records[t]; ok {
		fs := parseFields(r.fields)
		n := 0
		if !r.pair || len(fs) > 2 {
			n = 1
		}
		for _, f := range fs {
			n += g.minSize(f.typ)
		}
		return n
	}
	return 1
}

func (g *gen) isPair(t string) bool {
	r, ok := g.records[t]
	return ok && r.pair
}

// enc writes statements appending the value x of type t to b.
func (g *gen) enc(t, x string) {
	switch t {
	case "zodb.Tid", "zodb.Oid":
		g.p("b = appendTid(b, uint64(%s))\n", x)
		return
	case "?zodb.Tid", "?zodb.Oid":
		g.p("b = appendOptTid(b, uint64(%s))\n", x)
		return
	case "NodeID":
		g.p("b = appendNid(b, %s)\n", x)
		return
	case "?NodeID":
		g.p("b = appendOptNid(b, %s)\n", x)
		return
	case "ErrorCode":
		g.p("b = msgp.AppendUint64(b, uint64(%s))\n", x)
		return
	case "bool":
		g.p("b = msgp.AppendBool(b, %s)\n", x)
		return
	case "float64":
		g.p("b = msgp.AppendFloat64(b, %s)\n", x)
		return
	case "string":
		g.p("b = appendStr(b, %s)\n", x)
		return
	case "[]byte":
		g.p("b = msgp.AppendBytes(b, %s)\n", x)
		return
	case "Checksum":
		g.p("b = appendChecksum(b, &%s)\n", x)
		return
	case "Dict":
		g.p("b = appendDict(b, %s)\n", x)
		return
	}
	if _, ok := uintMax[t]; ok {
		g.p("b = msgp.AppendUint64(b, uint64(%s))\n", x)
		return
	}
	if ext, ok := enumExt[t]; ok {
		g.p("b = appendEnum(b, %s, uint8(%s))\n", ext, x)
		return
	}
	if inner, ok := optInner(t); ok {
		g.p("if %s.Ok {\n", x)
		g.enc(inner, x+".V")
		g.p("} else {\nb = append(b, 0xc0)\n}\n")
		return
	}
	if elem, ok := listElem(t); ok {
		g.depth++
		i := fmt.Sprintf("i%d", g.depth)
		if g.isPair(elem) {
			g.p("b = msgp.AppendMapHeader(b, uint32(len(%s)))\n", x)
		} else {
			g.p("b = msgp.AppendArrayHeader(b, uint32(len(%s)))\n", x)
		}
		g.p("for %s := range %s {\n", i, x)
		g.enc(elem, x+"["+i+"]")
		g.p("}\n")
		g.depth--
		return
	}
	if _, ok := g.records[t]; ok {
		g.p("b = append%s(b, &%s)\n", t, x)
		return
	}
	log.Fatalf("enc: unknown type %q", t)
}

// dec writes statements decoding a value of type t into x.
func (g *gen) dec(t, x, ctx string) {
	q := fmt.Sprintf("%q", ctx)
	switch t {
	case "zodb.Tid", "zodb.Oid":
		g.p("%s = %s(d.tid(%s))\n", x, t, q)
		return
	case "?zodb.Tid", "?zodb.Oid":
		g.p("%s = %s(d.optTid(%s))\n", x, goType(t), q)
		return
	case "NodeID":
		g.p("%s = d.nid(%s)\n", x, q)
		return
	case "?NodeID":
		g.p("%s = d.optNid(%s)\n", x, q)
		return
	case "ErrorCode":
		g.p("%s = ErrorCode(d.uint(math.MaxUint8, %s))\n", x, q)
		return
	case "bool":
		g.p("%s = d.bool(%s)\n", x, q)
		return
	case "float64":
		g.p("%s = d.float(%s)\n", x, q)
		return
	case "string":
		g.p("%s = d.str(%s)\n", x, q)
		return
	case "[]byte":
		g.p("%s = d.bin(%s)\n", x, q)
		return
	case "Checksum":
		g.p("%s = d.checksum(%s)\n", x, q)
		return
	case "Dict":
		g.p("%s = d.dict(%s)\n", x, q)
		return
	}
	if max, ok := uintMax[t]; ok {
		g.p("%s = %s(d.uint(%s, %s))\n", x, t, max, q)
		return
	}
	if ext, ok := enumExt[t]; ok {
		g.p("%s = %s(d.enum(%s, %s))\n", x, t, ext, q)
		return
	}
	if inner, ok := optInner(t); ok {
		g.p("if d.nilNext() {\n%s = %s{}\n} else {\n%s.Ok = true\n", x, t, x)
		g.dec(inner, x+".V", ctx)
		g.p("}\n")
		return
	}
	if elem, ok := listElem(t); ok {
		g.depth++
		i := fmt.Sprintf("i%d", g.depth)
		n := fmt.Sprintf("n%d", g.depth)
		g.p("{\n")
		if g.isPair(elem) {
			g.p("%s := d.mapLen(%d, %s)\n", n, g.minSize(elem), q)
		} else {
			g.p("%s := d.arrayLen(%d, %s)\n", n, g.minSize(elem), q)
		}
		g.p("if cap(%s) >= %s {\n%s = %s[:%s]\n} else {\n%s = make(%s, %s)\n}\n", x, n, x, x, n, x, t, n)
		g.p("for %s := 0; %s < %s && d.err == nil; %s++ {\n", i, i, n, i)
		g.dec(elem, x+"["+i+"]", ctx)
		g.p("}\n}\n")
		g.depth--
		return
	}
	if _, ok := g.records[t]; ok {
		g.p("decode%s(d, &%s)\n", t, x)
		return
	}
	log.Fatalf("dec: unknown type %q", t)
}

func (g *gen) structDecl(name, doc string, fs []field) {
	if doc != "" {
		g.p("// %s\n", doc)
	}
	g.p("type %s struct {\n", name)
	for _, f := range fs {
		var none string
		switch f.typ {
		case "?zodb.Tid":
			none = "zodb.InvalidTid when nil"
		case "?zodb.Oid":
			none = "zodb.InvalidOid when nil"
		case "?NodeID":
			none = "NoNode when nil"
		}
		if none != "" && f.comment != "" {
			f.comment = none + "; " + f.comment
		} else if none != "" {
			f.comment = none
		}
		if f.comment != "" {
			g.p("%s %s // %s\n", f.name, goType(f.typ), f.comment)
		} else {
			g.p("%s %s\n", f.name, goType(f.typ))
		}
	}
	g.p("}\n\n")
}

func (g *gen) record(r *record) {
	fs := parseFields(r.fields)
	g.structDecl(r.name, r.doc, fs)
	valueTuple := !r.pair || len(fs) > 2
	// encoder
	g.p("func append%s(b []byte, v *%s) []byte {\n", r.name, r.name)
	for i, f := range fs {
		if valueTuple && i == 0 && !r.pair {
			g.p("b = append(b, 0x%02x)\n", 0x90|len(fs))
		}
		g.enc(f.typ, "v."+f.name)
		if r.pair && valueTuple && i == 0 {
			g.p("b = append(b, 0x%02x)\n", 0x90|(len(fs)-1))
		}
	}
	g.p("return b\n}\n\n")
	// decoder
	g.p("func decode%s(d *decoder, v *%s) {\n", r.name, r.name)
	for i, f := range fs {
		if valueTuple && i == 0 && !r.pair {
			g.p("d.tuple(%d, %q)\n", len(fs), r.name)
		}
		g.dec(f.typ, "v."+f.name, r.name+"."+f.name)
		if r.pair && valueTuple && i == 0 {
			g.p("d.tuple(%d, %q)\n", len(fs)-1, r.name)
		}
	}
	g.p("}\n\n")
}

func (g *gen) packet(pk *packet) {
	fs := parseFields(pk.fields)
	var doc string
	switch {
	case pk.code == 0x8000:
		doc = fmt.Sprintf("%s (0x%04x) %s", pk.name, pk.code, pk.doc)
	case pk.code&0x8000 != 0:
		doc = fmt.Sprintf("%s (0x%04x) answers %s.", pk.name, pk.code, g.requestOf[pk.name])
	case pk.answer == "Error":
		doc = fmt.Sprintf("%s (0x%04x) is a request answered by Error (Ack on success).", pk.name, pk.code)
	case pk.answer != "":
		doc = fmt.Sprintf("%s (0x%04x) is a request answered by %s.", pk.name, pk.code, pk.answer)
	default:
		doc = fmt.Sprintf("%s (0x%04x) is a notification.", pk.name, pk.code)
	}
	if pk.doc != "" && pk.code != 0x8000 {
		doc += "\n// " + pk.doc
	}
	g.structDecl(pk.name, doc, fs)
	g.p("func (*%s) MsgCode() uint16 { return Code%s }\n\n", pk.name, pk.name)
	g.p("func (m *%s) AppendArgs(b []byte) []byte {\n", pk.name)
	g.p("b = append(b, 0x%02x)\n", 0x90|len(fs))
	for _, f := range fs {
		g.enc(f.typ, "m."+f.name)
	}
	g.p("return b\n}\n\n")
	g.p("func (m *%s) DecodeArgs(b []byte) error { return decodeArgs(m, b, false) }\n\n", pk.name)
	g.p("func (m *%s) decodeArgs(d *decoder) {\n", pk.name)
	g.p("d.tuple(%d, \"arguments\")\n", len(fs))
	for _, f := range fs {
		g.dec(f.typ, "m."+f.name, f.name)
	}
	g.p("}\n\n")
}

func main() {
	output := flag.String("o", "zproto.go", "output file")
	flag.Parse()
	g := &gen{records: map[string]*record{}}
	for i := range records {
		g.records[records[i].name] = &records[i]
	}
	byName := map[string]*packet{}
	g.requestOf = map[string]string{}
	for i := range packets {
		byName[packets[i].name] = &packets[i]
		if a := packets[i].answer; a != "" && a != "Error" {
			g.requestOf[a] = packets[i].name
		}
	}
	sorted := append([]packet(nil), packets...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].code < sorted[j].code })

	g.p("// Code generated by gen.go; DO NOT EDIT.\n\n")
	g.p("package proto\n\n")
	g.p("import (\n\"math\"\n\n\"github.com/neozodb/neo/zodb\"\n\"github.com/tinylib/msgp/msgp\"\n)\n\n")

	// codes
	g.p("// Packet codes.\nconst (\n")
	for _, pk := range sorted {
		g.p("Code%s uint16 = 0x%04x\n", pk.name, pk.code)
	}
	g.p(")\n\n")

	for i := range records {
		g.record(&records[i])
	}
	for i := range packets {
		g.packet(&packets[i])
	}

	// newMsg
	g.p("func newMsg(code uint16) Msg {\nswitch code {\n")
	for _, pk := range sorted {
		g.p("case 0x%04x:\nreturn new(%s)\n", pk.code, pk.name)
	}
	g.p("}\nreturn nil\n}\n\n")

	// decodeMsgArgs calls the concrete decoders statically: through the
	// interface, the decoder would escape to the heap.
	g.p("func decodeMsgArgs(m Msg, d *decoder) bool {\nswitch m := m.(type) {\n")
	for _, pk := range sorted {
		g.p("case *%s:\nm.decodeArgs(d)\n", pk.name)
	}
	g.p("default:\nreturn false\n}\nreturn true\n}\n\n")

	// metadata
	nreq, nans, nnotif := 0, 0, 0
	var maxReq uint16
	g.p("var packetInfos = [...]PacketInfo{\n")
	index := map[uint16]int{}
	for i, pk := range sorted {
		index[pk.code] = i
		kind := "KindNotification"
		answer := "0"
		switch {
		case pk.code == 0x8000:
			kind = "KindError"
		case pk.code&0x8000 != 0:
			kind = "KindAnswer"
			answer = fmt.Sprintf("0x%04x", pk.code&^0x8000)
			nans++
		case pk.answer != "":
			kind = "KindRequest"
			a, ok := byName[pk.answer]
			if !ok {
				log.Fatalf("%s: unknown answer %s", pk.name, pk.answer)
			}
			if pk.answer != "Error" && a.code != pk.code|0x8000 {
				log.Fatalf("%s: answer %s has code 0x%04x", pk.name, pk.answer, a.code)
			}
			answer = fmt.Sprintf("0x%04x", a.code)
			nreq++
		default:
			nnotif++
		}
		if pk.code&0x8000 == 0 && pk.code > maxReq {
			maxReq = pk.code
		}
		ignore := kind == "KindRequest" && !strings.Contains(pk.flags, "k")
		nodelay := !strings.Contains(pk.flags, "b")
		g.p("{Name: %q, Code: 0x%04x, Kind: %s, Answer: %s, NoDelay: %v, IgnoreWhenClosed: %v},\n",
			pk.name, pk.code, kind, answer, nodelay, ignore)
	}
	g.p("}\n\n")
	// every answer must have its request
	for _, pk := range sorted {
		if pk.code&0x8000 != 0 && pk.code != 0x8000 {
			req, ok := index[pk.code&^0x8000]
			if !ok || sorted[req].answer != pk.name {
				log.Fatalf("answer %s: no request answered by it", pk.name)
			}
		}
	}
	log.Printf("%d packets: %d requests, %d answers, %d notifications, Error", len(packets), nreq, nans, nnotif)

	// index: requests/notifications by code, answers by code without the bit
	reqIdx := make([]int, maxReq+1)
	ansIdx := make([]int, maxReq+1)
	for _, pk := range sorted {
		c := pk.code &^ 0x8000
		if pk.code&0x8000 != 0 {
			ansIdx[c] = index[pk.code] + 1
		} else {
			reqIdx[c] = index[pk.code] + 1
		}
	}
	g.p("// packetIndexTab[answer?1:0][code&^AnswerBit] is 1 + the index in packetInfos, 0 if none.\n")
	g.p("var packetIndexTab = [2][%d]uint8{\n{", maxReq+1)
	for _, x := range reqIdx {
		g.p("%d,", x)
	}
	g.p("},\n{")
	for _, x := range ansIdx {
		g.p("%d,", x)
	}
	g.p("},\n}\n\n")
	g.p(`func packetIndex(code uint16) (int, bool) {
	a := 0
	if code&AnswerBit != 0 {
		a = 1
	}
	c := code &^ AnswerBit
	if int(c) >= len(packetIndexTab[a]) || packetIndexTab[a][c] == 0 {
		return 0, false
	}
	return int(packetIndexTab[a][c]) - 1, true
}
`)

	out, err := format.Source(g.buf.Bytes())
	if err != nil {
		os.WriteFile(*output, g.buf.Bytes(), 0o644)
		log.Fatalf("gofmt: %v", err)
	}
	if err := os.WriteFile(*output, out, 0o644); err != nil {
		log.Fatal(err)
	}
}
