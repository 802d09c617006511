package convert

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// twoPassChunk is how a chunk or a reply was read before readChunk: a
// validation, then the reply's members and its first choice, each with the
// plain iterators.
func twoPassChunk(data []byte, strict bool) (rp reply, ch choice, found, ok bool) {
	if !validJSON(data) || !isObject(data) {
		return rp, ch, false, false
	}
	o := newObject(data)
	for k, v, more := o.next(); more; k, v, more = o.next() {
		rp.member(k, v)
	}
	a := newArray(rp.choices)
	for o, isObj, more := a.nextObject(); more; o, isObj, more = a.nextObject() {
		if !isObj {
			continue
		}
		var r choiceReader
		for k, v, more := o.next(); more; k, v, more = o.next() {
			r.member(k, v)
		}
		a.skipPast(&o)
		c := r.choice()
		if c.index == nil || string(c.index) == "0" {
			return rp, c, true, true
		}
		if !found && !strict {
			ch, found = c, true
		}
	}
	return rp, ch, found, true
}

// chunkSeeds are the data of every chunk in testdata/streams, and chunks
// that a provider may send however rarely.
func chunkSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{
		[]byte(`{}`),
		[]byte(`{"choices":[]}`),
		[]byte(`{"choices":null,"usage":{"prompt_tokens":1}}`),
		[]byte(`{"choices":{"index":0}}`),
		[]byte(`{"choices":[1,"a",null,{"index":1,"delta":{"content":"x"}},{"delta":{"content":"y"}}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a"}}],"choices":[{"index":0,"delta":{"content":"b"}}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a"}}],"choices":null}`),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a"}},{"index":0,"delta":{"content":"b"}}]}`),
		[]byte(`{"choices":[{"index":2,"message":{"content":"c"}},{"index":1,"message":{"content":"d"}}]}`),
		[]byte(`{"choices":[{"index":2,"message":{"content":"c"}},{"index":0,"message":{"content":"d"}},{"message":{"content":"e"}}]}`),
		[]byte(`{"choic\u0065s":[{"ind\u0065x":0,"d\u0065lta":{"content":"e"},"finish_reason":"stop"}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_reason":"</end>"}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop","matched_stop":7}]}`),
		[]byte(`{"object":"error","message":"overloaded","code":503}`),
		[]byte(`{"error":{"message":"rate limited","type":"rate_limit","code":429}}`),
		[]byte(`{"error":null,"choices":[{"index":0,"delta":{"content":"z"}}]}`),
		[]byte(` { "choices" : [ { "index" : 0 , "delta" : { "content" : "sp" } } ] } `),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a"}}]}x`),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a"}},]}`),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a"},}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{"content":"a\u00"}}]}`),
		[]byte(`{"choices":[{"index":01}]}`),
		[]byte(`{"choices":`),
		[]byte(`{"choices":[`),
		[]byte(`{"choices":[{"index":0`),
		[]byte(`{"a":1,}`),
		[]byte(`[{"choices":[]}]`),
		[]byte(`"chunk"`),
		bytes.Repeat([]byte(`{"a":`), 600),
		append(append([]byte(`{"choices":[{"index":0,"delta":`), bytes.Repeat([]byte(`[`), 520)...), bytes.Repeat([]byte(`]`), 520)...),
	}
	for _, stream := range streamChunks(t) {
		seeds = append(seeds, stream...)
	}
	return seeds
}

// streamChunks are the data of the chunks of each stream in
// testdata/streams, [DONE] and keep-alives left out.
func streamChunks(t testing.TB) [][][]byte {
	var streams [][][]byte
	paths, _ := filepath.Glob("testdata/streams/*.sse")
	for _, p := range paths {
		if filepath.Ext(p[:len(p)-len(".sse")]) == ".want" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var chunks [][]byte
		rd := sse.NewReader(bytes.NewReader(b))
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			if d := trimSpace(ev.Data); len(d) > 0 && string(d) != string(doneData) {
				chunks = append(chunks, bytes.Clone(d))
			}
		}
		streams = append(streams, chunks)
	}
	return streams
}

// sameChunk compares what the two readings found, strict and not.
func sameChunk(t *testing.T, data []byte) {
	t.Helper()
	for _, strict := range []bool{true, false} {
		sameChunkAfter(t, data, strict, nil)
	}
}

