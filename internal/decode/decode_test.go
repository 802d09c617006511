package decode

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

func compress(t testing.TB, coding string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch coding {
	case Gzip:
		w = gzip.NewWriter(&buf)
	case Deflate:
		w = zlib.NewWriter(&buf)
	case Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zeros is an endless source of zero bytes, read in large pieces.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// bomb compresses n zero bytes (a multiple of 1 MiB) without holding them:
// gzip members and zstd frames of 1 MiB each, one after the other (both
// codings decode such a sequence as one body), and one zlib stream.
func bomb(t testing.TB, coding string, n int64) []byte {
	t.Helper()
	if coding == Deflate {
		var buf bytes.Buffer
		w, _ := zlib.NewWriterLevel(&buf, zlib.BestSpeed)
		if _, err := io.CopyBuffer(w, &zeros{n: n}, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	one := compress(t, coding, make([]byte, 1<<20))
	return bytes.Repeat(one, int(n>>20))
}

func TestCoding(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   string
		bad    bool
	}{
		{nil, "", false},
		{[]string{""}, "", false},
		{[]string{"identity"}, "", false},
		{[]string{"gzip"}, Gzip, false},
		{[]string{"GZip"}, Gzip, false},
		{[]string{"x-gzip"}, Gzip, false},
		{[]string{" zstd "}, Zstd, false},
		{[]string{"deflate"}, Deflate, false},
		{[]string{"identity, gzip"}, Gzip, false},
		{[]string{"br"}, "", true},
		{[]string{"compress"}, "", true},
		{[]string{"gzip, zstd"}, "", true},
		{[]string{"gzip", "gzip"}, "", true},
		{[]string{"gzip;q=1"}, "", true},
	} {
		got, err := Coding(tc.values)
		var ue *UnsupportedError
		if tc.bad != errors.As(err, &ue) || got != tc.want {
			t.Errorf("Coding(%q) = %q, %v; want %q, unsupported %v", tc.values, got, err, tc.want, tc.bad)
		}
	}
}

func TestReadRoundTrip(t *testing.T) {
	body := []byte(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` + strings.Repeat("hello ", 20000) + `"}]}`)
	for _, coding := range []string{Gzip, Zstd, Deflate} {
		t.Run(coding, func(t *testing.T) {
			// Twice: the second read uses a pooled decoder.
			for range 2 {
				got, err := Read(coding, bytes.NewReader(compress(t, coding, body)), int64(len(body)))
				if err != nil || !bytes.Equal(got, body) {
					t.Fatalf("Read: %v, %d bytes", err, len(got))
				}
			}
			// One byte less than the decoded size is too large.
			if _, err := Read(coding, bytes.NewReader(compress(t, coding, body)), int64(len(body))-1); err != ErrTooLarge {
				t.Fatalf("limit: %v", err)
			}
		})
	}
}

func TestReadCorrupt(t *testing.T) {
	body := []byte(`{"model":"m","messages":[]}`)
	for _, coding := range []string{Gzip, Zstd, Deflate} {
		t.Run(coding, func(t *testing.T) {
			good := compress(t, coding, body)
			for name, in := range map[string][]byte{
				"empty":     nil,
				"plain":     body,
				"truncated": good[:len(good)-3],
				"trailing":  append(append([]byte(nil), good...), "garbage!"...),
			} {
				_, err := Read(coding, bytes.NewReader(in), 1<<20)
				var ce *CorruptError
				if !errors.As(err, &ce) {
					t.Errorf("%s: %v, want a CorruptError", name, err)
				}
			}
		})
	}
}

// A failing source is reported as itself, not as corrupt data.
func TestReadSourceError(t *testing.T) {
	boom := errors.New("connection reset")
	for _, coding := range []string{Gzip, Zstd, Deflate} {
		good := compress(t, coding, bytes.Repeat([]byte("abc"), 1000))
		src := io.MultiReader(bytes.NewReader(good[:len(good)/2]), iotestErr{boom})
		if _, err := Read(coding, src, 1<<20); err != boom {
			t.Errorf("%s: %v, want the source's error", coding, err)
		}
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// A bomb (256 MiB of zeros) is refused after the limit, fast and without
// holding more than about the limit.
func TestReadBomb(t *testing.T) {
	const limit = 1 << 20
	for _, coding := range []string{Gzip, Zstd, Deflate} {
		t.Run(coding, func(t *testing.T) {
			in := bomb(t, coding, 256<<20)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := Read(coding, bytes.NewReader(in), limit)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err != ErrTooLarge {
				t.Fatalf("err = %v", err)
			}
			if took > 2*time.Second {
				t.Errorf("took %v", took)
			}
			// Allocated in all, whether freed yet or not: the output
			// buffer, the decoder's window and tables.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 24<<20 {
				t.Errorf("allocated %d MiB for a %d-byte limit", grew>>20, limit)
			}
		})
	}
}

// zstd frames asking for a window over 8 MiB are refused before anything is
// decoded.
func TestReadZstdWindow(t *testing.T) {
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf, zstd.WithWindowSize(64<<20), zstd.WithSingleSegment(false))
	_, _ = io.CopyN(w, &zeros{n: 100 << 20}, 100<<20)
	_ = w.Close()
	_, err := Read(Zstd, bytes.NewReader(buf.Bytes()), 200<<20)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, zstd.ErrWindowSizeExceeded) && !errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzRead(f *testing.F) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	for i, coding := range []string{Gzip, Zstd, Deflate} {
		f.Add(uint8(i), compress(f, coding, body))
		// A small bomb: 1 MiB of zeros, far past the fuzz limit.
		f.Add(uint8(i), bomb(f, coding, 1<<20))
		f.Add(uint8(i), body)
	}
	const limit = 64 << 10
	f.Fuzz(func(t *testing.T, which uint8, in []byte) {
		coding := []string{Gzip, Zstd, Deflate}[int(which)%3]
		got, err := Read(coding, bytes.NewReader(in), limit)
		if len(got) > limit {
			t.Fatalf("%d bytes past a %d-byte limit", len(got), limit)
		}
		var ce *CorruptError
		switch {
		case err == nil, err == ErrTooLarge, errors.As(err, &ce):
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}
		if err != nil {
			return
		}
		// What was accepted decodes the same way with a plain reader.
		want, rerr := reference(coding, in, limit)
		if rerr == nil && !bytes.Equal(got, want) {
			t.Fatalf("decoded %q, reference %q", got, want)
		}
	})
}

func reference(coding string, in []byte, limit int64) ([]byte, error) {
	var r io.Reader
	switch coding {
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(in))
		if err != nil {
			return nil, err
		}
		r = zr
	case Deflate:
		zr, err := zlib.NewReader(bytes.NewReader(in))
		if err != nil {
			return nil, err
		}
		r = zr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(in), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	}
	return io.ReadAll(io.LimitReader(r, limit+1))
}
