package anthropic

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"sync/atomic"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// EventType says what a stream event is.
type EventType uint8

// The event types of a Messages stream.
const (
	// EventUnknown is a type this module does not know; it is relayed as is.
	EventUnknown EventType = iota
	EventPing
	EventMessageStart
	EventContentBlockStart
	EventContentBlockDelta
	EventContentBlockStop
	EventMessageDelta
	EventMessageStop
	EventError
)

var eventNames = [...]string{"", "ping", "message_start", "content_block_start", "content_block_delta",
	"content_block_stop", "message_delta", "message_stop", "error"}

func (t EventType) String() string {
	if int(t) < len(eventNames) {
		return eventNames[t]
	}
	return ""
}

// TypeOf returns the type an event name stands for.
func TypeOf(name string) EventType {
	switch name {
	case "content_block_delta":
		return EventContentBlockDelta
	case "ping":
		return EventPing
	case "message_start":
		return EventMessageStart
	case "content_block_start":
		return EventContentBlockStart
	case "content_block_stop":
		return EventContentBlockStop
	case "message_delta":
		return EventMessageDelta
	case "message_stop":
		return EventMessageStop
	case "error":
		return EventError
	}
	return EventUnknown
}

// Content reports whether an event of this type carries the answer itself:
// the first one is the relay's commit point. Opening events (message_start,
// ping) and events this module does not know are not content.
func (t EventType) Content() bool {
	switch t {
	case EventContentBlockStart, EventContentBlockDelta, EventContentBlockStop, EventMessageDelta, EventMessageStop:
		return true
	}
	return false
}

// Usage is the token usage of an answer.
type Usage struct {
	InputTokens         int64 `json:"input_tokens,omitempty"`
	OutputTokens        int64 `json:"output_tokens,omitempty"`
	CacheReadTokens     int64 `json:"cache_read_input_tokens,omitempty"`
	CacheCreationTokens int64 `json:"cache_creation_input_tokens,omitempty"`
	// present marks the counts an event carried.
	present uint8
}

const (
	hasInput = 1 << iota
	hasOutput
	hasCacheRead
	hasCacheCreation
)

// Merge folds the usage of a later event into u. Counts are running totals:
// a count the later event carries replaces this one, a count it leaves out
// (or sends as null) keeps its value. This is the stream's one rule, the
// Accumulator's too.
func (u *Usage) Merge(later Usage) {
	if later.present&hasInput != 0 {
		u.InputTokens = later.InputTokens
	}
	if later.present&hasOutput != 0 {
		u.OutputTokens = later.OutputTokens
	}
	if later.present&hasCacheRead != 0 {
		u.CacheReadTokens = later.CacheReadTokens
	}
	if later.present&hasCacheCreation != 0 {
		u.CacheCreationTokens = later.CacheCreationTokens
	}
	u.present |= later.present
}

// ReadUsage reads a usage object of validated JSON. Counts that are not
// non-negative integers count as absent.
func ReadUsage(obj []byte) Usage {
	var u Usage
	o := rawjson.NewObject(rawjson.SkipSpaceLeft(obj))
	for k, v, ok := o.Next(); ok; k, v, ok = o.Next() {
		n, isInt := rawjson.Int(v)
		if !isInt || n < 0 {
			continue
		}
		switch {
		case rawjson.KeyIs(k, "input_tokens"):
			u.InputTokens, u.present = n, u.present|hasInput
		case rawjson.KeyIs(k, "output_tokens"):
			u.OutputTokens, u.present = n, u.present|hasOutput
		case rawjson.KeyIs(k, "cache_read_input_tokens"):
			u.CacheReadTokens, u.present = n, u.present|hasCacheRead
		case rawjson.KeyIs(k, "cache_creation_input_tokens"):
			u.CacheCreationTokens, u.present = n, u.present|hasCacheCreation
		}
	}
	return u
}

// UsageOf reads the usage of a complete message of validated JSON.
func UsageOf(message []byte) Usage {
	if raw := rawjson.Field(message, "usage"); rawjson.IsObject(raw) {
		return ReadUsage(raw)
	}
	return Usage{}
}

// EventInfo is what the relay learns of a stream event when it reads it, and
// passes on with the event's bytes, so that nothing reads the event again.
type EventInfo struct {
	Type EventType
	// Usage is message_start's message.usage, or message_delta's usage.
	Usage Usage
	// StopReason is message_delta's delta.stop_reason.
	StopReason string
	// ErrorType and ErrorMessage are an error event's.
	ErrorType, ErrorMessage string
}

// ErrNotJSON is returned by Inspect for an event whose data is not one valid
// JSON object.
var ErrNotJSON = errors.New("the event's data is not a JSON object")

// inspections counts Inspect calls, for the tests that hold every event to
// one parse.
var inspections atomic.Int64

