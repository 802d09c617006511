// Package redact hides secrets in what the module shows: logs, errors and
// status pages.
package redact

import "strings"

// URL hides the user information of a URL as written, which may hold a
// password, even when the URL does not parse.
func URL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		return scheme + "://redacted@" + rest[i+1:]
	}
	return s
}
