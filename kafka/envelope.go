package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// Format is how an envelope is written into a record value.
type Format int

const (
	// FormatJSON is protojson with the proto (snake_case) field names.
	FormatJSON Format = iota
	// FormatProtobuf is the binary protobuf encoding.
	FormatProtobuf
	// FormatRaw puts the body in the value and the metadata in record headers.
	FormatRaw
)

// ParseFormat parses a message_format value.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "json":
		return FormatJSON, nil
	case "protobuf":
		return FormatProtobuf, nil
	case "raw":
		return FormatRaw, nil
	}
	return 0, fmt.Errorf("must be one of json, protobuf, raw, got %q", s)
}

func (f Format) String() string {
	return [...]string{"json", "protobuf", "raw"}[f]
}

// Record header names of the raw format (besides the correlation, reply
// topic and reply partition headers, whose names are configurable).
const (
	HeaderStatus   = "sidecall_status"   // reply: HTTP status, decimal
	HeaderMethod   = "sidecall_method"   // request: HTTP method
	HeaderPath     = "sidecall_path"     // request: path without query
	HeaderQuery    = "sidecall_query"    // request: raw query
	HeaderDeadline = "sidecall_deadline" // request: unix milliseconds
)

// HeaderNames are the record header names that carry the correlation ID,
// the reply topic and the reply partition. The defaults are Spring's.
type HeaderNames struct {
	Correlation    string
	ReplyTopic     string
	ReplyPartition string
}

// DefaultHeaderNames are Spring Kafka's names.
var DefaultHeaderNames = HeaderNames{"kafka_correlationId", "kafka_replyTopic", "kafka_replyPartition"}

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
	jsonIn  = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// errMalformed marks a record that cannot be decoded.
var errMalformed = errors.New("malformed record")

// EncodeRequest writes req as a record value and headers. The correlation
// ID and reply topic/partition are always also written as record headers.
func EncodeRequest(f Format, n HeaderNames, req *kafkav1.Request) ([]byte, []sarama.RecordHeader, error) {
	hs := []sarama.RecordHeader{{Key: []byte(n.Correlation), Value: []byte(req.GetCorrelationId())}}
	if req.GetReplyTopic() != "" {
		hs = append(hs, sarama.RecordHeader{Key: []byte(n.ReplyTopic), Value: []byte(req.GetReplyTopic())})
	}
	if req.ReplyPartition != nil {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(req.GetReplyPartition()))
		hs = append(hs, sarama.RecordHeader{Key: []byte(n.ReplyPartition), Value: b[:]})
	}
	switch f {
	case FormatRaw:
		hs = append(hs, rh(HeaderMethod, req.GetMethod()), rh(HeaderPath, req.GetPath()), rh(HeaderQuery, req.GetQuery()))
		if d := req.GetDeadline(); d != nil {
			hs = append(hs, rh(HeaderDeadline, strconv.FormatInt(d.AsTime().UnixMilli(), 10)))
		}
		for _, h := range req.GetHeaders() {
			hs = append(hs, rh(h.GetName(), h.GetValue()))
		}
		return requestBody(req), hs, nil
	case FormatProtobuf:
		m := proto.Clone(req).(*kafkav1.Request)
		m.Body, m.BodyText = requestBody(req), ""
		v, err := proto.Marshal(m)
		return v, hs, err
	default:
		m := proto.Clone(req).(*kafkav1.Request)
		m.Body, m.BodyText = splitBody(requestBody(req))
		v, err := jsonOut.Marshal(m)
		return v, hs, err
	}
}

