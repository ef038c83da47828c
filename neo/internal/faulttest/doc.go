// Package faulttest holds in-process cluster tests of failures: storages,
// clients and links lost in every phase of a commit and of replication,
// whole-cluster stops and crashes, and replica checking of a damaged
// database. Its tests run a master, storages (SQLite), an admin and clients
// over one faultnet.Network, each node started, stopped and restarted by
// the test on its own database and address, and use faultnet's packet
// watches (OnPacket) to strike at a given packet. Each test ends by
// checking, through a client that reaches one storage only, that every
// commit acknowledged to a client is readable from every remaining replica
// and that no transaction is there in part; then it stops the cluster as
// neoctl does and compares the storages' databases.
//
//   - commit_test.go: a storage lost before its vote, between vote and lock,
//     with its lock answer, during the finish, while it catches up, while it
//     stores without locks, while two clients commit; storages lost in turn;
//     the source of a replication lost.
//   - client_test.go: a client lost or closed after its vote, lost during
//     its finish.
//   - link_test.go: links cut (client-storage, master-storage, client-master
//     during a finish, admin-master) and blackholed then healed.
//   - restart_test.go: stop by neoctl and restart; every node (or the
//     master alone) killed at a random commit packet, seeded, and restarted,
//     also killed again in verification; restart with an out-of-date storage;
//     stop while a transaction is voted.
//   - check_test.go: neoctl check of a database damaged behind the node.
//
// Longer randomized variants run with -faulttest.soak.
package faulttest
