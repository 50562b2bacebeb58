// Package otelenv builds the OpenTelemetry SDK tracer provider the
// standard OTEL_* environment variables describe. It is apart from
// package tracing so that only the binary links the SDK and exporters.
package otelenv

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Enabled tells whether the variables turn tracing on: OTEL_TRACES_EXPORTER
// naming otlp, or (unset) an OTLP endpoint set. OTEL_TRACES_EXPORTER=none
// and OTEL_SDK_DISABLED=true turn it off. Any other exporter is an error.
func Enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	if ex := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); ex != "" {
		on := false
		for e := range strings.SplitSeq(ex, ",") {
			switch e = strings.TrimSpace(e); e {
			case "otlp":
				on = true
			case "none", "":
			default:
				return false, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", e)
			}
		}
		return on, nil
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

// Protocol is the OTLP protocol the variables name: the traces-specific
// one, then the general one, then http/protobuf (the spec's default).
func Protocol(getenv func(string) string) (string, error) {
	p := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if p == "" {
		p = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch p {
	case "":
		return "http/protobuf", nil
	case "grpc", "http/protobuf":
		return p, nil
	}
	return "", fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not supported (grpc or http/protobuf)", p)
}

// FromEnv returns the provider the process environment describes, or nil
// when tracing is off. Endpoint, headers, TLS, compression and timeout
// are read by the exporter; sampler (OTEL_TRACES_SAMPLER, _ARG) and batch
// settings (OTEL_BSP_*) by the SDK; OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override the service.name "sidecall". The
// caller shuts the provider down on exit, which flushes it.
func FromEnv(ctx context.Context, version string) (*sdktrace.TracerProvider, error) {
	on, err := Enabled(os.Getenv)
	if err != nil || !on {
		return nil, err
	}
	proto, err := Protocol(os.Getenv)
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if proto == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP %s exporter: %w", proto, err)
	}
	// Later options win: the environment overrides the defaults.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", "sidecall"), attribute.String("service.version", version)),
		resource.WithFromEnv())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
