package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clientsDoc is the part of /providers the team tests read.
type clientsDoc struct {
	Clients []struct {
		Name          string                `json:"name"`
		Requests      int64                 `json:"requests"`
		InputTokens   int64                 `json:"input_tokens"`
		OutputTokens  int64                 `json:"output_tokens"`
		CacheRead     int64                 `json:"cache_read_input_tokens"`
		CacheCreation int64                 `json:"cache_creation_input_tokens"`
		CostUSD       float64               `json:"cost_usd"`
		Limits        map[string]string     `json:"limits"`
		WindowUsed    map[string]int64      `json:"window_used"`
		Reset         map[string]*time.Time `json:"reset"`
	} `json:"clients"`
}

func (e *env) clients(admin ...string) map[string]struct {
	Requests, Input, Output, CacheRead, CacheWrite int64
	Cost                                           float64
	Limits                                         map[string]string
	Used                                           map[string]int64
} {
	e.t.Helper()
	resp, b := e.get("/providers", admin...)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/providers: %d %s", resp.StatusCode, b)
	}
	var doc clientsDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]struct {
		Requests, Input, Output, CacheRead, CacheWrite int64
		Cost                                           float64
		Limits                                         map[string]string
		Used                                           map[string]int64
	}{}
	for _, c := range doc.Clients {
		out[c.Name] = struct {
			Requests, Input, Output, CacheRead, CacheWrite int64
			Cost                                           float64
			Limits                                         map[string]string
			Used                                           map[string]int64
		}{c.Requests, c.InputTokens, c.OutputTokens, c.CacheRead, c.CacheCreation, c.CostUSD, c.Limits, c.WindowUsed}
	}
	return out
}

// usageJSON is an answer reporting the given usage.
func usageJSON(input, output, cacheRead, cacheWrite int) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"msg_01","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":%d,"output_tokens":%d,"cache_read_input_tokens":%d,"cache_creation_input_tokens":%d}}`,
			input, output, cacheRead, cacheWrite)
	}
}

const teamBlock = `
	client_keys shared-anon-key
	client alice {
		key alice-laptop-key alice-ci-key
		models *sonnet* *haiku*
		pricing *sonnet* 3 15 0.3 3.75
	}
	client bob {
		key bob-key
	}
	provider a {
		base_url %s
		api_key sk-operator
	}`

func TestClientsAreKnownByName(t *testing.T) {
	up := newMock(t, usageJSON(100, 20, 1000, 10))
	logFile := t.TempDir() + "/access.log"
	e := start(t, fmt.Sprintf(teamBlock, up.URL))
	e.tester.InitServer(globalOptions("")+fmt.Sprintf(`
