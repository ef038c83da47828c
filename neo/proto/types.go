package proto

import (
	"fmt"
	"net"
	"strconv"
)

// Ext type codes of the enumerations (msgpack ext, payload = the value as a
// msgpack int).
const (
	extCellState    = 0
	extClusterState = 1
	extErrorCode    = 2
	extNodeState    = 3
	extNodeType     = 4
)

// CellState is the state of one cell (partition × storage) of the partition
// table (NEO/py CellStates).
type CellState uint8

const (
	CellOutOfDate CellState = 0 // write-only: misses transactions, replicating
	CellUpToDate  CellState = 1 // readable and writable
	CellFeeding   CellState = 2 // like up-to-date, to be dropped after replication elsewhere
	CellCorrupted CellState = 3 // a replica check found differences
	CellDiscarded CellState = 4 // only in NotifyPartitionChanges: drop the cell
)

var cellStateNames = [...]string{"OUT_OF_DATE", "UP_TO_DATE", "FEEDING", "CORRUPTED", "DISCARDED"}

func (s CellState) String() string { return enumString("CellState", cellStateNames[:], uint8(s)) }

// ClusterState is the state of the whole cluster (NEO/py ClusterStates).
type ClusterState uint8

const (
	ClusterRecovering     ClusterState = 0
	ClusterVerifying      ClusterState = 1
	ClusterRunning        ClusterState = 2
	ClusterStopping       ClusterState = 3
	ClusterStartingBackup ClusterState = 4
	ClusterBackingUp      ClusterState = 5
	ClusterStoppingBackup ClusterState = 6
)

var clusterStateNames = [...]string{"RECOVERING", "VERIFYING", "RUNNING", "STOPPING",
	"STARTING_BACKUP", "BACKINGUP", "STOPPING_BACKUP"}

func (s ClusterState) String() string {
	return enumString("ClusterState", clusterStateNames[:], uint8(s))
}

// ErrorCode is the code of an Error packet (NEO/py ErrorCodes). In Error it
// travels as a plain int; only inside Dict values is it an ext.
type ErrorCode uint8

const (
	Ack                   ErrorCode = 0
	Denied                ErrorCode = 1
	NotReady              ErrorCode = 2
	OidNotFound           ErrorCode = 3
	TidNotFound           ErrorCode = 4
	OidDoesNotExist       ErrorCode = 5
	ProtocolError         ErrorCode = 6
	ReplicationError      ErrorCode = 7
	CheckingError         ErrorCode = 8
	BackendNotImplemented ErrorCode = 9
	NonReadableCell       ErrorCode = 10
	ReadOnlyAccess        ErrorCode = 11
	IncompleteTransaction ErrorCode = 12
	UndoPackError         ErrorCode = 13
)

var errorCodeNames = [...]string{"ACK", "DENIED", "NOT_READY", "OID_NOT_FOUND",
	"TID_NOT_FOUND", "OID_DOES_NOT_EXIST", "PROTOCOL_ERROR", "REPLICATION_ERROR",
	"CHECKING_ERROR", "BACKEND_NOT_IMPLEMENTED", "NON_READABLE_CELL",
	"READ_ONLY_ACCESS", "INCOMPLETE_TRANSACTION", "UNDO_PACK_ERROR"}

func (c ErrorCode) String() string { return enumString("ErrorCode", errorCodeNames[:], uint8(c)) }

// NodeState is the state of a node as the master tracks it (NEO/py
// NodeStates).
type NodeState uint8

const (
	NodeUnknown NodeState = 0 // "forget this node"
	NodeDown    NodeState = 1
	NodeRunning NodeState = 2
	NodePending NodeState = 3
)

var nodeStateNames = [...]string{"UNKNOWN", "DOWN", "RUNNING", "PENDING"}

func (s NodeState) String() string { return enumString("NodeState", nodeStateNames[:], uint8(s)) }

// NodeType is the kind of a node (NEO/py NodeTypes).
type NodeType uint8

const (
	Master  NodeType = 0
	Storage NodeType = 1
	Client  NodeType = 2
	Admin   NodeType = 3
)

var nodeTypeNames = [...]string{"MASTER", "STORAGE", "CLIENT", "ADMIN"}

func (t NodeType) String() string { return enumString("NodeType", nodeTypeNames[:], uint8(t)) }

func enumString(typ string, names []string, v uint8) string {
	if int(v) < len(names) {
		return names[v]
	}
	return typ + "(" + strconv.Itoa(int(v)) + ")"
}

// enumCount is the number of members of each enum, indexed by ext type.
var enumCount = [...]uint8{
	extCellState:    uint8(len(cellStateNames)),
	extClusterState: uint8(len(clusterStateNames)),
	extErrorCode:    uint8(len(errorCodeNames)),
	extNodeState:    uint8(len(nodeStateNames)),
	extNodeType:     uint8(len(nodeTypeNames)),
}

