package dedup

import "github.com/claude-balancer/caddy-claude-balancer/internal/intake"

// Key identifies a group of identical requests: the signature intake makes
// of a request's canonical body, its client identity and its anthropic-beta
// header (see internal/intake).
type Key = intake.Key

// Ticket is a request's place in de-duplication (see internal/intake): its
// Pre, which identical requests share, and its Key, made only when another
// request with the same Pre is in flight. A request whose Pre meets no
// other is never signed.
type Ticket = intake.Ticket

// DefaultIgnore is the list of top-level body fields left out of the
// signature unless configured otherwise: max_tokens changes between a request
// and its retry (clients lower it after an overflow) without changing the
// answer that is already on its way.
var DefaultIgnore = []string{"max_tokens"}