:%d {
	log {
		output file %s
	}
	log_append who {http.claude_balancer.client}
	claude_balancer {
		name %s
%s
	}
}
`, httpPort, logFile, e.name, indent(fmt.Sprintf(teamBlock, up.URL), "\t\t")), "caddyfile")
	e.settle()
	for _, tc := range []struct {
		key    string
		status int
	}{
		{"alice-laptop-key", 200}, {"alice-ci-key", 200}, {"bob-key", 200}, {"shared-anon-key", 200}, {"mallory-key", 401}, {"", 401},
	} {
		resp, out := e.messages(body("claude-sonnet-4-5", false), "X-Api-Key", tc.key)
		if resp.StatusCode != tc.status {
			t.Fatalf("key %q: %d %s", tc.key, resp.StatusCode, out)
		}
	}
	// The access log names the client, never its key.
	var logged []string
	waitFor(t, "the access log", func() bool {
		b, _ := os.ReadFile(logFile)
		logged = nil
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var entry struct {
				Client string `json:"client"`
				Who    string `json:"who"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Client != "" {
				// The placeholder says the same as the field.
				if entry.Who != entry.Client {
					t.Errorf("{http.claude_balancer.client} is %q, the client field %q", entry.Who, entry.Client)
				}
				logged = append(logged, entry.Client)
			}
		}
		return len(logged) >= 4
	})
	if got := strings.Join(logged[:4], ","); got != "alice,alice,bob,anonymous" {
		t.Fatalf("clients in the access log: %s", got)
	}
	b, _ := os.ReadFile(logFile)
	if strings.Contains(string(b), `"client":"alice-laptop-key"`) || strings.Contains(string(b), `"client":"shared-anon-key"`) {
		t.Fatal("a key in the access log's client field")
	}
	_, metrics := adminDo(t, http.MethodGet, "/metrics")
	for _, want := range []string{
		fmt.Sprintf(`claude_balancer_client_requests_total{balancer=%q,client="alice",model="other",provider="a"} 2`, e.name),
		fmt.Sprintf(`claude_balancer_client_requests_total{balancer=%q,client="anonymous",model="other",provider="a"} 1`, e.name),
		fmt.Sprintf(`claude_balancer_client_tokens_total{balancer=%q,client="bob",kind="cache_read",model="other",provider="a"} 1000`, e.name),
		fmt.Sprintf(`claude_balancer_client_cost_usd_total{balancer=%q,client="alice",model="other",provider="a"}`, e.name),
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, key := range []string{"alice-laptop-key", "alice-ci-key", "bob-key", "shared-anon-key"} {
		if strings.Contains(string(metrics), key) {
			t.Fatalf("a key on the metrics: %s", key)
		}
	}
	cs := e.clients("X-Admin-Key", "adm")
	alice := cs["alice"]
	// Two answers of 100 in, 20 out, 1000 cache reads, 10 cache writes at
	// 3/15/0.3/3.75 dollars per million.
	if alice.Requests != 2 || alice.Input != 200 || alice.Output != 40 || alice.CacheRead != 2000 || alice.CacheWrite != 20 ||
		fmt.Sprintf("%.6f", alice.Cost) != "0.001875" {
		t.Fatalf("alice: %+v", alice)
	}
	if _, ok := cs["anonymous"]; ok || len(cs) != 2 {
		t.Fatalf("clients %v", cs)
	}
	_, page := e.get("/providers", "X-Admin-Key", "adm", "Accept", "text/html")
	if !strings.Contains(string(page), `<tr data-client="alice">`) || strings.Contains(string(page), "alice-ci-key") {
		t.Fatal("the status page lacks the client table, or shows a key")
	}
}

func TestTwoKeysOfOneClientShareAnswersTwoClientsNever(t *testing.T) {
	release := make(chan struct{})
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		<-release
		usageJSON(100, 20, 0, 0)(w, r, n)
	})
	e := start(t, fmt.Sprintf(teamBlock, up.URL))
	var wg sync.WaitGroup
	for _, key := range []string{"alice-laptop-key", "alice-ci-key", "bob-key"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.messages(body("claude-sonnet-4-5", false), "X-Api-Key", key)
		}()
	}
	waitFor(t, "alice's second request to join her first", func() bool { joins, _ := e.dedupStats(); return joins == 1 })
	waitFor(t, "bob's request upstream", func() bool { return up.count() == 2 })
	close(release)
	wg.Wait()
	if up.count() != 2 {
		t.Fatalf("%d upstream calls, want 2 (alice's two keys share one)", up.count())
	}
	// The joiner is charged as if served alone.
	if a := e.clients("X-Admin-Key", "adm")["alice"]; a.Requests != 2 || a.Input != 200 {
		t.Fatalf("alice: %+v", a)
	}
}

func TestAClientsModelsAreItsOwn(t *testing.T) {
	up := newMock(t, usageJSON(1, 1, 0, 0))
	e := start(t, fmt.Sprintf(teamBlock, up.URL))
	for _, path := range []string{"/v1/messages", "/v1/messages/count_tokens"} {
		resp, out := e.post(path, body("claude-opus-4-5", false), "X-Api-Key", "alice-laptop-key")
		if resp.StatusCode != 403 || !strings.Contains(string(out), "permission_error") || !strings.Contains(string(out), "claude-opus-4-5") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, out)
		}
	}
	if up.count() != 0 {
		t.Fatal("a refused model reached the provider")
	}
	if resp, out := e.messages(body("claude-opus-4-5", false), "X-Api-Key", "bob-key"); resp.StatusCode != 200 {
		t.Fatalf("bob may use any model: %d %s", resp.StatusCode, out)
	}
}

