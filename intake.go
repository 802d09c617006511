package claudebalancer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
	"github.com/claude-balancer/caddy-claude-balancer/internal/decode"
	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
)

// readBody reads the request body once, under the size limit. It answers
// the client itself when it returns false.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	coding, err := decode.Coding(r.Header.Values("Content-Encoding"))
	if err != nil {
		apierr.Write(w, http.StatusUnsupportedMediaType, apierr.InvalidRequest, err.Error())
		return nil, false
	}
	if r.ContentLength > h.maxBody {
		apierr.Write(w, http.StatusRequestEntityTooLarge, apierr.RequestTooLarge,
			fmt.Sprintf("request body is larger than %d bytes", h.maxBody))
		return nil, false
	}
	if coding != "" {
		return h.readEncoded(w, r, coding)
	}
	// The buffer comes from a pool; serveMessages gives it back once the
	// attempt loop is over (see balancer.Request.Body).
	size := 32 << 10
	if r.ContentLength > 0 {
		size = int(r.ContentLength) + 1
	}
	buf := bufpool.Get(size)
	lr := http.MaxBytesReader(w, r.Body, h.maxBody)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				apierr.Write(w, http.StatusRequestEntityTooLarge, apierr.RequestTooLarge,
					fmt.Sprintf("request body is larger than %d bytes", h.maxBody))
				return nil, false
			}
			apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, "reading the request body failed: "+err.Error())
			return nil, false
		}
	}
}

// readEncoded reads and decodes a compressed body. The limit applies to the
// bytes as sent and, decisively, to the decoded body, which providers get
// without a Content-Encoding.
func (h *Handler) readEncoded(w http.ResponseWriter, r *http.Request, coding string) ([]byte, bool) {
	body, err := decode.Read(coding, http.MaxBytesReader(w, r.Body, h.maxBody), h.maxBody)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		r.Header.Del("Content-Encoding")
		return body, true
	case err == decode.ErrTooLarge, errors.As(err, &mbe):
		apierr.Write(w, http.StatusRequestEntityTooLarge, apierr.RequestTooLarge,
			fmt.Sprintf("request body is larger than %d bytes once decoded", h.maxBody))
	default:
		var ce *decode.CorruptError
		if !errors.As(err, &ce) {
			err = fmt.Errorf("reading the request body failed: %w", err)
		}
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, err.Error())
	}
	return nil, false
}

// admit checks who sent the request and reads the body. It answers the client
// itself when it returns false.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (who, []byte, bool) {
	sender, ok := h.authorizeClient(w, r)
	if !ok {
		return sender, nil, false
	}
	// What is open to local users without a key is closed to web pages: a
	// page can send text/plain anywhere without asking the browser first.
	if sender.local && !requireJSON(w, r) {
		return sender, nil, false
	}
	body, ok := h.readBody(w, r)
	return sender, body, ok
}

// upstreamHeader returns the client's headers for the providers: without
// the one that carried the client key (in a copy). The attempt loop never
// outlives the request it reads them from: a de-duplicated group's loop runs
// in its leader's handler.
func upstreamHeader(r *http.Request, keyHeader string) http.Header {
	if keyHeader == "" {
		return r.Header
	}
	hdr := r.Header.Clone()
	hdr.Del(keyHeader)
	return hdr
}

// peek finds what the balancer needs in a messages body and, with
// de-duplication on, prepares its place in de-duplication, in one walk
// (internal/intake): the body is signed later only if an identical-looking
// request is in flight. Whether a body is accepted never depends on
// de-duplication: both follow the module's one grammar.
func (h *Handler) peek(body []byte, r *http.Request, sender who) (balancer.Peek, dedup.Ticket, error) {
	// The walk skips the large values (tools, system) this client sent
	// before, and only those.
	owner := clientIdentity(r, sender)
	if h.dedupOff {
		p, _, err := intake.Read(body, intake.Options{Owner: owner})
		return p, dedup.Ticket{}, err
	}
	opt := intake.Options{Ignore: h.dedupIgnore, Identity: owner, Owner: owner,
		Beta: strings.Join(r.Header.Values("Anthropic-Beta"), ","), Sign: streamHint(body)}
	p, t, err := intake.Prepare(body, opt)
	if err == nil && p.Stream && !t.Signed() {
		// A stream may stay open for minutes: it is signed now, so that
		// its body need not be kept for an identical request to come.
		t.Key()
	}
	return p, t, err
}

// streamHint guesses, before the walk, whether a body asks for a stream, so
// that the walk signs a streaming request while it reads it: Claude Code and
// the SDKs write "stream":true last or first. A wrong guess costs a second
// walk or a signature nobody needed, never a wrong answer.
func streamHint(body []byte) bool {
	const stream = `"stream":true`
	return bytes.Contains(body[max(0, len(body)-48):], []byte(stream)) ||
		bytes.Contains(body[:min(len(body), 64)], []byte(stream))
}

// clientIdentity names who is asking, so that two clients never share an
// answer: a named client by its name (two keys of one person share answers),
// anyone else by the key that let them in; and everyone by the credential
// they would pass through.
func clientIdentity(r *http.Request, sender who) string {
	var id strings.Builder
	if sender.client != nil {
		id.WriteString("client\x00")
		id.WriteString(sender.client.Name)
	}
	id.WriteByte(0)
	for _, k := range []string{"X-Claude-Balancer-Key", "X-Api-Key", "Authorization"} {
		if sender.client == nil || k != sender.keyHeader {
			id.WriteString(r.Header.Get(k))
		}
		id.WriteByte(0)
	}
	sum := sha256.Sum256([]byte(id.String()))
	return string(sum[:])
}
