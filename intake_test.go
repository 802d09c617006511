package claudebalancer

import (
	"net/http"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/dedup"
)

var intakeCases = []string{
	`{"model":"m","messages":[]}`,
	`{"model":"m","mod\u0065l":"x","messages":[]}`,
	`{"model":"m","stre\u0061m":true,"stream":false}`,
	`{"model":"m","metad\u0061ta":{},"metadata":{}}`,
	`{"model":"m","max_tokens":016}`,
	`{"model":"m","x":-0.5e+10,"y":[1,2,{"z":null}]}`,
	"{\"model\":\"m\",\"x\":\"a\tb\"}",
	"{\"model\":\"m\",\"x\":\"\xff\"}",
	`{"model":"m","x":"\ud800"}`,
	`{"model":"m","x":"\q"}`,
	`{"model":"m"} `,
	`{"model":"m"}x`,
	`{"model":"m","x":` + strings.Repeat("[", 511) + strings.Repeat("]", 511) + `}`,
	`{"model":"m","x":` + strings.Repeat("[", 512) + strings.Repeat("]", 512) + `}`,
	`{"model":"m","stream":"yes"}`,
	`{"model":1}`,
	`[]`,
}

// FuzzValidityNeverDependsOnDedup holds the two intake passes (the peek
// alone, and the peek with the de-duplication signature) to one grammar: the
// same bytes are accepted or refused by both, with the same findings.
func FuzzValidityNeverDependsOnDedup(f *testing.F) {
	for _, c := range intakeCases {
		f.Add([]byte(c))
	}
	off := &Handler{dedupOff: true}
	on := &Handler{dedupIgnore: dedup.DefaultIgnore}
	r, _ := http.NewRequest(http.MethodPost, "/v1/messages", nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		p1, _, err1 := off.peek(body, r, who{})
		p2, _, err2 := on.peek(body, r, who{})
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("%q: dedup off says %v, dedup on says %v", body, err1, err2)
		}
		if p1.Model != p2.Model || p1.Stream != p2.Stream || p1.Session != p2.Session {
			t.Fatalf("%q: %+v vs %+v", body, p1, p2)
		}
	})
}

// TestStreamRequestsAreSignedAtIntake: a streaming request's body goes back
// to its pool at the commit point, so its Ticket must not need it later:
// it is signed at intake, in the walk when "stream" comes first or last and
// after it otherwise. A request for JSON is not signed until a twin needs it.
func TestStreamRequestsAreSignedAtIntake(t *testing.T) {
	h := &Handler{dedupIgnore: dedup.DefaultIgnore}
	r, _ := http.NewRequest(http.MethodPost, "/v1/messages", nil)
	msgs := `"messages":[{"role":"user","content":"` + strings.Repeat("x", 200) + `"}]`
	for _, tc := range []struct {
		body         string
		hint, signed bool
	}{
		{`{"model":"m",` + msgs + `,"stream":true}`, true, true},
		{`{"stream":true,"model":"m",` + msgs + `}`, true, true},
		{`{"model":"m",` + msgs + `,"stream": true,"system":"` + strings.Repeat("s", 100) + `"}`, false, true},
		{`{"model":"m",` + msgs + `,"stream":false}`, false, false},
		{`{"model":"m",` + msgs + `}`, false, false},
	} {
		if got := streamHint([]byte(tc.body)); got != tc.hint {
			t.Errorf("%.40s...: hint %v", tc.body, got)
		}
		_, ticket, err := h.peek([]byte(tc.body), r, who{})
		if err != nil {
			t.Fatal(err)
		}
		if ticket.Signed() != tc.signed {
			t.Errorf("%.40s...: signed %v, want %v", tc.body, ticket.Signed(), tc.signed)
		}
	}
}
