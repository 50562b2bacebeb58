package kafka

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/sidecall/sidecall/flows"
)

// Server is one bootstrap broker, Kong's {host, port}.
type Server struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
}

// Authentication is Kong's authentication block.
type Authentication struct {
	Strategy  string `yaml:"strategy"`
	Mechanism string `yaml:"mechanism"`
	User      string `yaml:"user"`
	Password  string `yaml:"password"`
	Tokenauth *bool  `yaml:"tokenauth"`
}

// Security is Kong's security block. ssl_verify defaults to true: with ssl,
// broker certificates are verified unless turned off (Kong's default since
// 3.14).
type Security struct {
	SSL           bool   `yaml:"ssl"`
	SSLVerify     *bool  `yaml:"ssl_verify"`
	CertificateID string `yaml:"certificate_id"`
}

// verify tells whether the broker certificates are verified.
func (s *Security) verify() bool { return s.SSLVerify == nil || *s.SSLVerify }

// conn holds the settings that identify a broker connection.
type conn struct {
	BootstrapServers []Server        `yaml:"bootstrap_servers"`
	Authentication   *Authentication `yaml:"authentication"`
	Security         *Security       `yaml:"security"`
	Timeout          int             `yaml:"timeout"`
}

// producerSettings are Kong's kafka-upstream producer_* fields plus ours.
type producerSettings struct {
	ProducerRequestAcks                          int    `yaml:"producer_request_acks"`
	ProducerRequestTimeout                       int    `yaml:"producer_request_timeout"`
	ProducerRequestRetriesMaxAttempts            int    `yaml:"producer_request_retries_max_attempts"`
	ProducerRequestRetriesBackoffTimeout         int    `yaml:"producer_request_retries_backoff_timeout"`
	ProducerRequestLimitsMessagesPerRequest      int    `yaml:"producer_request_limits_messages_per_request"`
	ProducerRequestLimitsBytesPerRequest         int    `yaml:"producer_request_limits_bytes_per_request"`
	ProducerAsyncFlushTimeout                    int    `yaml:"producer_async_flush_timeout"`
	ProducerAsyncBufferingLimitsMessagesInMemory int    `yaml:"producer_async_buffering_limits_messages_in_memory"`
	Compression                                  string `yaml:"compression"`
	MaxMessageBytes                              int    `yaml:"max_message_bytes"`
}

func defaultProducerSettings() producerSettings {
	return producerSettings{
		ProducerRequestAcks:                          1,
		ProducerRequestTimeout:                       2000,
		ProducerRequestRetriesMaxAttempts:            10,
		ProducerRequestRetriesBackoffTimeout:         100,
		ProducerRequestLimitsMessagesPerRequest:      200,
		ProducerRequestLimitsBytesPerRequest:         1048576,
		ProducerAsyncFlushTimeout:                    1000,
		ProducerAsyncBufferingLimitsMessagesInMemory: 50000,
		Compression:     "none",
		MaxMessageBytes: 1048576,
	}
}

var topicChars = func() [256]bool {
	var t [256]bool
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['.'], t['_'], t['-'] = true, true, true
	return t
}()

// validTopic applies Kafka's topic name rules.
func validTopic(s string) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	if s == "." || s == ".." {
		return fmt.Errorf("must not be %q", s)
	}
	if len(s) > 249 {
		return fmt.Errorf("must be at most 249 characters, got %d", len(s))
	}
	for i := 0; i < len(s); i++ {
		if !topicChars[s[i]] {
			return fmt.Errorf("must contain only ASCII letters, digits, '.', '_' and '-', got %q", s)
		}
	}
	return nil
}

func checkRange(b *flows.Builder, at flows.Path, v, lo, hi int) {
	if v < lo || v > hi {
		b.Errorf(at, "must be between %d and %d, got %d", lo, hi, v)
	}
}

