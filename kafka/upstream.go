package kafka

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/trace"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
)

type upstreamConfig struct {
	conn             `yaml:",inline"`
	producerSettings `yaml:",inline"`

	Topic                 string     `yaml:"topic"`
	TopicsQueryArg        string     `yaml:"topics_query_arg"`
	AllowedTopics         []string   `yaml:"allowed_topics"`
	KeyQueryArg           string     `yaml:"key_query_arg"`
	ForwardMethod         bool       `yaml:"forward_method"`
	ForwardURI            bool       `yaml:"forward_uri"`
	ForwardHeaders        bool       `yaml:"forward_headers"`
	ForwardBody           bool       `yaml:"forward_body"`
	ProducerAsync         bool       `yaml:"producer_async"`
	Keepalive             int        `yaml:"keepalive"`
	KeepaliveEnabled      bool       `yaml:"keepalive_enabled"`
	ClusterName           string     `yaml:"cluster_name"`
	MessageByLuaFunctions []string   `yaml:"message_by_lua_functions"`
	Headers               *yaml.Node `yaml:"headers"`
	SchemaRegistry        *yaml.Node `yaml:"schema_registry"`
	ErrorHandling         struct {
		ReturnErrorMessage bool `yaml:"return_error_message"`
	} `yaml:"error_handling"`
}

// upstream is Kong's kafka-upstream: the request becomes one record and
// sidecall answers the client itself.
type upstream struct {
	topic          string
	topicsArg      string
	allowed        map[string]bool
	keyArg         string
	fwdMethod      bool
	fwdURI         bool
	fwdHeaders     bool
	fwdBody        bool
	async          bool
	timeout        time.Duration
	returnErrorMsg bool
	m              *metrics
	client         clientSettings // what Provision needs
	prod           *producer      // set by Provision
}

func (*upstream) Name() string         { return "kafka-upstream" }
func (*upstream) Priority() int        { return UpstreamPriority }
func (p *upstream) Needs() flows.Needs { return flows.Needs{RequestBody: p.fwdBody} }

func (k *Plugins) newUpstream(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	c := upstreamConfig{
		conn:             conn{Timeout: 10000},
		producerSettings: defaultProducerSettings(),
		ForwardBody:      true, ProducerAsync: true, Keepalive: 60000,
	}
	b.Decode(raw, at, &c)
	addrs := validateConn(b, at, &c.conn)
	validateProducer(b, at, &c.producerSettings)
	warnIgnoredUpstream(b, at, c.Keepalive, c.KeepaliveEnabled, c.ClusterName)
	if err := validTopic(c.Topic); err != nil {
		b.Errorf(at.Key("topic"), "%v", err)
	}
	allowed := map[string]bool{c.Topic: true}
	for i, t := range c.AllowedTopics {
		if err := validTopic(t); err != nil {
			b.Errorf(at.Key("allowed_topics").Index(i), "%v", err)
		}
		allowed[t] = true
	}
	if !c.ForwardMethod && !c.ForwardURI && !c.ForwardHeaders && !c.ForwardBody {
		b.Errorf(at, "at least one of forward_method, forward_uri, forward_headers, forward_body must be true")
	}
	if len(c.MessageByLuaFunctions) > 0 {
		b.Errorf(at.Key("message_by_lua_functions"), "not supported yet")
	}
	if c.Headers != nil {
		b.Errorf(at.Key("headers"), "not supported yet (HTTP headers are forwarded in the envelope with forward_headers)")
	}
	if c.SchemaRegistry != nil {
		b.Errorf(at.Key("schema_registry"), "not supported yet")
	}
	if b.Failed() {
		return nil, nil
	}
	return &upstream{
		topic: c.Topic, topicsArg: c.TopicsQueryArg, allowed: allowed, keyArg: c.KeyQueryArg,
		fwdMethod: c.ForwardMethod, fwdURI: c.ForwardURI, fwdHeaders: c.ForwardHeaders, fwdBody: c.ForwardBody,
		async: c.ProducerAsync, timeout: time.Duration(c.Timeout) * time.Millisecond,
		returnErrorMsg: c.ErrorHandling.ReturnErrorMessage, m: k.m,
		client: newClientSettings(addrs, &c.conn, &c.producerSettings),
	}, nil
}

// Provision takes the shared producer for this instance's settings; it
// connects in the background.
func (p *upstream) Provision(b *flows.Builder) error {
	prod, err := acquireProducer(b, &p.client, p.m)
	if err != nil {
		return err
	}
	prod.probeTopic(p.topic)
	p.prod = prod
	return nil
}

// badGateway is Kong's error answer.
func (p *upstream) badGateway(x *flows.Exchange, err string) {
	body, _ := json.Marshal(map[string]string{"message": "Bad Gateway", "error": err})
	x.Respond(502, flows.Headers{"content-type": {"application/json; charset=utf-8"}}, body)
}

