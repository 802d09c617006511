package convert

import "github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"

// The converters work on raw JSON with the module's grammar (internal/rawjson):
// a request is validated once, then walked with the non-validating iterators,
// and every string that only changes place (message text, tool schemas,
// base64 images) is copied as it was written instead of being decoded and
// encoded again. This is what keeps a 50 KB Claude Code request well under
// 100 µs. The names below are the converters' short spellings of rawjson's.

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = rawjson.MaxDepth

func isSpace(c byte) bool               { return rawjson.IsSpace(c) }
func skipSpace(b []byte, i int) int     { return rawjson.SkipSpace(b, i) }
func validJSON(b []byte) bool           { return rawjson.Valid(b) }
func field(v []byte, key string) []byte { return rawjson.Field(v, key) }

// checkOrSkip validates the value starting at b[i], which depth objects
// and arrays enclose, and returns the index just past it; in a document
// known to be valid it only skips it.
func checkOrSkip(b []byte, i, depth int, valid bool) (int, error) {
	return rawjson.CheckOrSkip(b, i, depth, valid)
}

// span locates a value read from a document by its offsets in it, so that
// the same value is found in another document that holds the same bytes at
// the same place. A nil value is span{-1, -1}.
type span [2]int

// spanOf returns where v, a slice of base, stands in base; ok is false when
// it does not stand within it.
func spanOf(base, v []byte) (s span, ok bool) {
	if v == nil {
		return span{-1, -1}, true
	}
	// v is a slice of base's array: their capacities say where it starts.
	at := cap(base) - cap(v)
	if at < 0 || at+len(v) > len(base) {
		return span{}, false
	}
	return span{at, at + len(v)}, true
}

// of returns the value in b, nil for the span of nil.
func (s span) of(b []byte) []byte {
	if s[0] < 0 {
		return nil
	}
	return b[s[0]:s[1]:s[1]]
}

// vobject walks an object and validates it as it goes (rawjson.ObjectWalk):
// the caller takes each key, then validates its value with value (or with a
// walk of its own that ends at setEnd).
type vobject struct{ w rawjson.ObjectWalk }

// newVObject starts a walk of the object at b[i]; ok is false when there is
// no object there, or when it would nest too deeply.
func newVObject(b []byte, i, depth int) (vobject, bool) {
	w, err := rawjson.WalkObject(b, i, depth)
	return vobject{w}, err == nil
}

// newValidVObject is newVObject over a document known to be valid
// (rawjson.WalkValidObject): it is read without being checked again.
func newValidVObject(b []byte, i, depth int) (vobject, bool) {
	w, err := rawjson.WalkValidObject(b, i, depth)
	return vobject{w}, err == nil
}

// key returns the next key (as written between its quotes) and leaves the
// walk at its value; ok is false after the closing brace, and at() then
// says where the object ends.
func (o *vobject) key() (key []byte, ok bool, err error) {
	k, ok, err := o.w.Key()
	if !ok {
		return nil, false, err
	}
	return k[1 : len(k)-1], true, nil
}

func (o *vobject) value() ([]byte, error) { return o.w.Value() }
func (o *vobject) at() int                { return o.w.At() }
func (o *vobject) setEnd(end int)         { o.w.SetEnd(end) }

// varray is vobject for arrays (rawjson.ArrayWalk).
type varray struct{ w rawjson.ArrayWalk }

func newVArray(b []byte, i, depth int) (varray, bool) {
	w, err := rawjson.WalkArray(b, i, depth)
	return varray{w}, err == nil
}

func newValidVArray(b []byte, i, depth int) (varray, bool) {
	w, err := rawjson.WalkValidArray(b, i, depth)
	return varray{w}, err == nil
}

// elem leaves the walk at the next element and returns where it starts; ok
// is false after the closing bracket.
func (a *varray) elem() (start int, ok bool, err error) { return a.w.Next() }
func (a *varray) value() ([]byte, error)                { return a.w.Value() }
func (a *varray) at() int                               { return a.w.At() }
func (a *varray) setEnd(end int)                        { a.w.SetEnd(end) }

// object iterates over the members of a validated object (rawjson.Object).
type object struct{ it rawjson.Object }

func newObject(v []byte) object { return object{rawjson.NewObject(v)} }

// next returns the next member: its key as written between the quotes, and
// its raw value.
func (o *object) next() (key, val []byte, ok bool) { return o.it.Next() }

// array iterates over the elements of a validated array (rawjson.Array).
type array struct{ it rawjson.Array }

func newArray(v []byte) array { return array{rawjson.NewArray(v)} }

func (a *array) next() (val []byte, ok bool) { return a.it.Next() }

// nextObject returns the next element read in place, without a pass to find
// its end first; the caller reads it and hands it back with skipPast before
// asking for the next. isObject is false, and the element skipped, when it
// is not an object.
func (a *array) nextObject() (o object, isObject, ok bool) {
	it, isObject, ok := a.it.NextObject()
	return object{it}, isObject, ok
}

// skipPast moves the array past an element that nextObject returned.
func (a *array) skipPast(o *object) { a.it.SkipPast(&o.it) }

func keyIs(k []byte, s string) bool { return rawjson.KeyIs(k, s) }
func keyName(k []byte) []byte       { return rawjson.KeyName(k) }
func hasBackslash(b []byte) bool    { return rawjson.HasBackslash(b) }
func isString(v []byte) bool        { return rawjson.IsString(v) }
func isObject(v []byte) bool        { return rawjson.IsObject(v) }
func isArray(v []byte) bool         { return rawjson.IsArray(v) }
func isNumber(v []byte) bool        { return rawjson.IsNumber(v) }
func isTrue(v []byte) bool          { return string(v) == "true" }
func inner(v []byte) []byte         { return rawjson.Inner(v) }
func strIs(v []byte, s string) bool { return rawjson.StrIs(v, s) }
func str(v []byte) string           { return rawjson.Str(v) }

// nonEmptyString reports whether v is a string with at least one character.
func nonEmptyString(v []byte) bool { return len(v) > 2 && v[0] == '"' }

// intValue returns a JSON number as an int64, truncating fractions; ok is
// false for anything else.
func intValue(v []byte) (int64, bool) { return rawjson.Int(v) }

func appendUnescaped(dst, in []byte) []byte { return rawjson.AppendUnescaped(dst, in) }
func appendCompact(dst, v []byte) []byte    { return rawjson.AppendCompact(dst, v) }
func appendQuotedJSON(dst, v []byte) []byte { return rawjson.AppendQuotedJSON(dst, v) }

// appendString appends s as a quoted JSON string: rawjson.AppendString, spelled
// out because a generic function that only calls another does not fit the
// inlining budget, and the appends here must stay inlined.
func appendString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	dst = rawjson.AppendEscaped(dst, s)
	return append(dst, '"')
}
