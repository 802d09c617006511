package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// recordedEvents collects the events the test handler receives.
var recordedEvents struct {
	sync.Mutex
	list []string
}

// eventRecorder is an events handler module for the tests.
type eventRecorder struct{}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.cb_test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	recordedEvents.list = append(recordedEvents.list, fmt.Sprintf("%s %v %v %v", e.Name(), e.Data["balancer"], e.Data["provider"], e.Data["to"]))
	return nil
}

func eventsMatching(prefix string) []string {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	var out []string
	for _, e := range recordedEvents.list {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

func TestEventsOncePerTransition(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("b"))
	e := &env{t: t}
	e = start(t, twoProviders(a.URL, b.URL, "sticky 0"))
	e.load(twoProviders(a.URL, b.URL, "sticky 0\nhealth {\nthreshold 2\ncooldown 300ms\n}"), `events {
		on provider_unhealthy cb_test_recorder
		on provider_healthy cb_test_recorder
		on failover cb_test_recorder
	}`)
	tag := "provider_unhealthy " + e.name
	for i := 0; i < 4; i++ {
		e.messages(body("m", false))
	}
	if got := eventsMatching(tag); len(got) != 1 {
		t.Fatalf("unhealthy events: %v", got)
	}
	// Two requests reached a (1/2, 2/2), so two failovers to b.
	if got := eventsMatching("failover " + e.name); len(got) != 2 || !strings.HasSuffix(got[0], " b") {
		t.Fatalf("failover events: %v", got)
	}
	a.set(okEither("a"))
	waitFor(t, "half-open", func() bool { return e.providers()["a"].State == "half_open" })
	e.messages(body("m", false))
	e.messages(body("m", false))
	if got := eventsMatching("provider_healthy " + e.name); len(got) != 1 {
		t.Fatalf("healthy events: %v", got)
	}
}

func TestReloadReleasesRemovedProviders(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("b"))
	conf := twoProviders(a.URL, b.URL, "health {\nthreshold 1\ncooldown 10m\n}")
	e := start(t, conf)
	e.messages(body("m", false))
	if e.providers()["a"].Healthy {
		t.Fatal("a should be cooling down")
	}
	e.load(fmt.Sprintf("provider b {\nbase_url %s\napi_key kb\n}", b.URL), "")
	if _, ok := e.providers()["a"]; ok {
		t.Fatal("a is still listed")
	}
	// Back with the same identity, a starts fresh: its state was released.
	e.load(conf, "")
	if p := e.providers()["a"]; !p.Healthy || p.ErrorCount != 0 {
		t.Fatalf("a kept released state: %+v", p)
	}
}

func TestHundredStreamsSurviveReloads(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(100)
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		evs := sseEvents("part one ")
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range evs[:4] {
			io.WriteString(w, ev)
		}
		w.(http.Flusher).Flush()
		started.Done()
		<-release
		io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"part two\"}}\n\n")
		for _, ev := range evs[4:] {
			io.WriteString(w, ev)
		}
	})
	conf := fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, conf)
	want := strings.Join(sseEvents("part one ")[:4], "") +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"part two\"}}\n\n" +
		strings.Join(sseEvents("part one ")[4:], "")
	results := make(chan string, 100)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	for i := 0; i < 100; i++ {
		go func(i int) {
			req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages",
				bytes.NewReader(body("m", true, fmt.Sprintf(`"metadata":{"user_id":"u%d"}`, i))))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				results <- "read: " + err.Error()
				return
			}
			results <- string(b)
		}(i)
	}
	started.Wait()
	e.load(conf+"\nstrategy random", "")
	e.load(conf+"\nsticky 1m", "")
	close(release)
	for i := 0; i < 100; i++ {
		if got := <-results; got != want {
			t.Fatalf("stream %d differs:\n%s", i, got)
		}
	}
}

func adminURL(path string) string { return fmt.Sprintf("http://localhost:%d%s", adminPort, path) }

