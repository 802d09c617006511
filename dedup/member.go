package dedup

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

const tooSlowMessage = "client too slow: it fell too far behind the response shared with identical requests"

var tooSlowFrame = apierr.Frame(apierr.Overloaded, tooSlowMessage)

// serve sends the group's answer to one member's client, in the client's own
// mode, from the calling (the client's own) goroutine. gaveUp reports that a
// joiner stopped waiting for a silent leader; it has left the group and
// should lead a fresh one.
func (g *group) serve(w http.ResponseWriter, req *http.Request, m *member, stream bool, role Role) (res Result, gaveUp bool) {
	res.Role = role
	var delivered int64
	defer func() {
		if g.state.Load().done {
			res.Kept = g.keptValue()
		}
		g.leave(m, delivered)
	}()
	ctx := req.Context()

	s, gaveUp, err := g.awaitCommit(ctx, role)
	if gaveUp || err != nil {
		res.Err = err
		return res, gaveUp
	}
	if !s.committed {
		g.sendFailure(w, s, &res)
		delivered = 1
		return res, false
	}
	res.Header = g.header
	switch {
	case g.stream && stream:
		delivered = g.sendStream(ctx, w, m, &res)
	case g.stream:
		delivered = g.sendAssembled(ctx, w, m, &res)
	case stream:
		delivered = g.sendSynthesized(ctx, w, &res)
	default:
		delivered = g.sendBody(ctx, w, &res)
	}
	return res, false
}

// awaitCommit waits until the group has committed to an answer or ended. A
// joiner waits at most Options.Wait.
func (g *group) awaitCommit(ctx context.Context, role Role) (s *state, gaveUp bool, err error) {
	s = g.state.Load()
	if s.committed || s.done {
		return s, false, nil
	}
	var expired chan struct{}
	if role == Joined {
		expired = make(chan struct{})
		stop := g.reg.clock.AfterFunc(g.opts.Wait, func() { close(expired) })
		defer stop()
	}
	for {
		select {
		case <-g.changed(s):
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-expired:
			if s = g.state.Load(); s.committed || s.done {
				return s, false, nil
			}
			return nil, true, nil
		}
		if s = g.state.Load(); s.committed || s.done {
			return s, false, nil
		}
	}
}

