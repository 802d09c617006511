package claudebalancer

import (
	"strings"
	"testing"
)

// The account's overage and fallback show under its quota bars, even when
// no window is known (they reset, or the answers named none), escaped, and
// with a percentage as people write it.
func TestQuotaBarsShowOverageAndFallback(t *testing.T) {
	pct := 0.07
	for _, tc := range []struct {
		name string
		q    *QuotaStatus
		want string
	}{
		{"no window", &QuotaStatus{OverageStatus: "rejected", OverageDisabledReason: "org_level_disabled", Fallback: "available", FallbackPercentage: &pct},
			`<div class="small overage">overage rejected (org_level_disabled) · fallback available 7%</div>`},
		{"escaped", &QuotaStatus{OverageStatus: "<b>x</b>"}, `<div class="small overage">overage &lt;b&gt;x&lt;/b&gt;</div>`},
		{"fallback alone", &QuotaStatus{FallbackPercentage: &pct}, `<div class="small overage">fallback 7%</div>`},
	} {
		if got := string(quotaBars(tc.q)); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %s\nwant it to hold %s", tc.name, got, tc.want)
		}
	}
	if got := quotaBars(&QuotaStatus{}); got != "" {
		t.Errorf("nothing known: %q", got)
	}
}
