package claudebalancer

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/oauth"
)

//go:embed statuspage.html
var statusPageHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"seconds": func(s float64) string {
		if s <= 0 {
			return "—"
		}
		return (time.Duration(s) * time.Second).Round(time.Second).String()
	},
	"ms": func(v float64) string {
		switch {
		case v <= 0:
			return "—"
		case v < 1:
			return "<1 ms"
		}
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	},
	"num": func(n int64) string { return humanInt(n) },
	"ago": func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return time.Since(*t).Round(time.Second).String() + " ago"
	},
	"until": func(v any) string {
		var t time.Time
		switch v := v.(type) {
		case time.Time:
			t = v
		case *time.Time:
			if v != nil {
				t = *v
			}
		}
		if t.IsZero() {
			return "—"
		}
		d := time.Until(t).Round(time.Second)
		if d < 0 {
			return "expired " + (-d).String() + " ago"
		}
		return "in " + d.String()
	},
	"quota":  quotaBars,
	"charts": charts,
	"pct": func(fail, total int64) string {
		if total == 0 {
			return "—"
		}
		return strconv.FormatFloat(100*float64(fail)/float64(total), 'f', 0, 64) + "%"
	},
}).Parse(statusPageHTML))

// statusPageData is what the status page template renders.
type statusPageData struct {
	Status    BalancerStatus
	Accounts  []oauth.AccountStatus
	Generated time.Time
	Refresh   int
}

// serveStatusPage renders the self-contained status page: no external
// assets, no script needed (it refreshes itself with a meta tag).
func (h *Handler) serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	data := statusPageData{Status: h.Status(), Generated: time.Now().UTC(), Refresh: 5}
	for _, a := range h.oauth.Status() {
		if a.Configured || a.LoggedIn {
			data.Accounts = append(data.Accounts, a)
		}
	}
	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(buf.Bytes())
}

func humanInt(n int64) string {
	switch {
	case n >= 10_000_000:
		return fmt.Sprintf("%.0fM", float64(n)/1e6)
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 10_000:
		return fmt.Sprintf("%.0fk", float64(n)/1e3)
	}
	return strconv.FormatInt(n, 10)
}
