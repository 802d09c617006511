package redact

import "testing"

func TestURLHidesUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:secret@proxy:8080":     "http://redacted@proxy:8080",
		"http://user:secret@proxy:bad/path": "http://redacted@proxy:bad/path",
		"socks5://a@b@host:1":               "socks5://redacted@host:1",
		"https://host/p?x=a@b":              "https://host/p?x=a@b",
		"no scheme user:pw@host":            "no scheme user:pw@host",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}
