package inspect

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Bounds of a view.
const (
	// hexLimit is how much of a binary body the hex dump shows.
	hexLimit = 16 << 10
	// decodedLimit bounds a body once its gzip or deflate coding is
	// undone.
	decodedLimit = 8 << 20
	// partTextLimit is the most of one multipart part shown as text.
	partTextLimit = 16 << 10
)

// View is a body as a person wants to read it, for the page. Kind says
// which fields are set:
//
//   - "empty": nothing.
//   - "json", "xml": Text pretty-printed; or, for an invalid document,
//     Text as it is and Error saying where.
//   - "form": Fields, in order (application/x-www-form-urlencoded).
//   - "multipart": Parts (multipart/form-data and other multipart types).
//   - "image": nothing; the page shows the body endpoint in an img.
//   - "text": Text.
//   - "binary": Hex, a hex dump of the start.
type View struct {
	Kind        string      `json:"kind"`
	ContentType string      `json:"content_type,omitempty"`
	Size        int         `json:"size"`
	Text        string      `json:"text,omitempty"`
	Error       *ParseError `json:"error,omitempty"`
	Fields      []Field     `json:"fields,omitempty"`
	Parts       []Part      `json:"parts,omitempty"`
	Hex         string      `json:"hex,omitempty"`
	// Partial says the body is only partly kept (or was still arriving):
	// an error at its end may be only that.
	Partial bool `json:"partial,omitempty"`
	// Decoded names the content coding undone before rendering.
	Decoded string `json:"decoded,omitempty"`
	Note    string `json:"note,omitempty"`
}

