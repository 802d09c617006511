package convert

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

func TestErrorFromOpenAI(t *testing.T) {
	for _, c := range []struct {
		name    string
		status  int
		body    string
		errType string
		message string
	}{
		{"OpenAI 401", 401, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, apierr.Authentication, "Incorrect API key provided"},
		{"rate limit", 429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, apierr.RateLimit, "Rate limit reached"},
		{"quota is billing", 429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`, apierr.Billing, "You exceeded your current quota"},
		{"OpenRouter credits", 402, `{"error":{"code":402,"message":"Insufficient credits"}}`, apierr.Billing, "Insufficient credits"},
		{"forbidden", 403, `{"error":{"message":"flagged"}}`, apierr.Permission, "flagged"},
		{"unknown model", 404, `{"error":{"message":"The model does not exist"}}`, apierr.NotFound, "The model does not exist"},
		{"overloaded", 503, `{"error":{"message":"No instances available"}}`, apierr.Overloaded, "No instances available"},
		{"server error text", 500, `Internal Server Error`, apierr.API, "Internal Server Error"},
		{"empty body", 502, ``, apierr.API, "Bad Gateway"},
		{"plain string error", 400, `{"error":"bad things"}`, apierr.InvalidRequest, "bad things"},
		{"vLLM", 400, `{"object":"error","message":"temperature must be positive","type":"BadRequestError","param":null,"code":400}`, apierr.InvalidRequest, "temperature must be positive"},
		{"FastAPI detail", 422, `{"detail":[{"loc":["body","messages"],"msg":"field required","type":"missing"}]}`, apierr.InvalidRequest, "field required"},
		{"Gemini list", 400, `[{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}]`, apierr.InvalidRequest, "Invalid JSON payload"},
		{"OpenAI context length", 400, `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`, apierr.InvalidRequest, "prompt is too long: 130532 tokens > 128000 maximum"},
		{"vLLM context length", 400, `{"object":"error","message":"This model's maximum context length is 32768 tokens. However, you requested 40000 tokens (38000 in the messages, 2000 in the completion).","type":"BadRequestError","code":400}`, apierr.InvalidRequest, "prompt is too long: 40000 tokens > 32768 maximum"},
		{"other context wording", 413, `{"error":{"message":"Input is too long for requested model."}}`, apierr.InvalidRequest, "prompt is too long: Input is too long for requested model."},
		{"error body with 200", 200, `{"error":{"message":"upstream timeout","code":408}}`, apierr.Timeout, "upstream timeout"},
		{"long text cut", 500, strings.Repeat("x", 2000), apierr.API, strings.Repeat("x", maxErrorText) + "..."},
	} {
		t.Run(c.name, func(t *testing.T) {
			errType, msg := ErrorFromOpenAI(c.status, []byte(c.body))
			if errType != c.errType || msg != c.message {
				t.Fatalf("got %s %q, want %s %q", errType, msg, c.errType, c.message)
			}
			var env map[string]any
			if err := json.Unmarshal(apierr.Body(errType, msg), &env); err != nil {
				t.Fatal(err)
			}
		})
	}
}
