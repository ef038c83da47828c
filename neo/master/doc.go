// Package master is NEO's primary master node: it identifies the nodes of
// the cluster, keeps the node list and the partition table, drives the
// cluster through its states (RECOVERING, VERIFYING, RUNNING, STOPPING),
// allocates oids and tids and coordinates commits, wire-compatible with
// NEO/py (protocol 5).
package master
