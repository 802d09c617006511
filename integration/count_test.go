package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func countBody(model string) []byte {
	return []byte(fmt.Sprintf(`{"model":%q,"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"count me please"}]}`, model))
}

func TestCountTokensUpstream(t *testing.T) {
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"input_tokens":1234}`)
	})
	e := start(t, fmt.Sprintf(`
		provider a {
			base_url %s
			api_key sk-a
		}
		route *sonnet* {
			to a claude-sonnet-4-5-20250929
		}`, up.URL))
	in := countBody("claude-sonnet-4-5")
	resp, out := e.post("/v1/messages/count_tokens?beta=true", in, "Anthropic-Beta", "token-counting-2024-11-01")
	if resp.StatusCode != 200 || string(out) != `{"input_tokens":1234}` || resp.Header.Get("X-Claude-Balancer-Count-Source") != "upstream" {
		t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Count-Source"), out)
	}
	got := up.last()
	if got.Path != "/v1/messages/count_tokens" || got.Query != "beta=true" || got.Header.Get("X-Api-Key") != "sk-a" ||
		got.Header.Get("Anthropic-Beta") != "token-counting-2024-11-01" || !strings.Contains(string(got.Body), `"model":"claude-sonnet-4-5-20250929"`) ||
		!strings.Contains(string(got.Body), `"cache_control":{"type":"ephemeral"}`) {
		t.Fatalf("upstream got %s %s %v %s", got.Path, got.Query, got.Header, got.Body)
	}
}

func TestCountTokensFallsBackAndCoolsDown(t *testing.T) {
	for name, behave := range map[string]func(http.ResponseWriter, *http.Request, int){
		"404":         errorStatus(404, "not_found_error", "Not found"),
		"405":         func(w http.ResponseWriter, r *http.Request, _ int) { w.WriteHeader(405) },
		"500":         errorStatus(500, "api_error", "boom"),
		"timeout":     stall,
		"hang up":     hangUp,
		"not a count": func(w http.ResponseWriter, r *http.Request, _ int) { fmt.Fprint(w, `{"hello":1}`) },
	} {
		t.Run(name, func(t *testing.T) {
			up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if strings.HasSuffix(r.URL.Path, "/count_tokens") {
					behave(w, r, n)
					return
				}
				okEither("messages fine")(w, r, n)
			})
			e := start(t, fmt.Sprintf(`
				count_tokens {
					failure_threshold 2
					cooldown 1h
					timeout 300ms
				}
				provider a {
					base_url %s
					api_key k
				}`, up.URL))
			for i := 0; i < 3; i++ {
				resp, out := e.post("/v1/messages/count_tokens", countBody("m"))
				if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Count-Source") != "local" || !strings.HasPrefix(string(out), `{"input_tokens":`) {
					t.Fatalf("count %d: %d %q %s", i, resp.StatusCode, resp.Header.Get("X-Claude-Balancer-Count-Source"), out)
				}
			}
			if up.count() != 2 {
				t.Fatalf("upstream count calls: %d, want 2 (then cooldown)", up.count())
			}
			p := e.providers()["a"]
			if p.CountTokens.Healthy || !p.Healthy || p.ErrorCount != 0 {
				t.Fatalf("count failures must only touch count_tokens health: %+v", p)
			}
			resp, _ := e.messages(body("m", false))
			if resp.StatusCode != 200 {
				t.Fatalf("messages after count failures: %d", resp.StatusCode)
			}
		})
	}
}

func TestCountTokensLocalOnly(t *testing.T) {
	up := newMock(t, okJSON("x"))
	e := start(t, fmt.Sprintf("count_tokens local\nprovider a {\nbase_url %s\napi_key k\n}", up.URL))
	resp, out := e.post("/v1/messages/count_tokens", countBody("m"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Claude-Balancer-Count-Source") != "local" || up.count() != 0 {
		t.Fatalf("%d %s calls=%d", resp.StatusCode, out, up.count())
	}
	for name, in := range map[string]string{
		"invalid json":  `{"model":`,
		"missing model": `{"messages":[{"role":"user","content":"x"}]}`,
		"no messages":   `{"model":"m"}`,
	} {
		resp, out := e.post("/v1/messages/count_tokens", []byte(in))
		if resp.StatusCode != 400 || !strings.Contains(string(out), "invalid_request_error") {
			t.Errorf("%s: %d %s", name, resp.StatusCode, out)
		}
	}
}
