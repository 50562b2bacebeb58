package otelenv_test

import (
	"context"
	"testing"

	"github.com/sidecall/sidecall/internal/tracing/otelenv"
	"github.com/sidecall/sidecall/internal/tracing/tracingtest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		on, bad bool
	}{
		{env: nil},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, bad: true},
	} {
		on, err := otelenv.Enabled(env(c.env))
		if on != c.on || (err != nil) != c.bad {
			t.Errorf("%v: on %v err %v", c.env, on, err)
		}
	}
}

func TestProtocol(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "http/protobuf"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "http/protobuf"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, ""},
	} {
		if got, err := otelenv.Protocol(env(c.env)); got != c.want || (err != nil) != (c.want == "") {
			t.Errorf("%v: %q %v", c.env, got, err)
		}
	}
}

// The standard variables alone configure the exporter (both protocols),
// the sampler and the service name; shutdown flushes.
func TestFromEnvExports(t *testing.T) {
	for _, proto := range []string{"grpc", "http/protobuf"} {
		t.Run(proto, func(t *testing.T) {
			var rcv *tracingtest.Receiver
			if proto == "grpc" {
				rcv = tracingtest.GRPC(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Endpoint)
			} else {
				rcv = tracingtest.HTTP(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint)
			}
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", proto)
			t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
			t.Setenv("OTEL_SERVICE_NAME", "edge")
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000") // only Shutdown flushes
			tp, err := otelenv.FromEnv(context.Background(), "test")
			if err != nil || tp == nil {
				t.Fatalf("provider %v, err %v", tp, err)
			}
			_, span := tp.Tracer("t").Start(context.Background(), "hello")
			span.End()
			if err := tp.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			spans := rcv.WaitFor(t, "span", func(s []tracingtest.Span) bool { return len(s) == 1 })
			if spans[0].Name != "hello" || spans[0].Service != "edge" {
				t.Errorf("got %+v", spans[0])
			}
		})
	}
}

func TestFromEnvOff(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	if tp, err := otelenv.FromEnv(context.Background(), "test"); tp != nil || err != nil {
		t.Fatalf("tracing on without any variable: %v %v", tp, err)
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	if _, err := otelenv.FromEnv(context.Background(), "test"); err == nil {
		t.Fatal("an unsupported exporter is not an error")
	}
}
