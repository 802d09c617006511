package tokens

import "github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"

// The request walker reads JSON with the module's grammar (internal/rawjson) instead of encoding/json for two
// reasons: the cache key of a content block is its exact raw bytes, and a block already in the cache must cost
// no more than finding where it ends (rawjson.SkipValue, which skips strings with bytes.IndexByte instead of
// validating them). Every byte that is not a cache hit is validated strictly as it is walked; a cache hit is a
// byte-for-byte copy of a block that was validated when it was cached. Grammar errors are *rawjson.SyntaxError,
// which say at which offset of the body the JSON breaks.
//
// Depths follow rawjson's: the depth of a value is the number of objects and arrays around it.

// eachMember walks the object at b[i], which depth objects and arrays enclose, validating its structure; fn
// validates each value. fn gets the decoded key and the offset of the value, and returns the offset past it.
func eachMember(b []byte, i, depth int, fn func(key []byte, v int) (int, error)) (int, error) {
	w, err := rawjson.WalkObject(b, i, depth)
	if err != nil {
		return i, err
	}
	for {
		k, ok, err := w.Key()
		if err != nil {
			return w.At(), err
		}
		if !ok {
			return w.At(), nil
		}
		v := w.At()
		if v >= len(b) {
			return v, &rawjson.SyntaxError{Offset: v, Reason: "unexpected end of JSON input"}
		}
		end, err := fn(rawjson.KeyName(k[1:len(k)-1]), v)
		if err != nil {
			return end, err
		}
		w.SetEnd(end)
	}
}

// eachElement walks the array at b[i], which depth objects and arrays enclose; fn gets the index and offset of
// each element, validates it and returns the offset past it.
func eachElement(b []byte, i, depth int, fn func(n, v int) (int, error)) (int, error) {
	w, err := rawjson.WalkArray(b, i, depth)
	if err != nil {
		return i, err
	}
	for n := 0; ; n++ {
		v, ok, err := w.Next()
		if err != nil {
			return w.At(), err
		}
		if !ok {
			return w.At(), nil
		}
		end, err := fn(n, v)
		if err != nil {
			return end, err
		}
		w.SetEnd(end)
	}
}
