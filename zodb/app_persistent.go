package zodb

import (
	"context"
	"fmt"
	"reflect"
	"sync"
)

// Persistent objects.
//
// A Go type becomes a ZODB class by embedding Persistent, implementing
// PyStateful (its state as Python values, what __getstate__ and
// __setstate__ give in Python) and being registered under its Python name
// with RegisterClass:
//
//	type Item struct {
//		zodb.Persistent
//		Name string
//	}
//	func (o *Item) PyGetState() any { d := zodb.NewPyDict(); d.Set("name", o.Name); return d }
//	func (o *Item) PySetState(state any) error { ... }
//
//	zodb.RegisterClass("myapp.Item", func() zodb.IPersistent { return new(Item) }, nil)
//
// Objects of classes nobody registered load as *Broken, which keeps the
// class description and the state so that storing it again writes the
// same record.
//
// An object is used from one goroutine at a time (the one of its
// transaction), like in ZODB: its methods do not lock.

// ObjectState is the life state of a persistent object.
type ObjectState int

const (
	// Ghost: the object's state is not loaded; PActivate loads it.
	Ghost ObjectState = -1
	// UpToDate: the state is loaded and not changed (also the state of
	// a new object not yet in a connection: the zero value).
	UpToDate ObjectState = 0
	// Changed: the state was changed in the current transaction (or
	// the object is new) and will be stored at commit.
	Changed ObjectState = 1
)

func (s ObjectState) String() string {
	switch s {
	case Ghost:
		return "ghost"
	case UpToDate:
		return "uptodate"
	case Changed:
		return "changed"
	}
	return fmt.Sprintf("ObjectState(%d)", int(s))
}

// IPersistent is implemented by every persistent object, through the
// Persistent it embeds.
type IPersistent interface {
	persistentBase() *Persistent

	POid() Oid
	PSerial() Tid
	PJar() *Connection
	PState() ObjectState
	PActivate(ctx context.Context) error
	PDeactivate()
	PInvalidate()
	PModify()
}

// PyStateful is implemented by persistent types to give and take their
// state as Python values (see app_pyvalue.go).
type PyStateful interface {
	// PyGetState returns the state to pickle.
	PyGetState() any
	// PySetState sets the object from a state loaded from the database.
	// The object is in its zero value (but for Persistent) when called.
	PySetState(state any) error
}

// PyNewArgs is implemented by types whose Python class has
// __getnewargs__: their records start with (class, newargs) and other
// objects refer to them by bare oid.
type PyNewArgs interface {
	PyGetNewArgs() PyTuple
	PySetNewArgs(args PyTuple) error
}

// Persistent is the base every persistent object embeds: identity in the
// database (oid, serial), the connection it lives in, and its life state.
type Persistent struct {
	jar    *Connection
	oid    Oid
	serial Tid
	state  ObjectState
	self   IPersistent // the object that embeds this Persistent
	class  *classInfo
	// oidBytes is the oid as the bytes object references are written
	// with, made once per object like _p_oid, so that a state pickle
	// referring to an object twice shares it.
	oidBytes PyBytes
}

func (p *Persistent) persistentBase() *Persistent { return p }

// POid returns the object's oid (InvalidOid before it is added to a
// connection).
func (p *Persistent) POid() Oid {
	if p.jar == nil {
		return InvalidOid
	}
	return p.oid
}

// PSerial returns the serial of the revision the state comes from (0 for
// an object not yet committed).
func (p *Persistent) PSerial() Tid { return p.serial }

// PJar returns the connection the object belongs to, nil for a new object
// not yet added.
func (p *Persistent) PJar() *Connection { return p.jar }

// PState returns the object's life state.
func (p *Persistent) PState() ObjectState { return p.state }

func (p *Persistent) className() string {
	if p.class != nil {
		return p.class.name.String()
	}
	if b, ok := p.self.(*Broken); ok {
		return b.Class.String()
	}
	return "?"
}

// PActivate loads the object's state if it is a ghost.
func (p *Persistent) PActivate(ctx context.Context) error {
	if p.state != Ghost {
		return nil
	}
	if p.jar == nil {
		return fmt.Errorf("activate %s: object is not in a connection", p.className())
	}
	if p.jar.txn == nil {
		return fmt.Errorf("activate %s %v: its connection's transaction is over", p.className(), p.oid)
	}
	return p.jar.load(ctx, p)
}

// PDeactivate turns an up-to-date object back into a ghost, freeing its
// state; changed objects stay as they are (ZODB's _p_deactivate).
func (p *Persistent) PDeactivate() {
	if p.state == UpToDate && p.jar != nil {
		p.ghostify()
	}
}

// PInvalidate drops the object's state even if it was changed
// (ZODB's _p_invalidate).
func (p *Persistent) PInvalidate() {
	if p.state != Ghost && p.jar != nil && p.serial != 0 {
		p.ghostify()
	}
}

