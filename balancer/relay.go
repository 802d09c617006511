package balancer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// Bounds on reading what a provider sends after message_stop: the end of the
// response body, which lets the connection be used again.
const (
	maxDrainBytes = 64 << 10
	maxDrainTime  = 250 * time.Millisecond
)

// responseHeader builds the headers the client gets with a committed answer.
// An Anthropic provider's headers pass on, and its answer's header map,
// which nothing reads after the commit point, becomes the client's.
func responseHeader(p *Provider, upstream http.Header, stream bool) http.Header {
	var h http.Header
	if p.Type == TypeAnthropic {
		h = upstream
		if h == nil {
			h = make(http.Header, 4)
		}
		keepResponseHeaders(h)
	} else {
		h = make(http.Header, 4)
		for _, k := range []string{"X-Request-Id", "Retry-After"} {
			if v := upstream.Get(k); v != "" {
				h.Set(k, v)
			}
		}
	}
	if stream {
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("X-Claude-Balancer-Provider", p.Name)
	return h
}

// relayJSON reads a complete JSON answer and commits it.
func (c *call) relayJSON(resp *http.Response) *outcome {
	t0 := now()
	body, err := readBody(c.wd, resp.Body, resp.ContentLength, maxResponseBody)
	c.res.Upstream += now().Sub(t0)
	if err != nil {
		return c.failed(err, "reading the response failed: ")
	}
	top, ok := readAnswer(body)
	if !ok {
		return &outcome{scope: ScopeProvider, counted: true, status: resp.StatusCode,
			message: fmt.Sprintf("HTTP %d with a body that is not JSON: %q", resp.StatusCode, truncate(body, 120))}
	}
	if typ, msg, ok := top.errorInfo(c.cd, resp.StatusCode, body); ok {
		scope, status := c.b.classifyInBand(typ, body)
		if typ == "" {
			typ = apierr.TypeForStatus(status)
		}
		o := &outcome{scope: scope, counted: scope != ScopeRequest, status: status, errType: typ, body: body,
			header: resp.Header, message: fmt.Sprintf("HTTP %d with an error body: %s: %s", resp.StatusCode, typ, msg)}
		if scope == ScopeRequest {
			o.body = apierr.Body(typ, msg)
		}
		return o
	}
	answer, err := c.cd.json(body, c.req)
	if err != nil {
		var ie *inBandError
		if errors.As(err, &ie) {
			scope, status := c.b.classifyInBand(ie.errType, ie.body)
			return &outcome{scope: scope, counted: scope != ScopeRequest, status: status, errType: ie.errType, header: resp.Header,
				body: apierr.Body(ie.errType, ie.message), message: "HTTP 200 with an error body: " + ie.errType + ": " + ie.message}
		}
		return &outcome{scope: ScopeProvider, counted: true, status: resp.StatusCode, message: "converting the response failed: " + err.Error()}
	}
	h := responseHeader(c.p, resp.Header, false)
	h.Set("Content-Length", strconv.Itoa(len(answer)))
	if !sameBytes(answer, body) {
		// A converted answer is the module's own: read it again.
		top, _ = readAnswer(answer)
	}
	if rawjson.IsObject(top.usage) {
		c.res.Usage = anthropic.ReadUsage(top.usage)
	}
	c.res.StopReason = rawjson.Str(top.stopReason)
	if err := c.commit(resp.StatusCode, h, false); err != nil {
		return success
	}
	// The provider did its job even if the client left during the write.
	_ = c.out.Body(answer)
	return success
}

// answerTop is what the relay needs of a JSON answer's top level: its
// "error", "usage" and "stop_reason" members (the last of each, as JSON
// decoders read duplicates), nil when absent.
type answerTop struct {
	err, usage, stopReason []byte
}

// readAnswer validates a JSON answer and reads its top level, in one walk.
func readAnswer(body []byte) (answerTop, bool) {
	var top answerTop
	i := rawjson.SkipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return top, rawjson.Valid(body)
	}
	end, err := rawjson.Members(body, i, 0, func(key, v []byte) {
		switch {
		case rawjson.KeyIs(key, "error"):
			top.err = v
		case rawjson.KeyIs(key, "usage"):
			top.usage = v
		case rawjson.KeyIs(key, "stop_reason"):
			top.stopReason = v
		}
	})
	return top, err == nil && rawjson.SkipSpace(body, end) == len(body)
}

// errorInfo recognises a 2xx body that carries an error instead of an
// answer: only one with a top-level "error" member is decoded, as the codec
// reads errors.
func (t answerTop) errorInfo(cd codec, status int, body []byte) (string, string, bool) {
	if t.err == nil {
		return "", "", false
	}
	return cd.errorInfo(status, body)
}

