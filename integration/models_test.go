package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// modelsMock is an Anthropic-type provider that lists models (two pages of
// them) and answers messages; listings counts its /v1/models calls and keys
// the credentials they came with.
type modelsMock struct {
	*mock
	listings atomic.Int32
	fail     atomic.Bool
}

func newModelsMock(t *testing.T) *modelsMock {
	m := &modelsMock{}
	m.mock = newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path != "/v1/models" {
			okEither("hi")(w, r, n)
			return
		}
		m.listings.Add(1)
		if m.fail.Load() {
			errorStatus(500, "api_error", "listing is down")(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("after_id") == "" {
			fmt.Fprint(w, `{"data":[
				{"type":"model","id":"claude-opus-4-5","display_name":"Claude Opus 4.5","created_at":"2025-11-24T00:00:00Z"},
				{"type":"model","id":"gpt-5","display_name":"Not routed","created_at":"2025-08-07T00:00:00Z"}],
				"has_more":true,"first_id":"claude-opus-4-5","last_id":"gpt-5"}`)
			return
		}
		fmt.Fprint(w, `{"data":[
			{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"}],
			"has_more":false,"first_id":"claude-sonnet-4-5","last_id":"claude-sonnet-4-5"}`)
	})
	return m
}

type modelList struct {
	Data []struct {
		Type        string `json:"type"`
		ID          string `json:"id"`
		DisplayName string `json:"display_name"`
		CreatedAt   string `json:"created_at"`
	} `json:"data"`
	HasMore bool    `json:"has_more"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
}

func (l modelList) ids() string {
	var ids []string
	for _, m := range l.Data {
		ids = append(ids, m.ID)
	}
	return strings.Join(ids, ",")
}

func (e *env) models(query string, hdr ...string) (int, modelList, string) {
	e.t.Helper()
	resp, b := e.get("/v1/models"+query, hdr...)
	var l modelList
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &l); err != nil {
			e.t.Fatalf("%s: %v", b, err)
		}
	}
	return resp.StatusCode, l, string(b)
}

const modelsBlock = `
	list_models extra-model
	provider up {
		base_url %s
		api_key sk-operator
	}
	route *opus* *sonnet* {
		to up
	}
	route claude-haiku-4-5 my-alias {
		to up
	}`

func TestModelsAreListed(t *testing.T) {
	up := newModelsMock(t)
	e := start(t, fmt.Sprintf(modelsBlock, up.URL))

	status, l, raw := e.models("?limit=1000")
	if status != 200 {
		t.Fatalf("%d %s", status, raw)
	}
	// The provider's listing first (both of its pages, what a route
	// serves), then the routes' names and list_models, alphabetically.
	if got := l.ids(); got != "claude-opus-4-5,claude-sonnet-4-5,claude-haiku-4-5,extra-model,my-alias" {
		t.Fatalf("listed %s", got)
	}
	if m := l.Data[0]; m.Type != "model" || m.DisplayName != "Claude Opus 4.5" || m.CreatedAt != "2025-11-24T00:00:00Z" {
		t.Fatalf("first model %+v", m)
	}
	if m := l.Data[3]; m.DisplayName != "extra-model" || !strings.HasSuffix(m.CreatedAt, "Z") {
		t.Fatalf("a model no provider describes: %+v", m)
	}
	if l.HasMore || *l.FirstID != "claude-opus-4-5" || *l.LastID != "my-alias" {
		t.Fatalf("page %+v", l)
	}
	// The provider was asked with its own credential, once per page.
	for _, r := range up.requests() {
		if r.Path == "/v1/models" && (r.Header.Get("X-Api-Key") != "sk-operator" || r.Header.Get("Anthropic-Version") == "") {
			t.Fatalf("listing asked with %v", r.Header)
		}
	}
	if n := up.listings.Load(); n != 2 {
		t.Fatalf("%d listing calls, want two pages", n)
	}

	// Pages: the default limit is 20; limit, after_id and before_id page
	// through the same order.
	for _, tc := range []struct{ query, ids string }{
		{"?limit=2", "claude-opus-4-5,claude-sonnet-4-5"},
		{"?limit=2&after_id=claude-sonnet-4-5", "claude-haiku-4-5,extra-model"},
		{"?limit=2&after_id=extra-model", "my-alias"},
		{"?limit=2&before_id=extra-model", "claude-sonnet-4-5,claude-haiku-4-5"},
		{"?limit=2&before_id=claude-sonnet-4-5", "claude-opus-4-5"},
		{"?after_id=no-such-model", ""},
	} {
		status, l, raw := e.models(tc.query)
		if status != 200 || l.ids() != tc.ids {
			t.Errorf("%s: %d %s", tc.query, status, raw)
		}
		wantMore := tc.query == "?limit=2" || strings.Contains(tc.query, "after_id=claude-sonnet") || tc.query == "?limit=2&before_id=extra-model"
		if l.HasMore != wantMore {
			t.Errorf("%s: has_more %v", tc.query, l.HasMore)
		}
		if tc.ids == "" && (l.FirstID != nil || l.LastID != nil || l.Data == nil) {
			t.Errorf("%s: an empty page is %s", tc.query, raw)
		}
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after_id=a&before_id=b"} {
		if status, _, raw := e.models(q); status != 400 || !strings.Contains(raw, "invalid_request_error") {
			t.Errorf("%s: %d %s", q, status, raw)
		}
	}
	// Every listing above came from the cache.
	if n := up.listings.Load(); n != 2 {
		t.Fatalf("%d listing calls; the listing is cached", n)
	}

	// One model: what the provider says of it, any name a route serves, 404
	// for the rest.
	for _, tc := range []struct {
		id      string
		status  int
		display string
	}{
		{"claude-opus-4-5", 200, "Claude Opus 4.5"},
		{"claude-opus-4-1", 200, "claude-opus-4-1"},
		{"my-alias", 200, "my-alias"},
		{"gpt-5", 404, ""},
		{"claude-haiku-3", 404, ""},
	} {
		resp, b := e.get("/v1/models/" + tc.id)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: %d %s", tc.id, resp.StatusCode, b)
		}
		var m struct{ Type, ID, DisplayName string }
		_ = json.Unmarshal(b, &struct {
			Type        *string `json:"type"`
			ID          *string `json:"id"`
			DisplayName *string `json:"display_name"`
		}{&m.Type, &m.ID, &m.DisplayName})
		if tc.status == 200 && (m.Type != "model" || m.ID != tc.id || m.DisplayName != tc.display) {
			t.Fatalf("%s: %s", tc.id, b)
		}
		if tc.status == 404 && !strings.Contains(string(b), "not_found_error") {
			t.Fatalf("%s: %s", tc.id, b)
		}
	}
	// HEAD is GET without a body; other methods are refused.
	resp, b := e.do(http.MethodHead, "/v1/models")
	if resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, b)
	}
	if resp, _ := e.do(http.MethodPost, "/v1/models"); resp.StatusCode != 405 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if n := up.listings.Load(); n != 2 {
		t.Fatalf("%d listing calls", n)
	}
}

// A provider that cannot list is skipped: the listing still answers, from
// the routes.
func TestModelsWithoutAProvidersListing(t *testing.T) {
	up := newModelsMock(t)
	up.fail.Store(true)
	e := start(t, fmt.Sprintf(modelsBlock, up.URL))
	status, l, raw := e.models("")
	if status != 200 || l.ids() != "claude-haiku-4-5,extra-model,my-alias" {
		t.Fatalf("%d %s", status, raw)
	}
}

// Named clients see what their models allow; keys are required as for
// messages; a passthrough provider lists with the client's own credential.
func TestModelsFollowTheClient(t *testing.T) {
	up := newModelsMock(t)
	e := start(t, fmt.Sprintf(`
	client_keys anon-key
	client sue {
		key sue-key
		models *sonnet* my-alias
	}
	provider up {
		base_url %s
		passthrough_auth
	}
	route *opus* *sonnet* {
		to up
	}
	route my-alias claude-haiku-4-5 {
		to up
	}`, up.URL))
	if status, _, raw := e.models(""); status != 401 {
		t.Fatalf("without a key: %d %s", status, raw)
	}
	status, l, raw := e.models("", "X-Claude-Balancer-Key", "sue-key", "X-Api-Key", "sk-sue-own")
	if status != 200 || l.ids() != "claude-sonnet-4-5,my-alias" {
		t.Fatalf("sue: %d %s", status, raw)
	}
	if resp, b := e.get("/v1/models/claude-opus-4-5", "X-Claude-Balancer-Key", "sue-key"); resp.StatusCode != 404 {
		t.Fatalf("a model sue may not use: %d %s", resp.StatusCode, b)
	}
	status, l, raw = e.models("", "X-Claude-Balancer-Key", "anon-key", "X-Api-Key", "sk-other")
	if status != 200 || l.ids() != "claude-opus-4-5,claude-sonnet-4-5,claude-haiku-4-5,my-alias" {
		t.Fatalf("anonymous: %d %s", status, raw)
	}
	// Each credential was listed with itself, never the balancer key.
	creds := map[string]int{}
	for _, r := range up.requests() {
		if r.Path == "/v1/models" {
			if r.Header.Get("X-Claude-Balancer-Key") != "" {
				t.Fatal("the balancer key reached the provider")
			}
			creds[r.Header.Get("X-Api-Key")]++
		}
	}
	if creds["sk-sue-own"] != 2 || creds["sk-other"] != 2 || len(creds) != 2 {
		t.Fatalf("listings by credential %v", creds)
	}
}

// Claude Code with model discovery on lists its models through the balancer.
func TestClaudeCodeCLIListsModels(t *testing.T) {
	claudeBin(t)
	up := newModelsMock(t)
	e := start(t, fmt.Sprintf(modelsBlock, up.URL))
	out, err := runClaudeWith(t, e, t.TempDir(), []string{"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1"}, "Say hi", "--model", "claude-sonnet-4-5")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "hi") {
		t.Fatalf("claude printed %q", out)
	}
	if up.listings.Load() == 0 {
		t.Fatal("Claude Code did not list models through the balancer")
	}
}
