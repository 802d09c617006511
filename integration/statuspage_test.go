package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

func chromiumBin(t *testing.T) string {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed")
	}
	t.Skip("no chromium binary (Debian: apt-get install chromium)")
	return ""
}

// artifactDir is where tests leave files for people to look at.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("CB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "claude-balancer-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestStatusPageInChromium(t *testing.T) {
	bin := chromiumBin(t)
	a := newMock(t, okEither("a"))
	b := newMock(t, okEither("b"))
	e := start(t, twoProviders(a.URL, b.URL, "sticky 0\nhealth {\nthreshold 2\ncooldown 10m\n}"))
	e.messages(body("m", true))

	tctx, problems := browser(t, bin)
	stateOf := func(provider string) string {
		sel := fmt.Sprintf(`#providers tr[data-provider="%s"] td.state`, provider)
		s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		return strings.TrimSpace(s)
	}
	if err := chromedp.Do(tctx, chromedp.Navigate(e.base+"/providers/"), chromedp.WaitVisible(chromedp.CSS("#providers"))); err != nil {
		t.Fatal(err)
	}
	if s := stateOf("a"); s != "healthy" {
		t.Fatalf("a shows %q", s)
	}
	title, err := chromedp.Run(tctx, chromedp.Title())
	if err != nil || !strings.Contains(title, e.name) {
		t.Fatalf("title %q %v", title, err)
	}

	// The provider starts failing; the page, refreshing itself, shows it.
	a.set(errorStatus(500, "api_error", "down"))
	e.messages(body("m", false))
	e.messages(body("m", false))
	deadline := time.Now().Add(20 * time.Second)
	for stateOf("a") != "unhealthy" {
		if time.Now().After(deadline) {
			t.Fatalf("page never showed a unhealthy: %q", stateOf("a"))
		}
		if err := chromedp.Do(tctx, chromedp.Sleep(250*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	html, err := chromedp.Run(tctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "status-page.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	for _, want := range []string{"HTTP 500", "2/2", "*"} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(html, "ka") && strings.Contains(html, "api_key ka") {
		t.Fatal("secret on the page")
	}
	if p := problems(); len(p) > 0 {
		t.Fatalf("browser reported problems: %v", p)
	}
}

// browser starts a headless Chromium for one test: a context bounded to a
// minute, and what the page reported as errors or warnings so far.
func browser(t *testing.T, bin string) (context.Context, func() []string) {
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()))
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	var mu sync.Mutex
	var problems []string
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				problems = append(problems, "console "+string(ev.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				problems = append(problems, "log: "+ev.Entry.Text)
			}
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, listen); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(tcancel)
	return tctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

func TestStatusPageDrawsQuotaWindowsAndRecentMinutes(t *testing.T) {
	bin := chromiumBin(t)
	acct := newAccount(0.31)
	warn := newAccount(0)
	warn.window, warn.util = "7d", 0.95
	a, b := newMock(t, acct.behave), newMock(t, warn.behave)
	e := start(t, fmt.Sprintf("sticky 0\nprovider a {\nbase_url %s\nauth_token ta\n}\nprovider b {\nbase_url %s\nauth_token tb\n}\nroute warm-b {\nto b\n}\nroute * {\nto a\n}", a.URL, b.URL))
	for range 3 {
		e.messages(body("m", true))
	}
	e.messages(body("warm-b", true))
	ctx, problems := browser(t, bin)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.base+"/providers/"), chromedp.WaitVisible(chromedp.CSS("#providers"))); err != nil {
		t.Fatal(err)
	}
	read := func(js string) string {
		t.Helper()
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return out
	}
	// a's 5h window at 93%: a bar filled that far, in the warning colour.
	bar := read(`(() => { const f = document.querySelector('tr[data-provider="a"] .window[data-window="5h"] .fill');
		return f ? f.className + " " + f.style.width : "none" })()`)
	if !strings.HasPrefix(bar, "fill allowed_warning 93") {
		t.Fatalf("a's 5h bar: %q", bar)
	}
	win := read(`(() => { const w = document.querySelector('tr[data-provider="b"] .window[data-window="7d"]'); return w ? w.textContent : "none" })()`)
	if !strings.Contains(win, "95%") || !strings.Contains(win, "resets in") {
		t.Fatalf("b's 7d window: %q", win)
	}
	// The account's overage, as its answers gave it.
	if o := read(`(() => { const o = document.querySelector('tr[data-provider="a"] .overage'); return o ? o.textContent : "none" })()`); o != "overage rejected (org_level_disabled) · fallback 50%" {
		t.Fatalf("a's overage: %q", o)
	}
	// Three requests this minute: the requests chart has a bar, the time to
	// first token a line, the failures chart nothing.
	got := read(`(() => { const r = document.querySelector('tr[data-provider="a"] svg[data-chart="requests"]');
		const l = document.querySelector('tr[data-provider="a"] svg[data-chart="ttft"] circle');
		const f = document.querySelectorAll('tr[data-provider="a"] svg[data-chart="failures"] rect');
		return [r ? r.querySelectorAll('rect').length : -1, r ? r.getBoundingClientRect().width : 0, l ? 1 : 0, f.length].join(",") })()`)
	if got != "1,120,1,0" {
		t.Fatalf("a's charts (bars, width, line, failure bars): %q", got)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactDir(t), "status-page-quota.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if p := problems(); len(p) > 0 {
		t.Fatalf("browser reported problems: %v", p)
	}
}
