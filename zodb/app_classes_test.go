package zodb_test

import (
	"fmt"

	"github.com/neozodb/neo/zodb"
)

// Go types for classes of the reference data, so that the golden tests
// go through registered classes (refItem) and __getnewargs__ classes
// (refNewArgsItem) as well as through Broken.
type refItem struct {
	zodb.Persistent
	attrs *zodb.PyDict
}

func (o *refItem) PyGetState() any { return o.attrs }

func (o *refItem) PySetState(state any) error {
	d, ok := state.(*zodb.PyDict)
	if !ok {
		return fmt.Errorf("state is %T, not a dict", state)
	}
	o.attrs = d
	return nil
}

type refNewArgsItem struct {
	refItem
	key any
}

func (o *refNewArgsItem) PyGetNewArgs() zodb.PyTuple { return zodb.PyTuple{o.key} }

func (o *refNewArgsItem) PySetNewArgs(args zodb.PyTuple) error {
	if len(args) != 1 {
		return fmt.Errorf("newargs %s: want (key,)", zodb.PyRepr(args))
	}
	o.key = args[0]
	return nil
}

func init() {
	zodb.RegisterClass("zodbref.Item", func() zodb.IPersistent { return new(refItem) }, nil)
	zodb.RegisterClass("zodbref.NewArgsItem", func() zodb.IPersistent { return new(refNewArgsItem) }, nil)
}
