#!/bin/sh
# Regenerates the Go code of sidecall's .proto files.
# Needs protoc and protoc-gen-go at the version of google.golang.org/protobuf in go.mod:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
# Usage: proto/gen.sh [OUTDIR]   (OUTDIR defaults to proto/, the committed code)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"
cd "$here"
protoc -I . --go_out="$out" --go_opt=paths=source_relative sidecall/kafka/v1/envelope.proto
