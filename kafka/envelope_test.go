package kafka

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

func ptrs(hs []sarama.RecordHeader) []*sarama.RecordHeader {
	out := make([]*sarama.RecordHeader, len(hs))
	for i := range hs {
		out[i] = &hs[i]
	}
	return out
}

func TestEnvelopeRoundTrip(t *testing.T) {
	part := int32(3)
	for _, f := range []Format{FormatJSON, FormatProtobuf, FormatRaw} {
		for _, body := range [][]byte{nil, []byte("text"), {0xff, 0, 1}} {
			req := &kafkav1.Request{CorrelationId: "c1", Method: "POST", Path: "/p", Query: "a=b", ReplyTopic: "r", ReplyPartition: &part,
				Headers: []*kafkav1.Header{{Name: "x-a", Value: "1"}, {Name: "x-a", Value: "2"}}, Body: body}
			v, hs, err := EncodeRequest(f, DefaultHeaderNames, req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeRequest(f, DefaultHeaderNames, v, ptrs(hs))
			if err != nil {
				t.Fatal(err)
			}
			if got.GetCorrelationId() != "c1" || got.GetMethod() != "POST" || got.GetPath() != "/p" || got.GetQuery() != "a=b" ||
				got.GetReplyTopic() != "r" || got.GetReplyPartition() != 3 || !bytes.Equal(RequestBodyOf(got), body) || len(got.GetHeaders()) != 2 {
				t.Errorf("%v %q: got %v", f, body, got)
			}
			rep := &kafkav1.Reply{CorrelationId: "c1", Status: 404, Headers: []*kafkav1.Header{{Name: "X-B", Value: "v"}}, Body: body}
			v, hs, err = EncodeReply(f, DefaultHeaderNames, rep)
			if err != nil {
				t.Fatal(err)
			}
			gr, err := DecodeReply(f, DefaultHeaderNames, v, ptrs(hs))
			if err != nil {
				t.Fatal(err)
			}
			if gr.GetStatus() != 404 || !bytes.Equal(gr.GetBody(), body) || len(gr.GetHeaders()) != 1 || gr.GetHeaders()[0].GetName() != "x-b" {
				t.Errorf("%v %q: reply %v", f, body, gr)
			}
			if id := replyCorrelation("kafka_correlationId", v, nil); f != FormatRaw && id != "c1" {
				t.Errorf("%v: envelope correlation = %q", f, id)
			}
		}
	}
}

func TestJSONBodyRule(t *testing.T) {
	// Text: the text itself in body, no body_base64, no body_text.
	v, _, err := EncodeReply(FormatJSON, DefaultHeaderNames, &kafkav1.Reply{Body: []byte("héllo <world> & \"q\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(v, &env); err != nil {
		t.Fatalf("not JSON: %v: %s", err, v)
	}
	if env["body"] != "héllo <world> & \"q\"\n" || env["body_base64"] != nil || env["body_text"] != nil {
		t.Errorf("text body not plain in body: %s", v)
	}
	// Binary: base64 with body_base64 true (Kong kafka-upstream's convention).
	v, _, _ = EncodeReply(FormatJSON, DefaultHeaderNames, &kafkav1.Reply{Body: []byte{0xff}})
	env = nil
	if err := json.Unmarshal(v, &env); err != nil || env["body"] != "/w==" || env["body_base64"] != true {
		t.Errorf("binary body not base64 with body_base64: %s (%v)", v, err)
	}
	// Empty: no body field; a message with nothing else is still an object.
	for _, rep := range []*kafkav1.Reply{{}, {Status: 204}} {
		v, _, _ = EncodeReply(FormatJSON, DefaultHeaderNames, rep)
		env = nil
		if err := json.Unmarshal(v, &env); err != nil || env["body"] != nil || env["body_base64"] != nil {
			t.Errorf("empty body: %s (%v)", v, err)
		}
	}
	// The legacy body_text field on the Go side is written as body too.
	v, _, _ = EncodeReply(FormatJSON, DefaultHeaderNames, &kafkav1.Reply{BodyText: "t t"})
	if err := json.Unmarshal(v, &env); err != nil || env["body"] != "t t" || env["body_text"] != nil {
		t.Errorf("BodyText not written as body: %s (%v)", v, err)
	}
	v, _, _ = EncodeReply(FormatProtobuf, DefaultHeaderNames, &kafkav1.Reply{BodyText: "t"})
	var r kafkav1.Reply
	if err := proto.Unmarshal(v, &r); err != nil || string(r.Body) != "t" || r.BodyText != "" {
		t.Errorf("protobuf must carry body: %v %v", &r, err)
	}
	v, _, _ = EncodeReply(FormatProtobuf, DefaultHeaderNames, &kafkav1.Reply{Body: []byte("pong")})
	r.Reset()
	if err := proto.Unmarshal(v, &r); err != nil || string(r.Body) != "pong" {
		t.Errorf("protobuf must carry the raw bytes in body: %v %v", &r, err)
	}
}

// TestJSONBinaryRequest: a binary request body goes as base64 with
// body_base64 true; a text one as itself.
func TestJSONBinaryRequest(t *testing.T) {
	for _, tc := range []struct {
		body    []byte
		want    string
		base64d bool
	}{
		{[]byte{0x00, 0xff, 'b', 'i', 'n'}, "AP9iaW4=", true},
		{[]byte("hello world"), "hello world", false},
		{[]byte(`{"k":"v"}`), `{"k":"v"}`, false},
	} {
		v, _, err := EncodeRequest(FormatJSON, DefaultHeaderNames, &kafkav1.Request{CorrelationId: "c", Method: "POST", Body: tc.body})
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]any
		if err := json.Unmarshal(v, &env); err != nil {
			t.Fatalf("not JSON: %v: %s", err, v)
		}
		if env["body"] != tc.want || (env["body_base64"] == true) != tc.base64d || env["body_text"] != nil {
			t.Errorf("%q: envelope %s, want body %q base64 %v", tc.body, v, tc.want, tc.base64d)
		}
		got, err := DecodeRequest(FormatJSON, DefaultHeaderNames, v, nil)
		if err != nil || !bytes.Equal(got.GetBody(), tc.body) || got.GetCorrelationId() != "c" || got.GetMethod() != "POST" {
			t.Errorf("%q: round trip %v %v", tc.body, got, err)
		}
	}
}

// TestJSONHandWrittenReplies: JSON replies written by hand (headers as an
// object, text or base64 bodies) and by older writers decode to what their
// author meant.
func TestJSONHandWrittenReplies(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		status      int32
		body        string
		headers     []string // name, value pairs in order
	}{
		{"headers object and text body", `{"status":200,"headers":{"content-type":"text/plain","x-multi":["1","2"]},"body":"pong","correlation_id":"c1"}`,
			200, "pong", []string{"content-type", "text/plain", "x-multi", "1", "x-multi", "2"}},
		{"text that is not base64", `{"status":201,"body":"hello world","correlation_id":"c1"}`, 201, "hello world", nil},
		{"text that is also base64", `{"body":"/w==","correlation_id":"c1"}`, 200, "/w==", nil},
		{"base64", `{"status":200,"body":"AP9iaW4=","body_base64":true,"correlation_id":"c1"}`, 200, "\x00\xffbin", nil},
		{"base64 url-safe unpadded", `{"body":"_-8","body_base64":true}`, 200, "\xff\xef", nil},
		{"body_base64 false", `{"body":"AP9iaW4=","body_base64":false}`, 200, "AP9iaW4=", nil},
		{"legacy body_text", `{"status":202,"headers":[{"name":"x-from","value":"old"}],"body_text":"pong"}`, 202, "pong", []string{"x-from", "old"}},
		{"json body", `{"status":200,"body":{"price": 42}}`, 200, `{"price":42}`, nil},
		{"null body and headers", `{"status":200,"body":null,"headers":{"x-a":null}}`, 200, "", nil},
		{"camelCase fields", `{"status":"200","correlationId":"c1","body":"x"}`, 200, "x", nil},
		{"escaped text", `{"body":"a\u00e9\n\"b\""}`, 200, "a\u00e9\n\"b\"", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := []*sarama.RecordHeader{{Key: []byte("kafka_correlationId"), Value: []byte("c1")}}
			rep, err := DecodeReply(FormatJSON, DefaultHeaderNames, []byte(tc.value), hs)
			if err != nil {
				t.Fatal(err)
			}
			if rep.GetStatus() != tc.status || string(rep.GetBody()) != tc.body || rep.GetBodyText() != "" || rep.GetCorrelationId() != "c1" {
				t.Errorf("got status %d body %q text %q id %q", rep.GetStatus(), rep.GetBody(), rep.GetBodyText(), rep.GetCorrelationId())
			}
			var got []string
			for _, h := range rep.GetHeaders() {
				got = append(got, h.GetName(), h.GetValue())
			}
			if !slices.Equal(got, tc.headers) {
				t.Errorf("headers %q, want %q", got, tc.headers)
			}
		})
	}
	for _, bad := range []string{
		`{"body":"not base64!","body_base64":true}`,
		`{"body":{"a":1},"body_base64":true}`,
		`{"body":"x","body_base64":"yes"}`,
		`{"headers":{"x-a":1}}`,
		`{"status":"oops","body":"x"}`,
		`null`, `[]`, `"pong"`,
	} {
		if rep, err := DecodeReply(FormatJSON, DefaultHeaderNames, []byte(bad), nil); err == nil {
			t.Errorf("%s accepted: %v", bad, rep)
		}
	}
	// The envelope's correlation_id is found without a record header, also
	// when the body is text protojson could not read as bytes.
	for _, v := range []string{`{"status":200,"body":"hello world","correlation_id":"c9"}`, `{"correlationId":"c9","headers":{"a":"b"}}`} {
		if id := replyCorrelation("kafka_correlationId", []byte(v), nil); id != "c9" {
			t.Errorf("%s: correlation %q", v, id)
		}
	}
}

