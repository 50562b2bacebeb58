// Command kafka-responder is a small service answering sidecall's
// kafka-request-reply requests: it reads request envelopes from a topic and
// produces each reply to the reply topic (and reply partition) the request
// names, echoing the correlation ID. Replace kafka.EchoHandler with your
// own logic.
//
//	go run ./examples/kafka-responder -brokers 127.0.0.1:9092 -topic requests -format json
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/sidecall/sidecall/kafka"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
	topic := flag.String("topic", "requests", "request topic")
	format := flag.String("format", "json", "message format: json, protobuf or raw")
	flag.Parse()
	f, err := kafka.ParseFormat(*format)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka-responder: -format", err)
		os.Exit(2)
	}
	log, _ := zap.NewProduction()
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &kafka.Responder{
		Brokers: strings.Split(*brokers, ","),
		Topic:   *topic,
		Format:  f,
		Handler: kafka.EchoHandler,
		Log:     log,
	}
	if err := r.Run(ctx, func() { log.Info("kafka-responder ready", zap.String("topic", *topic)) }); err != nil {
		log.Error("kafka-responder stopped", zap.Error(err))
		os.Exit(1)
	}
}
