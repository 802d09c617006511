package tokens

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"image"
	_ "image/gif" // registers the GIF header reader for image.DecodeConfig
	_ "image/jpeg"
	_ "image/png"
	"math"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Anthropic's published image rule: an image costs about width×height/750 tokens, after it is scaled down
// (aspect ratio kept) so that its long edge is at most 1568 px and it costs at most about 1,600 tokens.
const (
	imagePixelsPerToken = 750
	// DefaultImageMaxLongEdge is the long edge, in pixels, beyond which Anthropic scales an image down.
	DefaultImageMaxLongEdge = 1568
	// DefaultImageMaxTokens is what the largest image costs after scaling.
	DefaultImageMaxTokens = 1600
)

// imageTokens applies the rule to an image of w×h pixels.
func imageTokens(w, h, maxLongEdge, maxTokens int) int {
	fw, fh := float64(w), float64(h)
	if long := math.Max(fw, fh); long > float64(maxLongEdge) {
		s := float64(maxLongEdge) / long
		fw, fh = fw*s, fh*s
	}
	t := math.Ceil(fw * fh / imagePixelsPerToken)
	if t > float64(maxTokens) {
		return maxTokens
	}
	return max(1, int(t))
}

// imageSize reads the pixel size of a PNG, JPEG, GIF or WebP image from its base64 text (the raw content of a
// JSON string, escapes allowed). Only the header is decoded, however large the image.
func imageSize(b64 []byte) (w, h int, ok bool) {
	if bytes.IndexByte(b64, '\\') >= 0 {
		b64 = rawjson.AppendUnescaped(nil, b64)
	}
	if bytes.HasPrefix(b64, []byte("data:")) {
		if i := bytes.IndexByte(b64, ','); i >= 0 {
			b64 = b64[i+1:]
		}
	}
	// 40 base64 characters give the first 30 bytes, enough for the PNG, GIF and WebP headers.
	var head [30]byte
	n, _ := base64.StdEncoding.Decode(head[:], b64[:min(len(b64), 40)])
	if w, h, ok := webpSize(head[:n]); ok {
		return w, h, true
	}
	cfg, _, err := image.DecodeConfig(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(b64)))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return 0, 0, false
	}
	return cfg.Width, cfg.Height, true
}

// webpSize parses the three WebP headers (lossy VP8, lossless VP8L, extended VP8X); the standard library has
// no WebP reader.
func webpSize(b []byte) (w, h int, ok bool) {
	if len(b) < 30 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		return 0, 0, false
	}
	switch string(b[12:16]) {
	case "VP8 ":
		if b[23] != 0x9d || b[24] != 0x01 || b[25] != 0x2a {
			return 0, 0, false
		}
		w = int(binary.LittleEndian.Uint16(b[26:]) & 0x3fff)
		h = int(binary.LittleEndian.Uint16(b[28:]) & 0x3fff)
	case "VP8L":
		if b[20] != 0x2f {
			return 0, 0, false
		}
		bits := binary.LittleEndian.Uint32(b[21:])
		w = int(bits&0x3fff) + 1
		h = int(bits>>14&0x3fff) + 1
	case "VP8X":
		w = int(uint32(b[24])|uint32(b[25])<<8|uint32(b[26])<<16) + 1
		h = int(uint32(b[27])|uint32(b[28])<<8|uint32(b[29])<<16) + 1
	default:
		return 0, 0, false
	}
	return w, h, w > 0 && h > 0
}

// pdfPages estimates the page count of a base64 PDF by counting its page objects ("/Type /Page", not
// "/Pages"). Page objects inside compressed object streams are invisible to this, so a PDF showing none is
// reckoned at one page per pdfBytesPerPage of data, between 1 and the API's 100-page limit.
func pdfPages(b64 []byte) int {
	if bytes.IndexByte(b64, '\\') >= 0 {
		b64 = rawjson.AppendUnescaped(nil, b64)
	}
	data := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, _ := base64.StdEncoding.Decode(data, b64)
	data = data[:n]
	pages := 0
	for i := 0; ; {
		k := bytes.Index(data[i:], []byte("/Type"))
		if k < 0 {
			break
		}
		j := i + k + len("/Type")
		for j < len(data) && (data[j] == ' ' || data[j] == '\r' || data[j] == '\n' || data[j] == '\t') {
			j++
		}
		if bytes.HasPrefix(data[j:], []byte("/Page")) && (j+5 >= len(data) || data[j+5] != 's') {
			pages++
		}
		i = j
	}
	if pages == 0 {
		pages = min(max(1, (n+pdfBytesPerPage-1)/pdfBytesPerPage), pdfMaxPages)
	}
	return pages
}

const (
	pdfBytesPerPage = 20 << 10
	pdfMaxPages     = 100
)
