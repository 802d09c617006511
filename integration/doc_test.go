// Package integration holds the end-to-end tests: a real Caddy with the
// module, loaded through its admin API, in front of mock providers (and,
// where installed, the real Claude Code CLI and a headless Chromium), on
// ports picked at random.
package integration
