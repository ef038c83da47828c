package neonet

import (
	"math/bits"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/neozodb/neo/neo/proto"
)

// Memory of received messages.
//
// A message that may hold byte strings is decoded in place, in a packet
// buffer of its own: a big packet is read into it, a smaller one is
// copied there from the shared read buffer. Releasing the message
// (Request.Release, Call.Release) puts its buffer and the message itself
// back into pools, from which later packets take their memory. Pools are
// emptied by the garbage collector, so they hold no more than what recent
// traffic needed.

// pktBuf holds a buffer in a pool: pooling a pointer allocates nothing.
// Emptied wrappers wait in their own pool, so that a buffer taken from a
// pool and never given back costs no wrapper.
type pktBuf struct {
	b []byte
}

var wrappers = sync.Pool{New: func() any { return new(pktBuf) }}

// Buffer size classes: 4 a doubling from 128 bytes (128, 160, 192, 224,
// 256, 320, ...), so a buffer is at most 25% larger than asked for. Only
// buffers of exactly a class size are pooled.
const (
	minClassShift = 7
	classSteps    = 4
	// maxClass is the class of the largest buffer a packet may need.
	maxClass = (26-minClassShift)*classSteps + 1 // 80 MiB > MaxPacketSize + bigSlack
)

var bufPools [maxClass + 1]sync.Pool

// classSize returns the size of the buffers of class i.
func classSize(i int) int {
	s := minClassShift + i/classSteps
	return 1<<s + (i%classSteps)<<(s-2)
}

// classOf returns the class of the smallest buffers holding n bytes.
func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	s := bits.Len(uint(n-1)) - 1 // 1<<s < n <= 1<<(s+1)
	k := (n - 1<<s + 1<<(s-2) - 1) >> (s - 2)
	return (s-minClassShift)*classSteps + k
}

// getBuf returns a buffer of n bytes (contents undefined), whose memory is
// at most limit bytes (limit ≥ n): of a class size, pooled, if that fits.
func getBuf(n, limit int) []byte {
	i := classOf(n)
	if i > maxClass || classSize(i) > limit {
		return make([]byte, n)
	}
	if p, _ := bufPools[i].Get().(*pktBuf); p != nil {
		b := p.b[:n]
		p.b = nil
		wrappers.Put(p)
		return b
	}
	return make([]byte, n, classSize(i))
}

// poisonReleased makes released buffers and messages unusable at once (set
// by tests): a message used after its release, or released too early,
// then shows garbage instead of going unnoticed until its memory is
// reused.
var poisonReleased atomic.Bool

// poison is the byte released buffers are filled with when poisonReleased.
const poison = 0xdb

// putBuf gives b back for reuse. b must not be used any more.
func putBuf(b []byte) {
	c := cap(b)
	i := classOf(c)
	if i > maxClass || classSize(i) != c {
		return // exceptional size: left to the garbage collector
	}
	b = b[:c]
	if poisonReleased.Load() {
		for j := range b {
			b[j] = poison
		}
	}
	p := wrappers.Get().(*pktBuf)
	p.b = b
	bufPools[i].Put(p)
}

// Message structs are pooled by packet code, and decoded again in place:
// generated decoders set every field and reuse the slices they find.
var (
	msgPools      [2][256]sync.Pool // [answer bit][low byte of the code]
	msgHoldsBytes [2][256]bool      // the packet's type may hold byte strings
)

func init() {
	for _, info := range proto.Packets() {
		hi, lo, ok := codeIndex(info.Code)
		if !ok {
			continue
		}
		if m, err := proto.NewMsg(info.Code); err == nil {
			msgHoldsBytes[hi][lo] = mayHoldBytes(reflect.TypeOf(m))
		}
	}
}

func codeIndex(code uint16) (hi, lo int, ok bool) {
	if code&^proto.AnswerBit > 0xff {
		return 0, 0, false
	}
	return int(code >> 15), int(code & 0xff), true
}

// getMsg returns a message of type code, taken from the pool or new.
func getMsg(code uint16) (m Msg, holdsBytes bool, err error) {
	hi, lo, ok := codeIndex(code)
	if ok {
		if m, _ := msgPools[hi][lo].Get().(Msg); m != nil {
			return m, msgHoldsBytes[hi][lo], nil
		}
	}
	m, err = proto.NewMsg(code)
	if err != nil {
		return nil, false, err
	}
	return m, ok && msgHoldsBytes[hi][lo], nil
}

// putMsg gives m back for reuse. m must not be used any more. Error
// messages are not reused: the link returns them wrapped in Go errors,
// which may outlive a release.
func putMsg(m Msg) {
	code := m.MsgCode()
	hi, lo, ok := codeIndex(code)
	if !ok || code == proto.CodeError {
		return
	}
	if poisonReleased.Load() {
		reflect.ValueOf(m).Elem().SetZero()
	}
	msgPools[hi][lo].Put(m)
}

var holdsBytes sync.Map // reflect.Type → bool

// mayHoldBytes tells whether a value of type t may hold a byte slice
// (arrays of bytes are values, not slices).
func mayHoldBytes(t reflect.Type) bool {
	if r, ok := holdsBytes.Load(t); ok {
		return r.(bool)
	}
	r := typeHoldsBytes(t, map[reflect.Type]bool{})
	holdsBytes.Store(t, r)
	return r
}

func typeHoldsBytes(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false // already being looked at, higher up
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.Uint8 || typeHoldsBytes(t.Elem(), seen)
	case reflect.Pointer, reflect.Array:
		return typeHoldsBytes(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if typeHoldsBytes(t.Field(i).Type, seen) {
				return true
			}
		}
	case reflect.Map:
		return typeHoldsBytes(t.Key(), seen) || typeHoldsBytes(t.Elem(), seen)
	}
	return false
}
