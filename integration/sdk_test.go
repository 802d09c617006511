package integration

import (
	"context"
	"net/http"
	"os"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// The official SDK is a real client: if its accumulator cannot assemble what
// the balancer relays, the balancer is wrong.
func TestOfficialSDKThroughBalancer(t *testing.T) {
	fixture, err := os.ReadFile("../testdata/anthropic-stream-thinking-text-tool.sse")
	if err != nil {
		t.Fatal(err)
	}
	failing := newMock(t, errorStatus(529, "overloaded_error", "Overloaded"))
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if isStream(r) {
			writeSSE(w, readSSE(fixture))
			return
		}
		okJSON("plain answer")(w, r, n)
	})
	e := start(t, twoProviders(failing.URL, up.URL, "sticky 0"))
	client := anthropic.NewClient(option.WithBaseURL(e.base), option.WithAPIKey("sk-client"), option.WithMaxRetries(0))
	params := anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 1024,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("list the files"))},
	}

	msg, err := client.Messages.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "plain answer" || msg.Usage.OutputTokens != 3 {
		t.Fatalf("message: %+v", msg)
	}

	stream := client.Messages.NewStreaming(context.Background(), params)
	var acc anthropic.Message
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Content) != 3 {
		t.Fatalf("blocks: %d", len(acc.Content))
	}
	th, tx, tu := acc.Content[0], acc.Content[1], acc.Content[2]
	if th.Type != "thinking" || th.Signature == "" || th.Thinking != "The user wants the files listed. A shell command answers that." {
		t.Errorf("thinking block: %+v", th)
	}
	if tx.Type != "text" || tx.Text != "I'll list the files." {
		t.Errorf("text block: %+v", tx)
	}
	if tu.Type != "tool_use" || tu.Name != "Bash" || string(tu.Input) != `{"command": "ls -la", "description": "List files"}` {
		t.Errorf("tool_use block: %+v input %s", tu, tu.Input)
	}
	if acc.StopReason != "tool_use" || acc.Usage.OutputTokens != 89 || acc.Usage.CacheReadInputTokens != 24000 {
		t.Errorf("stop %q usage %+v", acc.StopReason, acc.Usage)
	}
	if failing.count() != 2 {
		t.Fatalf("the failing provider should have been tried first each time, got %d", failing.count())
	}
}
