// Package fuzzbytes turns a fuzzer's bytes into the choices a fuzz test
// makes, so that every choice is reproducible from the input alone.
package fuzzbytes // import "github.com/flowattr/flowattr/internal/testutil/fuzzbytes"

import "encoding/binary"

// Source hands out the bytes of a fuzz input in order; once they run out
// it yields zeros, so that any input, however short, builds a case.
type Source struct{ b []byte }

// New returns a Source of b.
func New(b []byte) *Source { return &Source{b: b} }

// Byte returns the next byte, 0 when none is left.
func (s *Source) Byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

// Int64 returns the next 8 bytes as a little-endian int64.
func (s *Source) Int64() int64 {
	var buf [8]byte
	for i := range buf {
		buf[i] = s.Byte()
	}
	return int64(binary.LittleEndian.Uint64(buf[:]))
}