func adminDo(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, adminURL(path), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAdminAPI(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("b"))
	conf := twoProviders(a.URL, b.URL, "sticky 0\nhealth {\nthreshold 1\ncooldown 10m\n}")
	e := start(t, conf)
	e.messages(body("m", false))
	status, out := adminDo(t, http.MethodGet, "/claude_balancer/providers")
	if status != 200 || !strings.Contains(string(out), `"balancer":"`+e.name+`"`) || strings.Contains(string(out), "kb") && strings.Contains(string(out), `"api_key"`) {
		t.Fatalf("providers: %d %s", status, out)
	}
	if status, out = adminDo(t, http.MethodPost, "/claude_balancer/providers/a/reset?balancer="+e.name); status != 200 {
		t.Fatalf("reset: %d %s", status, out)
	}
	if p := e.providers()["a"]; !p.Healthy || p.ErrorCount != 0 {
		t.Fatalf("after reset: %+v", p)
	}
	// Disable b: requests go to a (now fixed) only, and the override
	// survives a reload.
	a.set(okEither("a"))
	if status, out = adminDo(t, http.MethodPost, "/claude_balancer/providers/b/disable?balancer="+e.name); status != 200 {
		t.Fatalf("disable: %d %s", status, out)
	}
	e.load(conf+"\nstrategy round_robin", "")
	for i := 0; i < 3; i++ {
		resp, _ := e.messages(body("m", false))
		if resp.Header.Get("X-Claude-Balancer-Provider") != "a" {
			t.Fatalf("disabled b was used")
		}
	}
	adminDo(t, http.MethodPost, "/claude_balancer/providers/b/enable?balancer="+e.name)
	got := served(e, 4, false)
	if got["b"] == 0 {
		t.Fatalf("b not back after enable: %v", got)
	}
	if status, _ = adminDo(t, http.MethodPost, "/claude_balancer/providers/nope/reset?balancer="+e.name); status != 404 {
		t.Fatalf("unknown provider: %d", status)
	}
	if status, _ = adminDo(t, http.MethodGet, "/claude_balancer/providers/a/reset"); status != 405 {
		t.Fatalf("GET on an action: %d", status)
	}
}

var metricLine = regexp.MustCompile(`(?m)^claude_balancer_requests_total\{([^}]*)\} (\S+)$`)

func scrapeRequests(t *testing.T, balancer string) string {
	t.Helper()
	_, out := adminDo(t, http.MethodGet, "/metrics")
	var lines []string
	for _, m := range metricLine.FindAllStringSubmatch(string(out), -1) {
		if strings.Contains(m[1], `balancer="`+balancer+`"`) {
			lines = append(lines, m[1]+" "+m[2])
		}
	}
	return strings.Join(lines, "\n")
}

func TestMetricsSurviveReload(t *testing.T) {
	up := newMock(t, okEither("x"))
	conf := fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}\nroute claude-sonnet-4-5 {\nto a\n}", up.URL)
	e := start(t, conf)
	e.messages(body("claude-sonnet-4-5", false))
	e.messages(body("claude-sonnet-4-5", true))
	before := scrapeRequests(t, e.name)
	if !strings.Contains(before, `model="claude-sonnet-4-5"`) || !strings.Contains(before, `provider="a"`) || !strings.Contains(before, `status="200"`) {
		t.Fatalf("metrics: %q", before)
	}
	e.load(conf+"\nstrategy random", "")
	if after := scrapeRequests(t, e.name); after != before {
		t.Fatalf("metrics changed across a reload:\n%s\n---\n%s", before, after)
	}
	_, out := adminDo(t, http.MethodGet, "/metrics")
	for _, name := range []string{"claude_balancer_attempts_total", "claude_balancer_upstream_duration_seconds_bucket",
		"claude_balancer_time_to_first_token_seconds_bucket", "claude_balancer_overhead_seconds_bucket",
		"claude_balancer_tokens_total", "claude_balancer_provider_healthy", "claude_balancer_requests_in_flight",
		"claude_balancer_dedup_joins_total"} {
		if !strings.Contains(string(out), name) {
			t.Errorf("metric %s missing", name)
		}
	}
	if strings.Contains(string(out), `api_key`) || strings.Contains(string(out), "X-Claude-Code-Session-Id") {
		t.Fatalf("metrics leak config")
	}
}

