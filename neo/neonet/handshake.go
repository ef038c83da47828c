package neonet

import (
	"errors"
	"fmt"

	"github.com/neozodb/neo/neo/proto"
)

// checkHandshake examines the first bytes received on a connection (see
// proto.ParseHandshake). It returns the number of bytes to consume when b
// starts with our handshake, errIncomplete when b is a strict prefix of it,
// and otherwise an error wrapping a *proto.VersionError or proto.ErrNotNEO:
// like NEO/py, the link is then closed without sending anything more.
func checkHandshake(b []byte) (int, error) {
	_, n, err := proto.ParseHandshake(b)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, proto.ErrIncomplete):
		return 0, errIncomplete
	case errors.Is(err, proto.ErrNotNEO):
		return 0, fmt.Errorf("%w: first bytes % x", err, b[:min(len(b), len(proto.Handshake))])
	}
	return 0, err
}