func TestRateLimitHoldsUnderConcurrency(t *testing.T) {
	up := newMock(t, usageJSON(1, 1, 0, 0))
	block := fmt.Sprintf("client carol {\nkey carol-key\nrate 10/1m\n}\nprovider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, block)
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		retry    []int
		wg       sync.WaitGroup
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, out := e.messages(body("m", false, fmt.Sprintf(`"metadata":{"user_id":"u%d"}`, i)), "X-Api-Key", "carol-key")
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == 429 {
				n, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
				retry = append(retry, n)
				if !strings.Contains(string(out), "rate_limit_error") || !strings.Contains(string(out), "rate limit") {
					t.Errorf("429 body %s", out)
				}
			}
		}()
	}
	wg.Wait()
	if statuses[200] != 10 || statuses[429] != 40 || up.count() != 10 {
		t.Fatalf("statuses %v, %d upstream calls; want exactly 10 through", statuses, up.count())
	}
	for _, n := range retry {
		if n < 55 || n > 62 {
			t.Fatalf("retry-after %d, want about a minute", n)
		}
	}
	// A reload keeps the window.
	e.load(block+"\nsticky 1m", "")
	if resp, _ := e.messages(body("m", false), "X-Api-Key", "carol-key"); resp.StatusCode != 429 {
		t.Fatalf("after a reload: %d", resp.StatusCode)
	}
	if c := e.clients("X-Admin-Key", "adm")["carol"]; c.Used["rate"] != 10 || c.Limits["rate"] != "10/1m" {
		t.Fatalf("carol: %+v", c)
	}
}

func TestTokensLimitChargesAnswersAndJoiners(t *testing.T) {
	release := make(chan struct{})
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 0 {
			<-release
		}
		// 100 input + 50 cache writes + 50 output count; 5000 cache reads
		// do not.
		usageJSON(100, 50, 5000, 50)(w, r, n)
	})
	block := fmt.Sprintf("client dave {\nkey dave-key\ntokens 700/1h\n}\nprovider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, block)
	// Two identical requests share one call; each is charged 200.
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.messages(body("m", false), "X-Api-Key", "dave-key")
		}()
	}
	waitFor(t, "the joiner", func() bool { joins, _ := e.dedupStats(); return joins == 1 })
	close(release)
	wg.Wait()
	if c := e.clients("X-Admin-Key", "adm")["dave"]; c.Used["tokens"] != 400 || c.CacheRead != 10000 {
		t.Fatalf("dave after the shared answer: %+v", c)
	}
	// 400 and 600 are under 700; at 800 the window is full.
	for i, want := range []int{200, 200, 429} {
		resp, out := e.messages(body("m", false, fmt.Sprintf(`"x":%d`, i)), "X-Api-Key", "dave-key")
		if resp.StatusCode != want {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, out)
		}
		if want == 429 {
			n, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if n < 3500 || n > 3700 || !strings.Contains(string(out), "tokens") {
				t.Fatalf("retry-after %d: %s", n, out)
			}
		}
	}
	if up.count() != 3 {
		t.Fatalf("%d upstream calls; the refused one must not reach the provider", up.count())
	}
}