// validateConn checks the connection fields and returns the broker
// addresses.
func validateConn(b *flows.Builder, at flows.Path, c *conn) []string {
	if len(c.BootstrapServers) == 0 {
		b.Errorf(at.Key("bootstrap_servers"), "must list at least one {host, port}")
	}
	addrs := make([]string, 0, len(c.BootstrapServers))
	for i, s := range c.BootstrapServers {
		p := at.Key("bootstrap_servers").Index(i)
		if s.Host == "" {
			b.Errorf(p.Key("host"), "is required")
		}
		checkRange(b, p.Key("port"), s.Port, 1, 65535)
		addrs = append(addrs, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
	}
	checkRange(b, at.Key("timeout"), c.Timeout, 1, 3600000)
	if a := c.Authentication; a != nil {
		ap := at.Key("authentication")
		if a.Strategy != "sasl" {
			b.Errorf(ap.Key("strategy"), "must be sasl, got %q", a.Strategy)
		}
		switch a.Mechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			b.Errorf(ap.Key("mechanism"), "must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got %q", a.Mechanism)
		}
		if a.User == "" {
			b.Errorf(ap.Key("user"), "is required")
		}
		if a.Password == "" {
			b.Errorf(ap.Key("password"), "is required")
		}
		if a.Tokenauth != nil && *a.Tokenauth {
			b.Errorf(ap.Key("tokenauth"), "delegation tokens are not supported yet")
		}
	}
	if s := c.Security; s != nil && s.CertificateID != "" {
		b.Warnf("%s: mTLS client certificates are not supported yet; certificate_id is ignored", at.Key("security").Key("certificate_id"))
	}
	return addrs
}

func validateProducer(b *flows.Builder, at flows.Path, p *producerSettings) {
	switch p.ProducerRequestAcks {
	case -1, 0, 1:
	default:
		b.Errorf(at.Key("producer_request_acks"), "must be -1, 0 or 1, got %d", p.ProducerRequestAcks)
	}
	checkRange(b, at.Key("producer_request_timeout"), p.ProducerRequestTimeout, 1, 3600000)
	checkRange(b, at.Key("producer_request_retries_max_attempts"), p.ProducerRequestRetriesMaxAttempts, 0, 100)
	checkRange(b, at.Key("producer_request_retries_backoff_timeout"), p.ProducerRequestRetriesBackoffTimeout, 0, 60000)
	checkRange(b, at.Key("producer_request_limits_messages_per_request"), p.ProducerRequestLimitsMessagesPerRequest, 1, 1000000)
	checkRange(b, at.Key("producer_request_limits_bytes_per_request"), p.ProducerRequestLimitsBytesPerRequest, 1, 1<<30)
	checkRange(b, at.Key("producer_async_flush_timeout"), p.ProducerAsyncFlushTimeout, 1, 3600000)
	checkRange(b, at.Key("producer_async_buffering_limits_messages_in_memory"), p.ProducerAsyncBufferingLimitsMessagesInMemory, 1, 10000000)
	checkRange(b, at.Key("max_message_bytes"), p.MaxMessageBytes, 1, 1<<30)
	if _, ok := compressions[p.Compression]; !ok {
		b.Errorf(at.Key("compression"), "must be one of none, gzip, snappy, lz4, zstd, got %q", p.Compression)
	}
	// Kong's lua-resty-kafka knobs with no counterpart in sidecall's
	// producer: a value other than Kong's default would change nothing.
	d := defaultProducerSettings()
	for _, f := range []struct {
		name   string
		v, def int
	}{
		{"producer_request_limits_bytes_per_request", p.ProducerRequestLimitsBytesPerRequest, d.ProducerRequestLimitsBytesPerRequest},
		{"producer_async_flush_timeout", p.ProducerAsyncFlushTimeout, d.ProducerAsyncFlushTimeout},
		{"producer_async_buffering_limits_messages_in_memory", p.ProducerAsyncBufferingLimitsMessagesInMemory, d.ProducerAsyncBufferingLimitsMessagesInMemory},
	} {
		if f.v != f.def {
			b.Warnf("%s: ignored: sidecall's producer sends each record as it comes (max_message_bytes and producer_request_limits_messages_per_request bound it)", at.Key(f.name))
		}
	}
}

