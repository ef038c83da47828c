package neonet

import (
	"fmt"

	"github.com/neozodb/neo/neo/proto"
)

// Msg is the payload of a NEO packet: one of neo/proto's packet types.
type Msg = proto.Msg

// The link answers Pings itself and turns Error answers into Go errors;
// other packet types mean nothing to it.
var (
	ping = &proto.Ping{} // no fields: shared, never modified
	pong = &proto.Pong{}
)

// decodeMsg decodes the arguments of a packet of type code. Byte strings
// are copied out of args, so the read buffer can be reused.
func decodeMsg(code uint16, args []byte) (Msg, error) {
	m, err := proto.NewMsg(code)
	if err != nil {
		return nil, err
	}
	if err := m.DecodeArgs(args); err != nil {
		return nil, err
	}
	return m, nil
}

// msgName names a packet type for error messages.
func msgName(m Msg) string { return codeName(m.MsgCode()) }

func codeName(code uint16) string {
	if info, ok := proto.Info(code); ok {
		return info.Name
	}
	return fmt.Sprintf("packet 0x%04x", code)
}