// PModify marks the object as changed, so that the transaction stores it.
// The object must have been activated.
func (p *Persistent) PModify() {
	if p.jar == nil {
		return // a new object: stored when added
	}
	switch p.state {
	case Changed:
		return
	case Ghost:
		panic(fmt.Sprintf("zodb: PModify of ghost %s %v: PActivate it first", p.className(), p.oid))
	}
	if p.jar.txn == nil {
		panic(fmt.Sprintf("zodb: PModify of %s %v: its connection's transaction is over", p.className(), p.oid))
	}
	p.state = Changed
	p.jar.registerChanged(p.self)
}

// ghostify resets the object to its zero value, keeping only Persistent.
func (p *Persistent) ghostify() {
	saved := *p
	reflect.ValueOf(saved.self).Elem().SetZero() // p points into it
	*p = saved
	p.state = Ghost
}

// classInfo is a registered class.
type classInfo struct {
	name    PyGlobal
	typ     reflect.Type // pointer type of the Go objects
	new     func() IPersistent
	newArgs bool
}

// ClassOptions tune RegisterClass.
type ClassOptions struct {
	// NewArgs tells that the Python class has __getnewargs__ (records
	// start with (class, newargs); references are bare oids). Types
	// implementing PyNewArgs have it set automatically.
	NewArgs bool
}

var (
	classMu      sync.RWMutex
	classByName  = map[string]*classInfo{}
	classByGoTyp = map[reflect.Type]*classInfo{}
)

// RegisterClass makes objects of the Python class pyClass ("module.name")
// load as the Go objects new returns. new must return a fresh pointer to a
// struct embedding Persistent and implementing PyStateful. One Go type may
// serve one Python class; registering a name twice panics.
func RegisterClass(pyClass string, new func() IPersistent, opt *ClassOptions) {
	obj := new()
	typ := reflect.TypeOf(obj)
	if typ.Kind() != reflect.Pointer || typ.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("zodb: RegisterClass %s: %v is not a pointer to a struct", pyClass, typ))
	}
	if _, ok := obj.(PyStateful); !ok {
		panic(fmt.Sprintf("zodb: RegisterClass %s: %v does not implement PyStateful", pyClass, typ))
	}
	ci := &classInfo{name: splitGlobal(pyClass), typ: typ, new: new}
	if opt != nil {
		ci.newArgs = opt.NewArgs
	}
	if _, ok := obj.(PyNewArgs); ok {
		ci.newArgs = true
	}
	classMu.Lock()
	defer classMu.Unlock()
	if _, dup := classByName[pyClass]; dup {
		panic("zodb: class registered twice: " + pyClass)
	}
	if _, dup := classByGoTyp[typ]; dup {
		panic(fmt.Sprintf("zodb: Go type %v registered twice (for %s)", typ, pyClass))
	}
	classByName[pyClass] = ci
	classByGoTyp[typ] = ci
}

func lookupClass(pyClass string) *classInfo {
	classMu.RLock()
	defer classMu.RUnlock()
	return classByName[pyClass]
}

func lookupGoType(typ reflect.Type) *classInfo {
	classMu.RLock()
	defer classMu.RUnlock()
	return classByGoTyp[typ]
}

// ClassOf returns the Python class name ("module.name") objects like obj
// are stored under, or "" if its type is not registered (for a *Broken,
// the class it was loaded with).
func ClassOf(obj IPersistent) string {
	if b, ok := obj.(*Broken); ok {
		return b.Class.String()
	}
	if ci := lookupGoType(reflect.TypeOf(obj)); ci != nil {
		return ci.name.String()
	}
	return ""
}

// newObject makes a ghost of class pyClass ("" if unknown).
func newObject(pyClass string) IPersistent {
	if ci := lookupClass(pyClass); ci != nil {
		obj := ci.new()
		p := obj.persistentBase()
		p.self, p.class, p.state = obj, ci, Ghost
		return obj
	}
	b := &Broken{Class: splitGlobal(pyClass)}
	b.self, b.state = b, Ghost
	return b
}

// Broken is an object of a class that is not registered. It keeps the
// class description and the state as decoded, so that storing it again
// writes them back unchanged (references to other objects included).
type Broken struct {
	Persistent
	Class     PyGlobal
	ClassDesc any // the first pickle as decoded; nil for a ghost
	State     any
}

// PyGetState returns the state as loaded (or as changed since).
func (b *Broken) PyGetState() any { return b.State }

// PySetState keeps the state as it is.
func (b *Broken) PySetState(state any) error { b.State = state; return nil }

