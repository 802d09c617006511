// Package apierr writes errors in the Anthropic Messages API envelope:
// {"type":"error","error":{"type":"<type>","message":"<message>"}}.
// Every error the module answers a client of the Messages API with (the
// messages, count_tokens and models endpoints), in JSON or as an SSE frame,
// comes from here so that clients see one shape; the admin API answers in
// Caddy's own error shape.
package apierr

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Anthropic error types.
const (
	InvalidRequest  = "invalid_request_error"
	Authentication  = "authentication_error"
	Permission      = "permission_error"
	NotFound        = "not_found_error"
	RequestTooLarge = "request_too_large"
	RateLimit       = "rate_limit_error"
	API             = "api_error"
	Overloaded      = "overloaded_error"
	Timeout         = "timeout_error"
	Billing         = "billing_error"
)

// TypeForStatus returns the Anthropic error type the API uses for an HTTP status.
func TypeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusMethodNotAllowed,
		http.StatusUnsupportedMediaType:
		return InvalidRequest
	case http.StatusUnauthorized:
		return Authentication
	case http.StatusPaymentRequired:
		return Billing
	case http.StatusForbidden:
		return Permission
	case http.StatusNotFound:
		return NotFound
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return Timeout
	case http.StatusRequestEntityTooLarge:
		return RequestTooLarge
	case http.StatusTooManyRequests:
		return RateLimit
	case 529, http.StatusServiceUnavailable:
		return Overloaded
	}
	return API
}

// StatusForType returns the HTTP status the API uses for an error type; 500
// for types it does not know.
func StatusForType(errType string) int {
	switch errType {
	case InvalidRequest:
		return http.StatusBadRequest
	case Authentication:
		return http.StatusUnauthorized
	case Billing:
		return http.StatusPaymentRequired
	case Permission:
		return http.StatusForbidden
	case NotFound:
		return http.StatusNotFound
	case RequestTooLarge:
		return http.StatusRequestEntityTooLarge
	case RateLimit:
		return http.StatusTooManyRequests
	case Timeout:
		return http.StatusGatewayTimeout
	case Overloaded:
		return 529
	}
	return http.StatusInternalServerError
}

type envelope struct {
	Type  string `json:"type"`
	Error body   `json:"error"`
}

type body struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Body returns the JSON envelope for an error.
func Body(errType, message string) []byte {
	b, _ := json.Marshal(envelope{Type: "error", Error: body{Type: errType, Message: message}})
	return b
}

// Frame returns the error as a complete SSE event ("event: error"), the way
// the API ends a stream that fails after it started.
func Frame(errType, message string) []byte {
	b := Body(errType, message)
	out := make([]byte, 0, len(b)+24)
	out = append(out, "event: error\ndata: "...)
	out = append(out, b...)
	return append(out, '\n', '\n')
}

// Write answers w with the envelope, its status and a JSON content type.
func Write(w http.ResponseWriter, status int, errType, message string) {
	b := Body(errType, message)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Parse extracts the type and message of an Anthropic or OpenAI error body.
// It understands {"type":"error","error":{"type","message"}},
// {"error":{"message","type","code"}} and {"error":"text"}, and reports ok
// false when b holds none of them.
func Parse(b []byte) (errType, message string, ok bool) {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(b, &v) != nil || len(v.Error) == 0 || string(v.Error) == "null" {
		return "", "", false
	}
	var s string
	if json.Unmarshal(v.Error, &s) == nil {
		return "", s, true
	}
	var e struct {
		Type    string          `json:"type"`
		Message string          `json:"message"`
		Code    json.RawMessage `json:"code"`
	}
	if json.Unmarshal(v.Error, &e) != nil {
		return "", "", false
	}
	if e.Message == "" {
		e.Message = v.Message
	}
	return e.Type, e.Message, true
}
