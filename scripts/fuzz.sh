#!/usr/bin/env bash
# Runs every Fuzz* target for $FUZZTIME each (go test allows one target per run).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
status=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/'); do
    echo "fuzz $dir $target ($FUZZTIME)"
    go test -run "^${target}\$" -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$dir" >/tmp/fuzz-$target.log 2>&1 || { cat /tmp/fuzz-$target.log; status=1; }
  done
done
exit $status
