package proto_test

import (
	"errors"
	"fmt"

	"github.com/neozodb/neo/neo/proto"
	"github.com/neozodb/neo/zodb"
)

// A connection reader: check the handshake, then cut the stream into
// packets.
func Example() {
	// what a peer sent: handshake, AskObject(oid 1, before tid 0x10)
	stream := append([]byte(nil), proto.Handshake...)
	stream = proto.AppendPacket(stream, 300, &proto.AskObject{
		Oid: 1, At: zodb.InvalidTid, Before: 0x10})

	_, n, err := proto.ParseHandshake(stream)
	if err != nil {
		fmt.Println(err) // ErrIncomplete: read more; else close
		return
	}
	buf := stream[n:]
	for len(buf) > 0 {
		id, m, n, err := proto.DecodePacket(buf)
		if errors.Is(err, proto.ErrIncomplete) {
			break // read more
		} else if err != nil {
			fmt.Println(err) // close the connection
			return
		}
		buf = buf[n:]
		switch m := m.(type) {
		case *proto.AskObject:
			answer, _ := proto.AnswerCode(m.MsgCode())
			info, _ := proto.Info(answer)
			fmt.Printf("msg %d: %T oid=%v before=%v, answered by %s\n", id, m, m.Oid, m.Before, info.Name)
		}
	}
	// Output:
	// msg 300: *proto.AskObject oid=0000000000000001 before=0000000000000010, answered by AnswerObject
}
