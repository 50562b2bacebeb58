#!/usr/bin/env bash
# Re-runs sidecall over a corpus of real, third-party decK files and Lua
# snippets. The files themselves are not in this repository (their licences
# are their authors'); scripts/corpus/*.tsv lists where each came from
# (repository, path, commit). Fetch them into a directory laid out as
#
#   DIR/deck/*.yaml   decK files, one per source row
#   DIR/lua/*.lua     Lua snippets; a first line "-- ... phase: <phase>"
#
# and run: scripts/corpus.sh DIR
#
# decK files are checked with `sidecall validate --offline --unsupported-plugins warn`
# after rendering decK env templates (${{ env "DECK_X" }}) to placeholder
# values, as `deck file render` does with the variables set. Lua snippets
# are checked by loading each as a pre-function (or post-function for
# header_filter/body_filter/log) chunk. The numbers go to stdout; the
# failures with their first error line go to DIR/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-}
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "usage: scripts/corpus.sh DIR (see the header of this script and scripts/corpus/*.tsv)" >&2
  exit 2
fi
bin=$(mktemp -d)/sidecall
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/sidecall
work=$(mktemp -d)
report="$dir/report.txt"
: >"$report"

render() { sed -E 's/\$\{\{ *env +"(DECK_[A-Za-z0-9_]+)" *\}\}/placeholder-\1/g' "$1"; }

ok=0 n=0
for f in "$dir"/deck/*.y*ml; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  out="$work/$(basename "$f")"
  render "$f" >"$out"
  if "$bin" validate --offline --unsupported-plugins warn "$out" >"$work/err" 2>&1; then
    ok=$((ok + 1))
  else
    printf 'deck %s: %s\n' "$(basename "$f")" "$(grep -v warning: "$work/err" | head -1)" >>"$report"
  fi
done
echo "decK files that load: $ok of $n"

ok=0 n=0
for f in "$dir"/lua/*.lua; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  phase=$(head -1 "$f" | sed -nE 's/.*phase: *([a-z_-]+).*/\1/p')
  phase=${phase:-access}
  cfg="$work/lua.yaml"
  if [ "$phase" = request-callout ]; then
    # a by_lua hook: in a callout's request, or in upstream when the line says so
    at=request
    head -1 "$f" | grep -q 'upstream.by_lua' && at=upstream
    {
      printf '_format_version: "3.0"\nplugins:\n  - name: request-callout\n    config:\n'
      printf '      callouts:\n        - name: c1\n          request:\n            url: http://127.0.0.1:9/c1\n'
      if [ $at = request ]; then printf '            by_lua: |\n'; else printf '      upstream:\n        by_lua: |\n'; fi
      sed 's/^/              /' "$f"
    } >"$cfg"
  else
    plugin=pre-function
    case $phase in header_filter | body_filter | log) plugin=post-function ;; esac
    {
      printf '_format_version: "3.0"\nplugins:\n  - name: %s\n    config:\n      %s:\n        - |\n' "$plugin" "$phase"
      sed 's/^/          /' "$f"
    } >"$cfg"
  fi
  if "$bin" validate --offline "$cfg" >"$work/err" 2>&1; then
    ok=$((ok + 1))
  else
    printf 'lua %s: %s\n' "$(basename "$f")" "$(grep -v warning: "$work/err" | head -1)" >>"$report"
  fi
done
echo "Lua snippets that load: $ok of $n"
echo "failures: $report"
