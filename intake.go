package claudebalancer

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/dedup"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
)

// readBody reads the request body once, under the size limit. It answers
// the client itself when it returns false.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > h.maxBody {
		apierr.Write(w, http.StatusRequestEntityTooLarge, apierr.RequestTooLarge,
			fmt.Sprintf("request body is larger than %d bytes", h.maxBody))
		return nil, false
	}
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, 0, r.ContentLength+1)
	} else {
		buf = make([]byte, 0, 32<<10)
	}
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

// admit checks who sent the request and reads the body. It answers the client
// itself when it returns false.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (keyHeader string, body []byte, ok bool) {
	keyHeader, local, ok := h.authorizeClient(w, r)
	if !ok {
		return "", nil, false
	}
	// What is open to local users without a key is closed to web pages: a
	// page can send text/plain anywhere without asking the browser first.
	if local && !requireJSON(w, r) {
		return "", nil, false
	}
	body, ok = h.readBody(w, r)
	return keyHeader, body, ok
}

// upstreamHeader returns the client's headers for the providers: without
// the one that carried the client key, and a copy when clone is set (for
// attempt loops that may outlive the request).
func upstreamHeader(r *http.Request, keyHeader string, clone bool) http.Header {
	if keyHeader == "" && !clone {
		return r.Header
	}
	hdr := r.Header.Clone()
	hdr.Del(keyHeader)
	return hdr
}

// peek finds what the balancer needs in a messages body and, with
// de-duplication on, signs it, in one walk (internal/intake). Whether a body is
// accepted never depends on de-duplication: both follow the module's one
// grammar.
func (h *Handler) peek(body []byte, r *http.Request) (balancer.Peek, dedup.Key, error) {
	opt := intake.Options{Sign: !h.dedupOff}
	if opt.Sign {
		opt.Ignore, opt.Identity, opt.Beta = h.dedupIgnore, clientIdentity(r), strings.Join(r.Header.Values("Anthropic-Beta"), ",")
	}
	return intake.Read(body, opt)
}
