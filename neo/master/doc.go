// Package master is NEO's primary master node: it identifies the nodes of
// the cluster, keeps the node list and the partition table, drives the
// cluster through its states (RECOVERING, VERIFYING, RUNNING, STOPPING),
// allocates oids and tids, and coordinates commits, wire-compatible with
// NEO/py (protocol 5).
//
// # Parts
//
//   - Master (New, Addr, Run) is the node: a listener and the network layer
//     (net.go). Each accepted link has a reader, which turns what the peer
//     sends into events, and a writer, which carries out the actions meant
//     for that link in order. One goroutine, Run's, owns the core and feeds
//     it the events one at a time.
//   - Core is the master's logic as a state machine, in the style of etcd's
//     raft: Step(now, event) returns actions (send, reply, ask, abort,
//     close, exit) and does no I/O, keeps no goroutine and reads no clock,
//     so tests drive it event by event (core_test.go and the others).
//   - Within the core, one file per concern, following NEO/py's split:
//     ident.go (RequestIdentification, §5.2 of the protocol
//     specification), nodes.go (node table and NotifyNodeInformation
//     broadcasts, §6.8), recovery.go (RECOVERING, §6.4), verification.go
//     (VERIFYING, §6.5), service.go (RUNNING: storages starting and ready,
//     storage loss, commit coordination, §6.6-6.10 and §8), txn.go (pending
//     transactions, commit queue, tid and oid allocation, §3.5), admin.go
//     (requests relayed by the admin node, §6.12), pack.go (pack orders,
//     §10.5), shutdown.go (STOPPING, §6.11).
//   - election.go: with other masters configured, the election between
//     masters that play the primary role (§6.2) and the secondary role.
//
// # What is not there yet
//
// Backup mode (STARTING_BACKUP, BACKINGUP, STOPPING_BACKUP, an upstream
// cluster) is not implemented.
package master
