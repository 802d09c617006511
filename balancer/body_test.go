package balancer

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// keepingTransport answers without reading the request body and keeps each
// request, as a transport may that is still writing a body (or could reopen
// it for a retry) after the answer has come.
type keepingTransport struct {
	mu     sync.Mutex
	kept   []*http.Request
	status int
	body   string
}

func (k *keepingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	k.mu.Lock()
	k.kept = append(k.kept, r)
	k.mu.Unlock()
	return &http.Response{StatusCode: k.status, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(k.body)), ContentLength: int64(len(k.body))}, nil
}

// TestBodyNotReadAfterServe: once Serve returns, no request an attempt gave
// the transport can read the client's body, through its Body or its GetBody,
// whether the attempt failed over or was committed. The caller reuses the
// buffer (it is pooled), so a late read would send another client's bytes.
func TestBodyNotReadAfterServe(t *testing.T) {
	body := []byte(`{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("secret ", 2000) + `"}]}`)
	peek, err := PeekBody(body)
	if err != nil {
		t.Fatal(err)
	}
	bal, err := New(Config{Name: "body-release", Providers: []ProviderConfig{
		{Name: "a", BaseURL: "http://a.invalid", APIKey: "ka"},
		{Name: "b", BaseURL: "http://b.invalid", APIKey: "kb"},
	}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	failing := &keepingTransport{status: 500, body: `{"type":"error","error":{"type":"api_error","message":"boom"}}`}
	good := &keepingTransport{status: 200, body: `{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}`}
	bal.providers[0].transport, bal.providers[1].transport = failing, good
	req := &Request{Body: body, Peek: peek, Header: http.Header{}}
	commits := 0
	req.Committed = func(stream bool) {
		// Called once, when nothing in the attempt loop reads the body.
		commits++
		if stream || req.Body != nil {
			t.Errorf("Committed(%v) with the body still held", stream)
		}
		for _, r := range good.kept {
			if got, _ := io.ReadAll(r.Body); len(got) != 0 {
				t.Errorf("the committed attempt's body read %d bytes at the commit point", len(got))
			}
		}
	}
	res := bal.Serve(t.Context(), req, discardOutput{})
	if commits != 1 {
		t.Errorf("Committed called %d times", commits)
	}
	if res.Status != 200 || len(failing.kept) != 1 || len(good.kept) != 1 {
		t.Fatalf("status %d, attempts %d + %d; want 200 after one failover", res.Status, len(failing.kept), len(good.kept))
	}
	for _, r := range append(failing.kept, good.kept...) {
		if got, _ := io.ReadAll(r.Body); len(got) != 0 {
			t.Errorf("%s: the body read %d bytes after Serve returned", r.URL.Host, len(got))
		}
		if r.GetBody == nil {
			t.Fatalf("%s: no GetBody", r.URL.Host)
		}
		if rc, err := r.GetBody(); err == nil {
			got, _ := io.ReadAll(rc)
			t.Errorf("%s: GetBody reopened the body after Serve returned (%d bytes)", r.URL.Host, len(got))
		}
	}
}

// TestBodyReadDuringAttempt: while its attempt lasts, the transport reads
// the whole body, and GetBody gives it again from the start.
func TestBodyReadDuringAttempt(t *testing.T) {
	body := []byte(`{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hello"}]}`)
	src := &bodySource{b: body}
	r1 := &upstreamBody{src: src}
	half := make([]byte, 10)
	if n, _ := r1.Read(half); n != 10 {
		t.Fatalf("read %d", n)
	}
	rc, err := src.reopen()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(rc); !bytes.Equal(got, body) {
		t.Fatalf("reopened body %q", got)
	}
	if rest, _ := io.ReadAll(r1); !bytes.Equal(append(half, rest...), body) {
		t.Fatal("first reader lost its place")
	}
	src.release()
	if _, err := src.reopen(); err != errBodyReleased {
		t.Fatalf("reopen after release: %v", err)
	}
}

var _ relay.Output = discardOutput{}