// sameBytes reports whether a and b are the same bytes in memory.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// relayStream holds a stream's opening events until the first content event
// (the commit point), then relays everything as it arrives. Each event is
// read once, by the codec's decoder; what it learned travels with the
// event's bytes to the output.
func (c *call) relayStream(resp *http.Response) *outcome {
	idle := &idleReader{r: resp.Body, w: c.wd, spent: &c.res.Upstream}
	if c.conn != nil {
		idle.held = c.conn.EventAhead
	}
	rd := sse.NewReader(idle)
	defer rd.Release()
	dec := c.cd.stream(c.req)
	_, passthrough := dec.(*anthropicStream)
	// Events go on as read, each before the next is read: they need no
	// copy of their own, except the few held back before the commit point
	// (below). A decoder keeps nothing of an upstream event past its feed,
	// and the events it makes are lent until its next feed.
	rd.Borrow()
	var buf, held []relay.Event
	// next returns the events completed by the next upstream event(s);
	// io.EOF marks the clean end, after any closing events.
	streaming := false
	next := func() ([]relay.Event, error) {
		for {
			ev, err := rd.Next()
			if err == io.EOF {
				evs, cerr := dec.close(buf[:0])
				if cerr == nil {
					cerr = io.EOF
				}
				return evs, cerr
			}
			if err != nil {
				if err == io.ErrUnexpectedEOF {
					err = errTruncated
				}
				return nil, err
			}
			if !streaming {
				// The response has started; from now on silence is bounded
				// by the idle timeout.
				streaming = true
				c.wd.streaming()
			}
			evs, err := dec.feed(buf[:0], ev)
			buf = evs
			if err != nil || len(evs) > 0 {
				return evs, err
			}
		}
	}

	// Before the commit point: hold message_start and pings; an error event
	// or an early end fails over, invisibly to the client.
	var pendingErr error
	for committed := false; !committed; {
		evs, err := next()
		for i, ev := range evs {
			switch {
			case ev.Info.Type == anthropic.EventError:
				return c.failed(inBand(ev.Info, bytes.Clone(ev.Data)), "")
			case !ev.Info.Type.Content():
				held = append(held, ownEvent(ev))
				continue
			}
			for _, ev := range evs[i:] {
				held = append(held, ownEvent(ev))
			}
			committed = true
			break
		}
		if err != nil {
			if !committed {
				return c.failed(err, "reading the stream failed: ")
			}
			pendingErr = err
		}
	}

	res := c.res
	ttft := now().Sub(c.sent)
	res.TTFT = ttft
	c.p.observeLatency(ttft)
	c.p.state.stats.recordTTFT(ttft)
	// An open stream waits here for as long as it lasts: what it holds
	// meanwhile is made when needed.
	gone := func() *outcome { return &outcome{scope: ScopeClient, committed: true, message: "client went away"} }
	if err := c.commit(resp.StatusCode, responseHeader(c.p, resp.Header, true), true); err != nil {
		return gone()
	}
	// stopped is set by message_stop: the answer is complete, whether or not
	// the provider closes the connection.
	stopped := false
	// ahead reports that the connection has read ahead the end of an event:
	// reaching it needs no wait on the network, so what is written until
	// then may wait for it and go in the same flush. Without it (an
	// encrypted or multiplexed connection), only the events the reader
	// already holds count.
	ahead := func() bool { return c.conn != nil && c.conn.EventAhead() }
	// run gathers text and other deltas that came together, for one write:
	// a burst costs the output a write per batch, not per event. A delta
	// that comes alone is written as it is, without a copy.
	var run *[]byte
	flush := func(more bool) error {
		if run == nil {
			return nil
		}
		err := c.out.Event(relay.Event{Raw: *run, Info: anthropic.EventInfo{Type: anthropic.EventContentBlockDelta}}, more)
		*run = (*run)[:0]
		runPool.Put(run)
		run = nil
		return err
	}
	// gather hands on deltas (one, or a run read together): alone, as they
	// are; with more to come, into run, flushed when it would overflow and
	// when nothing more is ready.
	gather := func(span []byte, more bool) *outcome {
		if run == nil && !more {
			if c.out.Event(relay.Event{Raw: span, Info: anthropic.EventInfo{Type: anthropic.EventContentBlockDelta}}, false) != nil {
				return gone()
			}
			return nil
		}
		if run != nil && len(*run)+len(span) > runSize && flush(true) != nil {
			return gone()
		}
		if run == nil {
			run = runPool.Get().(*[]byte)
		}
		*run = append(*run, span...)
		if !more && flush(false) != nil {
			return gone()
		}
		return nil
	}
	write := func(evs []relay.Event) *outcome {
		if len(evs) == 0 {
			return nil
		}
		// A client slower than the provider holds the relay here; the
		// provider is not idle meanwhile (the watchdog only counts reads).
		for i := range evs {
			ev := &evs[i]
			info := &ev.Info
			switch info.Type {
			case anthropic.EventMessageStart, anthropic.EventMessageDelta:
				res.Usage.Merge(info.Usage)
				if info.StopReason != "" {
					res.StopReason = info.StopReason
				}
			case anthropic.EventMessageStop:
				stopped = true
			}
			// More is already here: the output may send it all with one
			// flush, which comes before the relay next waits on the network.
			more := i < len(evs)-1 || rd.Ready() || ahead()
			if info.Type == anthropic.EventContentBlockDelta {
				if o := gather(ev.Raw, more); o != nil {
					return o
				}
				continue
			}
			if flush(true) != nil || c.out.Event(*ev, more) != nil {
				return gone()
			}
			if info.Type == anthropic.EventError {
				ie := inBand(*info, ev.Data)
				res.StreamError = ie.Error()
				scope, _ := c.b.classifyInBand(ie.errType, ie.body)
				if scope == ScopeRequest {
					scope = ScopeProvider
				}
				return &outcome{scope: scope, counted: true, committed: true, message: "error event after the stream started: " + ie.message}
			}
		}
		return nil
	}
	if o := write(held); o != nil {
		return o
	}
	// Whatever ends the stream, deltas gathered are sent first.
	defer func() { _ = flush(false) }()
	for err := pendingErr; ; {
		if stopped {
			c.drain(rd)
			return success
		}
		if err == nil && passthrough {
			// Most of a burst: plain deltas, each checked once as a whole
			// and handed on together, without an event apiece.
			if span := rd.TakeWaiting(anthropic.PlainDeltas); span != nil {
				if o := gather(span, rd.Ready() || ahead()); o != nil {
					return o
				}
				continue
			}
		}
		if err == nil {
			var evs []relay.Event
			evs, err = next()
			if o := write(evs); o != nil {
				return o
			}
		}
		if err == nil {
			continue
		}
		if err == io.EOF {
			return success
		}
		o := c.failed(err, "reading the stream failed: ")
		o.committed = true
		if o.scope == ScopeClient {
			return o
		}
		if o.scope == ScopeRequest {
			o.scope = ScopeProvider
		}
		res.StreamError = o.message
		typ := apierr.API
		if o.errType == apierr.Timeout {
			typ = apierr.Timeout
		}
		if flush(true) == nil {
			_ = c.out.Event(errorEvent(typ, "the provider's stream failed: "+o.message), false)
		}
		return o
	}
}

