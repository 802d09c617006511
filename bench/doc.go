// Package bench measures claude_balancer against Caddy's own reverse_proxy,
// each target a site of one in-process Caddy in front of a mock of its own
// (an Anthropic one, or a Chat Completions one for the type openai target).
// The side-by-side comparison (TestCompareProxies) and the capacity test
// (TestCapacity) run their clients and mocks in a helper process, so that
// the CPU measured is Caddy's; TestIdleStreamMemory and the checks run in
// make test. See README.md for how to run them and read the numbers.
package bench
