package zodb

import (
	"errors"
	"testing"
)

func TestNoBlobError(t *testing.T) {
	var err error = &OpError{URL: "zeo://h:1", Op: "loadBlob", Args: Xid{Oid: 1, At: 2}, Err: &NoBlobError{Oid: 1, Serial: 2}}
	var e *NoBlobError
	if !errors.As(err, &e) || e.Oid != 1 || e.Serial != 2 {
		t.Fatalf("errors.As(%v) = %v", err, e)
	}
	if got, want := e.Error(), "0000000000000001@0000000000000002: no blob"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var noObj *NoObjectError
	if errors.As(err, &noObj) {
		t.Errorf("a missing blob is not a missing object")
	}
}
