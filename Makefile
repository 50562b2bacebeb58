# sidecall: see README.md.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 10s
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: build test unit vet fmt-check fuzz fuzz-short demo bench lint proto clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/sidecall ./cmd/sidecall

# make test: what CI runs. Static checks, the race-enabled suite, short fuzzing.
test: fmt-check vet unit fuzz-short

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -run 'Allocs' ./flows/ # allocation counts need a build without -race
	$(GO) test -count=1 -run 'TestManyBodyChunksAre413Or502WithBoundedMemory' ./processor/ # RSS under 100 MiB needs a build without -race

# Each fuzz target runs briefly from its seed corpus (an execution count, not a
# duration: see scripts/fuzz.sh).
fuzz-short:
	@FUZZTIME=4000x ./scripts/fuzz.sh

fuzz:
	@FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

demo:
	$(GO) run ./cmd/sidecall demo

# Benchmarks write bench/RESULTS.md (ratios against floors measured in the same run).
bench:
	$(GO) run ./bench/cmd/benchreport -out bench/RESULTS.md

lint:
	@command -v golangci-lint >/dev/null || { echo "golangci-lint not installed: go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@latest"; exit 1; }
	golangci-lint run ./...

proto:
	GOBIN=$(CURDIR)/.tools/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$$($(GO) list -m -f '{{.Version}}' google.golang.org/protobuf)
	PATH="$(CURDIR)/.tools/bin:$$PATH" bash proto/gen.sh

clean:
	rm -rf bin
