package claudebalancer

import (
	"encoding/json"
	"testing"
)

func TestIsolateConfigKeepsOnlyTheBalancers(t *testing.T) {
	in := `{
	"admin": {"listen": "localhost:2019"},
	"logging": {"logs": {"default": {"writer": {"output": "file", "filename": "/var/log/caddy.log"}}}},
	"storage": {"module": "file_system", "root": "/data"},
	"apps": {
		"tls": {"automation": {"policies": [{"issuers": [{"module": "acme"}]}]}},
		"pki": {"certificate_authorities": {"local": {}}},
		"events": {"subscriptions": [{"events": ["provider_unhealthy"], "handlers": [{"handler": "exec"}]}]},
		"http": {"servers": {"srv0": {
			"listen": [":443"],
			"logs": {},
			"tls_connection_policies": [{}],
			"listener_wrappers": [{"wrapper": "proxy_protocol"}],
			"named_routes": {"n": {"handle": [{"handler": "static_response"}]}},
			"routes": [
				{"match": [{"host": ["claude.example.com"]}], "handle": [{"handler": "subroute", "routes": [
					{"handle": [{"handler": "rewrite", "uri": "/x"}, {"handler": "claude_balancer", "name": "a"}]},
					{"handle": [{"handler": "file_server"}]}
				]}]},
				{"handle": [{"handler": "reverse_proxy", "health_checks": {"active": {"uri": "/health"}}}]}
			],
			"errors": {"routes": [{"handle": [{"handler": "file_server"}]}]}
		}}}
	}
}`
	out, err := isolateConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := `{
	"admin": {"disabled": true},
	"logging": {"logs": {"default": {"level": "ERROR"}}},
	"storage": {"module": "file_system", "root": "/data"},
	"apps": {"http": {"servers": {"srv0": {
		"listen": [":443"],
		"automatic_https": {"disable": true},
		"routes": [
			{"match": [{"host": ["claude.example.com"]}], "handle": [{"handler": "subroute", "routes": [
				{"handle": [{"handler": "claude_balancer", "name": "a"}]}
			]}]}
		],
		"errors": {"routes": null}
	}}}}
}`
	var wantV map[string]any
	if err := json.Unmarshal([]byte(want), &wantV); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(wantV)
	if string(a) != string(b) {
		t.Errorf("isolated config\n got %s\nwant %s", a, b)
	}

	if _, err := isolateConfig([]byte(`{"apps": {"tls": {}}}`)); err == nil || err.Error() != "the config has no HTTP app, so no claude_balancer handler" {
		t.Errorf("without http: %v", err)
	}
}
