package intake

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestPreTellsDistinctRequestsApart: requests of one client that differ in
// a message or a top-level value have different Pres, so that neither is
// signed; those that differ only outside (tools, system) share a Pre and
// are told apart by their Keys.
func TestPreTellsDistinctRequestsApart(t *testing.T) {
	beta := "claude-code-20250219"
	basePre, baseKey := prepared(t, baseBody, beta)
	for _, tt := range []struct {
		name, body string
		samePre    bool
	}{
		{"other message text", strings.Replace(baseBody, `"hi"`, `"hi!"`, 1), false},
		{"other message type", strings.Replace(baseBody, `"ephemeral"`, `"persistent"`, 1), false},
		{"other model", strings.Replace(baseBody, `sonnet`, `opus`, 1), false},
		{"other temperature", strings.Replace(baseBody, `"temperature":1`, `"temperature":0.5`, 1), false},
		{"other system prompt", strings.Replace(baseBody, `You are Claude Code.`, `You are Claude.`, 1), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pre, key := prepared(t, tt.body, beta)
			if (pre == basePre) != tt.samePre {
				t.Errorf("Pre equal = %v, want %v", pre == basePre, tt.samePre)
			}
			if key == baseKey {
				t.Error("Key equal")
			}
		})
	}
	// Identity and beta flags are part of the Pre.
	_, other, _ := Prepare([]byte(baseBody), Options{Ignore: defaultIgnore, Identity: "client-b", Beta: beta})
	_, noBeta, _ := Prepare([]byte(baseBody), Options{Ignore: defaultIgnore, Identity: "client-a"})
	if other.Pre == basePre || noBeta.Pre == basePre {
		t.Error("identity or beta flags left out of the Pre")
	}
}

// TestPreLeavesOutIgnoredFields: an ignored top-level field, scalar or
// not, changes neither the Pre nor the Key; "messages" itself can be
// ignored.
func TestPreLeavesOutIgnoredFields(t *testing.T) {
	opt := Options{Ignore: []string{"max_tokens", "metadata", "temperature", "messages"}}
	pre := func(body string) Pre {
		_, tk, err := Prepare([]byte(body), opt)
		if err != nil {
			t.Fatal(err)
		}
		return tk.Pre
	}
	a := pre(`{"model":"m","metadata":{"user_id":"a"},"temperature":1,"max_tokens":5,"messages":[{"role":"user","content":"x"}]}`)
	b := pre(`{"model":"m","metadata":{"user_id":"b"},"te\u006dperature":0,"messages":[{"role":"user","content":"y"}]}`)
	if a != b {
		t.Error("ignored fields changed the Pre")
	}
}

// TestTicketDroppedBeforeSigning: once dropped, an unsigned Ticket has no
// Key (its body may be reused); a signed one keeps its Key.
func TestTicketDroppedBeforeSigning(t *testing.T) {
	body := []byte(baseBody)
	_, a, err := Prepare(body, Options{Identity: "c"})
	if err != nil {
		t.Fatal(err)
	}
	_, b, _ := Prepare(body, Options{Identity: "c"})
	kb, ok := b.Key()
	if !ok {
		t.Fatal("no Key")
	}
	a.Drop()
	b.Drop()
	copy(body, strings.Repeat("x", len(body)))
	if _, ok := a.Key(); ok {
		t.Error("a dropped Ticket signed")
	}
	if k, ok := b.Key(); !ok || k != kb {
		t.Error("a signed Ticket lost its Key")
	}
	if _, ok := (Ticket{}).Key(); ok {
		t.Error("the zero Ticket has a Key")
	}
}

// TestTicketForMeetsOnlyItsKey: Tickets for equal Keys have equal Pres.
func TestTicketForMeetsOnlyItsKey(t *testing.T) {
	k1 := mustSign(t, baseBody, nil, "c", "")
	k2 := mustSign(t, strings.Replace(baseBody, `"hi"`, `"ho"`, 1), nil, "c", "")
	a, b, c := TicketFor(k1), TicketFor(k1), TicketFor(k2)
	if a.Pre != b.Pre || a.Pre == c.Pre {
		t.Error("TicketFor Pres do not follow their Keys")
	}
	if k, ok := TicketFor(k1).Key(); !ok || k != k1 {
		t.Error("TicketFor lost its Key")
	}
}

// TestTicketKeyConcurrent: many goroutines asking for one Ticket's Key,
// while its owner drops it, get the one Key or none, never another.
func TestTicketKeyConcurrent(t *testing.T) {
	for i := 0; i < 20; i++ {
		body := []byte(fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"%d"}]}`, i))
		want := mustSign(t, string(body), nil, "c", "")
		_, tk, err := Prepare(body, Options{Identity: "c"})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for j := 0; j < 8; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if k, ok := tk.Key(); ok && k != want {
					t.Error("wrong Key")
				}
			}()
		}
		tk.Drop()
		wg.Wait()
	}
}
