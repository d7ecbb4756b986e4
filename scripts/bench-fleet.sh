#!/usr/bin/env bash
# Runs the standard fleet scenarios of `gitamp bench fleet` (issue 7) against a release build
# and writes docs/benchmarks.md: a table of figures plus the machine it ran on.
#
#   scripts/bench-fleet.sh            # every scenario (~15 min on 2 cores)
#   SCENARIOS="ws-1k http-10k" scripts/bench-fleet.sh   # a subset
#   OUT=/tmp/b.md DURATION=30 scripts/bench-fleet.sh
#   BIN=/tmp/gitamp scripts/bench-fleet.sh            # no build, use this binary
#
# Each scenario: ramp the agents, hold them for DURATION seconds (RSS, CPU, messages/s, HTTP
# latency), roll a changed configuration out to all of them (webhook -> APPLIED), then kill -9
# the server and restart it (reconnect storm, redundant pushes). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-docs/benchmarks.md}
DURATION=${DURATION:-60}
RESULTS=${RESULTS:-target/bench-fleet}
SCENARIOS=${SCENARIOS:-"ws-1k ws-5k ws-15k http-10k http-50k http-100k"}
mkdir -p "$RESULTS"

# BIN=/path/to/gitamp skips the build (e.g. a copy kept apart from a tree others are editing).
if [[ -z ${BIN:-} && ${RUN:-1} != 0 ]]; then
  cargo build --release --quiet
  BIN=target/release/gitamp
fi

# name: transport agents processes connections ramp
declare -A SPEC=(
  [ws-1k]="ws 1000 1 0 1000"
  [ws-5k]="ws 5000 1 0 1000"
  [ws-15k]="ws 15000 2 0 1000"
  [http-10k]="http 10000 1 4 2000"
  [http-50k]="http 50000 2 8 2000"
  [http-100k]="http 100000 2 8 2000"
)

# RUN=0: only rebuild the table from earlier results in $RESULTS.
for name in $SCENARIOS; do
  [[ ${RUN:-1} == 0 ]] && break
  read -r transport agents processes connections ramp <<<"${SPEC[$name]}"
  echo "== $name: $agents $transport agents, $processes process(es)" >&2
  extra=()
  [[ $transport == http ]] && extra+=(--connections "$connections")
  if ! timeout 900 "$BIN" bench fleet --transport "$transport" --agents "$agents" \
      --processes "$processes" --ramp "$ramp" --heartbeat 30 --duration "$DURATION" \
      --rollout --restart --timeout 240 "${extra[@]}" | tee "$RESULTS/$name.log" >&2; then
    echo "$name failed (see $RESULTS/$name.log)" >&2
  fi
  grep '^RESULT ' "$RESULTS/$name.log" | sed 's/^RESULT //' >"$RESULTS/$name.json" || true
done

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), \
$(free -g | awk '/^Mem:/{print $2}') GiB RAM, Linux $(uname -r), open files $(ulimit -Hn) (hard), $(date -u '+%Y-%m-%d %H:%M UTC')"

table=$(
  echo "| Scenario | Agents | Connect rate (agents/s) | Server RSS (MiB) | KiB/agent | Server CPU (% of 1 core, steady) | Messages/s | HTTP p50 / p99 (ms) | Rollout webhook→APPLIED p50 / p99 / max (ms) (server: all synced, s) | Restart: all re-synced (s) | Redundant pushes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for name in $SCENARIOS; do
    f="$RESULTS/$name.json"
    if [[ ! -s $f ]]; then echo "| $name | (did not run to the end) | | | | | | | | | |"; continue; fi
    jq -r --arg name "$name" '
      def r(x): if x == null then "–" else (x * 10 | round / 10 | tostring) end;
      def s(x): if x == null then "–" else (x / 100 | round / 10 | tostring) end;
      def i(x): if x == null then "–" else (x | round | tostring) end;
      "| \($name) (\(.transport), \(.heartbeat_s) s\(if .transport == "http" then ", \(.connections) conns" else "" end)) | \(.agents) | \(i(.connect_rate)) | \(r(.rss_kib / 1024)) | \(r(.kib_per_agent)) | \(r(100 * .steady_cpu_s / .window_s)) | \(i(.messages_per_s)) | \(if .transport == "http" then "\(r(.lat_p50_ms)) / \(r(.lat_p99_ms))" else "–" end) | \(i(.rollout.p50_ms)) / \(i(.rollout.p99_ms)) / \(i(.rollout.max_ms)) (server: \(s(.rollout.server_synced_ms))) | \(s(.restart.resynced_ms)) (server: \(s(.restart.server_synced_ms))) | \(.redundant_pushes_total) |"
    ' "$f"
  done
)

if [[ -f $OUT ]] && grep -q '<!-- bench-fleet:table -->' "$OUT"; then
  # Replace the generated block, keep the hand-written text around it.
  python3 - "$OUT" "$machine" "$table" <<'PY'
import re, sys
path, machine, table = sys.argv[1:4]
text = open(path).read()
block = f"<!-- bench-fleet:table -->\nMachine: {machine}\n\n{table}\n<!-- /bench-fleet:table -->"
text = re.sub(r"<!-- bench-fleet:table -->.*?<!-- /bench-fleet:table -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
PY
else
  {
    echo "# Fleet benchmarks"
    echo
    echo "<!-- bench-fleet:table -->"
    echo "Machine: $machine"
    echo
    echo "$table"
    echo "<!-- /bench-fleet:table -->"
  } >"$OUT"
fi
echo "wrote $OUT" >&2
