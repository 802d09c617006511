package claudebalancer

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
)

func TestIsLocal(t *testing.T) {
	for _, tc := range []struct {
		name, remote, host string
		hdr                []string
		local              bool
	}{
		{"loopback peer and host", "127.0.0.1:5000", "127.0.0.1:9090", nil, true},
		{"localhost", "127.0.0.1:5000", "localhost:9090", nil, true},
		{"a .localhost name", "127.0.0.1:5000", "claude.localhost", nil, true},
		{"any 127/8 address", "127.0.0.1:5000", "127.1.2.3", nil, true},
		{"IPv6 loopback", "[::1]:5000", "[::1]:9090", nil, true},
		{"IPv4-mapped loopback peer", "[::ffff:127.0.0.1]:5000", "localhost", nil, true},
		{"trailing dot", "127.0.0.1:5000", "localhost.", nil, true},
		{"remote peer", "203.0.113.9:5000", "localhost:9090", nil, false},
		{"rebound name", "127.0.0.1:5000", "attacker.example:9090", nil, false},
		{"a name ending in localhost", "127.0.0.1:5000", "notlocalhost", nil, false},
		{"empty host", "127.0.0.1:5000", "", nil, false},
		{"X-Forwarded-For", "127.0.0.1:5000", "localhost", []string{"X-Forwarded-For", "127.0.0.1"}, false},
		{"Forwarded", "127.0.0.1:5000", "localhost", []string{"Forwarded", "for=127.0.0.1"}, false},
		{"X-Real-IP", "127.0.0.1:5000", "localhost", []string{"X-Real-Ip", "127.0.0.1"}, false},
		{"X-Forwarded-Host", "127.0.0.1:5000", "localhost", []string{"X-Forwarded-Host", "localhost"}, false},
		{"X-Forwarded-Proto", "127.0.0.1:5000", "localhost", []string{"X-Forwarded-Proto", "https"}, false},
		{"an empty forwarding header", "127.0.0.1:5000", "localhost", []string{"X-Forwarded-For", ""}, false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr, r.Host = tc.remote, tc.host
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			r.Header[http.CanonicalHeaderKey(tc.hdr[i])] = []string{tc.hdr[i+1]}
		}
		if got := isLocal(r); got != tc.local {
			t.Errorf("%s: isLocal = %v", tc.name, got)
		}
	}
}

func TestCrossOrigin(t *testing.T) {
	for _, tc := range []struct {
		site, origin string
		cross        bool
	}{
		{"", "", false},
		{"none", "", false},
		{"same-origin", "http://localhost:9090", false},
		{"same-site", "", true},
		{"cross-site", "", true},
		{"", "http://localhost:9090", false},
		{"", "http://localhost:9091", true},
		{"", "null", true},
		{"", "https://attacker.example", true},
	} {
		r, _ := http.NewRequest(http.MethodPost, "/v1/messages", nil)
		r.Host = "localhost:9090"
		if tc.site != "" {
			r.Header.Set("Sec-Fetch-Site", tc.site)
		}
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := crossOrigin(r); got != tc.cross {
			t.Errorf("Sec-Fetch-Site %q Origin %q: crossOrigin = %v", tc.site, tc.origin, got)
		}
	}
}

func TestNameClaimsPerConfigLoad(t *testing.T) {
	loadA, loadB := new(int), new(int)
	one, other := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("other"))
	if err := claimName(loadA, "default", one); err != nil {
		t.Fatal(err)
	}
	// The same configuration again in the same load: one site, several
	// servers.
	if err := claimName(loadA, "default", one); err != nil {
		t.Fatal(err)
	}
	err := claimName(loadA, "default", other)
	if err == nil || !strings.Contains(err.Error(), `"default"`) || !strings.Contains(err.Error(), "name") {
		t.Fatalf("a different configuration under the same name: %v", err)
	}
	// Another load (a reload) is free to use the name differently.
	if err := claimName(loadB, "default", other); err != nil {
		t.Fatal(err)
	}
	releaseName(loadA, "default")
	releaseName(loadA, "default")
	releaseName(loadB, "default")
	if len(claims.m) != 0 {
		t.Fatalf("claims left: %v", claims.m)
	}
}