// warnIgnoredUpstream warns about kafka-upstream's connection knobs that
// change nothing in sidecall, when they differ from Kong's defaults.
func warnIgnoredUpstream(b *flows.Builder, at flows.Path, keepalive int, keepaliveEnabled bool, clusterName string) {
	if keepalive != 60000 {
		b.Warnf("%s: ignored: sidecall keeps one producer connection per cluster for the process", at.Key("keepalive"))
	}
	if keepaliveEnabled {
		b.Warnf("%s: ignored: sidecall's producer connections are always kept", at.Key("keepalive_enabled"))
	}
	if clusterName != "" {
		b.Warnf("%s: ignored: sidecall names a cluster by its bootstrap_servers", at.Key("cluster_name"))
	}
}

var compressions = map[string]sarama.CompressionCodec{
	"none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP, "snappy": sarama.CompressionSnappy,
	"lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD,
}

// connKey identifies a broker connection; the password is part of it (a
// changed secret gets a new client) but only through a hash-free join
// kept in memory.
func connKey(addrs []string, c *conn) string {
	s := append([]string(nil), addrs...)
	sort.Strings(s)
	k := strings.Join(s, ",") + "|t=" + strconv.Itoa(c.Timeout)
	if a := c.Authentication; a != nil {
		k += "|sasl=" + a.Mechanism + ":" + a.User + ":" + a.Password
	}
	if sec := c.Security; sec != nil && sec.SSL {
		k += "|tls=" + strconv.FormatBool(sec.verify())
	}
	return k
}

// saramaConfig returns the client settings shared by producers and consumers.
func saramaConfig(c *conn) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "sidecall"
	cfg.Version = sarama.V2_8_0_0
	t := time.Duration(c.Timeout) * time.Millisecond
	cfg.Net.DialTimeout = min(t, 5*time.Second)
	cfg.Net.ReadTimeout = t
	cfg.Net.WriteTimeout = t
	// Fail fast when brokers are down: requests must get a 503 well before
	// their reply timeout, not hang in metadata retries.
	cfg.Metadata.Retry.Max = 1
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Metadata.Full = false
	cfg.Consumer.Retry.Backoff = 250 * time.Millisecond
	cfg.Consumer.Return.Errors = false
	cfg.Consumer.MaxWaitTime = 100 * time.Millisecond
	if a := c.Authentication; a != nil {
		cfg.Net.SASL.Enable = true
		cfg.Net.SASL.Handshake = true
		cfg.Net.SASL.User = a.User
		cfg.Net.SASL.Password = a.Password
		cfg.Net.SASL.Mechanism = sarama.SASLMechanism(a.Mechanism)
		switch a.Mechanism {
		case "SCRAM-SHA-256":
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAM(sha256.New) }
		case "SCRAM-SHA-512":
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAM(sha512.New) }
		}
	}
	if s := c.Security; s != nil && s.SSL {
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = &tls.Config{InsecureSkipVerify: !s.verify(), MinVersion: tls.VersionTLS12} //nolint:gosec // only with ssl_verify: false
	}
	return cfg
}

func producerConfig(c *conn, p *producerSettings) *sarama.Config {
	cfg := saramaConfig(c)
	cfg.Producer.RequiredAcks = sarama.RequiredAcks(p.ProducerRequestAcks)
	cfg.Producer.Timeout = time.Duration(p.ProducerRequestTimeout) * time.Millisecond
	cfg.Producer.Retry.Max = p.ProducerRequestRetriesMaxAttempts
	cfg.Producer.Retry.Backoff = time.Duration(p.ProducerRequestRetriesBackoffTimeout) * time.Millisecond
	cfg.Producer.Flush.MaxMessages = p.ProducerRequestLimitsMessagesPerRequest
	// No Flush.Bytes/Frequency: sarama then sends as soon as it can and
	// batches only what queues up while a request is in flight (latency
	// first). producer_request_limits_bytes_per_request and the async flush
	// settings are accepted for Kong compatibility but not used.
	cfg.Producer.Compression = compressions[p.Compression]
	cfg.Producer.MaxMessageBytes = p.MaxMessageBytes
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Partitioner = newPartitioner
	cfg.ChannelBufferSize = 256
	return cfg
}

func producerKey(ck string, p *producerSettings) string {
	return fmt.Sprintf("kafka-producer|%s|%+v", ck, *p)
}
