package claudebalancer

import (
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
