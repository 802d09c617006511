package claudebalancer

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

// Model listing as Anthropic's GET /v1/models pages it.
const (
	defaultModelsLimit = 20
	maxModelsLimit     = 1000
)

// modelObject is one model in Anthropic's format.
type modelObject struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

// modelPage is one page of the listing.
type modelPage struct {
	Data    []modelObject `json:"data"`
	HasMore bool          `json:"has_more"`
	FirstID *string       `json:"first_id"`
	LastID  *string       `json:"last_id"`
}

// serveModels answers GET /v1/models (id empty) and GET /v1/models/{id}, for
// the clients /v1/messages serves.
func (h *Handler) serveModels(w http.ResponseWriter, r *http.Request, id string) {
	sender, ok := h.authorizeClient(w, r)
	if !ok {
		return
	}
	if id != "" {
		h.serveModel(w, r, sender, id)
		return
	}
	q := r.URL.Query()
	limit := defaultModelsLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxModelsLimit {
			apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, fmt.Sprintf("limit: must be a whole number from 1 to %d", maxModelsLimit))
			return
		}
		limit = n
	}
	after, before := q.Get("after_id"), q.Get("before_id")
	if after != "" && before != "" {
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, "after_id and before_id cannot be used together")
		return
	}
	writeJSON(w, http.StatusOK, paginate(h.models(r, sender), limit, after, before))
}

// serveModel answers for one model: any name a route serves, for a client
// allowed to ask for it.
func (h *Handler) serveModel(w http.ResponseWriter, r *http.Request, sender who, id string) {
	if h.bal.MatchRoute(id) == nil || (sender.client != nil && !sender.client.Allows(id)) {
		apierr.Write(w, http.StatusNotFound, apierr.NotFound, fmt.Sprintf("model: %s", id))
		return
	}
	for _, m := range h.models(r, sender) {
		if strings.EqualFold(m.ID, id) {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	writeJSON(w, http.StatusOK, h.modelObject(id, "", ""))
}

// models returns what a client may ask for, in the listing's order: the
// models Anthropic-type providers list that some route serves, in provider
// order and each provider's own order; then the routes' exact patterns and
// list_models, alphabetically. A named client sees what its models allow.
func (h *Handler) models(r *http.Request, sender who) []modelObject {
	allowed := func(id string) bool { return sender.client == nil || sender.client.Allows(id) }
	seen := map[string]bool{}
	var out []modelObject
	for _, listing := range h.bal.ProviderModels(r.Context(), upstreamHeader(r, sender.keyHeader)) {
		for _, m := range listing {
			k := strings.ToLower(m.ID)
			if seen[k] || h.bal.MatchRoute(m.ID) == nil || !allowed(m.ID) {
				continue
			}
			seen[k] = true
			out = append(out, h.modelObject(m.ID, m.DisplayName, m.CreatedAt))
		}
	}
	var rest []string
	for _, rt := range h.bal.Routes() {
		for _, p := range rt.Patterns() {
			if !strings.Contains(p, "*") {
				rest = append(rest, p)
			}
		}
	}
	rest = append(rest, h.ListModels...)
	slices.Sort(rest)
	for _, id := range rest {
		k := strings.ToLower(id)
		if seen[k] || !allowed(id) {
			continue
		}
		seen[k] = true
		out = append(out, h.modelObject(id, "", ""))
	}
	return out
}

// modelObject describes a model, with its id and the config's load time
// where no provider said better.
func (h *Handler) modelObject(id, display, created string) modelObject {
	if display == "" {
		display = id
	}
	if created == "" {
		created = h.loaded.Format(time.RFC3339)
	}
	return modelObject{Type: "model", ID: id, DisplayName: display, CreatedAt: created}
}

// paginate cuts one page out of the listing: the first limit models, those
// after after, or the limit models just before before. A cursor that is not
// in the listing gives an empty page.
func paginate(all []modelObject, limit int, after, before string) modelPage {
	from, to := 0, min(limit, len(all))
	more := to < len(all)
	if after != "" || before != "" {
		i := slices.IndexFunc(all, func(m modelObject) bool { return m.ID == after || m.ID == before })
		switch {
		case i < 0:
			from, to, more = 0, 0, false
		case after != "":
			from, to = i+1, min(i+1+limit, len(all))
			more = to < len(all)
		default:
			from, to = max(0, i-limit), i
			more = from > 0
		}
	}
	page := modelPage{Data: all[from:to], HasMore: more}
	if page.Data == nil {
		page.Data = []modelObject{}
	}
	if len(page.Data) > 0 {
		page.FirstID, page.LastID = &page.Data[0].ID, &page.Data[len(page.Data)-1].ID
	}
	return page
}
