package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// WriteJSON writes the reports as a JSON array, one object per provider.
func WriteJSON(w io.Writer, reports []Report) error {
	if reports == nil {
		reports = []Report{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(reports)
}

// WriteText writes one aligned table per provider and a summary line.
func WriteText(w io.Writer, reports []Report) error {
	var b strings.Builder
	row := func(probe, verdict, status, took, detail string) {
		line := fmt.Sprintf("  %-19s  %-13s  %-6s  %7s  %s", probe, verdict, status, took, detail)
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	var failed []string
	for i, r := range reports {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "provider %s (balancer %s, type %s, auth %s, model %s)\n", r.Provider, r.Balancer, r.Type, r.Auth, r.Model)
		row("PROBE", "RESULT", "STATUS", "TIME", "DETAIL")
		optional := 0
		for _, p := range r.Probes {
			verdict := string(p.Verdict)
			if p.Verdict == Fail {
				verdict = "FAIL"
			}
			if p.Verdict == OptionalFail {
				optional++
			}
			status, took := "-", "-"
			if p.Status != 0 {
				status = strconv.Itoa(p.Status)
			}
			if p.Duration > 0 {
				took = duration(p.Duration)
			}
			row(p.Probe, verdict, status, took, describe(p))
		}
		switch f := r.Failed(); {
		case len(f) > 0:
			fmt.Fprintf(&b, "  => FAIL: %s\n", strings.Join(f, ", "))
			failed = append(failed, fmt.Sprintf("%s (%s)", r.Provider, strings.Join(f, ", ")))
		case optional > 0:
			fmt.Fprintf(&b, "  => pass (%d optional %s failed)\n", optional, plural(optional, "probe"))
		default:
			b.WriteString("  => pass\n")
		}
	}
	b.WriteString("\n")
	if len(failed) == 0 {
		fmt.Fprintf(&b, "%d %s checked: every required probe passed\n", len(reports), plural(len(reports), "provider"))
	} else {
		fmt.Fprintf(&b, "%d %s checked: required probes failed on %s\n", len(reports), plural(len(reports), "provider"), strings.Join(failed, "; "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// describe is a result's detail column: what was seen, and on failure the
// upstream's own error.
func describe(p Result) string {
	switch {
	case p.Error == "":
		return p.Detail
	case p.Detail == "" || strings.HasPrefix(p.Error, p.Detail):
		return p.Error
	default:
		return p.Detail + ": " + p.Error
	}
}

func duration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