// awaitDone waits until the run has ended.
func (g *group) awaitDone(ctx context.Context) (*state, error) {
	for {
		s := g.state.Load()
		if s.done {
			return s, nil
		}
		select {
		case <-g.changed(s):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (g *group) sendFailure(w http.ResponseWriter, s *state, res *Result) {
	s.failure.WriteTo(w)
	res.Failure, res.Err = s.failure, s.runErr
	res.Header = nil
	res.Status, res.Bytes = s.failure.Status, int64(len(s.failure.Body))
}

// sendStream relays the group's event stream as it grows: everything so far,
// then each chunk as it is published, flushing after every batch.
func (g *group) sendStream(ctx context.Context, w http.ResponseWriter, m *member, res *Result) (delivered int64) {
	return g.streamFrom(ctx, w, http.NewResponseController(w), m, false, 0, res)
}

// startStream writes the stream's status and headers. They go to the
// client with the first chunks, in the flush that follows them: a committed
// stream has its first events at once. (Serialising the headers then
// happens deeper in the leader's stack than at the commit point; the frames
// on the way are kept small for it, see TestIdleStreamMemory.)
func (g *group) startStream(w http.ResponseWriter, res *Result) {
	h := w.Header()
	copyHeader(h, g.header)
	h.Del("Content-Length")
	w.WriteHeader(g.status)
	res.Status = g.status
}

// streamFrom relays the stream from chunk pos on, its headers first unless
// started.
func (g *group) streamFrom(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, m *member, started bool, pos int64, res *Result) (delivered int64) {
	if !started {
		g.startStream(w, res)
	}
	for {
		s := g.state.Load()
		if m.dropped.Load() || pos < s.base {
			g.reg.slow.Add(1)
			n, _ := w.Write(tooSlowFrame)
			res.Bytes += int64(n)
			_ = flush(rc)
			res.Err = ErrTooSlow
			return delivered
		}
		if end := s.base + int64(len(s.chunks)); pos < end {
			for _, c := range s.chunks[pos-s.base:] {
				n, err := w.Write(c.data)
				res.Bytes += int64(n)
				if err != nil {
					res.Err = err
					return delivered
				}
				delivered++
			}
			pos = end
			m.pos.Store(pos)
			if err := flush(rc); err != nil {
				res.Err = err
				return delivered
			}
			continue
		}
		if s.done {
			res.Err = s.runErr
			return delivered
		}
		select {
		case <-g.changed(s):
		case <-ctx.Done():
			res.Err = ctx.Err()
			return delivered
		}
	}
}

// sendAssembled folds the group's event stream into a message as it grows and
// answers with the message JSON once the stream ends. A stream that ended
// with an error frame is answered with that error.
func (g *group) sendAssembled(ctx context.Context, w http.ResponseWriter, m *member, res *Result) (delivered int64) {
	var (
		acc    anthropic.Accumulator
		accErr error
		pos    int64
	)
	add := func(name, data []byte) error { return acc.Add(string(name), data) }
	for {
		s := g.state.Load()
		if m.dropped.Load() || pos < s.base {
			g.reg.slow.Add(1)
			writeError(w, g.header, apierr.StatusForType(apierr.Overloaded), apierr.Overloaded, tooSlowMessage, res)
			res.Err = ErrTooSlow
			return 0
		}
		if end := s.base + int64(len(s.chunks)); pos < end {
			if accErr == nil {
				for _, c := range s.chunks[pos-s.base:] {
					if accErr = eachEvent(c.data, add); accErr != nil {
						break
					}
				}
			}
			pos = end
			m.pos.Store(pos)
			continue
		}
		if s.done {
			res.Err = s.runErr
			break
		}
		select {
		case <-g.changed(s):
		case <-ctx.Done():
			res.Err = ctx.Err()
			return 0
		}
	}
	msg, err := acc.Message()
	if accErr != nil {
		err = accErr
	}
	var se *anthropic.StreamError
	switch {
	case errors.As(err, &se):
		writeError(w, g.header, apierr.StatusForType(se.Type), se.Type, se.Message, res)
	case err != nil:
		writeError(w, g.header, http.StatusBadGateway, apierr.API, "the streamed response could not be assembled into a message: "+err.Error(), res)
	default:
		writeJSON(w, g.header, g.status, msg, res)
	}
	return 1
}

// sendSynthesized answers a streaming client of a JSON group with the event
// stream of the message, once the message is complete.
func (g *group) sendSynthesized(ctx context.Context, w http.ResponseWriter, res *Result) (delivered int64) {
	s, err := g.awaitDone(ctx)
	if err != nil {
		res.Err = err
		return 0
	}
	res.Err = s.runErr
	if s.failure != nil {
		g.sendFailure(w, s, res)
		return 1
	}
	if g.status < 200 || g.status > 299 {
		// An error answer is JSON in both modes, as the API sends it.
		writeJSON(w, g.header, g.status, g.jsonBody(s), res)
		return 1
	}
	events, err := g.synthesized(s)
	if err != nil {
		writeError(w, g.header, http.StatusBadGateway, apierr.API, "the response could not be converted to an event stream: "+err.Error(), res)
		return 1
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	copyHeader(h, g.header)
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Del("Content-Length")
	w.WriteHeader(g.status)
	res.Status = g.status
	for _, ev := range events {
		n, err := w.Write(ev)
		res.Bytes += int64(n)
		if err != nil {
			res.Err = err
			return delivered
		}
		delivered++
	}
	if err := flush(rc); err != nil {
		res.Err = err
	}
	return delivered
}

// sendBody answers a JSON client of a JSON group once the body is complete.
func (g *group) sendBody(ctx context.Context, w http.ResponseWriter, res *Result) (delivered int64) {
	s, err := g.awaitDone(ctx)
	if err != nil {
		res.Err = err
		return 0
	}
	return g.sendDone(w, s, res)
}

// sendDone answers a JSON client from the final state of a JSON group.
func (g *group) sendDone(w http.ResponseWriter, s *state, res *Result) (delivered int64) {
	res.Err = s.runErr
	if s.failure != nil {
		g.sendFailure(w, s, res)
		return 1
	}
	writeJSON(w, g.header, g.status, g.jsonBody(s), res)
	return 1
}

func writeJSON(w http.ResponseWriter, header http.Header, status int, body []byte, res *Result) {
	h := w.Header()
	copyHeader(h, header)
	// The keys are canonical as written.
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	n, err := w.Write(body)
	res.Status, res.Bytes = status, int64(n)
	if err != nil {
		res.Err = err
	}
}

func writeError(w http.ResponseWriter, header http.Header, status int, errType, message string, res *Result) {
	writeJSON(w, header, status, apierr.Body(errType, message), res)
}

// copyHeader adds src to dst. Value slices are shared: nothing downstream
// modifies a header value in place.
func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

func flush(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// eachEvent calls fn for every event in raw, complete SSE events as the
// attempt loop writes them, with the value of the event's "event:" field (nil
// when it has none) and its data.
func eachEvent(raw []byte, fn func(name, data []byte) error) error {
	var (
		name, data           []byte
		has, dataSeen, multi bool
	)
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			if has {
				if err := fn(name, data); err != nil {
					return err
				}
			}
			name, data, has, dataSeen, multi = nil, nil, false, false, false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte{' '})
		}
		switch string(field) {
		case "event":
			name, has = value, true
		case "data":
			switch {
			case !dataSeen:
				data, dataSeen = value, true
			case !multi:
				data = append(append(append([]byte(nil), data...), '\n'), value...)
				multi = true
			default:
				data = append(append(data, '\n'), value...)
			}
			has = true
		}
	}
	if has {
		return fn(name, data)
	}
	return nil
}
