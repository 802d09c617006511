package claudebalancer

import (
	"crypto/sha256"
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/team"
)

// Who sent a request decides what it may do (README, "Security"). A request with a
// valid key is judged by its key alone. Without one, it is served only when it
// is local, and then only when no web page could have sent it: a page in the
// user's browser can reach a loopback address too.

// forwardingHeaders say that a proxy stands between the client and Caddy: the
// TCP peer is then the proxy, not the client.
var forwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}

// isLocal reports whether a request comes from this machine and no one else:
// its TCP peer is a loopback address (or a Unix socket), it carries no
// forwarding header, and its Host is a loopback name or address. The Host
// check is what stops DNS rebinding: a page whose name was made to resolve
// to 127.0.0.1 still sends its own name.
func isLocal(r *http.Request) bool {
	if !loopbackPeer(r) {
		return false
	}
	for _, h := range forwardingHeaders {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	return loopbackHost(r.Host)
}

// loopbackPeer reports whether the TCP peer is on this machine. Trusted
// proxies do not matter: behind a proxy, the proxy is the peer.
func loopbackPeer(r *http.Request) bool {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().IsLoopback()
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return la.Network() == "unix"
	}
	return false
}

// loopbackHost reports whether a Host header names this machine: localhost,
// a name under .localhost (RFC 6761), or a loopback address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// crossOrigin reports whether a browser sent the request from another
// origin, by the rules of Go's http.CrossOriginProtection, applied to every
// method: a request without Sec-Fetch-Site and Origin (Claude Code, the SDKs,
// curl) is not a browser's; "same-origin" and "none" (the user typed the
// address) pass; anything else, "same-site" included, is refused. Browsers
// too old for Sec-Fetch-Site are judged by Origin against Host.
func crossOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return false
	case "":
		origin := r.Header.Get("Origin")
		if origin == "" {
			return false
		}
		u, err := url.Parse(origin)
		return err != nil || u.Host != r.Host
	}
	return true
}

// keyMatches compares a presented key with a stored digest in constant time.
func keyMatches(presented string, digest [32]byte) bool {
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], digest[:]) == 1
}

func bearer(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// admitLocal admits a keyless request that is local, unless a web page may
// have sent it. It answers the client itself when it returns false.
func admitLocal(w http.ResponseWriter, r *http.Request, why string) bool {
	if !isLocal(r) {
		apierr.Write(w, http.StatusForbidden, apierr.Permission, why)
		return false
	}
	if crossOrigin(r) {
		apierr.Write(w, http.StatusForbidden, apierr.Permission,
			"cross-origin request refused: web pages cannot use this balancer")
		return false
	}
	return true
}

// who is who sent an API request.
type who struct {
	// client is the named client whose key was presented, or nil.
	client *team.Client
	// label names the sender in logs and metrics: a client's name,
	// "anonymous" for a client_keys key, "local" for a keyless local request.
	label string
	// keyHeader is the header that carried the key, never forwarded.
	keyHeader string
	// local is set for a request admitted without a key, for being local.
	local bool
}

// keyed reports whether clients must present a key: client_keys or named
// clients are configured.
func (h *Handler) keyed() bool { return len(h.clientKeys) > 0 || h.team.Len() > 0 }

// authorizeClient checks who sent an API request: the client whose key it
// presents, or without keys configured, a local request no web page sent. It
// answers the client itself when it returns false.
func (h *Handler) authorizeClient(w http.ResponseWriter, r *http.Request) (who, bool) {
	if !h.keyed() {
		if !admitLocal(w, r, "this balancer serves only local clients; set client_keys in its configuration to serve others") {
			return who{}, false
		}
		return who{label: team.Local, local: true}, true
	}
	candidates := [][2]string{
		{"X-Claude-Balancer-Key", r.Header.Get("X-Claude-Balancer-Key")},
		{"X-Api-Key", r.Header.Get("X-Api-Key")},
		{"Authorization", bearer(r.Header.Get("Authorization"))},
	}
	for _, c := range candidates {
		if c[1] == "" {
			continue
		}
		if cl := h.team.Match(c[1]); cl != nil {
			return who{client: cl, label: cl.Name, keyHeader: c[0]}, true
		}
		matched := false
		for _, d := range h.clientKeys {
			// Compare against every key so timing does not tell which matched.
			if keyMatches(c[1], d) {
				matched = true
			}
		}
		if matched {
			return who{label: team.Anonymous, keyHeader: c[0]}, true
		}
	}
	apierr.Write(w, http.StatusUnauthorized, apierr.Authentication, "missing or invalid client key")
	return who{}, false
}

// requireJSON refuses a messages request whose body a browser could send
// without asking first: a page may POST text/plain anywhere, but not
// application/json. It answers the client itself when it returns false.
func requireJSON(w http.ResponseWriter, r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && mt == "application/json" {
		return true
	}
	apierr.Write(w, http.StatusUnsupportedMediaType, apierr.InvalidRequest,
		"the request body must be sent as Content-Type: application/json")
	return false
}

// management authorizes a management request: with admin_key set, the key;
// without, a local request that no web page sent. It answers the client
// itself when it returns false.
func (h *Handler) management(w http.ResponseWriter, r *http.Request) bool {
	if !h.hasAdmin {
		return admitLocal(w, r, "management endpoints are served only to local clients; set admin_key to reach them remotely")
	}
	for _, v := range []string{bearer(r.Header.Get("Authorization")), r.Header.Get("X-Admin-Key")} {
		if v != "" && keyMatches(v, h.adminKey) {
			return true
		}
	}
	if _, pass, ok := r.BasicAuth(); ok && keyMatches(pass, h.adminKey) {
		// A browser sends basic credentials with every request to the site,
		// whichever page asks: they are a key only for the site's own pages.
		if crossOrigin(r) {
			apierr.Write(w, http.StatusForbidden, apierr.Permission, "cross-origin request refused")
			return false
		}
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="claude_balancer", charset="UTF-8"`)
	apierr.Write(w, http.StatusUnauthorized, apierr.Authentication, "missing or invalid admin key")
	return false
}