// A client is charged what its answers reported: a stream cut after its
// first content event what its events said, a request that every provider
// failed nothing (its admission still counts against the rate).
func TestAClientIsChargedWhatItsAnswersReported(t *testing.T) {
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 0:
			cutAfter(4, "partial")(w, r, n) // message_start says 10 in, 1 out
		default:
			errorStatus(500, "api_error", "down")(w, r, n)
		}
	})
	block := fmt.Sprintf("client erin {\nkey erin-key\nrate 100/1m\ntokens 1000/1h\n}\nprovider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, block)
	resp, out := e.messages(body("m", true), "X-Api-Key", "erin-key")
	if resp.StatusCode != 200 || !strings.Contains(string(out), "partial") || !strings.Contains(string(out), "event: error") {
		t.Fatalf("cut stream: %d %s", resp.StatusCode, out)
	}
	if resp, out := e.messages(body("m", false, `"x":1`), "X-Api-Key", "erin-key"); resp.StatusCode < 500 {
		t.Fatalf("failed request: %d %s", resp.StatusCode, out)
	}
	c := e.clients("X-Admin-Key", "adm")["erin"]
	if c.Requests != 1 || c.Input != 10 || c.Output != 1 || c.Used["tokens"] != 11 || c.Used["rate"] != 2 {
		t.Fatalf("erin: %+v", c)
	}
}

// Under 50 concurrent requests a tokens limit admits what arrives while the
// window is under it; the answers already in flight finish and are charged,
// and nothing more is admitted until the window frees up.
func TestTokensLimitUnderConcurrency(t *testing.T) {
	release := make(chan struct{})
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n < 5 {
			<-release
		}
		usageJSON(100, 100, 0, 0)(w, r, n)
	})
	block := fmt.Sprintf("client fay {\nkey fay-key\ntokens 1000/1h\n}\nprovider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, block)
	// Five requests in flight: the window is empty, all are admitted.
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, out := e.messages(body("m", false, fmt.Sprintf(`"x":%d`, i)), "X-Api-Key", "fay-key"); resp.StatusCode != 200 {
				t.Errorf("in flight %d: %d %s", i, resp.StatusCode, out)
			}
		}()
	}
	waitFor(t, "five requests upstream", func() bool { return up.count() == 5 })
	close(release)
	wg.Wait()
	// 1000 charged: the window is full, and 50 concurrent requests all get 429.
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := e.messages(body("m", false, fmt.Sprintf(`"y":%d`, i)), "X-Api-Key", "fay-key")
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses[429] != 50 || up.count() != 5 {
		t.Fatalf("statuses %v, %d upstream calls", statuses, up.count())
	}
	if c := e.clients("X-Admin-Key", "adm")["fay"]; c.Used["tokens"] != 1000 || c.Requests != 5 {
		t.Fatalf("fay: %+v", c)
	}
}

// A key identifies one client: a config that gives one key to two clients,
// or to a client and client_keys, is refused when it loads, whatever the
// placeholders it is written with.
func TestAKeyBelongsToOneClient(t *testing.T) {
	t.Setenv("CB_TEST_SHARED_KEY", "shared-key")
	e := start(t, "provider a {\nbase_url http://127.0.0.1:9\napi_key k\n}")
	site := func(inner string) string {
		return globalOptions("") + fmt.Sprintf(":%d {\n\tclaude_balancer {\n\t\tprovider a {\n\t\t\tbase_url http://127.0.0.1:9\n\t\t\tapi_key k\n\t\t}\n%s\t}\n}\n", httpPort, inner)
	}
	// The error comes back inside a JSON string.
	loadErr := func(cfg string) string { return strings.ReplaceAll(e.loadErr(cfg), `\"`, `"`) }
	msg := loadErr(site("\t\tclient alice {\n\t\t\tkey shared-key\n\t\t}\n\t\tclient bob {\n\t\t\tkey {env.CB_TEST_SHARED_KEY}\n\t\t}\n"))
	if !strings.Contains(msg, `client "bob": a key is also client "alice"'s`) {
		t.Fatalf("two clients with one key: %s", msg)
	}
	msg = loadErr(site("\t\tclient_keys {env.CB_TEST_SHARED_KEY}\n\t\tclient alice {\n\t\t\tkey shared-key\n\t\t}\n"))
	if !strings.Contains(msg, `client_keys: a key is also client "alice"'s`) {
		t.Fatalf("client_keys and a client with one key: %s", msg)
	}
	// The running config is still the one that loaded.
	if resp, b := e.get("/providers"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/providers after the refused loads: %d %s", resp.StatusCode, b)
	}
}
