package balancer

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// maxStickyEntries bounds the session table; past it, expired bindings are
// swept and then the oldest half is dropped.
const maxStickyEntries = 100_000

// stickyTable binds (session, route) to the target that last served it, so a
// conversation returns to the provider whose prompt cache is warm.
type stickyTable struct {
	mu sync.Mutex
	m  map[string]binding
}

type binding struct {
	target   int // index in the route's targets
	provider string
	expires  time.Time
}

func newStickyTable() *stickyTable { return &stickyTable{m: make(map[string]binding)} }

// maxSessionID bounds the session ids kept in the table as they are; a longer
// id is kept as its digest, so that no client can make each of the table's
// bindings hold a megabyte.
const maxSessionID = 128

func stickyKey(session, route string) string {
	if len(session) > maxSessionID {
		sum := sha256.Sum256([]byte(session))
		session = "sha256:" + hex.EncodeToString(sum[:])
	}
	return session + "\x00" + route
}

// get returns the live binding for key and slides its expiry.
func (s *stickyTable) get(key string, ttl time.Duration) (binding, bool) {
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[key]
	if !ok {
		return b, false
	}
	if !t.Before(b.expires) {
		delete(s.m, key)
		return b, false
	}
	b.expires = t.Add(ttl)
	s.m[key] = b
	return b, true
}

func (s *stickyTable) set(key string, target int, provider string, ttl time.Duration) {
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok && len(s.m) >= maxStickyEntries {
		s.sweep(t)
	}
	s.m[key] = binding{target: target, provider: provider, expires: t.Add(ttl)}
}

// sweep drops expired bindings, then the oldest ones if the table is still
// full. The caller holds s.mu.
func (s *stickyTable) sweep(t time.Time) {
	for k, b := range s.m {
		if !t.Before(b.expires) {
			delete(s.m, k)
		}
	}
	if len(s.m) < maxStickyEntries {
		return
	}
	// Drop the bindings expiring soonest: those unused the longest.
	expiries := make([]time.Time, 0, len(s.m))
	for _, b := range s.m {
		expiries = append(expiries, b.expires)
	}
	cut := median(expiries)
	for k, b := range s.m {
		if !b.expires.After(cut) {
			delete(s.m, k)
		}
	}
}

func median(ts []time.Time) time.Time {
	// Quickselect would do; the sweep is rare enough for a simple partition.
	if len(ts) == 0 {
		return time.Time{}
	}
	k := len(ts) / 2
	lo, hi := 0, len(ts)-1
	for lo < hi {
		pivot := ts[(lo+hi)/2]
		i, j := lo, hi
		for i <= j {
			for ts[i].Before(pivot) {
				i++
			}
			for ts[j].After(pivot) {
				j--
			}
			if i <= j {
				ts[i], ts[j] = ts[j], ts[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return ts[k]
		}
	}
	return ts[k]
}

// len returns the number of bindings (for status pages and tests).
func (s *stickyTable) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
