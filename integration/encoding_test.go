package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

func compressed(t *testing.T, coding string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch coding {
	case "gzip", "x-gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	default:
		t.Fatalf("no coding %q", coding)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// postEncoded sends body as it is with the given Content-Encoding.
func (e *env) postEncoded(path, coding string, body io.Reader) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	if coding != "" {
		req.Header.Set("Content-Encoding", coding)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestCompressedBodies(t *testing.T) {
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if strings.HasSuffix(r.URL.Path, "/count_tokens") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"input_tokens":42}`)
			return
		}
		okEither("decoded")(w, r, n)
	})
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	// Bytes a re-encoding would change: key order, spacing, an escape.
	plain := []byte(`{"stream":false, "model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"h\u00e9llo ` + strings.Repeat("x", 20000) + `"}]}`)
	for _, coding := range []string{"gzip", "x-gzip", "zstd", "deflate"} {
		for _, path := range []string{"/v1/messages", "/v1/messages/count_tokens"} {
			t.Run(coding+path, func(t *testing.T) {
				resp, out := e.postEncoded(path, coding, bytes.NewReader(compressed(t, coding, plain)))
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, out)
				}
				got := up.last()
				if got.Path != path || !bytes.Equal(got.Body, plain) {
					t.Fatalf("upstream got %s %d bytes, want the decoded body", got.Path, len(got.Body))
				}
				if ce := got.Header.Values("Content-Encoding"); len(ce) != 0 {
					t.Fatalf("upstream got Content-Encoding %q", ce)
				}
			})
		}
	}
	t.Run("identity", func(t *testing.T) {
		if resp, out := e.postEncoded("/v1/messages", "identity", bytes.NewReader(plain)); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		if !bytes.Equal(up.last().Body, plain) {
			t.Fatalf("body changed")
		}
	})
	for _, tc := range []struct {
		name, coding string
		body         []byte
		status       int
		errType      string
	}{
		{"unknown encoding", "br", plain, 415, "invalid_request_error"},
		{"stacked encodings", "gzip, zstd", plain, 415, "invalid_request_error"},
		{"corrupt gzip", "gzip", []byte("not gzip at all"), 400, "invalid_request_error"},
		{"corrupt zstd", "zstd", plain, 400, "invalid_request_error"},
		{"truncated deflate", "deflate", compressed(t, "deflate", plain)[:40], 400, "invalid_request_error"},
		{"gzip of invalid JSON", "gzip", compressed(t, "gzip", []byte(`{"model":`)), 400, "invalid_request_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			resp, out := e.postEncoded("/v1/messages", tc.coding, bytes.NewReader(tc.body))
			if resp.StatusCode != tc.status || !isEnvelope(out, tc.errType) {
				t.Fatalf("status %d: %s", resp.StatusCode, out)
			}
			if up.count() != before {
				t.Fatalf("the provider was asked")
			}
		})
	}
}

// zeroReader is an endless run of zero bytes.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// gzipBomb is 1 GiB of zeros in about 1 MB of gzip, built without holding
// the zeros: 1024 gzip members of 1 MiB each, which a gzip reader decodes as
// one body.
func gzipBomb(t *testing.T) []byte {
	var one bytes.Buffer
	w, _ := gzip.NewWriterLevel(&one, gzip.BestCompression)
	if _, err := io.Copy(w, &zeroReader{n: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	return bytes.Repeat(one.Bytes(), 1024)
}

func TestCompressedBodiesOverTheLimit(t *testing.T) {
	up := newMock(t, okEither("ok"))
	e := start(t, fmt.Sprintf("max_request_body 2MiB\nprovider a {\nbase_url %s\napi_key k\n}", up.URL))
	// Just over the limit once decoded, though small as sent.
	over := body("m", false, fmt.Sprintf(`"pad":%q`, strings.Repeat("a", 2<<20)))
	bomb := gzipBomb(t)
	// zstd frames follow one another the same way.
	zbomb := bytes.Repeat(compressed(t, "zstd", make([]byte, 1<<20)), 1024)
	for _, tc := range []struct {
		name, coding string
		body         []byte
	}{
		{"decoded size over the limit", "gzip", compressed(t, "gzip", over)},
		{"gzip bomb of 1 GiB", "gzip", bomb},
		{"zstd bomb of 1 GiB", "zstd", zbomb},
		{"deflate over the limit", "deflate", compressed(t, "deflate", over)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.body) > 2<<20 {
				t.Fatalf("the compressed body (%d bytes) is itself over the limit", len(tc.body))
			}
			before := up.count()
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			start := time.Now()
			resp, out := e.postEncoded("/v1/messages", tc.coding, bytes.NewReader(tc.body))
			took := time.Since(start)
			runtime.ReadMemStats(&m1)
			if resp.StatusCode != 413 || !isEnvelope(out, "request_too_large") {
				t.Fatalf("status %d: %s", resp.StatusCode, out)
			}
			if up.count() != before {
				t.Fatalf("the provider was asked")
			}
			// Decoding 1 GiB would take seconds and a gigabyte; stopping at
			// the limit takes milliseconds and about the limit (the test's
			// own client and the server share this process).
			if took > 5*time.Second {
				t.Errorf("took %v", took)
			}
			if grew := int64(m1.TotalAlloc - m0.TotalAlloc); grew > 64<<20 {
				t.Errorf("allocated %d MiB for a 2 MiB limit", grew>>20)
			}
		})
	}
	// The bytes as sent are bounded too: 3 MiB of empty gzip members
	// decode to nothing.
	t.Run("compressed body over the limit", func(t *testing.T) {
		empty := compressed(t, "gzip", nil)
		members := bytes.Repeat(empty, (3<<20)/len(empty))
		resp, out := e.postEncoded("/v1/messages", "gzip", io.MultiReader(bytes.NewReader(members)))
		if resp.StatusCode != 413 || !isEnvelope(out, "request_too_large") {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
	})
	if resp, _ := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("served nothing after the bombs: %d", resp.StatusCode)
	}
}
