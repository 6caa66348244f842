package inspect

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func TestRender(t *testing.T) {
	multipartBody := "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n--XyZ--\r\n"
	for _, tc := range []struct {
		name     string
		ct, ce   string
		body     []byte
		partial  bool
		kind     string
		text     string
		errLine  int
		errCol   int
		errInMsg string
		check    func(t *testing.T, v View)
	}{
		{name: "empty", ct: "application/json", body: nil, kind: "empty"},
		{name: "JSON pretty-printed", ct: "application/json; charset=utf-8", body: []byte(`{"a":[1,2],"b":{"c":"d"}}`), kind: "json",
			text: "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {\n    \"c\": \"d\"\n  }\n}"},
		{name: "JSON by suffix", ct: "application/problem+json", body: []byte(`{"x":1}`), kind: "json", text: "{\n  \"x\": 1\n}"},
		{name: "JSON sniffed without a type", ct: "", body: []byte(` [1]`), kind: "json", text: "[\n  1\n]"},
		{name: "invalid JSON: a trailing comma", ct: "application/json", body: []byte("{\n  \"a\": 1,\n  }"), kind: "json",
			errLine: 3, errCol: 3, errInMsg: "invalid character '}'"},
		{name: "invalid JSON: cut off", ct: "application/json", body: []byte(`{"a": [1, 2`), partial: true, kind: "json",
			errLine: 1, errCol: 12, errInMsg: "end of JSON input"},
		{name: "invalid JSON: after a multi-byte character", ct: "application/json", body: []byte(`{"é": x}`), kind: "json",
			errLine: 1, errCol: 7, errInMsg: "invalid character 'x'"},
		{name: "XML pretty-printed", ct: "application/xml", body: []byte(`<?xml version="1.0"?><a x="1"><b>text</b><c/><d><e>f</e></d></a>`), kind: "xml",
			text: "<?xml version=\"1.0\"?>\n<a x=\"1\">\n  <b>text</b>\n  <c/>\n  <d>\n    <e>f</e>\n  </d>\n</a>"},
		{name: "XML keeps prefixes", ct: "text/xml", body: []byte(`<s:Envelope xmlns:s="urn:x"><s:Body>1</s:Body></s:Envelope>`), kind: "xml",
			text: "<s:Envelope xmlns:s=\"urn:x\">\n  <s:Body>1</s:Body>\n</s:Envelope>"},
		{name: "invalid XML: mismatched tags", ct: "application/xml", body: []byte("<a>\n<b></c>\n</a>"), kind: "xml", errLine: 2, errInMsg: "element <b> closed by </c>"},
		{name: "invalid XML: unclosed", ct: "application/xml", body: []byte("<a><b>"), kind: "xml", errLine: 1, errInMsg: "unexpected EOF"},
		{name: "form", ct: "application/x-www-form-urlencoded", body: []byte("name=Ada+L&lang=go%21&empty="), kind: "form",
			check: func(t *testing.T, v View) {
				want := []Field{{"name", "Ada L"}, {"lang", "go!"}, {"empty", ""}}
				if len(v.Fields) != len(want) {
					t.Fatalf("fields %v", v.Fields)
				}
				for i := range want {
					if v.Fields[i] != want[i] {
						t.Errorf("field %d = %v, want %v", i, v.Fields[i], want[i])
					}
				}
			}},
		{name: "a bad form", ct: "application/x-www-form-urlencoded", body: []byte("a=1&b=%zz"), kind: "text", errLine: 1, errCol: 5},
		{name: "multipart", ct: "multipart/form-data; boundary=XyZ", body: []byte(multipartBody), kind: "multipart",
			check: func(t *testing.T, v View) {
				if len(v.Parts) != 2 || v.Parts[0].Name != "title" || v.Parts[0].Text != "hello" ||
					v.Parts[1].Filename != "a.bin" || !v.Parts[1].Binary || v.Parts[1].Size != 3 || v.Error != nil {
					t.Errorf("parts %+v, error %v", v.Parts, v.Error)
				}
			}},
		{name: "an image", ct: "image/png", body: []byte("\x89PNG\r\n\x1a\n"), kind: "image"},
		{name: "text", ct: "text/plain; charset=utf-8", body: []byte("hello\nworld ✓"), kind: "text", text: "hello\nworld ✓"},
		{name: "text cut inside a character", ct: "text/plain", body: []byte("ab✓")[:4], partial: true, kind: "text", text: "ab"},
		{name: "binary", ct: "application/octet-stream", body: []byte{0, 1, 2, 'A'}, kind: "binary",
			check: func(t *testing.T, v View) {
				if !strings.HasPrefix(v.Hex, "00000000  00 01 02 41") || !strings.Contains(v.Hex, "|...A|") {
					t.Errorf("hex %q", v.Hex)
				}
			}},
		{name: "binary declared as text", ct: "text/plain", body: []byte{0, 0xff, 0xfe}, kind: "binary"},
		{name: "gzip decoded", ct: "application/json", ce: "gzip", body: gz(`{"z":true}`), kind: "json", text: "{\n  \"z\": true\n}",
			check: func(t *testing.T, v View) {
				if v.Decoded != "gzip" {
					t.Errorf("decoded %q", v.Decoded)
				}
			}},
		{name: "an unknown coding", ct: "application/json", ce: "br", body: []byte{1, 2, 3}, kind: "binary",
			check: func(t *testing.T, v View) {
				if !strings.Contains(v.Note, "br") {
					t.Errorf("note %q", v.Note)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Render(tc.ct, tc.ce, tc.body, tc.partial)
			if v.Kind != tc.kind {
				t.Fatalf("kind %q, want %q (%+v)", v.Kind, tc.kind, v)
			}
			if tc.text != "" && v.Text != tc.text {
				t.Errorf("text:\n%s\nwant:\n%s", v.Text, tc.text)
			}
			switch {
			case tc.errLine == 0 && v.Error != nil:
				t.Errorf("unexpected error %v", v.Error)
			case tc.errLine != 0 && v.Error == nil:
				t.Errorf("no error, want one at line %d", tc.errLine)
			case tc.errLine != 0:
				if v.Error.Line != tc.errLine || (tc.errCol != 0 && v.Error.Column != tc.errCol) || !strings.Contains(v.Error.Message, tc.errInMsg) {
					t.Errorf("error %+v, want line %d column %d with %q", v.Error, tc.errLine, tc.errCol, tc.errInMsg)
				}
				if v.Text != string(tc.body) && v.Kind != "text" {
					t.Errorf("an invalid document should be shown as it is, got %q", v.Text)
				}
			}
			if v.Partial != tc.partial {
				t.Errorf("partial %v", v.Partial)
			}
			if tc.check != nil {
				tc.check(t, v)
			}
		})
	}
}