// DecodeRequest reads a request record written by EncodeRequest (or by any
// client following the contract).
func DecodeRequest(f Format, n HeaderNames, value []byte, headers []*sarama.RecordHeader) (*kafkav1.Request, error) {
	req := &kafkav1.Request{}
	switch f {
	case FormatRaw:
		req.Body = value
		for _, h := range headers {
			if h == nil {
				continue
			}
			k, v := string(h.Key), string(h.Value)
			switch strings.ToLower(k) {
			case strings.ToLower(n.Correlation), strings.ToLower(n.ReplyTopic), strings.ToLower(n.ReplyPartition):
			case HeaderMethod:
				req.Method = v
			case HeaderPath:
				req.Path = v
			case HeaderQuery:
				req.Query = v
			case HeaderDeadline:
				if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
					req.Deadline = timestamppb.New(time.UnixMilli(ms))
				}
			default:
				if validHeaderName(k) && utf8.ValidString(v) {
					req.Headers = append(req.Headers, &kafkav1.Header{Name: strings.ToLower(k), Value: v})
				}
			}
		}
	case FormatProtobuf:
		if err := proto.Unmarshal(value, req); err != nil {
			return nil, fmt.Errorf("%w: protobuf request: %w", errMalformed, err)
		}
	default:
		if err := jsonIn.Unmarshal(value, req); err != nil {
			return nil, fmt.Errorf("%w: json request: %w", errMalformed, err)
		}
	}
	if id := headerValue(headers, n.Correlation); id != nil {
		req.CorrelationId = CorrelationString(id)
	}
	if t := headerValue(headers, n.ReplyTopic); t != nil {
		req.ReplyTopic = string(t)
	}
	if p := headerValue(headers, n.ReplyPartition); p != nil {
		if v, ok := parsePartition(p); ok {
			req.ReplyPartition = &v
		}
	}
	if req.Body == nil && req.BodyText != "" {
		req.Body = []byte(req.BodyText)
	}
	return req, nil
}

// EncodeReply writes rep as a record value and headers (the correlation
// header always, the status header in the raw format).
func EncodeReply(f Format, n HeaderNames, rep *kafkav1.Reply) ([]byte, []sarama.RecordHeader, error) {
	hs := []sarama.RecordHeader{rh(n.Correlation, rep.GetCorrelationId())}
	switch f {
	case FormatRaw:
		st := rep.GetStatus()
		if st == 0 {
			st = 200
		}
		hs = append(hs, rh(HeaderStatus, strconv.Itoa(int(st))))
		for _, h := range rep.GetHeaders() {
			hs = append(hs, rh(h.GetName(), h.GetValue()))
		}
		return replyBody(rep), hs, nil
	case FormatProtobuf:
		m := proto.Clone(rep).(*kafkav1.Reply)
		m.Body, m.BodyText = replyBody(rep), ""
		v, err := proto.Marshal(m)
		return v, hs, err
	default:
		m := proto.Clone(rep).(*kafkav1.Reply)
		m.Body, m.BodyText = splitBody(replyBody(rep))
		v, err := jsonOut.Marshal(m)
		return v, hs, err
	}
}