// TestJSONRoundTripBodies: every body survives a JSON round trip, and the
// JSON is text exactly when the body is valid UTF-8.
func TestJSONRoundTripBodies(t *testing.T) {
	bodies := [][]byte{nil, {}, []byte("pong"), []byte("hello world"), []byte("é€😀"), {0}, {0xff, 0xfe}, []byte("ok\x80"),
		[]byte(`{"a":[1,2]}`), []byte("/w=="), []byte("line1\nline2\t<&>"), bytes.Repeat([]byte{0xc3}, 1000)}
	for _, b := range bodies {
		v, _, err := EncodeReply(FormatJSON, DefaultHeaderNames, &kafkav1.Reply{Status: 200, CorrelationId: "r", Body: b})
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(v) {
			t.Fatalf("%q: invalid JSON %s", b, v)
		}
		if b64 := bytes.Contains(v, []byte(`"body_base64":true`)); b64 == utf8.Valid(b) && len(b) > 0 {
			t.Errorf("%q: body_base64 %v for valid UTF-8 %v: %s", b, b64, utf8.Valid(b), v)
		}
		rep, err := DecodeReply(FormatJSON, DefaultHeaderNames, v, nil)
		if err != nil || !bytes.Equal(rep.GetBody(), b) || rep.GetCorrelationId() != "r" {
			t.Errorf("%q: reply round trip %q %v", b, rep.GetBody(), err)
		}
		v, _, err = EncodeRequest(FormatJSON, DefaultHeaderNames, &kafkav1.Request{CorrelationId: "q", Body: b})
		if err != nil {
			t.Fatal(err)
		}
		req, err := DecodeRequest(FormatJSON, DefaultHeaderNames, v, nil)
		if err != nil || !bytes.Equal(req.GetBody(), b) || req.GetCorrelationId() != "q" {
			t.Errorf("%q: request round trip %q %v", b, req.GetBody(), err)
		}
	}
}

