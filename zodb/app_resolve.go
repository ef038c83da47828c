package zodb

import (
	"context"
	"fmt"
	"math/big"
	"sync"
)

// Conflict resolution by class, as ZODB's _p_resolveConflict: when a
// transaction stores an object that another transaction changed since it
// was read, the storage can merge both changes if the object's class
// knows how.

// StateResolver merges the states of a conflicting object: old is the
// state the transaction started from, committed the state committed
// meanwhile, new the state the transaction wants to store. States are
// decoded without a database: persistent references are *PyRef. It
// returns the merged state, or an error when the changes cannot be merged.
type StateResolver func(old, committed, new any) (any, error)

var (
	resolverMu sync.RWMutex
	resolvers  = map[string]StateResolver{}
)

// RegisterConflictResolver sets the resolver of the class pyClass
// ("module.name"). Registering a class twice panics.
func RegisterConflictResolver(pyClass string, r StateResolver) {
	resolverMu.Lock()
	defer resolverMu.Unlock()
	if _, dup := resolvers[pyClass]; dup {
		panic("zodb: conflict resolver registered twice: " + pyClass)
	}
	resolvers[pyClass] = r
}

// ResolveConflict is a ConflictResolver (for OpenOptions.Resolver) that
// uses the resolvers registered by class. The merged record has the class
// description of new and the merged state, pickled as ZODB does.
func ResolveConflict(ctx context.Context, oid Oid, oldData, committedData, newData []byte) ([]byte, error) {
	class := PickleClass(newData)
	resolverMu.RLock()
	r := resolvers[class]
	resolverMu.RUnlock()
	if r == nil {
		return nil, fmt.Errorf("class %q has no conflict resolution", class)
	}
	var states [3]any
	var desc any
	for i, rec := range [3][]byte{oldData, committedData, newData} {
		d, st, err := DecodeRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("resolve %v: %s state: %w", oid, [3]string{"old", "committed", "new"}[i], err)
		}
		if c, _, _, err := classDescForm(d); err != nil || c != class {
			return nil, fmt.Errorf("resolve %v: class changed from %s to %s", oid, class, PickleClass(rec))
		}
		states[i], desc = st, d
	}
	merged, err := r(states[0], states[1], states[2])
	if err != nil {
		return nil, fmt.Errorf("resolve %v (%s): %w", oid, class, err)
	}
	data, err := EncodeRecord(desc, merged)
	if err != nil {
		return nil, fmt.Errorf("resolve %v (%s): %w", oid, class, err)
	}
	return data, nil
}

// pyInt returns an integer state as a big.Int.
func pyInt(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int64:
		return big.NewInt(x), true
	case *big.Int:
		return x, true
	case bool:
		if x {
			return big.NewInt(1), true
		}
		return big.NewInt(0), true
	}
	return nil, false
}

// resolveLength merges BTrees.Length.Length: both transactions' changes
// are added (committed + new - old).
func resolveLength(oldState, committedState, newState any) (any, error) {
	o, ok1 := pyInt(oldState)
	c, ok2 := pyInt(committedState)
	n, ok3 := pyInt(newState)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("states of BTrees.Length are not integers: %s %s %s",
			PyRepr(oldState), PyRepr(committedState), PyRepr(newState))
	}
	r := new(big.Int).Add(c, n)
	r.Sub(r, o)
	return normInt(r), nil
}

func init() {
	RegisterConflictResolver("BTrees.Length.Length", resolveLength)
}

// HasConflictResolver tells whether the class pyClass has a resolver.
func HasConflictResolver(pyClass string) bool {
	resolverMu.RLock()
	defer resolverMu.RUnlock()
	return resolvers[pyClass] != nil
}
