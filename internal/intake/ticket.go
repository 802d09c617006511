package intake

import (
	"encoding/binary"
	"sync"

	"github.com/zeebo/xxh3"
)

// Most requests have no identical twin in flight, and for them a signature
// is work thrown away: it costs about as much again as validating the body.
// Prepare therefore validates and peeks in its one walk, and gathers on the
// way a digest that identical requests share (a Pre); the Key is made from
// the body only when de-duplication finds another request with the same
// Pre in flight, and then once per request.

// Pre is what identical requests share before they are signed: their
// client identity and anthropic-beta flags, as the Key holds them, and a
// digest of the body that depends only on its canonical form. Two requests
// whose Keys are equal have equal Pres; the converse is not guaranteed, and
// requests with equal Pres are told apart by their Keys. Pres are
// comparable.
type Pre struct {
	digest   uint64
	identity string
	beta     string
}

// The digest sums a hash of every scalar value (string, number or literal,
// as written) inside "messages" and of every scalar top-level value, leaving
// out the fields the signature ignores. Keys, white space and the order of
// members change nothing: a sum does not depend on order, and the canonical
// form keeps every value as written. Objects and arrays outside "messages"
// (system prompt, tools) are left out: they rarely tell two requests of one
// client apart, and a request they alone tell apart is only signed.

// digestValue adds one scalar value to the digest.
func (w *walker) digestValue(v []byte) {
	w.digest += xxh3.Hash(v)
}

// Ticket is a request's place in de-duplication: its Pre, and its Key made
// on first use. A Ticket made by Prepare reads the body again to sign it;
// the caller drops the body (Drop) before reusing its buffer, after which a
// Ticket that was never signed has no Key. Its methods are safe for
// concurrent use.
type Ticket struct {
	Pre Pre
	s   *lazyKey
}

type lazyKey struct {
	mu   sync.Mutex
	body []byte
	opt  Options
	key  Key
	done bool
}

// Key returns the request's Key, signing its body on first use. It reports
// false for a zero Ticket and for one dropped before it was signed.
func (t Ticket) Key() (Key, bool) {
	s := t.s
	if s == nil {
		return Key{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		if s.body == nil {
			return Key{}, false
		}
		_, k, err := Read(s.body, s.opt)
		if err != nil {
			// Prepare accepted this body; the same walk cannot refuse it.
			s.body = nil
			return Key{}, false
		}
		s.key, s.done, s.body = k, true, nil
	}
	return s.key, true
}

// Signed reports whether the Key is made already.
func (t Ticket) Signed() bool {
	if t.s == nil {
		return false
	}
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.s.done
}

// Drop lets go of the body: a Key not made by now never will be.
func (t Ticket) Drop() {
	if t.s == nil {
		return
	}
	t.s.mu.Lock()
	t.s.body = nil
	t.s.mu.Unlock()
}

// TicketFor returns a signed Ticket for a Key made by Read. Its Pre is
// derived from the Key, so Tickets for equal Keys meet; they never meet
// Tickets made by Prepare.
func TicketFor(k Key) Ticket {
	return Ticket{
		Pre: Pre{digest: binary.LittleEndian.Uint64(k.sum[:8]) | 1<<63, identity: k.identity, beta: k.beta},
		s:   &lazyKey{key: k, done: true},
	}
}

// Prepare validates body and peeks at it in one walk, as Read does, and
// returns its Ticket. With opt.Sign the walk signs the body too, and the
// Ticket keeps no reference to it; without, the Ticket signs it (a second
// walk) when first asked for its Key, until it is dropped.
func Prepare(body []byte, opt Options) (Peek, Ticket, error) {
	p, k, d, err := read(body, opt, true)
	if err != nil {
		return Peek{}, Ticket{}, err
	}
	pre := Pre{digest: d &^ (1 << 63), identity: opt.Identity, beta: normalizeBeta(opt.Beta)}
	if opt.Sign {
		return p, Ticket{Pre: pre, s: &lazyKey{key: k, done: true}}, nil
	}
	opt.Sign = true
	return p, Ticket{Pre: pre, s: &lazyKey{body: body, opt: opt}}, nil
}
