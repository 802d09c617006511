package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The token requests are written here rather than with oauth2.Config.Exchange
// and its TokenSource: those always send form-encoded bodies, while Claude
// Code (and the original service) send JSON to Claude's token endpoint, with a
// `state` field in the code exchange that oauth2 has no place for. The body
// encoding stays configurable (Config.TokenFormat) because the endpoint is not
// a documented API.

// browserUserAgent is what the original sent to the token endpoint, which sits
// behind a bot filter.
const browserUserAgent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// maxTokenBody bounds what is read from the token endpoint.
const maxTokenBody = 1 << 20

// tokenResponse is the token endpoint's success answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	Account      struct {
		Email string `json:"email_address"`
	} `json:"account"`
}

// tokenError is a refusal by the token endpoint.
type tokenError struct {
	Status      int
	Code        string // the OAuth "error" field, e.g. invalid_grant
	Description string
	RetryAfter  time.Duration
}

func (e *tokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint answered %d", e.Status)
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	return b.String()
}

// permanent reports whether asking again with the same grant cannot help:
// the code or refresh token was refused.
func (e *tokenError) permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout &&
		e.Status != http.StatusTooManyRequests
}

// tokenCall posts one grant to the token endpoint.
func (m *Manager) tokenCall(ctx context.Context, cfg Config, client *http.Client, fields [][2]string, browser bool) (*tokenResponse, error) {
	var body []byte
	var ctype string
	if cfg.TokenFormat == FormatForm {
		v := make(url.Values, len(fields))
		for _, f := range fields {
			v.Set(f[0], f[1])
		}
		body, ctype = []byte(v.Encode()), "application/x-www-form-urlencoded"
	} else {
		obj := make(map[string]string, len(fields))
		for _, f := range fields {
			obj[f[0]] = f[1]
		}
		body, _ = json.Marshal(obj)
		ctype = "application/json"
	}
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.TokenURL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept", "application/json, text/plain, */*")
	req.Header.Set("User-Agent", browserUserAgent)
	if browser {
		req.Header.Set("Accept-Language", "en-US,en;q=0.9")
		req.Header.Set("Referer", "https://claude.ai/")
		req.Header.Set("Origin", "https://claude.ai")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))
	if err != nil {
		return nil, fmt.Errorf("token endpoint: read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := m.refusal(resp, raw)
		// The refusal is logged and shown; it must not carry the secrets
		// of the request back.
		for _, f := range fields {
			if len(f[1]) >= 8 && (f[0] == "refresh_token" || f[0] == "code" || f[0] == "code_verifier") {
				e.Description = strings.ReplaceAll(e.Description, f[1], mask(f[1]))
			}
		}
		return nil, e
	}
	var tr tokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil {
		return nil, fmt.Errorf("token endpoint: decode answer: %w", err)
	}
	if tr.AccessToken == "" {
		return nil, fmt.Errorf("token endpoint: answer has no access_token")
	}
	return &tr, nil
}

// refusal turns a non-2xx answer into a tokenError with a short, printable
// description (Cloudflare answers with whole HTML pages).
func (m *Manager) refusal(resp *http.Response, raw []byte) *tokenError {
	e := &tokenError{Status: resp.StatusCode, RetryAfter: m.retryAfter(resp.Header.Get("Retry-After"))}
	var v struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(raw, &v) == nil && len(v.Error) > 0 {
		var code string
		if json.Unmarshal(v.Error, &code) == nil {
			e.Code, e.Description = code, v.Description
		} else {
			var obj struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(v.Error, &obj)
			e.Code, e.Description = obj.Type, obj.Message
		}
	} else if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/plain") {
		e.Description = string(raw)
	}
	e.Description = shorten(strings.TrimSpace(e.Description), 200)
	return e
}

// retryAfter parses a Retry-After value (seconds or an HTTP date).
func (m *Manager) retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return max(time.Duration(s)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(m.now()), 0)
	}
	return 0
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
