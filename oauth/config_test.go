package oauth

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"defaults", Config{}, ""},
		{"socks proxy", Config{Proxy: "socks5://127.0.0.1:1080"}, ""},
		{"relative token URL", Config{TokenURL: "/token"}, "token URL"},
		{"ftp authorize URL", Config{AuthorizeURL: "ftp://x/y"}, "authorize URL"},
		{"bad proxy scheme", Config{Proxy: "gopher://x"}, "proxy"},
		{"proxy without host", Config{Proxy: "http://"}, "missing host"},
		{"bad format", Config{TokenFormat: "xml"}, "token format"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestInvalidProxyURLErrorHidesItsPassword(t *testing.T) {
	for _, proxy := range []string{"http://user:s3cret@proxy:notaport", "http://user:s3cret@proxy\x7f:1", "gopher://user:s3cret@x"} {
		err := Config{Proxy: proxy}.Validate()
		if err == nil {
			t.Fatalf("%q accepted", proxy)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error shows the password: %v", err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.TokenURL != DefaultTokenURL || c.ClientID != DefaultClientID || c.RedirectURI != DefaultRedirectURI ||
		c.RefreshBefore != DefaultRefreshBefore || c.TokenFormat != FormatJSON || len(c.Scopes) != 3 {
		t.Fatalf("defaults %+v", c)
	}
	client, err := Config{Proxy: "http://proxy.example:3128"}.client()
	if err != nil || client.Timeout != tokenTimeout {
		t.Fatalf("client %v %v", client, err)
	}
}
