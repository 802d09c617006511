package convert

import (
	"crypto/rand"
	"encoding/base64"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns prefix followed by 24 random base62 characters, the shape of
// the API's own ids (msg_..., toolu_...). Tests replace it to get stable
// output.
var newID = randomID

func randomID(prefix string) string {
	var r [24]byte
	_, _ = rand.Read(r[:])
	out := make([]byte, len(prefix)+len(r))
	copy(out, prefix)
	for i, c := range r {
		// 256 % 62 skews the distribution slightly; uniqueness is what matters.
		out[len(prefix)+i] = base62[int(c)%len(base62)]
	}
	return string(out)
}

// encodedIDPrefix marks a tool_use id that wraps an upstream tool call id the
// Anthropic API would refuse (characters outside [A-Za-z0-9_-]) or that is too
// short to stay unique over a conversation ("call_0" on every turn). The
// original is kept, base64url-encoded, so the request converter can give the
// provider its own id back. Anthropic ids start with "toolu_01", "toolu_vrtx_"
// or "toolu_bdrk_", never with this prefix.
const encodedIDPrefix = "toolu_oai_"

// minKeptIDLen is the shortest upstream id kept as it is: OpenAI's are 29
// characters, Ollama's 13; the ones below repeat between turns.
const minKeptIDLen = 12

func validIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func keepableID(id []byte) bool {
	if len(id) < minKeptIDLen {
		return false
	}
	for _, c := range id {
		if !validIDByte(c) {
			return false
		}
	}
	return true
}

// toolIDs assigns the tool_use ids of one response.
type toolIDs struct{ seen map[string]struct{} }

// assign returns the tool_use id for an upstream tool call id (decoded): the
// id itself when Anthropic accepts it and it is new in this response, a
// wrapped form when it is not, a fresh toolu_ id when there is none.
func (t *toolIDs) assign(upstream []byte) string {
	if len(upstream) == 0 {
		return newID("toolu_")
	}
	if _, dup := t.seen[string(upstream)]; !dup && keepableID(upstream) {
		if t.seen == nil {
			t.seen = make(map[string]struct{}, 4)
		}
		t.seen[string(upstream)] = struct{}{}
		return string(upstream)
	}
	// The random part makes the id unique even when the provider repeats
	// its ids; the decoded form still gives the provider its own id back.
	r := newID("")
	r = r[len(r)-6:]
	out := make([]byte, 0, len(encodedIDPrefix)+7+base64.RawURLEncoding.EncodedLen(len(upstream)))
	out = append(out, encodedIDPrefix...)
	out = append(out, r...)
	out = append(out, '_')
	out = base64.RawURLEncoding.AppendEncode(out, upstream)
	return string(out)
}

// unwrapToolID returns the provider's original id for a tool_use id (raw
// string content) that assign wrapped; ok is false for any other id.
func unwrapToolID(id []byte) (orig []byte, ok bool) {
	const skip = len(encodedIDPrefix) + 7
	if len(id) <= skip || string(id[:len(encodedIDPrefix)]) != encodedIDPrefix || id[skip-1] != '_' {
		return nil, false
	}
	dec, err := base64.RawURLEncoding.AppendDecode(nil, id[skip:])
	if err != nil || len(dec) == 0 {
		return nil, false
	}
	return dec, true
}
