package zodbtools

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"hash/adler32"
	"hash/crc32"
)

// hashes are the hash functions a dump may name, as zodbtools' registry.
// crc32 and adler32 digests are 4 bytes big-endian; null is one zero byte.
var hashes = map[string]func() hash.Hash{
	"sha1":    sha1.New,
	"sha256":  sha256.New,
	"sha512":  sha512.New,
	"crc32":   func() hash.Hash { return crc32.NewIEEE() },
	"adler32": func() hash.Hash { return adler32.New() },
	"null":    func() hash.Hash { return nullHash{} },
}

// nullHash discards its input; its digest is a single zero byte.
type nullHash struct{}

func (nullHash) Write(p []byte) (int, error) { return len(p), nil }
func (nullHash) Sum(b []byte) []byte         { return append(b, 0) }
func (nullHash) Reset()                      {}
func (nullHash) Size() int                   { return 1 }
func (nullHash) BlockSize() int              { return 1 }
