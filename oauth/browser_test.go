package oauth

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns the browser to drive, or "" when none is installed.
func chromium() string {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestLoginPageInChromium logs an account in the way a user does: open the
// page, follow the account's link to the authorize page, copy the code it
// shows, come back, paste it and submit.
func TestLoginPageInChromium(t *testing.T) {
	bin := chromium()
	if bin == "" {
		t.Skip("no chromium binary (Debian: apt-get install chromium)")
	}
	e := newEnv(t)
	e.m.SetAccounts([]string{me, "other@example.com"})
	site := httptest.NewServer(e.m.Handler("/oauth"))
	t.Cleanup(site.Close)

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// With the back/forward cache, a page restored by going back is
		// not reported to the driver as loaded.
		chromedp.Flag("disable-features", "BackForwardCache"),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	// The first action starts the browser, which lives as long as the
	// context of that call: the timeout goes on the later ones only.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	link := chromedp.CSS(`tr[data-account="me@example.com"] a.login`)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("open the page and follow the login link", chromedp.Do(tctx,
		chromedp.Navigate(site.URL+"/oauth/"),
		chromedp.WaitVisible(link),
		chromedp.Click(link),
		chromedp.WaitVisible(chromedp.CSS(`#auth-code`)),
	))
	code, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#auth-code`)))
	must("read the code", err)
	must("go back, paste the code and submit", chromedp.Do(tctx,
		chromedp.NavigateBack(),
		chromedp.WaitVisible(chromedp.CSS(`#code`)),
		chromedp.SendKeys(chromedp.CSS(`#code`), code),
		chromedp.Click(chromedp.CSS(`#submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#result`)),
	))
	result, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`#result`)))
	must("read the result", err)
	state, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`tr[data-account="me@example.com"] td.state`)))
	must("read the state", err)
	page, err := chromedp.Run(tctx, chromedp.OuterHTML(chromedp.CSS(`html`)))
	must("read the page", err)
	shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	must("screenshot", err)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "oauth-login.png"), shot, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", filepath.Join(dir, "oauth-login.png"), len(shot))

	if !strings.Contains(code, "#") {
		t.Fatalf("code read from the authorize page: %q", code)
	}
	if !strings.Contains(result, "me@example.com is logged in") || strings.TrimSpace(state) != "logged in" {
		t.Fatalf("result %q, state %q", result, state)
	}
	tok, err := e.m.Token(context.Background(), me)
	if err != nil {
		t.Fatalf("Token after the browser login: %v", err)
	}
	if strings.Contains(page, tok) {
		t.Fatal("the page shows the token")
	}
}