func TestAccessLogFieldsAndPlaceholders(t *testing.T) {
	up := newMock(t, okEither("x"))
	logFile := filepath.Join(t.TempDir(), "access.log")
	e := &env{t: t, name: nameSanitizer.ReplaceAllString(t.Name(), "_"), base: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	e.tester = start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL)).tester
	e.client = &http.Client{Timeout: 30 * time.Second}
	cfg := globalOptions("") + fmt.Sprintf(`
:%d {
	log {
		output file %s
	}
	log_append claude_provider {http.claude_balancer.provider}
	claude_balancer {
		name %s
		provider a {
			base_url %s
			api_key k
		}
	}
}
`, httpPort, logFile, e.name, up.URL)
	e.tester.InitServer(cfg, "caddyfile")
	e.settle()
	e.messages(body("m", false))
	var line map[string]any
	waitFor(t, "the access log line", func() bool {
		f, err := os.Open(logFile)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) == nil && strings.Contains(sc.Text(), `"/v1/messages"`) {
				line = l
				return true
			}
		}
		return false
	})
	if line["claude_balancer_provider"] != "a" || line["claude_provider"] != "a" || line["claude_balancer_attempts"] != float64(1) {
		t.Fatalf("access log line: %v", line)
	}
}

func TestProvidersReloadFromStartupConfig(t *testing.T) {
	up := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("b"))
	e := start(t, twoProviders(up.URL, b.URL, "health {\nthreshold 1\ncooldown 10m\n}"))
	oldArgs := os.Args
	t.Cleanup(func() { os.Args = oldArgs })

	os.Args = []string{"caddy", "run"}
	os.Args = append(os.Args, "--resume")
	resp, out := e.post("/providers/reload", nil)
	if resp.StatusCode != 409 || !strings.Contains(string(out), "caddy reload") {
		t.Fatalf("no config file: %d %s", resp.StatusCode, out)
	}

	e.messages(body("m", false))
	file := filepath.Join(t.TempDir(), "Caddyfile")
	write := func(extra string) {
		if err := os.WriteFile(file, []byte(e.caddyfile(twoProviders(up.URL, b.URL, "health {\nthreshold 1\ncooldown 10m\n}\n"+extra), "")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("strategy round_robin")
	os.Args = []string{"caddy", "run", "--config", file, "--adapter", "caddyfile"}
	resp, out = e.post("/providers/reload", nil)
	var doc struct {
		Status           string `json:"status"`
		TotalProviders   int    `json:"total_providers"`
		HealthyProviders int    `json:"healthy_providers"`
	}
	if err := json.Unmarshal(out, &doc); err != nil || resp.StatusCode != 200 || doc.Status != "success" || doc.TotalProviders != 2 || doc.HealthyProviders != 1 {
		t.Fatalf("reload: %d %s", resp.StatusCode, out)
	}
	e.settle()
	_, st := e.get("/providers")
	if !strings.Contains(string(st), `"selection_strategy": "round_robin"`) {
		t.Fatalf("new config not active: %s", st)
	}
	if e.providers()["a"].Healthy {
		t.Fatal("reload lost a's cooldown")
	}
	// A broken file keeps the running config.
	if err := os.WriteFile(file, []byte("this is { not a caddyfile"), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, out = e.post("/providers/reload", nil)
	if resp.StatusCode != 400 || !strings.Contains(string(out), "running config is kept") {
		t.Fatalf("broken file: %d %s", resp.StatusCode, out)
	}
	if resp, _ := e.messages(body("m", false)); resp.StatusCode != 200 {
		t.Fatalf("running config lost: %d", resp.StatusCode)
	}
}