// sameChunkAfter compares what readChunk finds in data with head, after
// the chunks head has seen, with what the two passes find.
func sameChunkAfter(t *testing.T, data []byte, strict bool, head *chunkHead) {
	t.Helper()
	{
		rp, ch, found, ok := readChunk(data, strict, head)
		wrp, wch, wfound, wok := twoPassChunk(data, strict)
		if ok != wok {
			t.Fatalf("%s: one walk ok=%v, two passes ok=%v", data, ok, wok)
		}
		if !ok {
			return
		}
		for _, f := range []struct {
			name      string
			got, want []byte
		}{
			{"choices", rp.choices, wrp.choices}, {"usage", rp.usage, wrp.usage}, {"error", rp.err, wrp.err},
			{"object", rp.object, wrp.object}, {"index", ch.index, wch.index}, {"message", ch.msg, wch.msg},
			{"finish_reason", ch.finish, wch.finish}, {"matched", ch.matched, wch.matched},
		} {
			if !bytes.Equal(f.got, f.want) || (f.got == nil) != (f.want == nil) {
				t.Fatalf("%s (strict %v): %s is %q in one walk, %q in two passes", data, strict, f.name, f.got, f.want)
			}
		}
		if found != wfound {
			t.Fatalf("%s (strict %v): choice found=%v in one walk, %v in two passes", data, strict, found, wfound)
		}
	}
}

// A reply or a stream chunk is validated and read in one walk; it accepts
// what the grammar accepts and finds what a validation and then a reading
// found.
func TestReadChunkIsValidationAndReadingInOne(t *testing.T) {
	seeds := chunkSeeds(t)
	if len(seeds) < 60 {
		t.Fatalf("only %d chunks to compare", len(seeds))
	}
	accepted := 0
	for _, s := range seeds {
		sameChunk(t, s)
		if _, _, _, ok := readChunk(s, true, nil); ok {
			accepted++
		}
	}
	if accepted == 0 || accepted == len(seeds) {
		t.Fatalf("%d of %d chunks accepted: the seeds must hold both", accepted, len(seeds))
	}
}

func FuzzReadChunk(f *testing.F) {
	for _, s := range chunkSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameChunk(t, data)
	})
}

// streamsToTranslate are streams whose translation keeps state: tool
// calls, held blocks, reasoning, and a finish_reason read at the end.
func streamsToTranslate() [][]sse.Event {
	cut := longStream(0, 40, 0)
	for i, ev := range cut {
		if bytes.Contains(ev.Data, []byte(`"finish_reason":"tool_calls"`)) {
			cut = append(cut[:i:i], sse.Encode("", bytes.Replace(ev.Data, []byte(`"tool_calls"`), []byte(`"length"`), 1)), sse.Encode("", []byte("[DONE]")))
			break
		}
	}
	return [][]sse.Event{longStream(20, 60, 15), interleavedStream(30, 12), cut}
}

// translateEach feeds evs to a stream and returns the bytes of all it made.
// With borrow, the stream lends its events and every input is overwritten
// once fed, as a relay's reader that lends its events reuses its buffer.
func translateEach(t *testing.T, evs []sse.Event, borrow bool) []byte {
	t.Helper()
	fixedIDs(t)
	s := NewStream("claude-sonnet-4-5", StreamOptions{InputTokens: 7})
	if borrow {
		s.Borrow()
	}
	var all []byte
	var out []sse.Event
	var err error
	for _, ev := range evs {
		in := sse.Event{Name: ev.Name, Raw: bytes.Clone(ev.Raw)}
		if ev.Data != nil {
			i := bytes.Index(ev.Raw, ev.Data)
			in.Data = in.Raw[i : i+len(ev.Data)]
		}
		if out, err = s.Feed(out[:0], in); err != nil {
			t.Fatal(err)
		}
		if borrow {
			for i := range in.Raw {
				in.Raw[i] = 'x'
			}
		}
		for _, o := range out {
			all = append(all, o.Raw...)
		}
	}
	if out, err = s.Close(out[:0]); err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		all = append(all, o.Raw...)
	}
	return all
}