// Inspections returns how many events Inspect has read in this process.
func Inspections() int64 { return inspections.Load() }

// Inspect validates the data of a stream event with the module's grammar and
// reads what the relay needs of it, in one walk. name is the event's "event:"
// field; without one, the type is the data's "type" member.
//
// An error event is read leniently: whatever its data, it is an error, and
// its message is kept.
func Inspect(name string, data []byte) (EventInfo, error) {
	var info EventInfo
	err := InspectInto(&info, name, data)
	return info, err
}

// InspectInto is Inspect writing into *info, which must be zero.
func InspectInto(info *EventInfo, name string, data []byte) error {
	inspections.Add(1)
	if name == "content_block_delta" && plainDelta(data) {
		info.Type = EventContentBlockDelta
		return nil
	}
	var err error
	*info, err = inspect(name, data)
	if err != nil && info.Type == EventError {
		info.ErrorType, info.ErrorMessage = "api_error", string(data[:min(len(data), 200)])
		return nil
	}
	return err
}

// plainDelta reports whether data is a content_block_delta in the exact
// form the API writes, with nothing the relay needs to read:
//
//	{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"..."}}
//
// (or thinking_delta, input_json_delta, signature_delta with their field).
// Such an event is valid JSON when its string is, which the grammar checks;
// anything else is left to the full walk. Most events of a stream are these.
func plainDelta(data []byte) bool { return plainDeltaEnd(data) == len(data) }

// plainDeltaEnd returns the length of the plain delta (see plainDelta) that
// data starts with, or -1.
func plainDeltaEnd(data []byte) int {
	if len(data) < len(deltaHead) || string(data[:len(deltaHead)]) != deltaHead {
		return -1
	}
	return deltaRest(data, len(deltaHead))
}

const (
	deltaHead = `{"type":"content_block_delta","index":`
	// deltaEvent is how the API writes a delta event up to its index.
	deltaEvent = "event: content_block_delta\ndata: " + deltaHead
	// textDelta follows the index of the most frequent delta.
	textDelta = `,"delta":{"type":"text_delta","text":"`
)

// deltaRest reads a plain delta on from its index, at data[i], and returns
// its length, or -1.
func deltaRest(data []byte, i int) int {
	start := i
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	if i == start || i-start > 9 || (data[start] == '0' && i-start > 1) {
		return -1
	}
	if len(data)-i >= len(textDelta) && string(data[i:i+len(textDelta)]) == textDelta {
		i += len(textDelta) - 1
	} else {
		const mid = `,"delta":{"type":"`
		if len(data)-i < len(mid) || string(data[i:i+len(mid)]) != mid {
			return -1
		}
		i += len(mid)
		rest := data[i:]
		var field int
		switch {
		case hasPrefix(rest, `input_json_delta","partial_json":`):
			field = len(`input_json_delta","partial_json":`)
		case hasPrefix(rest, `thinking_delta","thinking":`):
			field = len(`thinking_delta","thinking":`)
		case hasPrefix(rest, `signature_delta","signature":`):
			field = len(`signature_delta","signature":`)
		default:
			return -1
		}
		i += field
		if i >= len(data) || data[i] != '"' {
			return -1
		}
	}
	return deltaEnd(data, i)
}

// deltaEnd reads a plain delta on from the quote of its field's string, at
// data[i], and returns its length, or -1.
func deltaEnd(data []byte, i int) int {
	end := rawjson.StringEnd(data, i)
	if end < 0 || len(data)-end < 2 || data[end] != '}' || data[end+1] != '}' {
		return -1
	}
	return end + 2
}

// textDeltaHead is the length of a text delta event with an index of one
// digit, up to its string's opening quote included.
const textDeltaHead = len(deltaEvent) + 1 + len(textDelta)

// textDeltaWords are the first textDeltaHead bytes of a text delta event,
// for each index of one digit, as little-endian words: the last word ends
// at textDeltaHead, overlapping the one before it.
var textDeltaWords = func() (out [10][textDeltaHead/8 + 1]uint64) {
	for d := range out {
		ev := deltaEvent + string(rune('0'+d)) + textDelta
		for i := range textDeltaHead / 8 {
			out[d][i] = binary.LittleEndian.Uint64([]byte(ev[8*i:]))
		}
		out[d][textDeltaHead/8] = binary.LittleEndian.Uint64([]byte(ev[textDeltaHead-8:]))
	}
	return out
}()

// deltaTail is what ends a text delta event after its string.
var deltaTail = binary.LittleEndian.Uint32([]byte("}}\n\n"))

