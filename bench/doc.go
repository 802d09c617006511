// Package bench measures claude_balancer's passthrough path against Caddy's
// own reverse_proxy, all running in one in-process Caddy in front of the
// same fast mock Anthropic upstream. It holds benchmarks and a comparison
// test only; see README.md for how to run them and read the numbers.
package bench
