package main

import (
	"context"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sidecall/sidecall/internal/tracing/otelenv"
)

// startTracing builds the tracer provider the OTEL_* variables describe
// (nil: tracing off) and sends the SDK's export errors to log.
func startTracing(log *zap.Logger) (*sdktrace.TracerProvider, error) {
	tp, err := otelenv.FromEnv(context.Background(), version)
	if err != nil || tp == nil {
		return nil, err
	}
	// The SDK reports failed exports through its global handler.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", zap.Error(err)) }))
	proto, _ := otelenv.Protocol(os.Getenv)
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	log.Info("tracing on", zap.String("protocol", proto), zap.String("endpoint", endpoint))
	return tp, nil
}

// stopTracing flushes the spans still batched and stops the exporter.
func stopTracing(tp *sdktrace.TracerProvider, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		log.Warn("flushing traces", zap.Error(err))
	}
}

// tracerOrNil keeps a nil provider an untyped nil interface.
func tracerOrNil(tp *sdktrace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return nil
	}
	return tp
}