// textDeltaEnd returns the length of the text delta event with an index of
// one digit, written as the API writes it, that b starts with, blank line
// included; 0 when b does not start with such an event's fixed first bytes
// (another delta may, which deltaRest reads), and -1 when it does and the
// rest is not such an event. It compares the event's fixed first bytes a word at a
// time and reads a short string of plain text in the same loop, handing
// anything else in the string (an escape) to rawjson.StringEnd.
func textDeltaEnd(b []byte) int {
	if len(b) < textDeltaHead+5 || b[len(deltaEvent)]-'0' > 9 {
		return 0
	}
	w := &textDeltaWords[b[len(deltaEvent)]-'0']
	h := (*[textDeltaHead]byte)(b)
	le := binary.LittleEndian
	// (^ and | bind alike in Go: each difference is in parentheses.)
	x := (le.Uint64(h[0:]) ^ w[0]) | (le.Uint64(h[8:]) ^ w[1]) | (le.Uint64(h[16:]) ^ w[2]) | (le.Uint64(h[24:]) ^ w[3]) |
		(le.Uint64(h[32:]) ^ w[4]) | (le.Uint64(h[40:]) ^ w[5]) | (le.Uint64(h[48:]) ^ w[6]) | (le.Uint64(h[56:]) ^ w[7]) |
		(le.Uint64(h[64:]) ^ w[8]) | (le.Uint64(h[72:]) ^ w[9]) | (le.Uint64(h[80:]) ^ w[10]) | (le.Uint64(h[88:]) ^ w[11]) |
		(le.Uint64(h[96:]) ^ w[12]) | (le.Uint64(h[textDeltaHead-8:]) ^ w[13])
	if x != 0 {
		return 0
	}
	end := -1
	for i := textDeltaHead; i+8 <= len(b); i += 8 {
		if m := rawjson.Stops(le.Uint64(b[i : i+8])); m != 0 {
			if p := i + bits.TrailingZeros64(m)>>3; b[p] == '"' {
				end = p + 1
			} else {
				end = rawjson.StringEnd(b, textDeltaHead-1)
			}
			break
		}
	}
	if end < 0 {
		end = rawjson.StringEnd(b, textDeltaHead-1)
	}
	if end < 0 || len(b)-end < 4 || binary.LittleEndian.Uint32(b[end:]) != deltaTail {
		return -1
	}
	return end + 4
}

// PlainDeltas returns the length of the run of whole plain deltas (see
// plainDelta) that b starts with, each written as the API writes it:
//
//	event: content_block_delta
//	data: {"type":"content_block_delta",...}
//	(blank line)
//
// A burst of text is mostly such a run, and nothing in it is needed but its
// bytes: a relay hands the run on as it is, each event read once, here (it
// counts as that event's inspection). 0 when b does not start with one.
func PlainDeltas(b []byte) int {
	n, events := 0, int64(0)
	for {
		rest := b[n:]
		switch end := textDeltaEnd(rest); {
		case end > 0:
			// A text delta with an index of one digit, the most frequent.
			n += end
			events++
			continue
		case end < 0:
			// Its first bytes, and not the rest.
			return plainDeltasEnd(n, events)
		}
		end := -1
		if len(rest) >= len(deltaEvent) && string(rest[:len(deltaEvent)]) == deltaEvent {
			end = deltaRest(rest, len(deltaEvent))
		}
		if end < 0 || len(rest)-end < 2 || rest[end] != '\n' || rest[end+1] != '\n' {
			break
		}
		n += end + 2
		events++
	}
	return plainDeltasEnd(n, events)
}

// plainDeltasEnd counts a run's events as inspected and returns its length.
func plainDeltasEnd(n int, events int64) int {
	if events > 0 {
		inspections.Add(events)
	}
	return n
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

func inspect(name string, data []byte) (EventInfo, error) {
	info := EventInfo{Type: TypeOf(name)}
	var typ, message, usage, delta, errObj []byte
	end, err := rawjson.Members(data, rawjson.SkipSpace(data, 0), 0, func(key, v []byte) {
		switch {
		case rawjson.KeyIs(key, "type"):
			typ = v
		case rawjson.KeyIs(key, "message"):
			message = v
		case rawjson.KeyIs(key, "usage"):
			usage = v
		case rawjson.KeyIs(key, "delta"):
			delta = v
		case rawjson.KeyIs(key, "error"):
			errObj = v
		}
	})
	if err != nil || rawjson.SkipSpace(data, end) != len(data) {
		return info, ErrNotJSON
	}
	if name == "" {
		info.Type = TypeOf(rawjson.Str(typ))
	}
	switch info.Type {
	case EventMessageStart:
		info.Usage = UsageOf(message)
	case EventMessageDelta:
		if rawjson.IsObject(usage) {
			info.Usage = ReadUsage(usage)
		}
		if sr := rawjson.Field(delta, "stop_reason"); rawjson.IsString(sr) {
			info.StopReason = rawjson.Str(sr)
		}
	case EventError:
		info.ErrorType = rawjson.Str(rawjson.Field(errObj, "type"))
		info.ErrorMessage = rawjson.Str(rawjson.Field(errObj, "message"))
	}
	return info, nil
}
