// Command caddy is Caddy with its standard modules and the claude_balancer
// handler, built with a plain `go build ./cmd/caddy`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/claude-balancer/caddy-claude-balancer"
)

func main() {
	caddycmd.Main()
}
