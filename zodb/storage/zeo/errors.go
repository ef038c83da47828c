package zeo

import (
	"errors"
	"fmt"
	"strings"

	"github.com/neozodb/neo/zodb"
)

// ServerError is an error reply of the server that has no zodb
// counterpart: the dotted name of the Python exception class and its
// details (the exception's __dict__ or args), rendered in Python syntax.
type ServerError struct {
	Class   string // e.g. "builtins.KeyError"
	Details string // e.g. "(99,)"
}

func (e *ServerError) Error() string {
	return "server error " + e.Class + ": " + e.Details
}

// ProtocolError reports bytes from the server that break the protocol. The
// connection is closed when it happens.
type ProtocolError struct {
	Addr string
	Err  error
}

func (e *ProtocolError) Error() string { return "zeo " + e.Addr + ": protocol error: " + e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

// DisconnectedError fails the calls that were outstanding on a connection
// when it went down, and the calls made while no connection is up (after a
// connection was lost, calls wait for the next one only until their
// context is done).
type DisconnectedError struct {
	Addr string
	Err  error // why, if known
}

func (e *DisconnectedError) Error() string {
	s := "zeo " + e.Addr + ": disconnected"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}
func (e *DisconnectedError) Unwrap() error { return e.Err }

const posException = "ZODB.POSException."

// maxNestedErrors bounds the errors rebuilt from one MultipleUndoErrors
// (its list may repeat one object many times through the pickle memo).
const maxNestedErrors = 32

// errorFromReply rebuilds a Go error from an error reply's value
// (class_name, details).
func errorFromReply(v any) error {
	t, ok := items(v)
	if !ok || len(t) != 2 {
		return &ServerError{Class: "?", Details: formatValue(v)}
	}
	cls, ok := t[0].(string)
	if !ok {
		// (ExceptionClass, instance), the pre-ZEO-5 form.
		if g, ok := t[0].(global); ok {
			cls = g.module + "." + g.name
		} else {
			return &ServerError{Class: "?", Details: formatValue(v)}
		}
	}
	return errorFromException(cls, t[1], 0)
}

// errorFromException maps one Python exception, given by class name and
// details, to an error.
func errorFromException(cls string, details any, depth int) error {
	if depth > 2 {
		return &ServerError{Class: cls, Details: formatValue(details)}
	}
	attrs, _ := details.(*dict)
	args, _ := items(details)
	if attrs != nil {
		if a, ok := attrs.get("args"); ok {
			args, _ = items(a)
		}
	}
	attr := func(name string) any {
		v, _ := attrs.get(name)
		return v
	}
	oidAt := func(v any) (zodb.Oid, bool) {
		b, ok := v.([]byte)
		if !ok || len(b) != 8 {
			return 0, false
		}
		o, _ := zodb.OidFromBytes(b)
		return o, true
	}
	serials := func() (committed, read zodb.Tid, ok bool) {
		s, ok := items(attr("serials"))
		if !ok || len(s) != 2 {
			return 0, 0, false
		}
		c, ok1 := s[0].([]byte)
		r, ok2 := s[1].([]byte)
		if !ok1 || !ok2 || len(c) != 8 || len(r) != 8 {
			return 0, 0, false
		}
		ct, _ := zodb.TidFromBytes(c)
		rt, _ := zodb.TidFromBytes(r)
		return ct, rt, true
	}

	name := strings.TrimPrefix(cls, posException)
	known := name != cls
	switch {
	case known && name == "POSKeyError" && len(args) >= 1:
		if oid, ok := oidAt(args[0]); ok {
			return &zodb.NoObjectError{Oid: oid}
		}
	case known && (name == "ConflictError" || name == "BTreesConflictError"):
		e := &zodb.ConflictError{Oid: zodb.InvalidOid}
		if oid, ok := oidAt(attr("oid")); ok {
			e.Oid = oid
		}
		e.CommittedSerial, e.ReadSerial, _ = serials()
		if name == "BTreesConflictError" {
			e.Msg = "BTrees conflict"
		}
		if m, ok := attr("message").(string); ok && m != "database conflict error" {
			e.Msg = m
		}
		return e
	case known && name == "ReadConflictError":
		e := &zodb.ReadConflictError{Oid: zodb.InvalidOid}
		if oid, ok := oidAt(attr("oid")); ok {
			e.Oid = oid
		}
		e.CommittedSerial, e.ReadSerial, _ = serials()
		return e
	case known && name == "ReadOnlyError":
		return zodb.ErrReadOnly
	case known && name == "StorageTransactionError":
		return &zodb.TransactionError{Msg: "server: " + formatValue(details)}
	case known && name == "UndoError":
		e := &zodb.UndoError{Oid: zodb.InvalidOid}
		if r, ok := attr("_reason").(string); ok {
			e.Reason = r
		} else if len(args) > 0 {
			e.Reason, _ = args[0].(string)
		}
		if oid, ok := oidAt(attr("_oid")); ok {
			e.Oid = oid
		} else if len(args) > 1 {
			if oid, ok := oidAt(args[1]); ok {
				e.Oid = oid
			}
		}
		if e.Reason == "" {
			e.Reason = formatValue(details)
		}
		return e
	case known && name == "MultipleUndoErrors":
		errs, _ := items(attr("_errs"))
		var out []error
		for i, x := range errs {
			if i == maxNestedErrors {
				out = append(out, fmt.Errorf("and %d more undo errors", len(errs)-i))
				break
			}
			pair, ok := items(x)
			if !ok || len(pair) != 2 {
				continue
			}
			if e := nestedException(pair[1], depth+1); e != nil {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return &zodb.UndoError{Oid: zodb.InvalidOid, Reason: formatValue(details)}
		}
		return errors.Join(out...)
	}
	return &ServerError{Class: cls, Details: formatValue(details)}
}

// nestedException maps an exception object found inside error details:
// _recon(Class, state) in pickle, [class_name, details] in msgpack.
func nestedException(v any, depth int) error {
	switch v := v.(type) {
	case *reduce:
		args, ok := v.args.(tuple)
		if ok && len(args) == 2 {
			if g, ok := args[0].(global); ok {
				return errorFromException(g.module+"."+g.name, args[1], depth)
			}
		}
		if g, ok := v.fn.(global); ok {
			return errorFromException(g.module+"."+g.name, v.args, depth)
		}
	case tuple:
		if len(v) == 2 {
			if cls, ok := v[0].(string); ok {
				return errorFromException(cls, v[1], depth)
			}
		}
	}
	return fmt.Errorf("exception %s", formatValue(v))
}
