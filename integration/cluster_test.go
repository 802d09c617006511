package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// caddyBinary returns a Caddy built with the module as this test binary
// was (go build reuses its cache), or CADDY_BIN.
var caddyBinary = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("CADDY_BIN"); p != "" {
		return p, nil
	}
	// Into the directory TestMain removes at the end.
	p := filepath.Join(filepath.Dir(dataDir), "caddy")
	out, err := exec.Command("go", "build", "-o", p, "../cmd/caddy").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building caddy: %v: %s", err, out)
	}
	return p, nil
})

// process is a second Caddy instance, in a process of its own.
type process struct {
	base string
	cmd  *exec.Cmd
	logs *strings.Builder
}

// startProcess runs a Caddy process with one claude_balancer site (block)
// on the same storage as this test binary's Caddy.
func startProcess(t *testing.T, name, block string) *process {
	t.Helper()
	bin, err := caddyBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
	http_port %d
	storage file_system %s
}
:%d {
	claude_balancer {
		name %s
%s
	}
}
`, port, dataDir, port, name, indent(block, "\t\t"))
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{base: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &strings.Builder{}}
	p.cmd = exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = &syncWriter{w: p.logs}, &syncWriter{w: p.logs}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("second instance's log:\n%s", p.logs.String())
		}
	})
	waitFor(t, "the second instance", func() bool {
		resp, err := http.Get(p.base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return p
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestTwoInstancesShareWhatAnAccountSaid(t *testing.T) {
	// The account rate-limits the requests of instance "a" only, so that
	// instance "b" can learn it only from "a".
	reset := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		h := w.Header()
		h.Set("Anthropic-Ratelimit-Unified-5h-Utilization", "0.42")
		h.Set("Anthropic-Ratelimit-Unified-5h-Reset", strconv.FormatInt(reset.Unix(), 10))
		if r.Header.Get("X-Instance") == "a" && n > 0 {
			h.Set("Anthropic-Ratelimit-Unified-5h-Status", "rejected")
			errorStatus(429, "rate_limit_error", "rate limited", "Retry-After", "600")(w, r, n)
			return
		}
		h.Set("Anthropic-Ratelimit-Unified-5h-Status", "allowed")
		okJSON("ok")(w, r, n)
	})
	provider := func(instance string) string {
		return fmt.Sprintf("provider max {\nbase_url %s\nauth_token shared-account-token\nheader X-Instance %s\n}", up.URL, instance)
	}
	e := start(t, provider("a"))
	b := startProcess(t, e.name+"_b", provider("b"))
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(base string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/messages", strings.NewReader(string(body("m", false))))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp, string(out)
	}
	// Both instances serve; b has read the account once.
	if resp, out := post(e.base); resp.StatusCode != 200 {
		t.Fatalf("a: %d %s", resp.StatusCode, out)
	}
	if resp, out := post(b.base); resp.StatusCode != 200 {
		t.Fatalf("b: %d %s", resp.StatusCode, out)
	}
	// a learns that the account is rate limited for ten minutes.
	if resp, out := post(e.base); resp.StatusCode != 429 {
		t.Fatalf("a: %d %s", resp.StatusCode, out)
	}
	learned := time.Now()
	var resp *http.Response
	var out string
	for {
		before := up.count()
		resp, out = post(b.base)
		if resp.StatusCode == 429 && up.count() == before {
			break
		}
		if time.Since(learned) > 5*time.Second {
			t.Fatalf("after 5s, b still asks the account: %d %s", resp.StatusCode, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("b honoured a's cooldown after %v", time.Since(learned).Round(time.Millisecond))
	// The later of the rejected window's reset (two hours) and retry-after.
	if secs, _ := strconv.Atoi(resp.Header.Get("Retry-After")); secs < 7100 || secs > 7200 {
		t.Fatalf("b's retry-after %q", resp.Header.Get("Retry-After"))
	}
	resp2, err := client.Get(b.base + "/providers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	doc, _ := io.ReadAll(resp2.Body)
	if !strings.Contains(string(doc), `"name": "5h"`) || !strings.Contains(string(doc), `"quota_cooldown": true`) {
		t.Fatalf("b's /providers: %s", doc)
	}
}

func TestTwoInstancesShareAClientsWindows(t *testing.T) {
	up := newMock(t, usageJSON(10, 10, 0, 0))
	block := fmt.Sprintf("client frank {\nkey frank-key\nrate 4/1m\n}\nprovider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, block)
	b := startProcess(t, e.name, block)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(base string, i int) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(string(body("m", false, fmt.Sprintf(`"x":%d`, i)))))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Api-Key", "frank-key")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if s := post(e.base, i); s != 200 {
			t.Fatalf("request %d to a: %d", i, s)
		}
	}
	// b learns a's count within a write (at most 5 s) and a read (2 s).
	waitFor(t, "b to count a's requests", func() bool {
		resp, err := client.Get(b.base + "/providers")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var doc clientsDoc
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		return len(doc.Clients) == 1 && doc.Clients[0].WindowUsed["rate"] == 3
	})
	if s := post(b.base, 10); s != 200 {
		t.Fatalf("the fourth request, to b: %d", s)
	}
	if s := post(b.base, 11); s != 429 {
		t.Fatalf("the fifth request, to b: %d, want 429", s)
	}
}
