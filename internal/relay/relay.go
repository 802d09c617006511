// Package relay defines how a committed upstream response travels to its
// readers: the attempt loop writes into an Output: one client's
// ResponseWriter, a de-duplication group shared by several clients, or a
// provider check's probe. A stream travels as events, each with what the
// relay learned when it read it, so that passing one on needs no second
// parse (a client that asked for JSON from a stream reads the events again
// to build its answer).
package relay

import (
	"net/http"
	"strconv"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

// Event is one complete SSE event of an Anthropic stream, or a run of
// content_block_delta events that came together, which the relay hands on
// in one piece so that a burst costs one write per run.
type Event struct {
	// Raw is the event's bytes, blank line included (a run's: all of its
	// events'). It is valid only during the call that delivers it.
	Raw []byte
	// Data is the event's data, within Raw when it has one data line; nil
	// for a run.
	Data []byte
	// Info is what the relay learned reading it; a run's type is
	// content_block_delta.
	Info anthropic.EventInfo
}

// Output receives a response once the attempt loop has committed to it.
type Output interface {
	// Start is called once, at the commit point, with the status and headers
	// to send; the header is the output's from then on, and the caller does
	// not touch it again. stream reports whether the body is an SSE event
	// stream (delivered with Event) or a JSON body (delivered with Body).
	// A stream's first events follow at once, so an output may leave its
	// headers for the flush after them, in the same write.
	Start(status int, header http.Header, stream bool) error
	// Body delivers a whole JSON body. An error means nobody reads any more
	// (the client left); the caller stops and cancels its upstream call.
	Body(p []byte) error
	// Event delivers one event of a stream. more reports that the relay
	// already holds the next one: the output may hold this one back until a
	// call without more, so that a burst costs one flush, not one per event.
	Event(ev Event, more bool) error
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

// ClientOutput writes straight to one client.
type ClientOutput struct {
	w  http.ResponseWriter
	rc *http.ResponseController
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
	c.Started = true
	c.Status = status
	c.w.WriteHeader(status)
	return nil
}

// Body implements Output.
func (c *ClientOutput) Body(p []byte) error {
	n, err := c.w.Write(p)
	c.Bytes += int64(n)
	return err
}

// Event implements Output.
func (c *ClientOutput) Event(ev Event, more bool) error {
	n, err := c.w.Write(ev.Raw)
	c.Bytes += int64(n)
	if err != nil || more {
		return err
	}
	return c.rc.Flush()
}

// Interface guards
var _ Output = (*ClientOutput)(nil)
