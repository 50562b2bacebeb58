#!/usr/bin/env bash
# Runs sidecall's end-to-end suites through a real Envoy instead of the
# in-process stand-in (package envoy). Each test harness starts its own
# sidecall processor, its own upstream and its own Envoy, launched with
# envoy/sidecar.yaml rewritten for the harness's ports and settings.
#
#   envoy/run-against-envoy.sh                      # the default packages
#   ENVOY=/opt/envoy/bin/envoy envoy/run-against-envoy.sh -run TestE2E ./callout
#
# Needs an Envoy binary (1.37 or later): $ENVOY, else `envoy` on PATH.
# Tests that read the stand-in's stream traces, or set stand-in-only
# settings (the Route hook, a Transport, MetadataContext, GracefulClose),
# are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
envoy_bin=${ENVOY:-$(command -v envoy || true)}
if [[ -z "$envoy_bin" ]]; then
  echo "run-against-envoy.sh: no Envoy binary: put envoy on PATH or set ENVOY=/path/to/envoy" >&2
  exit 2
fi
"$envoy_bin" --version
if [[ $# -eq 0 ]]; then
  set -- ./callout ./flowcallout ./serverless ./kafka ./cmd/sidecall ./plugins
fi
SIDECALL_E2E_ENVOY="$envoy_bin" exec go test -count=1 "$@"
