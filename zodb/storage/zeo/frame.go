package zeo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Framing: every frame is a 4-byte big-endian length and that many payload
// bytes. Reads may return frames split or coalesced in any way.

// maxFrame bounds the payload we accept. The protocol itself allows 4 GiB;
// object records and ZEO messages are far smaller.
const maxFrame = 1 << 30

// frameReader reads frames from a byte stream.
type frameReader struct {
	r   io.Reader
	off int64 // stream offset of the next frame
}

// readFrame returns the next frame's payload. The buffer grows only as
// bytes arrive, so a bogus length cannot make us allocate ahead of data.
func (fr *frameReader) readFrame() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("frame at offset %d: truncated length prefix", fr.off)
		}
		return nil, err // io.EOF: clean end between frames
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("frame at offset %d: length %d exceeds the limit of %d bytes", fr.off, n, maxFrame)
	}
	var buf bytes.Buffer
	if n <= 64<<10 {
		buf.Grow(int(n))
	}
	got, err := io.CopyN(&buf, fr.r, int64(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("frame at offset %d: payload of %d bytes truncated after %d: %w", fr.off, n, got, err)
	}
	fr.off += 4 + int64(n)
	return buf.Bytes(), nil
}

// appendFrame appends payload with its length prefix.
func appendFrame(b, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}
