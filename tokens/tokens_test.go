package tokens

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/pkoukk/tiktoken-go"
)

// oracle counts text with tiktoken-go itself, independently of the encoder under test.
func oracle(t testing.TB, texts ...string) int {
	t.Helper()
	tk := tiktokenCL100K(t)
	n := 0
	for _, s := range texts {
		n += len(tk.EncodeOrdinary(s))
	}
	return n
}

func pngBase64(t testing.TB, w, h int) string {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func jpegBase64(t testing.TB, w, h int) string {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewRGBA(image.Rect(0, 0, w, h)), nil); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func gifBase64(t testing.TB, w, h int) string {
	t.Helper()
	var buf bytes.Buffer
	img := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.Black, color.White})
	if err := gif.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// pdfBase64 is a minimal PDF with the given number of page objects.
func pdfBase64(pages int) string {
	var b strings.Builder
	b.WriteString("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Count 2 >> endobj\n")
	for i := range pages {
		fmt.Fprintf(&b, "%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n", i+3)
	}
	b.WriteString("%%EOF\n")
	return base64.StdEncoding.EncodeToString([]byte(b.String()))
}

func request(messages string, extra ...string) []byte {
	s := `{"model":"claude-sonnet-4-6","max_tokens":1024,"messages":` + messages
	for _, e := range extra {
		s += "," + e
	}
	return []byte(s + "}")
}

