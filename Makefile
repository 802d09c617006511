# Build, run and test claude_balancer.
GO       ?= go
BIN      ?= bin/caddy
CONFIG   ?= examples/Caddyfile
CLAUDE_CODE_VERSION ?= 2.1.332
CLAUDE_DIR ?= .cache/claude-code
export CLAUDE_BIN ?= $(CURDIR)/$(CLAUDE_DIR)/node_modules/.bin/claude

.PHONY: all build run test lint unit integration claude-code claude-code-latest examples bench capacity fuzz soak clean

all: build

# Caddy with the standard modules and claude_balancer; no xcaddy needed.
build:
	$(GO) build -o $(BIN) ./cmd/caddy

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
EXAMPLE_ENV = ANTHROPIC_API_KEY=x OPENROUTER_API_KEY=x RELAY_TOKEN=x TEAM_KEY_ALICE=x TEAM_KEY_BOB=x BALANCER_ADMIN_KEY=x

# Everything CI runs: lint, every test under the race detector, each fuzz
# target briefly, and a short soak.
test: lint build claude-code examples
	$(GO) test -race -count=1 -p 1 ./...
	./scripts/fuzz.sh 5s
	$(GO) test -count=1 -run '^TestSoak$$' -v ./soak/ -soak -soak.short

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
	CB_BENCH=1 $(GO) test -count=1 -run '^TestCompareProxies$$' -v ./bench/

# Memory per idle stream and CPU per relayed event, against reverse_proxy.
capacity:
	CB_BENCH=1 $(GO) test -count=1 -timeout 10m -run '^TestCapacity$$' -v ./bench/

fuzz:
	./scripts/fuzz.sh 30s

soak:
	$(GO) test -count=1 -timeout 10m -run '^TestSoak$$' -v ./soak/ -soak

clean:
	rm -rf bin .cache
