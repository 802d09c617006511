package claudebalancer

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/tokens"
	"go.uber.org/zap"
)

// serveCount answers count_tokens: the provider's exact count when the
// model's route has a healthy Anthropic provider, else a local count.
func (h *Handler) serveCount(w http.ResponseWriter, r *http.Request) {
	sender, body, ok := h.admit(w, r)
	if !ok {
		return
	}
	peek, err := balancer.PeekBody(body)
	if err != nil {
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, err.Error())
		return
	}
	if !h.admitClient(w, sender, peek.Model, false) {
		return
	}
	req := &balancer.Request{Body: body, Peek: peek, Header: upstreamHeader(r, sender.keyHeader), RawQuery: r.URL.RawQuery}
	res := h.bal.CountTokens(r.Context(), req)
	if res.Upstream {
		getMetrics().countSource.WithLabelValues(h.bal.Name, "upstream").Inc()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.Header().Set("X-Claude-Balancer-Count-Source", "upstream")
		w.Header().Set("X-Claude-Balancer-Provider", res.Provider.Name)
		w.Header().Set("Content-Length", strconv.Itoa(len(res.Body)))
		w.WriteHeader(res.Status)
		_, _ = w.Write(res.Body)
		return
	}
	n, err := h.counter.Count(body)
	if err != nil {
		var bad *tokens.InvalidRequestError
		if errors.As(err, &bad) {
			apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, bad.Message)
			return
		}
		apierr.Write(w, http.StatusInternalServerError, apierr.API, "counting tokens failed: "+err.Error())
		return
	}
	getMetrics().countSource.WithLabelValues(h.bal.Name, "local").Inc()
	h.logger.Debug("count_tokens answered locally", zap.String("model", peek.Model), zap.String("reason", res.Reason), zap.Int("input_tokens", n))
	out := strconv.AppendInt([]byte(`{"input_tokens":`), int64(n), 10)
	out = append(out, '}')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Claude-Balancer-Count-Source", "local")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}