// A stream that lends its events makes the same bytes as one that copies
// them, keeps nothing of what it was fed, and makes no allocation for a
// chunk of text.
func TestBorrowedStreamLendsItsEvents(t *testing.T) {
	for i, evs := range streamsToTranslate() {
		copied, lent := translateEach(t, evs, false), translateEach(t, evs, true)
		if len(copied) == 0 || !bytes.Equal(copied, lent) {
			t.Fatalf("stream %d: lent events differ from copied ones:\n%s\n---\n%s", i, lent, copied)
		}
	}
	if cut := translateEach(t, streamsToTranslate()[2], true); !bytes.Contains(cut, []byte(`"stop_reason":"max_tokens"`)) {
		t.Fatalf("the cut stream does not end for max_tokens:\n%s", cut)
	}

	text := sse.Encode("", []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" more words"},"logprobs":null,"finish_reason":null}]}`))
	allocs := func(borrow bool) float64 {
		s := NewStream("claude-sonnet-4-5", StreamOptions{})
		if borrow {
			s.Borrow()
		}
		out, err := s.Feed(nil, text)
		if err != nil || len(out) == 0 {
			t.Fatalf("%v, %d events", err, len(out))
		}
		return testing.AllocsPerRun(100, func() { out, _ = s.Feed(out[:0], text) })
	}
	if n := allocs(true); n != 0 {
		t.Errorf("a lent chunk of text costs %.1f allocations, want 0", n)
	}
	if n := allocs(false); n < 1 {
		t.Errorf("a copied chunk of text costs %.1f allocations: the copy is gone, and this test with it", n)
	}
}

// headPairs are chunks that start alike, in pairs: what the first leaves in
// a stream's head must not change what the second reads.
var headPairs = [][2]string{
	// A number or a literal that the next chunk continues.
	{`{"id":"x","created":17,"choices":[{"index":0,"delta":{"content":"a"}}]}`, `{"id":"x","created":170,"choices":[{"index":0,"delta":{"content":"b"}}]}`},
	{`{"id":"x","created":17,"choices":[]}`, `{"id":"x","created":17e,"choices":[]}`},
	{`{"id":"x","ok":true,"choices":[]}`, `{"id":"x","ok":truex,"choices":[]}`},
	{`{"id":"x","n":1 ,"choices":[]}`, `{"id":"x","n":1 ,"choices":[{"index":0,"delta":{"content":"c"}}]}`},
	// Members read in the head come back, from the second chunk's bytes.
	{`{"object":"error","usage":{"prompt_tokens":1},"choices":[]}`, `{"object":"error","usage":{"prompt_tokens":1},"choices":[{"index":0}],"error":{"message":"m"}}`},
	{`{"object":"chat.completion.chunk","choices":[],"object":"error"}`, `{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{}}]}`},
	// What follows the head decides, as in a chunk of its own.
	{`{"id":"x","choices":[]}`, `{"id":"x","choices":[]`},
	{`{"id":"x","choices":[]}`, `{"id":"x","choices":[]} x`},
	{`{"id":"x","choices":[]}`, `{"id":"x"}`},
	{`{"id":"x","choices":[]}`, `{"id":"x","choices":null,"choices":[{"index":0,"delta":{"content":"d"}}]}`},
	// A start that changes is read in full, and becomes the head.
	{`{"id":"x","choices":[]}`, `{"id":"y","choices":[{"index":0,"delta":{"content":"e"}}]}`},
	{`{"choices":[],"id":"x"}`, `{"choices":[{"index":0,"delta":{"content":"f"}}],"id":"x"}`},
}

// A stream reads the start its chunks share once: each chunk after the
// first is read on from where the start they share ends, to what reading it
// alone finds.
func TestAStreamReadsTheStartItsChunksShareOnce(t *testing.T) {
	for _, p := range headPairs {
		head := &chunkHead{}
		sameChunkAfter(t, []byte(p[0]), true, head)
		sameChunkAfter(t, []byte(p[1]), true, head)
	}
	chunks, resumed := 0, 0
	for _, stream := range streamChunks(t) {
		head := &chunkHead{}
		for _, d := range stream {
			chunks++
			if head.matches(d) {
				resumed++
			}
			sameChunkAfter(t, d, true, head)
		}
	}
	// Most chunks of a stream repeat the start of the one before.
	if chunks < 100 || resumed < chunks/2 {
		t.Fatalf("%d of %d chunks read on from a head", resumed, chunks)
	}
}

func FuzzReadChunkAfter(f *testing.F) {
	for _, p := range headPairs {
		f.Add([]byte(p[0]), []byte(p[1]))
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		head := &chunkHead{}
		readChunk(first, true, head)
		sameChunkAfter(t, second, true, head)
	})
}