func userBlocks(blocks ...string) string {
	return `[{"role":"user","content":[` + strings.Join(blocks, ",") + `]}]`
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestCountEachBlockType checks every kind of content against its hand-derived count: the tiktoken-go count of
// the text the block contributes plus the documented fixed costs. Calibration 1 keeps the arithmetic plain.
func TestCountEachBlockType(t *testing.T) {
	c := mustCounter(t, Options{Calibration: 1})
	one := requestOverhead + messageOverhead // a request with one message
	schema := `{"type":"object","properties":{"city":{"type":"string","description":"City name"}},"required":["city"]}`
	prettySchema := "{\n  \"type\": \"object\",\n  \"properties\": {}\n}"
	tests := []struct {
		name  string
		body  []byte
		texts []string
		fixed int
	}{
		{"string content", request(`[{"role":"user","content":"Hello, world"}]`), []string{"Hello, world"}, one},
		{"text blocks", request(userBlocks(`{"type":"text","text":"first part"}`, `{"type":"text","text":" second part","cache_control":{"type":"ephemeral"}}`)),
			[]string{"first part", " second part"}, one},
		{"several messages", request(`[{"role":"user","content":"Hi"},{"role":"assistant","content":[{"type":"text","text":"Hello!"}]},{"role":"user","content":"Bye"}]`),
			[]string{"Hi", "Hello!", "Bye"}, requestOverhead + 3*messageOverhead},
		{"escapes decoded", request(`[{"role":"user","content":"line\none \"quoted\" caf\u00e9 \ud83d\ude00 \/"}]`),
			[]string{"line\none \"quoted\" café 😀 /"}, one},
		{"system string", request(`[{"role":"user","content":"Hi"}]`, `"system":"You are a scientist"`),
			[]string{"Hi", "You are a scientist"}, one},
		{"system blocks", request(`[{"role":"user","content":"Hi"}]`, `"system":[{"type":"text","text":"Be brief."},{"type":"text","text":"Use Go.","cache_control":{"type":"ephemeral"}}]`),
			[]string{"Hi", "Be brief.", "Use Go."}, one},
		{"null system", request(`[{"role":"user","content":"Hi"}]`, `"system":null`), []string{"Hi"}, one},
		{"tool use counts name and compact input", request(`[{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"Bash","input":{ "command" : "ls -la" }}]}]`),
			[]string{"Bash", `{"command":"ls -la"}`}, one + toolUseOverhead},
		{"tool result string", request(userBlocks(`{"type":"tool_result","tool_use_id":"toolu_01","content":"total 8\ndrwxr-xr-x 2 dev dev 4096 ."}`)),
			[]string{"total 8\ndrwxr-xr-x 2 dev dev 4096 ."}, one + toolResultOverhead},
		{"tool result blocks with image", request(userBlocks(`{"type":"tool_result","tool_use_id":"toolu_01","is_error":false,"content":[{"type":"text","text":"screenshot:"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + pngBase64(t, 300, 250) + `"}}]}`)),
			[]string{"screenshot:"}, one + toolResultOverhead + 100},
		{"thinking text, not its signature", request(`[{"role":"assistant","content":[{"type":"thinking","thinking":"Let me think about it.","signature":"EqQBCkYIBxgC"},{"type":"text","text":"Done."}]}]`),
			[]string{"Let me think about it.", "Done."}, one},
		{"redacted thinking by payload size", request(`[{"role":"assistant","content":[{"type":"redacted_thinking","data":"` + strings.Repeat("A", 400) + `"}]}]`),
			nil, one + 100},
		{"image by pixel size", request(userBlocks(`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + pngBase64(t, 200, 100) + `"}}`)),
			nil, one + 27},
		{"image by url", request(userBlocks(`{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}`)),
			nil, one + DefaultImageMaxTokens},
		{"image that does not decode", request(userBlocks(`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"bm90IGFuIGltYWdl"}}`)),
			nil, one + DefaultImageMaxTokens},
		{"text document with title", request(userBlocks(`{"type":"document","source":{"type":"text","media_type":"text/plain","data":"The grass is green."},"title":"Facts","context":"from a book","citations":{"enabled":true}}`)),
			[]string{"The grass is green.", "Facts", "from a book"}, one},
		{"content document", request(userBlocks(`{"type":"document","source":{"type":"content","content":[{"type":"text","text":"Chunk one."},{"type":"text","text":"Chunk two."}]}}`)),
			[]string{"Chunk one.", "Chunk two."}, one},
		{"pdf document by page", request(userBlocks(`{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"` + pdfBase64(2) + `"}}`)),
			nil, one + 2*DefaultDocumentPageTokens},
		{"pdf document by url", request(userBlocks(`{"type":"document","source":{"type":"url","url":"https://example.com/a.pdf"}}`)),
			nil, one + unknownDocumentPages*DefaultDocumentPageTokens},
		{"search result", request(userBlocks(`{"type":"search_result","source":"https://example.com","title":"Example","content":[{"type":"text","text":"Result text."}]}`)),
			[]string{"https://example.com", "Example", "Result text."}, one},
		{"unknown block as compact json", request(userBlocks(`{"type":"future_block", "value": 1}`)),
			[]string{`{"type":"future_block","value":1}`}, one},
		{"tool definition", request(`[{"role":"user","content":"Hi"}]`, `"tools":[{"name":"get_weather","description":"Get the weather.","input_schema":`+schema+`}]`),
			[]string{"Hi", "get_weather", "Get the weather.", schema}, one + toolDefOverhead + toolSystemPrompt},
		{"pretty schema compacted", request(`[{"role":"user","content":"Hi"}]`, `"tools":[{"name":"noop","input_schema":`+prettySchema+`}]`),
			[]string{"Hi", "noop", `{"type":"object","properties":{}}`}, one + toolDefOverhead + toolSystemPrompt},
		{"server tool as json", request(`[{"role":"user","content":"Hi"}]`, `"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}]`),
			[]string{"Hi", `{"type":"web_search_20250305","name":"web_search","max_uses":5}`}, one + toolDefOverhead + toolSystemPrompt},
		{"deferred tool not counted", request(`[{"role":"user","content":"Hi"}]`, `"tools":[{"name":"later","description":"Loaded on demand.","input_schema":{},"defer_loading":true}]`),
			[]string{"Hi"}, one},
		{"ignored fields", request(`[{"role":"user","content":"Hi"}]`, `"metadata":{"user_id":"u"}`, `"stream":true`, `"thinking":{"type":"adaptive"}`, `"temperature":0.5`),
			[]string{"Hi"}, one},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := oracle(t, tt.texts...) + tt.fixed
			if got := mustCount(t, c, tt.body); got != want {
				t.Errorf("Count = %d, want %d (text %d + fixed %d)", got, want, want-tt.fixed, tt.fixed)
			}
		})
	}
}

// TestCountAbsolute pins a few totals worked out by hand, so a change in the encoder or the constants shows.
func TestCountAbsolute(t *testing.T) {
	c := mustCounter(t, Options{})
	tests := []struct {
		name string
		body []byte
		want int
	}{
		// "Hello, world" is 3 cl100k tokens: ceil(3 × 1.35) = 5, plus 4 + 3 framing.
		{"hello world", request(`[{"role":"user","content":"Hello, world"}]`), 12},
		// Anthropic's documented example, which the API counts as 14: 3 + 4 text tokens give
		// ceil(7 × 1.35) = 10, plus 7.
		{"documented example", request(`[{"role":"user","content":"Hello, Claude"}]`, `"system":"You are a scientist"`), 17},
		// A 1000×1000 PNG is ceil(1,000,000 / 750) = 1334 tokens.
		{"square image", request(userBlocks(`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + pngBase64(t, 1000, 1000) + `"}}`)), 1341},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustCount(t, c, tt.body); got != tt.want {
				t.Errorf("Count = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestCalibrationScalesTextOnly(t *testing.T) {
	body := request(userBlocks(`{"type":"text","text":"`+strings.Repeat("word ", 100)+`"}`, `{"type":"image","source":{"type":"base64","media_type":"image/png","data":"`+pngBase64(t, 750, 100)+`"}}`))
	text := oracle(t, strings.Repeat("word ", 100))
	fixed := requestOverhead + messageOverhead + 100
	for _, cal := range []float64{1, 1.2, 1.35, 2} {
		c := mustCounter(t, Options{Calibration: cal})
		if got, want := mustCount(t, c, body), int(math.Ceil(float64(text)*cal))+fixed; got != want {
			t.Errorf("calibration %v: Count = %d, want %d", cal, got, want)
		}
	}
}

func TestImageTokensRule(t *testing.T) {
	tests := []struct {
		w, h, want int
	}{
		{200, 100, 27},     // 20,000 / 750 = 26.7
		{1000, 1000, 1334}, // 1,333.3
		{1092, 1092, 1590}, // Anthropic's largest square without scaling
		{3000, 100, 110},   // long edge scaled to 1568: 1568 × 52.3 / 750 = 109.3
		{2000, 1000, 1600}, // scaled to 1568×784, still over the token cap
		{8000, 8000, 1600},
		{1, 1, 1},
	}
	for _, tt := range tests {
		if got := imageTokens(tt.w, tt.h, DefaultImageMaxLongEdge, DefaultImageMaxTokens); got != tt.want {
			t.Errorf("imageTokens(%d, %d) = %d, want %d", tt.w, tt.h, got, tt.want)
		}
	}
	if got := imageTokens(2576, 1932, 2576, 4784); got != 4784 {
		t.Errorf("raised limits: imageTokens = %d, want 4784", got)
	}
}

func webpBase64(kind string, w, h int) string {
	b := make([]byte, 30)
	copy(b, "RIFF")
	copy(b[8:], "WEBPVP8")
	switch kind {
	case "VP8 ":
		b[15] = ' '
		b[23], b[24], b[25] = 0x9d, 0x01, 0x2a
		b[26], b[27], b[28], b[29] = byte(w), byte(w>>8), byte(h), byte(h>>8)
	case "VP8L":
		b[15] = 'L'
		b[20] = 0x2f
		bits := uint32(w-1) | uint32(h-1)<<14
		b[21], b[22], b[23], b[24] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
	case "VP8X":
		b[15] = 'X'
		b[24], b[25], b[26] = byte(w-1), byte((w-1)>>8), byte((w-1)>>16)
		b[27], b[28], b[29] = byte(h-1), byte((h-1)>>8), byte((h-1)>>16)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestImageSizeFromHeader(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		w, h   int
		wantOK bool
	}{
		{"png", pngBase64(t, 640, 480), 640, 480, true},
		{"jpeg", jpegBase64(t, 320, 200), 320, 200, true},
		{"gif", gifBase64(t, 64, 32), 64, 32, true},
		{"webp lossy", webpBase64("VP8 ", 800, 600), 800, 600, true},
		{"webp lossless", webpBase64("VP8L", 1024, 768), 1024, 768, true},
		{"webp extended", webpBase64("VP8X", 4000, 3000), 4000, 3000, true},
		{"data url prefix", "data:image/png;base64," + pngBase64(t, 10, 20), 10, 20, true},
		{"escaped slash", strings.ReplaceAll(jpegBase64(t, 33, 44), "/", `\/`), 33, 44, true},
		{"not an image", base64.StdEncoding.EncodeToString([]byte("plain text, not pixels")), 0, 0, false},
		{"not base64", "%%%%", 0, 0, false},
		{"empty", "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, h, ok := imageSize([]byte(tt.data))
			if ok != tt.wantOK || w != tt.w || h != tt.h {
				t.Errorf("imageSize = %d×%d %v, want %d×%d %v", w, h, ok, tt.w, tt.h, tt.wantOK)
			}
		})
	}
}

func TestImageOptions(t *testing.T) {
	url := request(userBlocks(`{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}`))
	big := request(userBlocks(`{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"` + jpegBase64(t, 2576, 1932) + `"}}`))
	one := requestOverhead + messageOverhead
	c := mustCounter(t, Options{ImageTokens: 500, ImageMaxLongEdge: 2576, ImageMaxTokens: 4784})
	if got := mustCount(t, c, url); got != one+500 {
		t.Errorf("url image = %d, want %d", got, one+500)
	}
	if got := mustCount(t, c, big); got != one+4784 {
		t.Errorf("large image = %d, want %d", got, one+4784)
	}
}

func TestPDFPages(t *testing.T) {
	tests := []struct {
		name string
		data string
		want int
	}{
		{"page objects", pdfBase64(3), 3},
		{"no visible pages, small", base64.StdEncoding.EncodeToString([]byte("%PDF-1.7 compressed")), 1},
		{"no visible pages, by size", base64.StdEncoding.EncodeToString(make([]byte, 5*pdfBytesPerPage)), 5},
		{"no visible pages, capped", base64.StdEncoding.EncodeToString(make([]byte, 200*pdfBytesPerPage)), pdfMaxPages},
		{"compact syntax", base64.StdEncoding.EncodeToString([]byte("<</Type/Page>> <</Type/Pages>> <</Type/Page/Parent 1 0 R>>")), 2},
	}
	for _, tt := range tests {
		if got := pdfPages([]byte(tt.data)); got != tt.want {
			t.Errorf("%s: pdfPages = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// countingEncoder records what reaches the encoder, to show which blocks a count encodes.
type countingEncoder struct {
	encoder
	mu    sync.Mutex
	texts []string
}

func (e *countingEncoder) count(text []byte) int {
	e.mu.Lock()
	e.texts = append(e.texts, string(text))
	e.mu.Unlock()
	return e.encoder.count(text)
}

func TestCacheEncodesOnlyNewBlocks(t *testing.T) {
	c := mustCounter(t, Options{})
	spy := &countingEncoder{encoder: c.enc}
	c.enc = spy
	first := request(`[{"role":"user","content":"What is in main.go?"},{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t1","name":"Read","input":{"file_path":"main.go"}}]}]`,
		`"system":[{"type":"text","text":"You are a coding assistant."}]`, `"tools":[{"name":"Read","description":"Reads a file.","input_schema":{"type":"object"}}]`)
	grown := request(`[{"role":"user","content":"What is in main.go?"},{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t1","name":"Read","input":{"file_path":"main.go"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"package main"}]}]`,
		`"system":[{"type":"text","text":"You are a coding assistant."}]`, `"tools":[{"name":"Read","description":"Reads a file.","input_schema":{"type":"object"}}]`)

	cold := mustCount(t, c, first)
	if len(spy.texts) == 0 {
		t.Fatal("cold count encoded nothing")
	}
	spy.texts = nil
	if warm := mustCount(t, c, first); warm != cold {
		t.Errorf("warm count = %d, cold count = %d", warm, cold)
	}
	if len(spy.texts) != 0 {
		t.Errorf("warm count encoded %q, want nothing", spy.texts)
	}
	got := mustCount(t, c, grown)
	if want := []string{"package main"}; fmt.Sprint(spy.texts) != fmt.Sprint(want) {
		t.Errorf("grown conversation encoded %q, want only %q", spy.texts, want)
	}
	fresh := mustCounter(t, Options{})
	if want := mustCount(t, fresh, grown); got != want {
		t.Errorf("incremental count = %d, cold count of the same body = %d", got, want)
	}
}

func TestMovingCacheMarkerKeepsBlocksCached(t *testing.T) {
	const marker = `,"cache_control":{"type":"ephemeral","ttl":"5m"}}`
	older := `{"type":"tool_result","tool_use_id":"t1","content":"first result"}`
	newer := `{"type":"tool_result","tool_use_id":"t2","content":"second result"}`
	odd := `{"type":"future_block","value":"x"}`
	withMarker := func(block string) string { return block[:len(block)-1] + marker }
	before := request(userBlocks(odd, withMarker(older)))
	after := request(userBlocks(odd, older, withMarker(newer)))

	c := mustCounter(t, Options{})
	spy := &countingEncoder{encoder: c.enc}
	c.enc = spy
	mustCount(t, c, before)
	spy.texts = nil
	got := mustCount(t, c, after)
	if want := []string{"second result"}; fmt.Sprint(spy.texts) != fmt.Sprint(want) {
		t.Errorf("after the marker moved, encoded %q, want only %q", spy.texts, want)
	}
	if want := mustCount(t, mustCounter(t, Options{}), after); got != want {
		t.Errorf("incremental count = %d, cold count = %d", got, want)
	}
	// An unknown block is counted as JSON; the marker must not change that count either.
	plain := mustCount(t, mustCounter(t, Options{}), request(userBlocks(odd)))
	if marked := mustCount(t, mustCounter(t, Options{}), request(userBlocks(withMarker(odd)))); marked != plain {
		t.Errorf("unknown block with marker = %d, without = %d", marked, plain)
	}
}

func TestInvalidMarkerOnCachedBlockIsRejected(t *testing.T) {
	c := mustCounter(t, Options{})
	mustCount(t, c, request(userBlocks(`{"type":"text","text":"a"}`, `{}`)))
	for _, block := range []string{
		`{"type":"text","text":"a","cache_control":{"type":ephemeral}}`,
		`{,"cache_control":{"type":"ephemeral"}}`,
	} {
		if _, err := c.Count(request(userBlocks(block))); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("block %s: error %v, want an invalid request", block, err)
		}
	}
}

func TestWarmCountEqualsColdOnLongConversation(t *testing.T) {
	s := synthConversation(7, 200<<10)
	body := s.body()
	c := mustCounter(t, Options{})
	cold := mustCount(t, c, body)
	if warm := mustCount(t, c, body); warm != cold {
		t.Fatalf("warm = %d, cold = %d", warm, cold)
	}
	s.addTurn()
	grown := s.body()
	incremental := mustCount(t, c, grown)
	if want := mustCount(t, mustCounter(t, Options{}), grown); incremental != want {
		t.Errorf("incremental = %d, cold = %d", incremental, want)
	}
	// With calibration 1 the count is the text the conversation holds plus the framing: compare with
	// tiktoken-go over the same strings.
	one := mustCounter(t, Options{Calibration: 1})
	got := mustCount(t, one, grown)
	text := oracle(t, s.texts...)
	if got < text || got > text+text/10 {
		t.Errorf("count %d, text alone %d: framing should add a little", got, text)
	}
}

func TestSameBytesInDifferentPlacesCountApart(t *testing.T) {
	c := mustCounter(t, Options{Calibration: 1})
	// The same object as a message block (counted as unknown JSON) and as a tool definition (name only).
	block := `{"name":"x","input_schema":{}}`
	a := mustCount(t, c, request(userBlocks(block)))
	b := mustCount(t, c, request(`[{"role":"user","content":"Hi"}]`, `"tools":[`+block+`]`))
	if wantA := oracle(t, block) + requestOverhead + messageOverhead; a != wantA {
		t.Errorf("as block = %d, want %d", a, wantA)
	}
	if wantB := oracle(t, "Hi", "x", "{}") + requestOverhead + messageOverhead + toolDefOverhead + toolSystemPrompt; b != wantB {
		t.Errorf("as tool = %d, want %d", b, wantB)
	}
}

func TestCountRejectsBadInput(t *testing.T) {
	c := mustCounter(t, Options{})
	tests := []struct {
		name, body, want string
	}{
		{"empty body", ``, "invalid JSON"},
		{"truncated", `{"model":"m","messages":[{"role":"user","content":"Hi"}]`, "invalid JSON"},
		{"trailing garbage", `{"model":"m","messages":[{"role":"user","content":"Hi"}]} x`, "invalid JSON"},
		{"control character in cached string", `{"model":"m","messages":[{"role":"user","content":"a` + "\x01" + `"}]}`, "invalid JSON"},
		{"bad escape", `{"model":"m","messages":[{"role":"user","content":"\q"}]}`, "invalid JSON"},
		{"bad block", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a",}]}]}`, "invalid JSON"},
		{"unterminated block", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a}]}]}`, "invalid JSON"},
		{"not an object", `["model"]`, "must be a JSON object"},
		{"missing model", `{"messages":[{"role":"user","content":"Hi"}]}`, "model: field required"},
		{"model not a string", `{"model":5,"messages":[{"role":"user","content":"Hi"}]}`, "model: must be a string"},
		{"empty model", `{"model":"","messages":[{"role":"user","content":"Hi"}]}`, "model: must not be empty"},
		{"missing messages", `{"model":"m"}`, "messages: field required"},
		{"empty messages", `{"model":"m","messages":[]}`, "at least one message"},
		{"messages not an array", `{"model":"m","messages":{}}`, "messages: must be an array"},
		{"message not an object", `{"model":"m","messages":["Hi"]}`, "messages.0: must be an object"},
		{"message without content", `{"model":"m","messages":[{"role":"user"}]}`, "messages.0.content: field required"},
		{"content a number", `{"model":"m","messages":[{"role":"user","content":3}]}`, "messages.0.content: must be a string or an array"},
		{"block not an object", `{"model":"m","messages":[{"role":"user","content":["Hi"]}]}`, "messages.0.content.0: must be an object"},
		{"system a number", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"system":1}`, "system: must be"},
		{"tools an object", `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":{}}`, "tools: must be an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := c.Count([]byte(tt.body))
			if err == nil {
				t.Fatalf("Count = %d, want an error", n)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("error %v does not match ErrInvalidRequest", err)
			}
			var ire *InvalidRequestError
			if !errors.As(err, &ire) || !strings.Contains(ire.Message, tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Options{
		{Calibration: -1},
		{Calibration: math.NaN()},
		{CacheSize: -1},
		{ImageTokens: -1},
		{DocumentPageTokens: -5},
		{Encoding: "no_such_encoding"},
	} {
		if _, err := New(opt); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", opt)
		}
	}
}

func TestOtherEncodingCountsWithTiktoken(t *testing.T) {
	c := mustCounter(t, Options{Encoding: EncodingO200K, Calibration: 1})
	useOfflineLoader()
	tk, err := tiktoken.GetEncoding(EncodingO200K)
	if err != nil {
		t.Fatal(err)
	}
	text := "Привет, мир! こんにちは世界。 func main() { fmt.Println(\"hi\") }"
	want := len(tk.EncodeOrdinary(text)) + requestOverhead + messageOverhead
	if got := mustCount(t, c, request(`[{"role":"user","content":`+jsonString(text)+`}]`)); got != want {
		t.Errorf("o200k count = %d, want %d", got, want)
	}
}

func TestSpecialTokenTextIsOrdinary(t *testing.T) {
	c := mustCounter(t, Options{Calibration: 1})
	text := "<|endoftext|> and <|fim_prefix|>"
	want := oracle(t, text) + requestOverhead + messageOverhead
	if got := mustCount(t, c, request(`[{"role":"user","content":`+jsonString(text)+`}]`)); got != want {
		t.Errorf("Count = %d, want %d", got, want)
	}
}

func TestCountFixture(t *testing.T) {
	body := fixtureBody(t)
	c := mustCounter(t, Options{Calibration: 1})
	var req struct {
		System []struct{ Text string }
		Tools  []struct {
			Name, Description string
			InputSchema       json.RawMessage `json:"input_schema"`
			DeferLoading      bool            `json:"defer_loading"`
		}
		Messages []struct {
			Content []struct{ Text string }
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	var texts []string
	fixed := requestOverhead + toolSystemPrompt
	for _, s := range req.System {
		texts = append(texts, s.Text)
	}
	for _, m := range req.Messages {
		fixed += messageOverhead
		for _, b := range m.Content {
			texts = append(texts, b.Text)
		}
	}
	for _, tool := range req.Tools {
		if tool.DeferLoading {
			continue
		}
		var schema bytes.Buffer
		if err := json.Compact(&schema, tool.InputSchema); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, tool.Name, tool.Description, schema.String())
		fixed += toolDefOverhead
	}
	if got, want := mustCount(t, c, body), oracle(t, texts...)+fixed; got != want {
		t.Errorf("fixture count = %d, want %d", got, want)
	}
}

func TestConcurrentCounts(t *testing.T) {
	bodies := [][]byte{fixtureBody(t)}
	for seed := range uint64(6) {
		bodies = append(bodies, synthConversation(seed, 16<<10).body())
	}
	want := make([]int, len(bodies))
	for i, b := range bodies {
		want[i] = mustCount(t, mustCounter(t, Options{}), b)
	}
	c := mustCounter(t, Options{CacheSize: 64}) // small, so evictions race with hits
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(bodies))
	for g := range 8 {
		wg.Go(func() {
			for k := range 3 * len(bodies) {
				i := (g + k) % len(bodies)
				n, err := c.Count(bodies[i])
				if err == nil && n != want[i] {
					err = fmt.Errorf("body %d: count %d, want %d", i, n, want[i])
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
