package convert

type blockType uint8

const (
	blockOther blockType = iota
	blockText
	blockImage
	blockDocument
	blockToolUse
	blockToolResult
	blockThinking
	blockRedactedThinking
	blockToolReference
	blockToolAddition
	blockToolRemoval
	blockCompaction
)

var blockTypes = map[string]blockType{
	"text":              blockText,
	"image":             blockImage,
	"document":          blockDocument,
	"tool_use":          blockToolUse,
	"tool_result":       blockToolResult,
	"thinking":          blockThinking,
	"redacted_thinking": blockRedactedThinking,
	"tool_reference":    blockToolReference,
	"tool_addition":     blockToolAddition,
	"tool_removal":      blockToolRemoval,
	"compaction":        blockCompaction,
}

// block holds the members of one content block, read in one pass. Values
// are raw JSON.
type block struct {
	typ blockType
	// text is the block's text: "text" of a text block, "thinking" of a
	// thinking block, "content" of a compaction block.
	text []byte
	// id is a tool_use's "id" or a tool_result's "tool_use_id".
	id []byte
	// name is a tool_use's "name" or a tool_reference's "tool_name".
	name []byte
	// input is a tool_use's "input".
	input []byte
	// content is a tool_result's "content".
	content []byte
	// source is an image's or document's "source".
	source []byte
	// title is a document's "title".
	title []byte
	// tool is a tool_addition's or tool_removal's "tool".
	tool    []byte
	isError bool
}

func parseBlock(o *object) block {
	var b block
	var text, thinking, content, id, toolUseID, name, toolName []byte
	for k, val, ok := o.next(); ok; k, val, ok = o.next() {
		switch string(keyName(k)) {
		case "type":
			in := inner(val)
			if hasBackslash(in) {
				in = appendUnescaped(nil, in)
			}
			b.typ = blockTypes[string(in)]
		case "text":
			text = val
		case "thinking":
			thinking = val
		case "content":
			content = val
		case "id":
			id = val
		case "tool_use_id":
			toolUseID = val
		case "name":
			name = val
		case "tool_name":
			toolName = val
		case "input":
			b.input = val
		case "is_error":
			b.isError = isTrue(val)
		case "source":
			b.source = val
		case "title":
			b.title = val
		case "tool":
			b.tool = val
		}
	}
	switch b.typ {
	case blockText:
		b.text = text
	case blockThinking:
		b.text = thinking
	case blockCompaction:
		b.text = content
	case blockToolUse:
		b.id, b.name = id, name
	case blockToolResult:
		b.id, b.content = toolUseID, content
	case blockToolReference:
		b.name = toolName
	}
	return b
}

// blocks iterates over the blocks of a content array.
type blocks struct{ a array }

func newBlocks(content []byte) blocks { return blocks{newArray(content)} }

// next returns the next block; elements that are not objects are skipped.
func (bs *blocks) next() (block, bool) {
	for {
		o, isObj, ok := bs.a.nextObject()
		if !ok {
			return block{}, false
		}
		if isObj {
			b := parseBlock(&o)
			bs.a.skipPast(&o)
			return b, true
		}
	}
}
