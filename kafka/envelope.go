package kafka

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sidecall/sidecall/internal/httpx"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

// Format is how an envelope is written into a record value.
type Format int

const (
	// FormatJSON is protojson with the proto (snake_case) field names,
	// except body: the text itself when it is valid UTF-8, else base64 with
	// "body_base64": true (see marshalJSON).
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
		m.Body, m.BodyText = nil, ""
		v, err := marshalJSON(m, requestBody(req))
		return v, hs, err
	}
}

// DecodeRequest reads a request record written by EncodeRequest (or by any
// client writing the same envelope).
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
				if httpx.ValidHeaderName(k) && utf8.ValidString(v) {
					req.Headers = append(req.Headers, &kafkav1.Header{Name: strings.ToLower(k), Value: v})
				}
			}
		}
	case FormatProtobuf:
		if err := proto.Unmarshal(value, req); err != nil {
			return nil, fmt.Errorf("%w: protobuf request: %w", errMalformed, err)
		}
	default:
		if err := unmarshalJSON(value, req, &req.Headers, &req.Body, &req.BodyText); err != nil {
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
		m.Body, m.BodyText = nil, ""
		v, err := marshalJSON(m, replyBody(rep))
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
		if err := unmarshalJSON(value, rep, &rep.Headers, &rep.Body, &rep.BodyText); err != nil {
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
		if h != nil && httpx.ValidHeaderName(h.Name) && validHeaderValue(h.Value) {
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
	if value[0] == '{' {
		// Only the ID: a matched reply that does not decode is then a
		// quick 502 for its request rather than a timeout.
		var env struct {
			Proto string `json:"correlation_id"`
			JSON  string `json:"correlationId"`
		}
		_ = json.Unmarshal(value, &env) // a syntax error leaves both empty
		if env.Proto != "" {
			return env.Proto
		}
		return env.JSON
	}
	rep := &kafkav1.Reply{}
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

// marshalJSON writes m (whose body fields are empty) with protojson and
// adds the body by the JSON body rule: "body" is the text itself when
// body is valid UTF-8, else its standard base64 with "body_base64": true
// (Kong kafka-upstream's convention). An empty body is left out.
func marshalJSON(m proto.Message, body []byte) ([]byte, error) {
	v, err := jsonOut.Marshal(m)
	if err != nil || len(body) == 0 {
		return v, err
	}
	v = bytes.TrimRight(v, " \t\r\n")
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return nil, fmt.Errorf("protojson wrote %q, not an object", v)
	}
	v = v[:len(v)-1]
	if len(bytes.TrimSpace(v[1:])) > 0 {
		v = append(v, ',')
	}
	v = append(v, `"body":`...)
	if utf8.Valid(body) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(string(body)); err != nil {
			return nil, err
		}
		v = append(v, bytes.TrimRight(buf.Bytes(), "\n")...)
	} else {
		v = append(v, '"')
		v = base64.StdEncoding.AppendEncode(v, body)
		v = append(v, `","body_base64":true`...)
	}
	return append(v, '}'), nil
}

// unmarshalJSON reads a JSON envelope into m. protojson reads every field
// but these, which are read by hand:
//   - body: text unless body_base64 is true, then base64 (standard or
//     URL-safe, padded or not). A body that is not a JSON string (an
//     object, say) is taken as its JSON text.
//   - body_text (older writers): the body as text; it wins over body.
//   - headers: protojson's list of {"name", "value"}, or an object of name
//     to a string or a list of strings (Kong's style), names sorted.
func unmarshalJSON(value []byte, m proto.Message, headers *[]*kafkav1.Header, body *[]byte, bodyText *string) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(value, &fields); err != nil {
		return err
	}
	if fields == nil {
		return errors.New("not a JSON object")
	}
	changed := false
	take := func(k string) (json.RawMessage, bool) {
		raw, ok := fields[k]
		if ok {
			delete(fields, k)
			changed = true
		}
		return raw, ok
	}
	b64 := false
	for _, k := range []string{"body_base64", "bodyBase64"} {
		if raw, ok := take(k); ok {
			var f *bool
			if err := json.Unmarshal(raw, &f); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			b64 = b64 || f != nil && *f
		}
	}
	rawBody, hasBody := take("body")
	var rawText json.RawMessage
	for _, k := range []string{"body_text", "bodyText"} {
		if raw, ok := take(k); ok {
			rawText = raw
		}
	}
	var objHeaders []*kafkav1.Header
	if raw, ok := fields["headers"]; ok && bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		take("headers")
		var err error
		if objHeaders, err = headerObject(raw); err != nil {
			return fmt.Errorf("headers: %w", err)
		}
	}
	rest := value
	if changed {
		var err error
		if rest, err = json.Marshal(fields); err != nil {
			return err
		}
	}
	if err := jsonIn.Unmarshal(rest, m); err != nil {
		return err
	}
	if objHeaders != nil {
		*headers = objHeaders
	}
	*body, *bodyText = nil, ""
	if hasBody {
		b, err := jsonBody(rawBody, b64)
		if err != nil {
			return err
		}
		*body = b
	}
	if rawText != nil {
		var t *string
		if err := json.Unmarshal(rawText, &t); err != nil {
			return fmt.Errorf("body_text: %w", err)
		}
		if t != nil && *t != "" {
			*body = []byte(*t)
		}
	}
	return nil
}

// jsonBody reads the body field.
func jsonBody(raw json.RawMessage, b64 bool) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case bytes.Equal(raw, []byte("null")):
		return nil, nil
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		if !b64 {
			return []byte(s), nil
		}
		enc := base64.StdEncoding
		if strings.ContainsAny(s, "-_") {
			enc = base64.URLEncoding
		}
		if len(s)%4 != 0 {
			enc = enc.WithPadding(base64.NoPadding)
		}
		b, err := enc.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("body is not base64 though body_base64 is true: %w", err)
		}
		return b, nil
	case b64:
		return nil, errors.New("body must be a base64 string when body_base64 is true")
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		return buf.Bytes(), nil
	}
}

// headerObject reads headers written as a JSON object: name to a string or
// a list of strings (null: none). Names are sorted; values keep their order.
func headerObject(raw json.RawMessage) ([]*kafkav1.Header, error) {
	var hm map[string]json.RawMessage
	if err := json.Unmarshal(raw, &hm); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(hm))
	for n := range hm {
		names = append(names, n)
	}
	slices.Sort(names)
	hs := []*kafkav1.Header{}
	for _, n := range names {
		var vs []string
		if v := bytes.TrimSpace(hm[n]); bytes.HasPrefix(v, []byte("[")) {
			if err := json.Unmarshal(v, &vs); err != nil {
				return nil, fmt.Errorf("%q: %w", n, err)
			}
		} else {
			var s *string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("%q: %w", n, err)
			}
			if s != nil {
				vs = []string{*s}
			}
		}
		for _, s := range vs {
			hs = append(hs, &kafkav1.Header{Name: n, Value: s})
		}
	}
	return hs, nil
}