// NodeID identifies a node in the cluster (NEO/py's "uuid"): the node type's
// namespace in the high byte, a number in the low 24 bits. Storages are
// positive, masters, clients and admins negative. 0 is never assigned; it
// stands for "no id" (nil on the wire).
type NodeID int32

// NoNode is the "no node id" value, sent as nil.
const NoNode NodeID = 0

// Node id namespaces (the signed high byte of a NodeID).
const (
	nsStorage = 0x00
	nsMaster  = -0x10
	nsClient  = -0x20
	nsAdmin   = -0x30
)

// NewNodeID returns the id number n (1 ≤ n < 2^24) of a node of type t.
func NewNodeID(t NodeType, n int32) NodeID {
	var ns int32
	switch t {
	case Master:
		ns = nsMaster
	case Storage:
		ns = nsStorage
	case Client:
		ns = nsClient
	case Admin:
		ns = nsAdmin
	}
	return NodeID(ns<<24 + n)
}

// Type returns the node type encoded in id, and false for an id outside the
// known namespaces.
func (id NodeID) Type() (NodeType, bool) {
	switch int32(id) >> 24 {
	case nsStorage:
		return Storage, true
	case nsMaster:
		return Master, true
	case nsClient:
		return Client, true
	case nsAdmin:
		return Admin, true
	}
	return 0, false
}

// String returns NEO/py's form: the type letter and the number, e.g. "S1",
// "M2", "C13", "A1"; "None" for NoNode.
func (id NodeID) String() string {
	if id == NoNode {
		return "None"
	}
	t, ok := id.Type()
	if !ok {
		return "NodeID(" + strconv.Itoa(int(id)) + ")"
	}
	return string("MSCA"[t]) + strconv.Itoa(int(id)&0xffffff)
}

// ParseNodeID parses the form String returns ("S1", "M3", ...), as neoctl
// does.
func ParseNodeID(s string) (NodeID, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("node id %q: too short", s)
	}
	var t NodeType
	switch s[0] {
	case 'M':
		t = Master
	case 'S':
		t = Storage
	case 'C':
		t = Client
	case 'A':
		t = Admin
	default:
		return 0, fmt.Errorf("node id %q: unknown node type letter", s)
	}
	n, err := strconv.ParseUint(s[1:], 10, 32)
	if err != nil || n >= 1<<24 {
		return 0, fmt.Errorf("node id %q: invalid number", s)
	}
	return NewNodeID(t, int32(n)), nil
}

// PTid is a partition table id: a counter increased by the master on every
// change of the partition table.
type PTid uint64

// Checksum is a SHA-1 digest (object data, replica checks). The zero
// Checksum with empty data means "no data".
type Checksum [20]byte

// String returns host:port, with brackets around an IPv6 host.
func (a Address) String() string {
	return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port)))
}

// Opt is a value that NEO/py may send as None (nil): Ok tells whether V is
// set. The zero Opt is nil.
type Opt[T any] struct {
	V  T
	Ok bool
}

// Some returns an Opt holding v.
func Some[T any](v T) Opt[T] { return Opt[T]{V: v, Ok: true} }

// Get returns the value and whether it is set.
func (o Opt[T]) Get() (T, bool) { return o.V, o.Ok }

func (o Opt[T]) String() string {
	if !o.Ok {
		return "None"
	}
	return fmt.Sprint(o.V)
}

// Dict is a msgpack map with bin keys and values of any type, in wire order:
// RequestIdentification's extra and NotifyMonitorInformation's info. Values
// are Value-typed (see Value).
type Dict []DictItem

// DictItem is one key/value pair of a Dict.
type DictItem struct {
	Key   string
	Value Value
}

// Get returns the value of key k and whether it is present.
func (d Dict) Get(k string) (Value, bool) {
	for _, it := range d {
		if it.Key == k {
			return it.Value, true
		}
	}
	return nil, false
}

// Value is a msgpack value of a field whose type is open (values of a Dict).
// Decoding yields: nil, bool, int64 (uint64 above MaxInt64), float64, []byte
// (bin), []Value (array), Map (map), CellState, ClusterState, ErrorCode,
// NodeState or NodeType (ext). Encoding also accepts the other Go integer
// types, string (sent as bin), []string, [][]byte, []int, []int64, []uint32,
// Dict and NodeID.
type Value = any

// Map is a msgpack map with keys of any type, in wire order (e.g. pt_summary
// {CellState: int} inside NotifyMonitorInformation).
type Map []MapItem

// MapItem is one key/value pair of a Map.
type MapItem struct {
	Key, Value Value
}
