package kafka

import (
	"bytes"
	"testing"

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
	v, _, _ := EncodeReply(FormatJSON, DefaultHeaderNames, &kafkav1.Reply{Body: []byte("héllo")})
	if !bytes.Contains(v, []byte(`"body_text":"héllo"`)) {
		t.Errorf("text body not plain: %s", v)
	}
	v, _, _ = EncodeReply(FormatJSON, DefaultHeaderNames, &kafkav1.Reply{Body: []byte{0xff}})
	if !bytes.Contains(v, []byte(`"body":"/w=="`)) {
		t.Errorf("binary body not base64: %s", v)
	}
	v, _, _ = EncodeReply(FormatProtobuf, DefaultHeaderNames, &kafkav1.Reply{BodyText: "t"})
	var r kafkav1.Reply
	if err := proto.Unmarshal(v, &r); err != nil || string(r.Body) != "t" || r.BodyText != "" {
		t.Errorf("protobuf must carry body: %v %v", &r, err)
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
