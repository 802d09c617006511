package balancer

import (
	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Peek holds what the balancer needs from a Messages request body, found at
// intake (see internal/intake).
type Peek = intake.Peek

// BodyError is a request body the balancer cannot accept.
type BodyError = intake.Error

// PeekBody validates a body and peeks at it, without signing it.
func PeekBody(body []byte) (Peek, error) {
	p, _, err := intake.Read(body, intake.Options{})
	return p, err
}

// findTopLevel returns the raw value of a top-level member of a JSON object,
// or nil. It never fails on broken input: it reads what it can.
func findTopLevel(body []byte, key string) []byte { return rawjson.Field(body, key) }
