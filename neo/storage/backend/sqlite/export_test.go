package sqlite

// crash closes the database as a killed process would leave it: work not
// yet committed is lost.
func (db *DB) crash() {
	db.mu.Lock()
	db.closed = true
	close(db.stop)
	db.mu.Unlock()
	db.wg.Wait()
	db.conn.SetInterrupt(nil)
	db.conn.Close() // an open transaction is rolled back
	if db.lock != nil {
		db.lock.Close()
	}
}
