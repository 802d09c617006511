package balancer

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/quota"
)

func TestScopeTableDropsLeastRecentlyUsed(t *testing.T) {
	var tab scopeTable
	for i := range maxScopes {
		tab.get(fmt.Sprint(i), true)
	}
	// Touch the oldest so that the second oldest goes first.
	if tab.get("0", false) == nil {
		t.Fatal("scope 0 missing")
	}
	tab.get("new", true)
	if len(tab.m) != maxScopes {
		t.Fatalf("%d scopes, want %d", len(tab.m), maxScopes)
	}
	if tab.get("0", false) == nil || tab.get("1", false) != nil || tab.get("new", false) == nil {
		t.Fatal("the least recently used scope was not the one dropped")
	}
}

func TestCredentialScopeQuotaCooldownIsItsOwn(t *testing.T) {
	useFakeClock(t)
	var tab scopeTable
	a := tab.get(credentialFingerprint(http.Header{"X-Api-Key": {"key-a"}}), true)
	a.quota.Reject(quota.Reading{}, false, "m", now().Add(10*time.Minute), now())
	if ok, at, _ := a.quota.Available("m", now()); ok || at.Sub(now()) != 10*time.Minute {
		t.Fatalf("a: available %v until %v", ok, at)
	}
	b := credentialFingerprint(http.Header{"X-Api-Key": {"key-b"}})
	if tab.get(b, false) != nil {
		t.Fatal("another credential has a scope")
	}
	if st := tab.stats(testPolicy); st.Tracked != 1 || st.CoolingDown != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCredentialFingerprintKeepsNoSecret(t *testing.T) {
	fp := credentialFingerprint(http.Header{"X-Api-Key": {"sk-ant-secret"}, "Authorization": {"Bearer tok"}})
	if strings.Contains(fp, "secret") || strings.Contains(fp, "tok") || len(fp) != 32 {
		t.Fatalf("fingerprint %q", fp)
	}
	if fp == credentialFingerprint(http.Header{"X-Api-Key": {"sk-ant-secret"}}) {
		t.Fatal("a different Authorization gives the same fingerprint")
	}
}

func TestLongSessionIDsAreKeptAsDigests(t *testing.T) {
	long := strings.Repeat("s", 1<<20)
	k := stickyKey(long, "route")
	if len(k) > maxSessionID+len("\x00route")+8 {
		t.Fatalf("key of %d bytes", len(k))
	}
	if k == stickyKey(long[:len(long)-1]+"t", "route") {
		t.Fatal("two long sessions share a key")
	}
	if stickyKey("short", "r") != "short\x00r" {
		t.Fatal("short ids must be kept as they are")
	}
}

func TestWeightIsBounded(t *testing.T) {
	_, err := newProvider(ProviderConfig{Name: "a", BaseURL: "http://x", Weight: 1 << 62}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "weight") {
		t.Fatalf("err = %v", err)
	}
}

func TestDNSErrorsDoNotNameTheResolver(t *testing.T) {
	err := &net.DNSError{Err: "no such host", Name: "api.example.com", Server: "10.1.2.3:53", IsNotFound: true}
	msg := describeNetError(fmt.Errorf("dial: %w", err))
	if strings.Contains(msg, "10.1.2.3") || !strings.Contains(msg, "api.example.com") {
		t.Fatalf("message %q", msg)
	}
}

func TestOrderingByHeadroomAndNearLimitIsStable(t *testing.T) {
	mk := func(rooms ...float64) []candidate {
		var out []candidate
		for i, r := range rooms {
			out = append(out, candidate{index: i, room: r})
		}
		return out
	}
	order := func(list []candidate) (idx []int) {
		for _, c := range list {
			idx = append(idx, c.index)
		}
		return idx
	}
	list := mk(0.5, 1, 0.2, 1, 0.5)
	byHeadroom(list)
	if got := fmt.Sprint(order(list)); got != "[1 3 0 4 2]" {
		t.Fatalf("by headroom: %s", got)
	}
	// At or above 0.9 used (0.1 or less left) goes last, in its order.
	list = mk(0.05, 0.5, 0.1, 0.3, 0)
	demoteNearLimit(list, 0.9)
	if got := fmt.Sprint(order(list)); got != "[1 3 0 2 4]" {
		t.Fatalf("near limit: %s", got)
	}
}