// Access produces the request envelope and answers 200 (Kong's answer).
func (p *upstream) Access(ctx context.Context, x *flows.Exchange) error {
	q, _ := url.ParseQuery(x.Request.RawQuery)
	topics := []string{p.topic}
	if p.topicsArg != "" && q.Has(p.topicsArg) {
		topics = topics[:0]
		for _, t := range strings.Split(q.Get(p.topicsArg), ",") {
			if t = strings.TrimSpace(t); t == "" {
				continue
			}
			if !p.allowed[t] {
				p.badGateway(x, "one or more target topics are not in the allowed topics list")
				return nil
			}
			topics = append(topics, t)
		}
		if len(topics) == 0 {
			topics = append(topics, p.topic)
		}
	}
	value, err := json.Marshal(p.envelope(x))
	if err != nil {
		p.badGateway(x, "could not build a Kafka message from request")
		return nil
	}
	var key sarama.Encoder
	if p.keyArg != "" && q.Has(p.keyArg) {
		key = sarama.StringEncoder(q.Get(p.keyArg))
	}
	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	for _, t := range topics {
		sctx, span := startSpan(pctx, "send", trace.SpanKindProducer, t, "")
		msg := &sarama.ProducerMessage{Topic: t, Key: key, Value: sarama.ByteEncoder(value), Headers: traceHeaders(sctx, nil)}
		err := p.prod.Produce(sctx, msg, !p.async, false)
		endSpan(span, "", err)
		if err != nil {
			x.Log.Warn("kafka-upstream: produce failed")
			m := "could not send message to topic"
			if p.returnErrorMsg {
				m = "could not send a message on topic " + t + ": " + err.Error()
			}
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return ctx.Err()
			}
			p.badGateway(x, m)
			return nil
		}
	}
	x.Respond(200, flows.Headers{"content-type": {"application/json; charset=utf-8"}}, []byte(`{"message":"message sent"}`))
	return nil
}

// rawContentTypes are sent as is; other bodies without parsed args are
// base64-encoded (Kong compares the whole content-type value).
var rawContentTypes = map[string]bool{
	"text/plain": true, "text/html": true, "application/xml": true, "text/xml": true, "application/soap+xml": true,
}

// envelope is Kong's kafka-upstream message.
func (p *upstream) envelope(x *flows.Exchange) map[string]any {
	m := map[string]any{}
	if p.fwdMethod {
		m["method"] = x.Request.Method
	}
	if p.fwdHeaders {
		m["headers"] = kongMultiMap(map[string][]string(x.Request.Headers))
	}
	if p.fwdURI {
		uri := x.Request.Path
		if x.Request.RawQuery != "" {
			uri += "?" + x.Request.RawQuery
		}
		m["uri"] = uri
		m["uri_args"] = kongQuery(x.Request.RawQuery)
	}
	if p.fwdBody {
		body := x.Request.Body
		ct := x.Request.Headers.Get("content-type")
		args, known := bodyArgs(ct, body)
		switch {
		case known && args != nil:
			m["body"] = string(body)
			m["body_args"] = args
		case known:
			m["body"] = string(body) // parse failure: Kong sends the body without body_args
		case rawContentTypes[ct]:
			m["body"] = string(body)
			m["body_args"] = map[string]any{}
		default:
			m["body"] = base64.StdEncoding.EncodeToString(body)
			m["body_args"] = map[string]any{}
			m["body_base64"] = true
		}
	}
	return m
}

// bodyArgs is kong.request.get_body: known tells whether the content type
// is one Kong parses; args is nil when parsing failed.
func bodyArgs(ct string, body []byte) (args any, known bool) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, false
	}
	switch mt {
	case "application/json":
		var v any
		if json.Unmarshal(body, &v) != nil {
			return nil, true
		}
		return v, true
	case "application/x-www-form-urlencoded":
		return kongQuery(string(body)), true
	case "multipart/form-data":
		r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		vals := map[string][]string{}
		for range 1000 {
			part, err := r.NextPart()
			if err == io.EOF {
				return kongMultiMap(vals), true
			}
			if err != nil {
				return nil, true
			}
			if part.FileName() == "" {
				b, err := io.ReadAll(io.LimitReader(part, 1<<20))
				if err != nil {
					return nil, true
				}
				vals[part.FormName()] = append(vals[part.FormName()], string(b))
			}
		}
		return kongMultiMap(vals), true
	}
	return nil, false
}

// kongQuery is kong.request.get_query: a flag without '=' is true, a
// repeated name is an array.
func kongQuery(raw string) map[string]any {
	out := map[string]any{}
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, hasEq := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || k == "" {
			continue
		}
		var val any = v
		if !hasEq {
			val = true
		}
		switch cur := out[k].(type) {
		case nil:
			out[k] = val
		case []any:
			out[k] = append(cur, val)
		default:
			out[k] = []any{cur, val}
		}
	}
	return out
}

func kongMultiMap(h map[string][]string) map[string]any {
	out := make(map[string]any, len(h))
	for k, vs := range h {
		switch len(vs) {
		case 0:
		case 1:
			out[k] = vs[0]
		default:
			out[k] = vs
		}
	}
	return out
}
