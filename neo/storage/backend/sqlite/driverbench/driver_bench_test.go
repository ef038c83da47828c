// Package driverbench compares SQLite drivers on the queries of the storage
// backend: a point load (obj ⋈ data with the next serial), a durable store
// (data + obj rows, COMMIT with synchronous=FULL) and an iteration over
// records in (tid, oid) order. It is a module of its own so that the
// product does not depend on the drivers it did not choose.
//
//	go test -bench . -benchmem
package driverbench

import (
	"crypto/sha1"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	_ "modernc.org/sqlite"
	"zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

const (
	nObjects = 100000
	np       = 4
)

var schema = []string{
	`CREATE TABLE obj (partition INTEGER NOT NULL, oid INTEGER NOT NULL, tid INTEGER NOT NULL,
		data_id INTEGER, value_tid INTEGER, PRIMARY KEY (partition, oid, tid)) WITHOUT ROWID`,
	`CREATE INDEX _obj_i1 ON obj(partition, tid, oid)`,
	`CREATE TABLE data (id INTEGER PRIMARY KEY, hash BLOB NOT NULL, compression INTEGER NOT NULL, value BLOB NOT NULL)`,
}

const loadQuery = `SELECT o.tid, o.data_id, d.compression, d.hash, d.value, o.value_tid,
	(SELECT n.tid FROM obj AS n WHERE n.partition=o.partition AND n.oid=o.oid AND n.tid>o.tid ORDER BY n.tid LIMIT 1)
	FROM obj AS o LEFT JOIN data AS d ON o.data_id=d.id WHERE o.partition=? AND o.oid=? AND o.tid<? ORDER BY o.tid DESC LIMIT 1`

const iterQuery = `SELECT o.tid, o.oid, d.value FROM obj AS o LEFT JOIN data AS d ON o.data_id=d.id
	WHERE o.partition=? AND o.tid>=? ORDER BY o.tid, o.oid LIMIT 1000`

func value(i int) ([]byte, [20]byte) {
	v := make([]byte, 100)
	copy(v, fmt.Sprintf("object %d", i))
	return v, sha1.Sum(v)
}

// ---- database/sql drivers (mattn/go-sqlite3, modernc.org/sqlite) ----

func openSQL(b *testing.B, driver string) *sql.DB {
	path := filepath.Join(b.TempDir(), "bench.sqlite")
	db, err := sql.Open(driver, path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	for _, q := range append([]string{"PRAGMA synchronous=FULL"}, schema...) {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	return db
}

func fillSQL(b *testing.B, db *sql.DB, n int) {
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		v, h := value(i)
		if _, err := tx.Exec("INSERT INTO data VALUES (?,?,0,?)", i, h[:], v); err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec("INSERT INTO obj VALUES (?,?,1,?,NULL)", i%np, i, i); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

func benchSQL(b *testing.B, driver string) {
	b.Run("load", func(b *testing.B) {
		db := openSQL(b, driver)
		fillSQL(b, db, nObjects)
		st, err := db.Prepare(loadQuery)
		if err != nil {
			b.Fatal(err)
		}
		var tid, dataID, compression int64
		var hash, data []byte
		var valueTid, next sql.NullInt64
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			oid := i * 7919 % nObjects
			if err := st.QueryRow(oid%np, oid, 1<<62).Scan(&tid, &dataID, &compression, &hash, &data, &valueTid, &next); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("store+commit", func(b *testing.B) {
		db := openSQL(b, driver)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			v, h := value(i)
			tx, err := db.Begin()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec("INSERT INTO data VALUES (?,?,0,?)", i, h[:], v); err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec("INSERT INTO obj VALUES (?,?,?,?,NULL)", i%np, i, i+1, i); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("iterate1000", func(b *testing.B) {
		db := openSQL(b, driver)
		fillSQL(b, db, 10000)
		st, err := db.Prepare(iterQuery)
		if err != nil {
			b.Fatal(err)
		}
		var tid, oid int64
		var data []byte
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			rows, err := st.Query(i%np, 0)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for rows.Next() {
				if err := rows.Scan(&tid, &oid, &data); err != nil {
					b.Fatal(err)
				}
				n++
			}
			if err := rows.Err(); err != nil || n != 1000 {
				b.Fatal(n, err)
			}
			rows.Close()
		}
	})
}

func BenchmarkMattn(b *testing.B)   { benchSQL(b, "sqlite3") }
func BenchmarkModernc(b *testing.B) { benchSQL(b, "sqlite") }

// ---- zombiezen.com/go/sqlite (direct API) ----

func openZ(b *testing.B) *sqlite.Conn {
	path := filepath.Join(b.TempDir(), "bench.sqlite")
	c, err := sqlite.OpenConn(path, sqlite.OpenReadWrite|sqlite.OpenCreate)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	for _, q := range append([]string{"PRAGMA synchronous=FULL"}, schema...) {
		if err := sqlitex.ExecuteTransient(c, q, nil); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

func stepZ(b *testing.B, st *sqlite.Stmt) {
	if _, err := st.Step(); err != nil {
		b.Fatal(err)
	}
	if err := st.Reset(); err != nil {
		b.Fatal(err)
	}
}

func execZ(b *testing.B, c *sqlite.Conn, q string) {
	if err := sqlitex.Execute(c, q, nil); err != nil {
		b.Fatal(err)
	}
}

func storeZ(b *testing.B, c *sqlite.Conn, i, tid int) {
	v, h := value(i)
	st := c.Prep("INSERT INTO data VALUES (?,?,0,?)")
	st.BindInt64(1, int64(i))
	st.BindBytes(2, h[:])
	st.BindBytes(3, v)
	stepZ(b, st)
	st = c.Prep("INSERT INTO obj VALUES (?,?,?,?,NULL)")
	st.BindInt64(1, int64(i%np))
	st.BindInt64(2, int64(i))
	st.BindInt64(3, int64(tid))
	st.BindInt64(4, int64(i))
	stepZ(b, st)
}

func fillZ(b *testing.B, c *sqlite.Conn, n int) {
	execZ(b, c, "BEGIN")
	for i := 0; i < n; i++ {
		storeZ(b, c, i, 1)
	}
	execZ(b, c, "COMMIT")
}

func BenchmarkZombiezen(b *testing.B) {
	b.Run("load", func(b *testing.B) {
		c := openZ(b)
		fillZ(b, c, nObjects)
		st := c.Prep(loadQuery)
		var hash [20]byte
		data := make([]byte, 0, 128)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			oid := i * 7919 % nObjects
			st.BindInt64(1, int64(oid%np))
			st.BindInt64(2, int64(oid))
			st.BindInt64(3, 1<<62)
			row, err := st.Step()
			if err != nil || !row {
				b.Fatal(row, err)
			}
			_ = st.ColumnInt64(0)
			st.ColumnBytes(3, hash[:])
			data = data[:st.ColumnLen(4)]
			st.ColumnBytes(4, data)
			_ = st.ColumnIsNull(6)
			if err := st.Reset(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("store+commit", func(b *testing.B) {
		c := openZ(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			execZ(b, c, "BEGIN")
			storeZ(b, c, i, i+1)
			execZ(b, c, "COMMIT")
		}
	})
	b.Run("iterate1000", func(b *testing.B) {
		c := openZ(b)
		fillZ(b, c, 10000)
		st := c.Prep(iterQuery)
		data := make([]byte, 0, 128)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			st.BindInt64(1, int64(i%np))
			st.BindInt64(2, 0)
			n := 0
			for {
				row, err := st.Step()
				if err != nil {
					b.Fatal(err)
				}
				if !row {
					break
				}
				_, _ = st.ColumnInt64(0), st.ColumnInt64(1)
				data = data[:st.ColumnLen(2)]
				st.ColumnBytes(2, data)
				n++
			}
			if err := st.Reset(); err != nil || n != 1000 {
				b.Fatal(n, err)
			}
		}
	})
}
