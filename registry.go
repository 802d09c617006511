package claudebalancer

import (
	"fmt"
	"slices"
	"sync"
)

// live tracks the provisioned handlers, newest last per balancer name, for
// the admin API and the metrics collector. A config is provisioned before
// the one it replaces is cleaned up, so during a reload a name briefly has
// two handlers; the newest answers.
var live = struct {
	sync.Mutex
	m map[string][]*Handler
}{m: map[string][]*Handler{}}

func register(h *Handler) {
	live.Lock()
	defer live.Unlock()
	live.m[h.bal.Name] = append(live.m[h.bal.Name], h)
}

func unregister(h *Handler) {
	live.Lock()
	defer live.Unlock()
	name := h.bal.Name
	list := slices.DeleteFunc(live.m[name], func(x *Handler) bool { return x == h })
	if len(list) == 0 {
		delete(live.m, name)
	} else {
		live.m[name] = list
	}
}

// liveHandlers returns the newest handler of every balancer, sorted by name.
func liveHandlers() []*Handler {
	live.Lock()
	defer live.Unlock()
	names := make([]string, 0, len(live.m))
	for n := range live.m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*Handler, 0, len(names))
	for _, n := range names {
		list := live.m[n]
		out = append(out, list[len(list)-1])
	}
	return out
}

// liveHandler returns the newest handler of a balancer, or nil.
func liveHandler(name string) *Handler {
	live.Lock()
	defer live.Unlock()
	if list := live.m[name]; len(list) > 0 {
		return list[len(list)-1]
	}
	return nil
}

// claims holds, for each config load being provisioned or running, the
// configuration each balancer name stands for. Two handlers of one load may
// share a name only when they are the same configuration, as Caddy builds for
// one site served by several servers (http and https, several listeners):
// they then share state on purpose. A load is told apart by a value Caddy
// makes anew for each one.
var claims = struct {
	sync.Mutex
	m map[any]map[string]*claim
}{m: map[any]map[string]*claim{}}

type claim struct {
	config [32]byte
	refs   int
}

// claimName records that a handler of load uses name with the given
// configuration digest, or says why it may not.
func claimName(load any, name string, config [32]byte) error {
	claims.Lock()
	defer claims.Unlock()
	names := claims.m[load]
	if names == nil {
		names = map[string]*claim{}
		claims.m[load] = names
	}
	if c := names[name]; c != nil {
		if c.config != config {
			return fmt.Errorf("two claude_balancer handlers with different configurations share the name %q, "+
				"which would mix their state (in-flight requests, sessions, health, OAuth); "+
				"give each its own name with the \"name\" option", name)
		}
		c.refs++
		return nil
	}
	names[name] = &claim{config: config, refs: 1}
	return nil
}

// releaseName undoes claimName.
func releaseName(load any, name string) {
	claims.Lock()
	defer claims.Unlock()
	names := claims.m[load]
	if c := names[name]; c != nil {
		if c.refs--; c.refs == 0 {
			delete(names, name)
		}
	}
	if len(names) == 0 {
		delete(claims.m, load)
	}
}