// runSize bounds the deltas gathered for one write.
const runSize = 16 << 10

var runPool = sync.Pool{New: func() any { b := make([]byte, 0, runSize); return &b }}

// errorEvent is an error frame of this module's, as a relay event.
func errorEvent(typ, message string) relay.Event {
	raw := apierr.Frame(typ, message)
	return relay.Event{Raw: raw, Info: anthropic.EventInfo{Type: anthropic.EventError, ErrorType: typ, ErrorMessage: message}}
}

// drain reads what a provider sends after message_stop, up to the end of the
// response body, so that its connection can carry the next request: a body
// closed before its end takes the connection with it. It is bounded in bytes
// and time; a provider that keeps the stream open after message_stop loses
// its connection instead.
func (c *call) drain(rd *sse.Reader) {
	c.wd.drain(maxDrainTime)
	_, _ = io.CopyN(io.Discard, rd, maxDrainBytes)
}

// readBody reads a response body of the given size (-1 when unknown) under
// the watchdog and a size limit.
func readBody(wd *watchdog, r io.Reader, size, limit int64) ([]byte, error) {
	wd.streaming()
	ir := &idleReader{r: io.LimitReader(r, limit+1), w: wd}
	b, err := readAll(ir, min(size, limit))
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("response body larger than %d bytes", limit)
	}
	return b, err
}

// readAll is io.ReadAll into a buffer made for size bytes (the answer's
// Content-Length, -1 when unknown): an answer of a known length is read into
// one allocation instead of a series of growing ones.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size < 0 || size > maxPresize {
		return io.ReadAll(r)
	}
	// One byte more, so that the end is seen without growing.
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// maxPresize bounds what readAll makes ahead on a provider's word.
const maxPresize = 1 << 20

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// ownEvent returns an event whose bytes are its own, for one kept while the
// stream reader moves on.
func ownEvent(ev relay.Event) relay.Event {
	raw := bytes.Clone(ev.Raw)
	if ev.Data != nil {
		if i := bytes.Index(ev.Raw, ev.Data); i >= 0 && len(ev.Data) > 0 {
			ev.Data = raw[i : i+len(ev.Data) : i+len(ev.Data)]
		} else {
			ev.Data = bytes.Clone(ev.Data)
		}
	}
	ev.Raw = raw
	return ev
}
