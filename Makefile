# Build, run and test claude_balancer.
GO       ?= go
BIN      ?= bin/caddy
CONFIG   ?= examples/Caddyfile
CLAUDE_CODE_VERSION ?= 2.1.332
CLAUDE_DIR ?= .cache/claude-code
export CLAUDE_BIN ?= $(CURDIR)/$(CLAUDE_DIR)/node_modules/.bin/claude

.PHONY: all build xcaddy run test lint unit integration claude-code claude-code-latest examples bench capacity fuzz soak clean

all: build

# Caddy with the standard modules and claude_balancer; no xcaddy needed.
build:
	$(GO) build -o $(BIN) ./cmd/caddy

# The same through xcaddy, as users build it, from this checkout: Caddy
# $(CADDY_VERSION) with the module replaced by this directory. A missing
# xcaddy is installed into bin/. The GOPROXY falls back to the local module
# cache, for machines whose proxy cannot serve everything.
CADDY_VERSION  ?= v2.11.9
XCADDY_VERSION ?= v0.4.5
XCADDY         ?= $(or $(shell command -v xcaddy 2>/dev/null),$(CURDIR)/bin/xcaddy)
xcaddy: $(XCADDY)
	GOPROXY="$$($(GO) env GOPROXY | cut -d, -f1)|file://$$($(GO) env GOMODCACHE)/cache/download" \
		$(XCADDY) build $(CADDY_VERSION) --output bin/caddy-xcaddy --with $$($(GO) list -m)=$(CURDIR)
	bin/caddy-xcaddy list-modules | grep claude_balancer
$(CURDIR)/bin/xcaddy:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION)

run: build
	$(BIN) run --config $(CONFIG)

# The real Claude Code CLI, pinned, for the end-to-end tests.
claude-code: $(CLAUDE_BIN)
$(CLAUDE_BIN):
	mkdir -p $(CLAUDE_DIR)
	npm install --silent --no-audit --no-fund --prefix $(CLAUDE_DIR) @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

# The end-to-end tests with the real CLI against the newest published Claude
# Code, installed apart from the pinned one (which CI keeps running).
CLAUDE_LATEST_DIR ?= .cache/claude-code-latest
claude-code-latest:
	mkdir -p $(CLAUDE_LATEST_DIR)
	npm install --silent --no-audit --no-fund --prefix $(CLAUDE_LATEST_DIR) @anthropic-ai/claude-code@latest
	@echo "Claude Code $$(node -p "require('./$(CLAUDE_LATEST_DIR)/node_modules/@anthropic-ai/claude-code/package.json').version") (pinned: $(CLAUDE_CODE_VERSION))"
	CLAUDE_BIN=$(CURDIR)/$(CLAUDE_LATEST_DIR)/node_modules/.bin/claude $(GO) test -race -count=1 -p 1 -v -run 'ClaudeCode' ./integration/

lint:
	@test -z "$$(gofmt -l . | grep -v '^.cache/')" || { gofmt -l . | grep -v '^.cache/'; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: claude-code build
	$(GO) test -race -count=1 -p 1 ./integration/...

# Placeholder secrets, so that examples naming {env.*} keys validate.
EXAMPLE_ENV = ANTHROPIC_API_KEY=x-anthropic OPENROUTER_API_KEY=x-openrouter RELAY_TOKEN=x-relay TEAM_KEY_ALICE=x-alice TEAM_KEY_BOB=x-bob BALANCER_ADMIN_KEY=x-admin

# Everything CI runs: lint, every test under the race detector, the memory
# test without it (the detector makes stacks larger), each fuzz target
# briefly, and a short soak; then every test that was skipped, and why.
# testreport prints what go test prints and keeps the JSON stream in .cache/
# (test-go.json, test-memory.json, test-soak.json).
test: lint build claude-code examples bin/testreport
	bin/testreport -json .cache/test-go.json -- $(GO) test -json -race -count=1 -p 1 ./...
	bin/testreport -v -json .cache/test-memory.json -- $(GO) test -json -count=1 -run '^TestIdleStreamMemory$$' ./bench/
	./scripts/fuzz.sh 5s
	bin/testreport -v -json .cache/test-soak.json -- $(GO) test -json -count=1 -run '^TestSoak$$' ./soak/ -soak -soak.short
	bin/testreport -summary .cache/test-go.json .cache/test-memory.json .cache/test-soak.json

bin/testreport: scripts/testreport/main.go
	$(GO) build -o $@ ./scripts/testreport

# Every example validates and is caddy fmt clean.
examples: build
	@for f in examples/*Caddyfile* examples/*.json examples/cluster/*Caddyfile*; do \
		env $(EXAMPLE_ENV) $(BIN) validate --config $$f >/dev/null 2>&1 || { env $(EXAMPLE_ENV) $(BIN) validate --config $$f; exit 1; }; \
		echo "valid: $$f"; \
	done
	@for f in examples/*Caddyfile* examples/cluster/*Caddyfile*; do $(BIN) fmt $$f | diff -q - $$f >/dev/null || { echo "$$f is not caddy fmt clean"; exit 1; }; done

# Benchmarks of every package, then the side-by-side comparison with Caddy's
# reverse_proxy (a table with ratios).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./...
	CB_BENCH=1 $(GO) test -count=1 -timeout 30m -run '^TestCompareProxies$$' -v ./bench/

# Memory per idle stream and CPU per relayed event, against reverse_proxy.
capacity:
	CB_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestCapacity$$' -v ./bench/

fuzz:
	./scripts/fuzz.sh 30s

soak:
	$(GO) test -count=1 -timeout 10m -run '^TestSoak$$' -v ./soak/ -soak

clean:
	rm -rf bin .cache
