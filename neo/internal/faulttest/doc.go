// Package faulttest holds in-process cluster tests of failures: storages,
// clients and links lost in every phase of a commit and of replication,
// whole-cluster stops and crashes, and replica checking of a damaged
// database. Its tests run a master, storages (SQLite), an admin and clients
// over one faultnet.Network, and use faultnet's packet watches to strike at
// a given packet. Each test ends by checking that every commit acknowledged
// to a client is readable from every remaining replica, and that no read
// sees part of a transaction.
//
// Longer randomized variants run with -faulttest.soak.
package faulttest
