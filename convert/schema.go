package convert

// droppedSchemaKeys are the JSON Schema keywords SanitizeSchema removes: the
// ones Gemini's function declarations (an OpenAPI 3.0 subset) and similar
// strict validators refuse, and that carry no meaning a model needs.
var droppedSchemaKeys = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "$anchor": true,
	"$dynamicAnchor": true, "$dynamicRef": true,
	"additionalProperties": true, "unevaluatedProperties": true, "unevaluatedItems": true,
	"patternProperties": true, "propertyNames": true,
	"dependentRequired": true, "dependentSchemas": true, "dependencies": true,
	"examples": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"contentEncoding": true, "contentMediaType": true, "contentSchema": true,
	"deprecated": true, "readOnly": true, "writeOnly": true,
	"if": true, "then": true, "else": true, "not": true,
	"contains": true, "minContains": true, "maxContains": true,
}

// keptFormats are the "format" values Gemini accepts; others are dropped.
var keptFormats = map[string]bool{
	"enum": true, "date-time": true, "int32": true, "int64": true, "float": true, "double": true,
}

// appendSchema appends the JSON schema v, sanitized when sanitize is set,
// else as it was written.
func appendSchema(dst, v []byte, sanitize bool) []byte {
	if !sanitize {
		return append(dst, v...)
	}
	return appendSanitized(dst, v, 0)
}

func appendSanitized(dst, v []byte, depth int) []byte {
	if !isObject(v) || depth > maxDepth {
		return append(dst, v...)
	}
	dst = append(dst, '{')
	first := true
	member := func(dst []byte, key []byte) []byte {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendString(dst, key)
		return append(dst, ':')
	}
	o := newObject(v)
	for k, val, ok := o.next(); ok; k, val, ok = o.next() {
		key := keyName(k)
		switch string(key) {
		case "format":
			if keptFormats[string(inner(val))] {
				dst = member(dst, key)
				dst = append(dst, val...)
			}
		case "const":
			dst = member(dst, []byte("enum"))
			dst = append(dst, '[')
			dst = append(dst, val...)
			dst = append(dst, ']')
		case "type":
			dst = member(dst, key)
			if isArray(val) {
				// A list of types ("string", "null") becomes its first
				// non-null one.
				val = firstNonNullType(val)
			}
			dst = append(dst, val...)
		case "required":
			dst = member(dst, key)
			if props := field(v, "properties"); isArray(val) && isObject(props) {
				dst = appendDefinedRequired(dst, val, props)
			} else {
				dst = append(dst, val...)
			}
		case "properties", "$defs", "definitions":
			dst = member(dst, key)
			dst = appendSchemaMap(dst, val, depth+1)
		case "items", "additionalItems":
			dst = member(dst, key)
			if isArray(val) {
				dst = appendSchemaList(dst, val, depth+1)
			} else {
				dst = appendSanitized(dst, val, depth+1)
			}
		case "anyOf", "oneOf", "allOf", "prefixItems":
			if string(key) == "oneOf" {
				key = []byte("anyOf")
			}
			dst = member(dst, key)
			dst = appendSchemaList(dst, val, depth+1)
		default:
			if droppedSchemaKeys[string(key)] {
				continue
			}
			dst = member(dst, key)
			dst = append(dst, val...)
		}
	}
	return append(dst, '}')
}

func appendSchemaMap(dst, v []byte, depth int) []byte {
	if !isObject(v) {
		return append(dst, v...)
	}
	dst = append(dst, '{')
	o := newObject(v)
	first := true
	for k, val, ok := o.next(); ok; k, val, ok = o.next() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, k...)
		dst = append(dst, '"', ':')
		dst = appendSanitized(dst, val, depth)
	}
	return append(dst, '}')
}

func appendSchemaList(dst, v []byte, depth int) []byte {
	if !isArray(v) {
		return appendSanitized(dst, v, depth)
	}
	dst = append(dst, '[')
	a := newArray(v)
	first := true
	for e, ok := a.next(); ok; e, ok = a.next() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendSanitized(dst, e, depth)
	}
	return append(dst, ']')
}

func firstNonNullType(types []byte) []byte {
	a := newArray(types)
	for t, ok := a.next(); ok; t, ok = a.next() {
		if isString(t) && !strIs(t, "null") {
			return t
		}
	}
	return []byte(`"string"`)
}

// appendDefinedRequired keeps the names of required that props defines:
// Gemini refuses a required property that is not declared.
func appendDefinedRequired(dst, required, props []byte) []byte {
	dst = append(dst, '[')
	a := newArray(required)
	first := true
	for name, ok := a.next(); ok; name, ok = a.next() {
		if !isString(name) || field(props, str(name)) == nil {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, name...)
	}
	return append(dst, ']')
}