// classDescription returns the first pickle to write for obj.
func classDescription(obj IPersistent) (any, error) {
	if b, ok := obj.(*Broken); ok {
		if b.ClassDesc == nil {
			return nil, fmt.Errorf("object %v of class %s: no class description (never loaded)", b.oid, b.Class)
		}
		return b.ClassDesc, nil
	}
	ci := obj.persistentBase().class
	if ci == nil {
		ci = lookupGoType(reflect.TypeOf(obj))
		if ci == nil {
			return nil, fmt.Errorf("type %T is not registered as a persistent class", obj)
		}
		obj.persistentBase().class = ci
	}
	if na, ok := obj.(PyNewArgs); ok {
		return PyTuple{ci.name, na.PyGetNewArgs()}, nil
	}
	return ci.name, nil
}

// classDescForm takes a class description apart: class name, newargs
// (nil if none) and whether the description has the (class, newargs) form.
func classDescForm(desc any) (class string, newArgs PyTuple, hasArgs bool, err error) {
	switch d := desc.(type) {
	case PyGlobal:
		return d.String(), nil, false, nil
	case PyTuple:
		if len(d) == 2 {
			class = className(d[0])
			if class == "" {
				break
			}
			switch a := d[1].(type) {
			case nil:
				return class, nil, false, nil
			case PyTuple:
				return class, a, true, nil
			}
		}
	}
	return "", nil, false, fmt.Errorf("invalid class description %s", PyRepr(desc))
}

// PersistentMapping is persistent.mapping.PersistentMapping: a dict
// stored as the state {'data': {...}}.
type PersistentMapping struct {
	Persistent
	Data *PyDict
}

// NewPersistentMapping returns an empty mapping, not yet in a connection.
func NewPersistentMapping() *PersistentMapping {
	m := &PersistentMapping{Data: NewPyDict()}
	m.self = m
	return m
}

// Get returns the value of key k.
func (m *PersistentMapping) Get(k any) (any, bool) {
	if m.Data == nil {
		return nil, false
	}
	return m.Data.Get(k)
}

// Set sets k to v and marks the mapping changed.
func (m *PersistentMapping) Set(k, v any) {
	if m.Data == nil {
		m.Data = NewPyDict()
	}
	m.Data.Set(k, v)
	m.PModify()
}

// Del removes k and marks the mapping changed if it was there.
func (m *PersistentMapping) Del(k any) bool {
	if m.Data == nil || !m.Data.Del(k) {
		return false
	}
	m.PModify()
	return true
}

// PyGetState returns {'data': data}.
func (m *PersistentMapping) PyGetState() any {
	d := NewPyDict()
	data := m.Data
	if data == nil {
		data = NewPyDict()
	}
	d.Set("data", data)
	return d
}

// PySetState accepts {'data': {...}} and the older {'_container': {...}}.
func (m *PersistentMapping) PySetState(state any) error {
	d, ok := state.(*PyDict)
	if !ok {
		return fmt.Errorf("PersistentMapping: state is %T, not a dict", state)
	}
	v, ok := d.Get("data")
	if !ok {
		v, ok = d.Get("_container")
	}
	if !ok {
		return fmt.Errorf("PersistentMapping: state has no 'data'")
	}
	data, ok := v.(*PyDict)
	if !ok {
		return fmt.Errorf("PersistentMapping: data is %T, not a dict", v)
	}
	m.Data = data
	return nil
}

// PersistentList is persistent.list.PersistentList: a list stored as the
// state {'data': [...]}.
type PersistentList struct {
	Persistent
	Data *PyList
}

// NewPersistentList returns an empty list, not yet in a connection.
func NewPersistentList() *PersistentList {
	l := &PersistentList{Data: &PyList{}}
	l.self = l
	return l
}

// Append appends v and marks the list changed.
func (l *PersistentList) Append(v any) {
	if l.Data == nil {
		l.Data = &PyList{}
	}
	l.Data.Items = append(l.Data.Items, v)
	l.PModify()
}

// PyGetState returns {'data': data}.
func (l *PersistentList) PyGetState() any {
	d := NewPyDict()
	data := l.Data
	if data == nil {
		data = &PyList{}
	}
	d.Set("data", data)
	return d
}

// PySetState accepts {'data': [...]}.
func (l *PersistentList) PySetState(state any) error {
	d, ok := state.(*PyDict)
	if !ok {
		return fmt.Errorf("PersistentList: state is %T, not a dict", state)
	}
	v, ok := d.Get("data")
	if !ok {
		return fmt.Errorf("PersistentList: state has no 'data'")
	}
	data, ok := v.(*PyList)
	if !ok {
		return fmt.Errorf("PersistentList: data is %T, not a list", v)
	}
	l.Data = data
	return nil
}

func init() {
	RegisterClass("persistent.mapping.PersistentMapping", func() IPersistent { return new(PersistentMapping) }, nil)
	RegisterClass("persistent.list.PersistentList", func() IPersistent { return new(PersistentList) }, nil)
}
