package apierr

import (
	"net/http/httptest"
	"testing"
)

func TestBodyAndFrame(t *testing.T) {
	if got := string(Body(Overloaded, `say "hi"`)); got != `{"type":"error","error":{"type":"overloaded_error","message":"say \"hi\""}}` {
		t.Fatalf("body = %s", got)
	}
	if got := string(Frame(API, "x")); got != "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}\n\n" {
		t.Fatalf("frame = %q", got)
	}
}

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, 413, RequestTooLarge, "too big")
	if rec.Code != 413 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("code %d ct %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	typ, msg, ok := Parse(rec.Body.Bytes())
	if !ok || typ != RequestTooLarge || msg != "too big" {
		t.Fatalf("parse = %q %q %v", typ, msg, ok)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, typ, msg string
		ok           bool
	}{
		{`{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`, RateLimit, "slow down", true},
		{`{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}`, InvalidRequest, "Incorrect API key", true},
		{`{"error":"boom"}`, "", "boom", true},
		{`{"id":"msg_1"}`, "", "", false},
		{`not json`, "", "", false},
		{`{"error":null}`, "", "", false},
	} {
		typ, msg, ok := Parse([]byte(tc.in))
		if typ != tc.typ || msg != tc.msg || ok != tc.ok {
			t.Errorf("Parse(%s) = %q %q %v", tc.in, typ, msg, ok)
		}
	}
}

func TestStatusTypeMapping(t *testing.T) {
	for status, typ := range map[int]string{400: InvalidRequest, 401: Authentication, 403: Permission, 404: NotFound,
		413: RequestTooLarge, 429: RateLimit, 500: API, 529: Overloaded} {
		if got := TypeForStatus(status); got != typ {
			t.Errorf("TypeForStatus(%d) = %s, want %s", status, got, typ)
		}
	}
	if StatusForType(Overloaded) != 529 || StatusForType("weird") != 500 {
		t.Fatal("StatusForType")
	}
}