// ParseError says where a document is invalid. Line and Column count
// from 1 (columns in characters); Offset is in bytes from 0.
type ParseError struct {
	Message string `json:"message"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Offset  int    `json:"offset"`
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Message)
}

// Field is one name and value of a form.
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Part is one part of a multipart body.
type Part struct {
	Name        string `json:"name,omitempty"`
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int    `json:"size"`
	Text        string `json:"text,omitempty"`
	Binary      bool   `json:"binary,omitempty"`
}

// Render returns the view of body b, sent with the Content-Type ct and
// Content-Encoding ce. partial says b is not the whole body.
func Render(ct, ce string, b []byte, partial bool) View {
	v := View{ContentType: ct, Size: len(b), Partial: partial}
	if len(b) == 0 {
		v.Kind = "empty"
		return v
	}
	switch strings.ToLower(strings.TrimSpace(ce)) {
	case "", "identity":
	case "gzip", "x-gzip":
		if d, err := decode(b, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }); err == nil {
			b, v.Decoded = d, "gzip"
		}
	case "deflate":
		d, err := decode(b, func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) })
		if err != nil {
			// Some servers send raw DEFLATE, without zlib's wrapper.
			d, err = decode(b, func(r io.Reader) (io.Reader, error) { return flate.NewReader(r), nil })
		}
		if err == nil {
			b, v.Decoded = d, "deflate"
		}
	default:
		v.Note = "encoded with " + ce + ", which the inspector does not decode"
		v.Kind, v.Hex = "binary", hexDump(b)
		return v
	}
	mt, params, _ := mime.ParseMediaType(ct)
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		((mt == "" || mt == "text/plain") && looksLikeJSON(b)):
		v.Kind = "json"
		v.Text, v.Error = prettyJSON(b)
	case mt == "application/xml" || mt == "text/xml" || strings.HasSuffix(mt, "+xml") ||
		(mt == "" && bytes.HasPrefix(bytes.TrimSpace(b), []byte("<?xml"))):
		v.Kind = "xml"
		v.Text, v.Error = prettyXML(b)
	case mt == "application/x-www-form-urlencoded":
		fields, err := parseForm(b)
		if err != nil {
			v.Kind, v.Text, v.Error = "text", textOf(b), err
			return v
		}
		v.Kind, v.Fields = "form", fields
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		v.Kind = "multipart"
		v.Parts, v.Error = parseMultipart(b, params["boundary"])
	case strings.HasPrefix(mt, "image/"):
		v.Kind = "image"
	case strings.HasPrefix(mt, "text/") || mt == "application/javascript" || mt == "application/ecmascript" || looksLikeText(b):
		if !looksLikeText(b) {
			v.Kind, v.Hex = "binary", hexDump(b)
			v.Note = "declared as " + mt + " but not UTF-8 text"
			return v
		}
		v.Kind, v.Text = "text", textOf(b)
	default:
		v.Kind, v.Hex = "binary", hexDump(b)
	}
	if v.Kind == "binary" && len(b) > hexLimit {
		v.Note = fmt.Sprintf("the first %d of %d bytes", hexLimit, len(b))
	}
	return v
}

func decode(b []byte, open func(io.Reader) (io.Reader, error)) ([]byte, error) {
	r, err := open(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	d, err := io.ReadAll(io.LimitReader(r, decodedLimit))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) || len(d) == 0 {
		return nil, errors.Join(err, errors.New("nothing decoded"))
	}
	return d, nil
}

func looksLikeJSON(b []byte) bool {
	t := bytes.TrimSpace(b)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t)
}

// looksLikeText reports whether b is UTF-8 text without the control
// characters that mark binary data.
func looksLikeText(b []byte) bool {
	s := validPrefix(b)
	if len(b)-len(s) >= utf8.UTFMax {
		return false
	}
	for _, r := range s {
		if r == utf8.RuneError || (r < 0x20 && r != '\t' && r != '\n' && r != '\r' && r != '\f' && r != 0x1b) || r == 0x7f {
			return false
		}
	}
	return true
}

func textOf(b []byte) string { return strings.ToValidUTF8(validPrefix(b), "\uFFFD") }

func hexDump(b []byte) string { return hex.Dump(b[:min(len(b), hexLimit)]) }

// position turns a byte offset of b into a line and column.
func position(b []byte, off int) (line, col int) {
	off = max(0, min(off, len(b)))
	before := b[:off]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = 1 + utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:])
	return line, col
}

func prettyJSON(b []byte) (string, *ParseError) {
	var out bytes.Buffer
	err := json.Indent(&out, bytes.TrimSpace(b), "", "  ")
	if err == nil {
		return out.String(), nil
	}
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return textOf(b), &ParseError{Message: err.Error(), Line: 1, Column: 1}
	}
	// Offset counts the bytes read, the bad one included; at the end of
	// the input there is no bad byte.
	lead := len(b) - len(bytes.TrimLeft(b, " \t\r\n"))
	off := lead + int(se.Offset)
	if off <= len(bytes.TrimRight(b, " \t\r\n")) && !strings.Contains(se.Error(), "end of JSON input") {
		off--
	}
	off = max(0, min(off, len(b)))
	line, col := position(b, off)
	return textOf(b), &ParseError{Message: strings.TrimPrefix(se.Error(), "json: "), Line: line, Column: col, Offset: off}
}

func prettyXML(b []byte) (string, *ParseError) {
	// A first pass checks the document (Token checks that elements
	// nest); the second prints it with the prefixes as written, which
	// only RawToken keeps.
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	roots := 0
	depth := 0
	for {
		t, err := d.Token()
		if err == io.EOF {
			if roots == 0 {
				return textOf(b), &ParseError{Message: "no root element", Line: 1, Column: 1}
			}
			break
		}
		if err != nil {
			line, col := d.InputPos()
			msg := err.Error()
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				msg = se.Msg
			}
			return textOf(b), &ParseError{Message: msg, Line: line, Column: col, Offset: int(d.InputOffset())}
		}
		switch t.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	var out strings.Builder
	d = xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	depth = 0
	var open string // a start tag not yet written: its element may hold only text
	var text string
	indent := func(n int) { out.WriteString(strings.Repeat("  ", max(0, n))) }
	flushOpen := func() {
		if open != "" {
			indent(depth - 1)
			out.WriteString(open + "\n")
			if text != "" {
				indent(depth)
				out.WriteString(text + "\n")
			}
			open, text = "", ""
		}
	}
	for {
		t, err := d.RawToken()
		if err != nil {
			break
		}
		switch t := t.(type) {
		case xml.StartElement:
			flushOpen()
			var tag strings.Builder
			tag.WriteString("<" + xmlName(t.Name))
			for _, a := range t.Attr {
				tag.WriteString(" " + xmlName(a.Name) + `="`)
				xml.EscapeText(&tag, []byte(a.Value))
				tag.WriteString(`"`)
			}
			tag.WriteString(">")
			open = tag.String()
			depth++
		case xml.EndElement:
			depth--
			if open != "" {
				indent(depth)
				if text == "" {
					out.WriteString(strings.TrimSuffix(open, ">") + "/>\n")
				} else {
					out.WriteString(open + text + "</" + xmlName(t.Name) + ">\n")
				}
				open, text = "", ""
				continue
			}
			indent(depth)
			out.WriteString("</" + xmlName(t.Name) + ">\n")
		case xml.CharData:
			s := strings.TrimSpace(string(t))
			if s == "" {
				continue
			}
			var esc strings.Builder
			xml.EscapeText(&esc, []byte(s))
			if open != "" && text == "" {
				text = esc.String()
				continue
			}
			flushOpen()
			indent(depth)
			out.WriteString(esc.String() + "\n")
		case xml.Comment:
			flushOpen()
			indent(depth)
			out.WriteString("<!--" + string(t) + "-->\n")
		case xml.ProcInst:
			flushOpen()
			indent(depth)
			out.WriteString("<?" + t.Target + " " + string(t.Inst) + "?>\n")
		case xml.Directive:
			flushOpen()
			indent(depth)
			out.WriteString("<!" + string(t) + ">\n")
		}
	}
	flushOpen()
	return strings.TrimSuffix(out.String(), "\n"), nil
}