func TestSpringBinaryCorrelation(t *testing.T) {
	u := uuid.New()
	b, _ := u.MarshalBinary()
	if got := CorrelationString(b); got != u.String() {
		t.Errorf("got %q want %q", got, u)
	}
	if got := CorrelationString([]byte("0123456789abcdef")); got != "0123456789abcdef" {
		t.Errorf("16 printable bytes changed: %q", got)
	}
}

// FuzzDecodeReply: no input may panic.
func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"status":200,"body_text":"x"}`), []byte("kafka_correlationId"), []byte("id"))
	f.Add([]byte(`{"status":200,"headers":{"a":["b"]},"body":"/w==","body_base64":true}`), []byte("k"), []byte("v"))
	f.Add([]byte{0x10, 0xc8, 0x01}, []byte(HeaderStatus), []byte("201"))
	f.Fuzz(func(t *testing.T, value, hk, hv []byte) {
		hs := []*sarama.RecordHeader{{Key: hk, Value: hv}, nil}
		for _, fm := range []Format{FormatJSON, FormatProtobuf, FormatRaw} {
			_, _ = DecodeReply(fm, DefaultHeaderNames, value, hs)
			_, _ = DecodeRequest(fm, DefaultHeaderNames, value, hs)
		}
		_ = replyCorrelation("kafka_correlationId", value, hs)
	})
}
