// Package relay defines how a committed upstream response travels to its
// readers: the attempt loop writes into an Output, which is either one
// client's ResponseWriter or a de-duplication group shared by several clients.
package relay

import (
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

// Output receives a response once the attempt loop has committed to it.
type Output interface {
	// Start is called once, at the commit point, with the status and headers
	// to send. stream reports whether the body is an SSE event stream (each
	// Write is one complete event) or a JSON body (written in one Write).
	Start(status int, header http.Header, stream bool) error
	// Write delivers one chunk. An error means nobody reads any more (the
	// client left); the caller stops and cancels its upstream call.
	Write(p []byte) error
}

// Batcher is implemented by outputs that can hold SSE events back until a
// flush: a relay that already holds the next event need not flush each one
// separately, but must flush before it waits for more.
type Batcher interface {
	// WriteBuffered writes p without flushing it.
	WriteBuffered(p []byte) error
	// Flush sends what was written.
	Flush() error
}

// Failure is an error response decided before the commit point: nothing has
// been written yet, so it can be sent as an ordinary response.
type Failure struct {
	Status int
	Header http.Header
	Body   []byte
}

// NewFailure returns a Failure carrying an Anthropic error envelope.
func NewFailure(status int, errType, message string) *Failure {
	return &Failure{Status: status, Body: apierr.Body(errType, message)}
}

// WriteTo sends the failure as a JSON response.
func (f *Failure) WriteTo(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range f.Header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(f.Body)))
	w.WriteHeader(f.Status)
	_, _ = w.Write(f.Body)
}

// Message returns the error message inside the failure's envelope.
func (f *Failure) Message() string {
	_, msg, _ := apierr.Parse(f.Body)
	return msg
}

// ClientOutput writes straight to one client, flushing every SSE event as it
// is written.
type ClientOutput struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	stream bool
	// Started reports whether Start ran.
	Started bool
	// Status is the status sent by Start.
	Status int
	// Bytes counts body bytes written.
	Bytes int64
}

// NewClientOutput returns an Output writing to w.
func NewClientOutput(w http.ResponseWriter) *ClientOutput {
	return &ClientOutput{w: w, rc: http.NewResponseController(w)}
}

// Start implements Output.
func (c *ClientOutput) Start(status int, header http.Header, stream bool) error {
	h := c.w.Header()
	for k, v := range header {
		h[k] = v
	}
	c.stream = stream
	c.Started = true
	c.Status = status
	c.w.WriteHeader(status)
	if stream {
		// Let the client see the headers now, as the API does.
		return c.rc.Flush()
	}
	return nil
}

// Write implements Output.
func (c *ClientOutput) Write(p []byte) error {
	n, err := c.w.Write(p)
	c.Bytes += int64(n)
	if err != nil {
		return err
	}
	if c.stream {
		return c.rc.Flush()
	}
	return nil
}

// WriteBuffered implements Batcher.
func (c *ClientOutput) WriteBuffered(p []byte) error {
	n, err := c.w.Write(p)
	c.Bytes += int64(n)
	return err
}

// Flush implements Batcher.
func (c *ClientOutput) Flush() error { return c.rc.Flush() }

// Interface guards
var (
	_ Output  = (*ClientOutput)(nil)
	_ Batcher = (*ClientOutput)(nil)
)
