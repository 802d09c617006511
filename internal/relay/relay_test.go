package relay

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// flushLog is a ResponseRecorder that notes whether any body was written
// before its first flush.
type flushLog struct {
	*httptest.ResponseRecorder
	flushes          int
	bodyAtFirstFlush int
}

func (f *flushLog) Flush() {
	if f.flushes == 0 {
		f.bodyAtFirstFlush = f.Body.Len()
	}
	f.flushes++
	f.ResponseRecorder.Flush()
}

// TestStreamHeadersGoWithTheFirstEvent: Start does not flush a stream's
// headers alone; the first event's flush carries them, in one write.
func TestStreamHeadersGoWithTheFirstEvent(t *testing.T) {
	w := &flushLog{ResponseRecorder: httptest.NewRecorder()}
	out := NewClientOutput(w)
	if err := out.Start(http.StatusOK, http.Header{"Content-Type": {"text/event-stream"}}, true); err != nil {
		t.Fatal(err)
	}
	if w.flushes != 0 {
		t.Fatal("Start flushed the headers alone")
	}
	ev := []byte("event: ping\ndata: {\"type\":\"ping\"}\n\n")
	if err := out.Event(Event{Raw: ev}, false); err != nil {
		t.Fatal(err)
	}
	if w.flushes != 1 || w.bodyAtFirstFlush != len(ev) {
		t.Fatalf("%d flushes, %d body bytes at the first; want 1 flush carrying the event", w.flushes, w.bodyAtFirstFlush)
	}
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, headers %v", w.Code, w.Header())
	}
}