// DecodeReply reads a reply record. The status is checked (0 means 200,
// otherwise 100-599); headers that are not valid HTTP header fields are
// dropped. In the raw format every record header becomes a response header
// except the correlation/reply headers, HeaderStatus, and names starting
// with "kafka_", "sidecall_" or "__" (Spring's type headers).
func DecodeReply(f Format, n HeaderNames, value []byte, headers []*sarama.RecordHeader) (*kafkav1.Reply, error) {
	rep := &kafkav1.Reply{}
	switch f {
	case FormatRaw:
		rep.Body = value
		rep.Status = 200
		for _, h := range headers {
			if h == nil {
				continue
			}
			k, v := string(h.Key), string(h.Value)
			lk := strings.ToLower(k)
			switch {
			case lk == HeaderStatus:
				st, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					return nil, fmt.Errorf("%w: %s header %q is not a number", errMalformed, HeaderStatus, v)
				}
				rep.Status = int32(min(max(st, -1), 1000))
			case lk == strings.ToLower(n.Correlation), lk == strings.ToLower(n.ReplyTopic), lk == strings.ToLower(n.ReplyPartition),
				strings.HasPrefix(lk, "kafka_"), strings.HasPrefix(lk, "sidecall_"), strings.HasPrefix(lk, "__"):
			default:
				rep.Headers = append(rep.Headers, &kafkav1.Header{Name: lk, Value: v})
			}
		}
	case FormatProtobuf:
		if err := proto.Unmarshal(value, rep); err != nil {
			return nil, fmt.Errorf("%w: protobuf reply: %w", errMalformed, err)
		}
	default:
		if err := jsonIn.Unmarshal(value, rep); err != nil {
			return nil, fmt.Errorf("%w: json reply: %w", errMalformed, err)
		}
	}
	if id := headerValue(headers, n.Correlation); id != nil {
		rep.CorrelationId = CorrelationString(id)
	}
	if rep.Status == 0 {
		rep.Status = 200
	}
	if rep.Status < 100 || rep.Status > 599 {
		return nil, fmt.Errorf("%w: status %d out of range", errMalformed, rep.Status)
	}
	keep := rep.Headers[:0]
	for _, h := range rep.Headers {
		if h != nil && validHeaderName(h.Name) && validHeaderValue(h.Value) {
			h.Name = strings.ToLower(h.Name)
			keep = append(keep, h)
		}
	}
	rep.Headers = keep
	if rep.BodyText != "" {
		rep.Body, rep.BodyText = []byte(rep.BodyText), ""
	}
	return rep, nil
}

// replyCorrelation finds a reply record's correlation ID: the header, else
// the envelope field (JSON when the value looks like a JSON object, else
// protobuf).
func replyCorrelation(name string, value []byte, headers []*sarama.RecordHeader) string {
	if id := headerValue(headers, name); id != nil {
		return CorrelationString(id)
	}
	if len(value) == 0 {
		return ""
	}
	rep := &kafkav1.Reply{}
	if value[0] == '{' {
		if jsonIn.Unmarshal(value, rep) == nil {
			return rep.GetCorrelationId()
		}
		return ""
	}
	if proto.Unmarshal(value, rep) == nil && utf8.ValidString(rep.GetCorrelationId()) {
		return rep.GetCorrelationId()
	}
	return ""
}

// CorrelationString turns a correlation header value into the ID string.
// Spring's binary correlation (16 raw bytes of a UUID) becomes the UUID's
// text form; anything else is taken as UTF-8 text.
func CorrelationString(b []byte) string {
	if len(b) == 16 && (!utf8.Valid(b) || !printable(b)) {
		u, _ := uuid.FromBytes(b)
		return u.String()
	}
	return string(b)
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func parsePartition(b []byte) (int32, bool) {
	if len(b) == 4 && !printable(b) {
		return int32(binary.BigEndian.Uint32(b)), true
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
	return int32(v), err == nil
}

func headerValue(hs []*sarama.RecordHeader, name string) []byte {
	for _, h := range hs {
		if h != nil && strings.EqualFold(string(h.Key), name) {
			if h.Value == nil {
				return []byte{}
			}
			return h.Value
		}
	}
	return nil
}

func rh(k, v string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
}

func splitBody(b []byte) ([]byte, string) {
	if len(b) == 0 {
		return nil, ""
	}
	if utf8.Valid(b) {
		return nil, string(b)
	}
	return b, ""
}

func requestBody(r *kafkav1.Request) []byte {
	if r.GetBodyText() != "" {
		return []byte(r.GetBodyText())
	}
	return r.GetBody()
}

func replyBody(r *kafkav1.Reply) []byte {
	if r.GetBodyText() != "" {
		return []byte(r.GetBodyText())
	}
	return r.GetBody()
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// RequestBodyOf returns a request's body whichever field carries it.
func RequestBodyOf(r *kafkav1.Request) []byte { return requestBody(r) }

// ReplyBodyOf returns a reply's body whichever field carries it.
func ReplyBodyOf(r *kafkav1.Reply) []byte { return replyBody(r) }
