package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestHealthSurvivesReload(t *testing.T) {
	a := newMock(t, errorStatus(500, "api_error", "down"))
	b := newMock(t, okEither("from b"))
	a2 := newMock(t, okEither("from a2"))
	conf := func(aURL, strategy string) string {
		return twoProviders(aURL, b.URL, "strategy "+strategy+"\nhealth {\nthreshold 1\ncooldown 10m\n}")
	}
	e := start(t, conf(a.URL, "priority"))
	e.messages(body("m", false))
	if p := e.providers()["a"]; p.Healthy {
		t.Fatalf("a should be cooling down: %+v", p)
	}
	// A reload that leaves a's identity alone keeps its cooldown.
	e.load(conf(a.URL, "round_robin"), "")
	if p := e.providers()["a"]; p.Healthy || p.CooldownRemaining < 500 {
		t.Fatalf("cooldown lost on reload: %+v", p)
	}
	e.messages(body("m", false))
	if a.count() != 1 {
		t.Fatalf("a was called after the reload")
	}
	// A new base URL is a new provider: it starts fresh.
	e.load(conf(a2.URL, "round_robin"), "")
	if p := e.providers()["a"]; !p.Healthy || p.ErrorCount != 0 || p.Requests != 0 {
		t.Fatalf("changed provider kept old state: %+v", p)
	}
}

func TestStreamInFlightSurvivesReload(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if !isStream(r) {
			okJSON("x")(w, r, n)
			return
		}
		evs := sseEvents("first half ")
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for _, ev := range evs[:4] {
			io.WriteString(w, ev)
		}
		f.Flush()
		started <- struct{}{}
		<-release
		io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"second half\"}}\n\n")
		for _, ev := range evs[4:] {
			io.WriteString(w, ev)
		}
		f.Flush()
	})
	conf := fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL)
	e := start(t, conf)
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", strings.NewReader(string(body("m", true))))
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	br := bufio.NewReader(resp.Body)
	// Reload twice while the stream is open, then let it finish.
	e.load(conf+"\nstrategy random", "")
	e.load(conf, "")
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream cut: %v", err)
	}
	if !strings.Contains(string(rest), "second half") || !strings.HasSuffix(string(rest), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Fatalf("stream incomplete:\n%s", rest)
	}
}