func xmlName(n xml.Name) string {
	if n.Space != "" {
		return n.Space + ":" + n.Local
	}
	return n.Local
}

// parseForm splits an application/x-www-form-urlencoded body into its
// fields, in order.
func parseForm(b []byte) ([]Field, *ParseError) {
	var fields []Field
	off := 0
	for pair := range strings.SplitSeq(string(b), "&") {
		start := off
		off += len(pair) + 1
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		name, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(v)
		if err := errors.Join(err1, err2); err != nil {
			line, col := position(b, start)
			return nil, &ParseError{Message: "invalid escape in " + fmt.Sprintf("%q", pair), Line: line, Column: col, Offset: start}
		}
		fields = append(fields, Field{Name: name, Value: value})
	}
	return fields, nil
}

func parseMultipart(b []byte, boundary string) ([]Part, *ParseError) {
	r := multipart.NewReader(bytes.NewReader(b), boundary)
	var parts []Part
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return parts, &ParseError{Message: fmt.Sprintf("part %d: %v", len(parts)+1, err), Line: 1, Column: 1}
		}
		data, err := io.ReadAll(p)
		pt := Part{Name: p.FormName(), Filename: p.FileName(), ContentType: p.Header.Get("Content-Type"), Size: len(data)}
		if pt.Filename == "" && len(data) <= partTextLimit && looksLikeText(data) || strings.HasPrefix(pt.ContentType, "text/") && looksLikeText(data) {
			pt.Text = textOf(data[:min(len(data), partTextLimit)])
		} else {
			pt.Binary = true
		}
		parts = append(parts, pt)
		if err != nil {
			return parts, &ParseError{Message: fmt.Sprintf("part %d: %v", len(parts), err), Line: 1, Column: 1}
		}
	}
}
