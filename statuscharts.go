package claudebalancer

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// The status page shows rather than tells: each quota window as a bar and
// each provider's last minutes as small charts, drawn here as inline HTML and
// SVG, so that the page needs no script and no external asset.

// quotaBars draws an account's quota windows: one bar per window, its fill
// the utilization, its colour the status, the time to its reset beside it.
func quotaBars(q *QuotaStatus) template.HTML {
	overage := q != nil && (q.OverageStatus != "" || q.Fallback != "" || q.FallbackPercentage != nil)
	if q == nil || len(q.Windows) == 0 && q.CooldownUntil == nil && !overage {
		return ""
	}
	var b strings.Builder
	b.WriteString(`<div class="quota">`)
	if q.CooldownUntil != nil {
		fmt.Fprintf(&b, `<div class="window"><span class="wname rejected">cooling down</span> <span class="small">%s, until %s</span></div>`,
			template.HTMLEscapeString(q.CooldownWindow), untilText(*q.CooldownUntil))
	}
	for _, w := range q.Windows {
		status := w.Status
		if status == "" {
			status = "allowed"
		}
		label := "—"
		width := 0.0
		if w.Utilization != nil {
			width = min(*w.Utilization, 1) * 100
			label = strconv.FormatFloat(*w.Utilization*100, 'f', 0, 64) + "%"
		}
		reset := ""
		if w.Reset != nil {
			reset = "resets " + untilText(*w.Reset)
		}
		if w.CooldownUntil != nil {
			reset = "cooling down until " + untilText(*w.CooldownUntil)
		}
		fmt.Fprintf(&b, `<div class="window" data-window="%s" data-status="%s"><span class="wname">%s</span>`+
			`<span class="bar" role="meter" aria-valuenow="%.2f" aria-valuemin="0" aria-valuemax="1"><span class="fill %s" style="width:%.1f%%"></span></span>`+
			`<span class="wval">%s</span> <span class="small">%s</span></div>`,
			template.HTMLEscapeString(w.Name), template.HTMLEscapeString(status), template.HTMLEscapeString(w.Name),
			width/100, template.HTMLEscapeString(status), width, label, reset)
	}
	if overage {
		// Pay-as-you-go overage and fallback, as the account's latest
		// answer gave them.
		var parts []string
		if q.OverageStatus != "" {
			o := "overage " + q.OverageStatus
			if q.OverageDisabledReason != "" {
				o += " (" + q.OverageDisabledReason + ")"
			}
			parts = append(parts, o)
		}
		if q.Fallback != "" || q.FallbackPercentage != nil {
			f := "fallback"
			if q.Fallback != "" {
				f += " " + q.Fallback
			}
			if p := q.FallbackPercentage; p != nil {
				// A percentage to two decimals at most: 0.07 is 7%, not
				// 7.000000000000001%.
				f += " " + strconv.FormatFloat(math.Round(*p*10000)/100, 'f', -1, 64) + "%"
			}
			parts = append(parts, f)
		}
		fmt.Fprintf(&b, `<div class="small overage">%s</div>`, template.HTMLEscapeString(strings.Join(parts, " · ")))
	}
	b.WriteString(`</div>`)
	return template.HTML(b.String())
}

func untilText(t time.Time) string {
	d := time.Until(t).Round(time.Minute)
	switch {
	case d <= 0:
		return "now"
	case d < time.Hour:
		return "in " + strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("in %dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// Chart geometry, in CSS pixels.
const (
	chartW, chartH = 120, 26
)

// charts draws a provider's last minutes: requests and failures as bars,
// time to first token as a line, each scaled to its own maximum.
func charts(series []MinutePoint) template.HTML {
	if len(series) == 0 {
		return ""
	}
	var req, fail, ttft []float64
	for _, m := range series {
		req = append(req, float64(m.Requests))
		fail = append(fail, float64(m.Failures))
		ttft = append(ttft, m.TTFTMS)
	}
	var b strings.Builder
	b.WriteString(`<div class="charts">`)
	bars(&b, "requests", req, "req")
	bars(&b, "failures", fail, "fail")
	line(&b, "ttft", ttft)
	b.WriteString(`</div>`)
	return template.HTML(b.String())
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func bars(b *strings.Builder, name string, v []float64, class string) {
	top := maxOf(v)
	fmt.Fprintf(b, `<figure class="chart"><svg class="chart %s" data-chart="%s" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s per minute, last %d minutes, at most %s">`,
		class, name, chartW, chartH, chartW, chartH, name, len(v), strconv.FormatFloat(top, 'f', 0, 64))
	step := float64(chartW) / float64(len(v))
	for i, x := range v {
		if top == 0 || x == 0 {
			continue
		}
		h := max(1, x/top*float64(chartH-2))
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, float64(i)*step+0.5, float64(chartH)-h, step-1, h)
	}
	fmt.Fprintf(b, `</svg><figcaption>%s <span class="small">max %s</span></figcaption></figure>`, name, humanInt(int64(top)))
}

func line(b *strings.Builder, name string, v []float64) {
	top := maxOf(v)
	fmt.Fprintf(b, `<figure class="chart"><svg class="chart ttft" data-chart="%s" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="mean time to first token per minute, at most %s ms">`,
		name, chartW, chartH, chartW, chartH, strconv.FormatFloat(top, 'f', 0, 64))
	step := float64(chartW) / float64(len(v))
	var pts []string
	for i, x := range v {
		if top == 0 || x == 0 {
			continue
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", float64(i)*step+step/2, float64(chartH)-1-x/top*float64(chartH-3)))
	}
	if len(pts) > 1 {
		fmt.Fprintf(b, `<polyline points="%s"/>`, strings.Join(pts, " "))
	}
	for _, pt := range pts {
		x, y, _ := strings.Cut(pt, ",")
		fmt.Fprintf(b, `<circle cx="%s" cy="%s" r="1.5"/>`, x, y)
	}
	label := "—"
	if top > 0 {
		label = strconv.FormatFloat(top, 'f', 0, 64) + " ms"
	}
	fmt.Fprintf(b, `</svg><figcaption>time to first token <span class="small">max %s</span></figcaption></figure>`, label)
}
