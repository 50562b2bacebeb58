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
# header_filter/body_filter/log) chunk on a route, and those that load are
# then run: `sidecall try` behind its Envoy stand-in, one request with a
# bearer token, an apikey header and a JSON body, to a local upstream that
# answers 200 (python3). A 500 from sidecall (a JSON body with request_id)
# counts as a failure; any status a snippet chose (401, 403, ...) does not.
# The numbers go to stdout; the failures with their first error line go to
# DIR/report.txt.
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
runnable=()
up_port=${CORPUS_UPSTREAM_PORT:-18091}
try_port=${CORPUS_TRY_PORT:-18090}
for f in "$dir"/lua/*.lua; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  phase=$(head -1 "$f" | sed -nE 's/.*phase: *([a-z_-]+).*/\1/p')
  phase=${phase:-access}
  cfg="$work/lua.yaml"
  if [ "$phase" = request-callout ]; then
    # a by_lua hook, in the first callout's request or in upstream when the
    # line says so; one callout per callouts.<name> the snippet reads
    at=request
    head -1 "$f" | grep -q 'upstream.by_lua' && at=upstream
    names=$(grep -oE 'callouts\.[A-Za-z_][A-Za-z0-9_]*' "$f" | cut -d. -f2 | awk '!seen[$0]++')
    names=${names:-c1}
    {
      printf '_format_version: "3.0"\nservices:\n  - name: up\n    url: http://127.0.0.1:%s\n' "$up_port"
      printf '    routes:\n      - name: all\n        paths: ["/"]\n        plugins:\n'
      printf '          - name: request-callout\n            config:\n              callouts:\n'
      first=1
      for c in $names; do
        printf '                - name: %s\n                  request:\n                    url: http://127.0.0.1:%s/%s\n' "$c" "$up_port" "$c"
        if [ $at = request ] && [ $first = 1 ]; then
          printf '                    by_lua: |\n'
          sed 's/^/                      /' "$f"
        fi
        first=0
      done
      if [ $at = upstream ]; then
        printf '              upstream:\n                by_lua: |\n'
        sed 's/^/                  /' "$f"
      fi
    } >"$cfg"
  else
    plugin=pre-function
    case $phase in header_filter | body_filter | log) plugin=post-function ;; esac
    {
      printf '_format_version: "3.0"\nservices:\n  - name: up\n    url: http://127.0.0.1:%s\n' "$up_port"
      printf '    routes:\n      - name: all\n        paths: ["/"]\n        plugins:\n'
      printf '          - name: %s\n            config:\n              %s:\n                - |\n' "$plugin" "$phase"
      sed 's/^/                  /' "$f"
    } >"$cfg"
  fi
  if "$bin" validate --offline "$cfg" >"$work/err" 2>&1; then
    ok=$((ok + 1))
    runnable+=("$f:$cfg.$n")
    cp "$cfg" "$cfg.$n"
  else
    printf 'lua %s: %s\n' "$(basename "$f")" "$(grep -v warning: "$work/err" | head -1)" >>"$report"
  fi
done
echo "Lua snippets that load: $ok of $n"

# Run what loads, when python3 and curl are here.
if [ ${#runnable[@]} -gt 0 ] && command -v python3 >/dev/null && command -v curl >/dev/null; then
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        body = b"{\"ok\":true}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = answer
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$up_port" &
  up_pid=$!
  ran=0 good=0
  for pair in "${runnable[@]}"; do
    f=${pair%%:*} cfg=${pair#*:}
    TEST_SECRET=corpus "$bin" try -c "$cfg" --listen "127.0.0.1:$try_port" --upstream "http://127.0.0.1:$up_port" >"$work/try.log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$try_port/" 2>/dev/null && break; sleep 0.1; done
    ran=$((ran + 1))
    code=$(curl -s -o "$work/body" -w '%{http_code}' -H 'Authorization: Bearer abc.def.ghi' -H 'apikey: k1' \
      -H 'Content-Type: application/json' -d '{"a":1,"user":{"id":7}}' "http://127.0.0.1:$try_port/anything?x=1" || true)
    if [ "$code" = 500 ] && grep -q request_id "$work/body"; then
      printf 'lua %s: ran to a 500: %s\n' "$(basename "$f")" "$(head -c 300 "$work/body")" >>"$report"
    else
      good=$((good + 1))
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done
  kill "$up_pid" 2>/dev/null; wait "$up_pid" 2>/dev/null || true
  echo "Lua snippets that run without a sidecall error: $good of $ran"
fi
echo "failures: $report"
