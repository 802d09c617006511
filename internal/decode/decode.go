// Package decode reads request bodies sent with a Content-Encoding: gzip,
// zstd and deflate (zlib, as HTTP means it). The size limit applies to the
// decoded bytes as they come out of the decoder, so a small body that would
// expand without end (a decompression bomb) costs at most the limit in memory
// and is refused as soon as it passes it.
package decode

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// Codings the module decodes.
const (
	Gzip    = "gzip"
	Zstd    = "zstd"
	Deflate = "deflate"
)

// MaxZstdWindow is the largest zstd window accepted: RFC 9659 asks HTTP
// decoders for 8 MiB and encoders for no more, and the window is what a
// zstd decoder holds in memory besides its output.
const MaxZstdWindow = 8 << 20

// ErrTooLarge is a body whose decoded form passes the limit.
var ErrTooLarge = errors.New("decoded request body is larger than the limit")

// UnsupportedError is a Content-Encoding the module does not decode.
type UnsupportedError struct{ Encoding string }

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("unsupported Content-Encoding %q (use gzip, zstd or deflate, or none)", e.Encoding)
}

// CorruptError is a body that is not valid data of its coding.
type CorruptError struct {
	Coding string
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("request body is not valid %s data: %v", e.Coding, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Coding returns the one coding that the Content-Encoding header values
// name: "" for none (or only "identity"), else Gzip, Zstd or Deflate. Names
// are compared case-insensitively and "x-gzip" is gzip (RFC 9110 §8.4.1.3).
// A coding the module does not decode, or more than one (stacked codings), is
// an *UnsupportedError.
func Coding(values []string) (string, error) {
	coding := ""
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			name := strings.ToLower(textproto.TrimString(f))
			switch name {
			case "", "identity":
				continue
			case "x-gzip":
				name = Gzip
			case Gzip, Zstd, Deflate:
			default:
				return "", &UnsupportedError{Encoding: strings.Join(values, ", ")}
			}
			if coding != "" {
				return "", &UnsupportedError{Encoding: strings.Join(values, ", ")}
			}
			coding = name
		}
	}
	return coding, nil
}

// Read decodes the body src, sent with coding, into memory and returns the
// decoded bytes. More than limit decoded bytes is ErrTooLarge, found after
// reading at most limit+1 of them. An error of src itself (a connection that
// broke, a bound on the bytes as sent) is returned as it is; data the coding
// does not accept is a *CorruptError.
func Read(coding string, src io.Reader, limit int64) ([]byte, error) {
	in := &source{r: src}
	// flate reads byte by byte: it gets a buffer of its own, and the
	// source is read in large pieces.
	br := bufio.NewReaderSize(in, 32<<10)
	var (
		dec     io.Reader
		release func()
		err     error
	)
	switch coding {
	case Gzip:
		dec, release, err = newGzip(br)
	case Zstd:
		dec, release, err = newZstd(br)
	case Deflate:
		dec, release, err = newZlib(br)
	default:
		return nil, &UnsupportedError{Encoding: coding}
	}
	if err != nil {
		return nil, in.blame(coding, err)
	}
	defer release()
	out, err := readAll(dec, limit)
	if err != nil {
		if err == ErrTooLarge {
			return nil, err
		}
		return nil, in.blame(coding, err)
	}
	// The body is one compressed stream: nothing may follow it (zlib
	// would stop reading at its end), and there must be one.
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the end of the compressed stream")
		}
		return nil, in.blame(coding, err)
	}
	if in.n == 0 {
		return nil, &CorruptError{Coding: coding, Err: errors.New("empty body")}
	}
	return out, nil
}

// readAll reads r to its end, refusing more than limit bytes.
func readAll(r io.Reader, limit int64) ([]byte, error) {
	buf := make([]byte, 0, min(limit+1, 64<<10))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, ErrTooLarge
			}
			// Grow, but never past limit+1: one byte more than the limit
			// is all it takes to know.
			next := min(int64(cap(buf))*2, limit+1)
			buf = append(buf, make([]byte, int(next)-len(buf))...)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, ErrTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// source notes the first error of the body as sent, so that a broken
// connection or a bound on the bytes read is not taken for corrupt data.
type source struct {
	r   io.Reader
	n   int64
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *source) blame(coding string, err error) error {
	if s.err != nil {
		return s.err
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &CorruptError{Coding: coding, Err: err}
}

// Decoders are pooled: a zstd decoder is expensive to make, and gzip and
// zlib readers carry sizeable tables. A pooled decoder holds no reference to
// a body it read.
var (
	gzipPool sync.Pool
	zlibPool sync.Pool
	zstdPool sync.Pool
)

func newGzip(in *bufio.Reader) (io.Reader, func(), error) {
	if zr, ok := gzipPool.Get().(*gzip.Reader); ok {
		if err := zr.Reset(in); err != nil {
			gzipPool.Put(zr)
			return nil, nil, err
		}
		return zr, func() { zr.Reset(eofReader{}); gzipPool.Put(zr) }, nil
	}
	zr, err := gzip.NewReader(in)
	if err != nil {
		return nil, nil, err
	}
	return zr, func() { zr.Reset(eofReader{}); gzipPool.Put(zr) }, nil
}

func newZlib(in *bufio.Reader) (io.Reader, func(), error) {
	if zr, ok := zlibPool.Get().(io.ReadCloser); ok {
		if err := zr.(zlib.Resetter).Reset(in, nil); err != nil {
			zlibPool.Put(zr)
			return nil, nil, err
		}
		return zr, func() { zr.(zlib.Resetter).Reset(eofReader{}, nil); zlibPool.Put(zr) }, nil
	}
	zr, err := zlib.NewReader(in)
	if err != nil {
		return nil, nil, err
	}
	return zr, func() { zr.(zlib.Resetter).Reset(eofReader{}, nil); zlibPool.Put(zr) }, nil
}

func newZstd(in *bufio.Reader) (io.Reader, func(), error) {
	d, ok := zstdPool.Get().(*zstd.Decoder)
	if !ok {
		var err error
		// One goroutine per decode (the request's own): nothing runs in
		// the background, and a decoder can go back to the pool at once.
		d, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxZstdWindow))
		if err != nil {
			return nil, nil, err
		}
	}
	if err := d.Reset(in); err != nil {
		_ = d.Reset(nil)
		zstdPool.Put(d)
		return nil, nil, err
	}
	return d, func() { _ = d.Reset(nil); zstdPool.Put(d) }, nil
}

// eofReader is an empty body, for readers whose Reset reads a header.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
