package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func threeProviders(t *testing.T, extra string, behaves ...func(http.ResponseWriter, *http.Request, int)) (*env, []*mock) {
	var ms []*mock
	conf := ""
	for i, b := range behaves {
		m := newMock(t, b)
		ms = append(ms, m)
		conf += fmt.Sprintf("provider p%d {\nbase_url %s\napi_key k\nweight %d\n}\n", i, m.URL, []int{8, 1, 1}[i])
	}
	return start(t, conf+extra), ms
}

func served(e *env, n int, session bool) map[string]int {
	got := map[string]int{}
	for i := 0; i < n; i++ {
		var hdr []string
		if session {
			hdr = []string{"X-Claude-Code-Session-Id", fmt.Sprint("s", i)}
		}
		resp, _ := e.messages(body("m", false), hdr...)
		got[resp.Header.Get("X-Claude-Balancer-Provider")]++
	}
	return got
}

func TestRoundRobinStrategy(t *testing.T) {
	e, _ := threeProviders(t, "strategy round_robin\nsticky 0", okJSON("0"), okJSON("1"), okJSON("2"))
	var order []string
	for i := 0; i < 6; i++ {
		resp, _ := e.messages(body("m", false))
		order = append(order, resp.Header.Get("X-Claude-Balancer-Provider"))
	}
	for i := 3; i < 6; i++ {
		if order[i] != order[i-3] || order[i] == order[i-1] {
			t.Fatalf("not a rotation: %v", order)
		}
	}
}

func TestRoundRobinFailoverContinuesInRotation(t *testing.T) {
	e, ms := threeProviders(t, "strategy round_robin\nsticky 0", okJSON("0"), errorStatus(500, "api_error", "x"), okJSON("2"))
	got := served(e, 6, false)
	if got["p1"] != 0 || got["p0"]+got["p2"] != 6 || ms[1].count() == 0 {
		t.Fatalf("served %v, p1 calls %d", got, ms[1].count())
	}
}

func TestRandomStrategyUsesEveryProvider(t *testing.T) {
	e, _ := threeProviders(t, "strategy random\nsticky 0", okJSON("0"), okJSON("1"), okJSON("2"))
	got := served(e, 60, false)
	for _, p := range []string{"p0", "p1", "p2"} {
		if got[p] == 0 {
			t.Fatalf("%s never chosen in 60 requests: %v", p, got)
		}
	}
}

func TestWeightedStrategyFollowsWeights(t *testing.T) {
	e, _ := threeProviders(t, "strategy weighted\nsticky 0", okJSON("0"), okJSON("1"), okJSON("2"))
	got := served(e, 100, false)
	// Weights 8:1:1; p0 below half of the traffic would be a 1-in-10^9 draw.
	if got["p0"] < 55 || got["p1"]+got["p2"] == 0 {
		t.Fatalf("served %v", got)
	}
}

func TestLeastLatencyStrategyPrefersTheFastest(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request, n int) {
		time.Sleep(60 * time.Millisecond)
		okSSE("slow")(w, r, n)
	}
	e, _ := threeProviders(t, "strategy least_latency", slow, okSSE("fast"), slow)
	// Every provider gets a sample first (unknown latency sorts first).
	for i := 0; i < 3; i++ {
		e.messages(body("m", true), "X-Claude-Code-Session-Id", fmt.Sprint("warm", i))
	}
	for i := 0; i < 5; i++ {
		resp, _ := e.messages(body("m", true), "X-Claude-Code-Session-Id", fmt.Sprint("s", i))
		if p := resp.Header.Get("X-Claude-Balancer-Provider"); p != "p1" {
			t.Fatalf("request %d went to %s", i, p)
		}
	}
}

func TestSessionStickinessWithRoundRobin(t *testing.T) {
	e, _ := threeProviders(t, "strategy round_robin", okJSON("0"), okJSON("1"), okJSON("2"))
	first := map[string]string{}
	for round := 0; round < 3; round++ {
		for s := 0; s < 3; s++ {
			resp, _ := e.messages(body("m", false), "X-Claude-Code-Session-Id", fmt.Sprint("sess", s))
			p := resp.Header.Get("X-Claude-Balancer-Provider")
			if round == 0 {
				first[fmt.Sprint(s)] = p
			} else if first[fmt.Sprint(s)] != p {
				t.Fatalf("session %d moved from %s to %s", s, first[fmt.Sprint(s)], p)
			}
		}
	}
	if first["0"] == first["1"] && first["1"] == first["2"] {
		t.Fatalf("sessions were not spread: %v", first)
	}
}
