package sqlite

// The schema of NEO/py's SQLite backend, version 4: same tables, columns,
// types, constraints, WITHOUT ROWID clauses and index names, so that either
// implementation opens a database made by the other. Statements are kept in
// creation order; "%s" is where NEO/py's setup puts "IF NOT EXISTS name".
var schemaTables = []struct{ name, sql string }{
	{"config", `CREATE TABLE %s (
	name TEXT NOT NULL PRIMARY KEY,
	value TEXT) WITHOUT ROWID`},
	{"pt", `CREATE TABLE %s (
	partition INTEGER NOT NULL,
	nid INTEGER NOT NULL,
	tid INTEGER NOT NULL,
	pack INTEGER,
	PRIMARY KEY (partition, nid)) WITHOUT ROWID`},
	{"pack", `CREATE TABLE %s (
	tid INTEGER PRIMARY KEY,
	approved BOOLEAN,
	partial BOOLEAN NOT NULL,
	oids BLOB,
	pack_tid INTEGER)`},
	{"trans", `CREATE TABLE %s (
	partition INTEGER NOT NULL,
	tid INTEGER NOT NULL,
	packed BOOLEAN NOT NULL,
	oids BLOB NOT NULL,
	user BLOB NOT NULL,
	description BLOB NOT NULL,
	ext BLOB NOT NULL,
	ttid INTEGER NOT NULL,
	PRIMARY KEY (partition, tid)) WITHOUT ROWID`},
	{"obj", `CREATE TABLE %s (
	partition INTEGER NOT NULL,
	oid INTEGER NOT NULL,
	tid INTEGER NOT NULL,
	data_id INTEGER,
	value_tid INTEGER,
	PRIMARY KEY (partition, oid, tid)) WITHOUT ROWID`},
	{"data", `CREATE TABLE %s (
	id INTEGER PRIMARY KEY,
	hash BLOB NOT NULL,
	compression INTEGER NOT NULL,
	value BLOB NOT NULL)`},
	{"ttrans", `CREATE TABLE %s (
	partition INTEGER NOT NULL,
	tid INTEGER,
	packed BOOLEAN NOT NULL,
	oids BLOB NOT NULL,
	user BLOB NOT NULL,
	description BLOB NOT NULL,
	ext BLOB NOT NULL,
	ttid INTEGER NOT NULL)`},
	{"tobj", `CREATE TABLE %s (
	partition INTEGER NOT NULL,
	oid INTEGER NOT NULL,
	tid INTEGER NOT NULL,
	data_id INTEGER,
	value_tid INTEGER,
	PRIMARY KEY (tid, oid)) WITHOUT ROWID`},
}

// schemaIndexes: name, table, columns. _data_i1 only with dedup.
var schemaIndexes = []struct{ name, table, columns string }{
	{"_obj_i1", "obj", "partition, tid, oid"},
	{"_obj_i2", "obj", "data_id"},
}

var dedupIndex = struct{ name, table, columns string }{"_data_i1", "data", "hash, compression"}
