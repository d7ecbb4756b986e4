#!/usr/bin/env bash
# What the web page costs the server (issue 16): the standard http-100k fleet scenario of
# scripts/bench-fleet.sh, run with no page open and with PAGES pages open (scripts/web-load.mjs:
# each holds a stream and re-fetches its view on every change event, as the page does),
# alternated ROUNDS times. Prints a table of server RSS and steady-state CPU per run.
#
#   BIN=target/release/gitamp ROUNDS=2 DURATION=30 PAGES=10 scripts/bench-web.sh
#   FIRST_ROUND=3 ROUNDS=3 ... scripts/bench-web.sh   # one more round; the table shows 1 to 3
#   TABLE_ONLY=1 ROUNDS=3 scripts/bench-web.sh          # only the table, from earlier runs
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
FIRST_ROUND=${FIRST_ROUND:-1}
if [[ -z ${TABLE_ONLY:-} ]]; then
  BIN=${BIN:?set BIN to a release build of gitamp}
fi
DURATION=${DURATION:-30}
PAGES=${PAGES:-10}
OUTDIR=${OUTDIR:-target/bench-web}
mkdir -p "$OUTDIR"

descendants() {
  local p
  for p in $(ps -o pid= --ppid "$1"); do
    echo "$p"
    descendants "$p"
  done
}

# The API of the `gitamp serve` the benchmark under $1 started: its listening port that answers
# the status route.
find_api() {
  local p port
  for p in $(descendants "$1"); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q ' serve ' || continue
    for port in $(ss -ltnpH 2>/dev/null | grep "pid=$p," | awk '{print $4}' | sed 's/.*://'); do
      if curl -fsS -m 2 "http://127.0.0.1:$port/api/v1/status" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$port"
        return 0
      fi
    done
  done
  return 1
}

run() {
  local round=$1 pages=$2 dir="$OUTDIR/r$1-p$2" api="" loader=""
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "== round $round, $pages page(s) open" >&2
  BIN=$BIN DURATION=$DURATION SCENARIOS=http-100k RESULTS=$dir OUT=$dir/table.md \
    scripts/bench-fleet.sh >"$dir/bench.log" 2>&1 &
  local bench=$!
  if [ "$pages" -gt 0 ]; then
    until api=$(find_api "$bench"); do
      kill -0 "$bench" 2>/dev/null || break
      sleep 1
    done
    if [ -n "$api" ]; then
      node scripts/web-load.mjs --base "$api" --clients "$pages" --duration 3600 \
        >"$dir/load.json" 2>"$dir/load.err" &
      loader=$!
    fi
  fi
  wait "$bench" || true
  if [ -n "$loader" ]; then
    kill -TERM "$loader" 2>/dev/null || true
    wait "$loader" || true
  fi
}

if [[ -z ${TABLE_ONLY:-} ]]; then
  for round in $(seq "$FIRST_ROUND" "$ROUNDS"); do
    run "$round" 0
    run "$round" "$PAGES"
  done
fi

echo "| Round | Pages open | Server RSS, steady (MiB) | Server CPU, steady 30 s (% of 1 core) | Server CPU, ramp (s) | Server CPU, rollout until all synced (s) | RSS after the restart storm (MiB) | HTTP p50 / p99 (ms) | Page requests (stream events) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
  for pages in 0 "$PAGES"; do
    dir="$OUTDIR/r$round-p$pages"
    f="$dir/http-100k.json"
    if [[ ! -s $f ]]; then
      echo "| $round | $pages | (did not run to the end) | | | | | | |"
      continue
    fi
    load="–"
    if [[ -s $dir/load.json ]]; then
      load=$(jq -r '"\([.routes[].n] | add) (\(.events))"' "$dir/load.json")
    fi
    jq -r --arg r "$round" --arg p "$pages" --arg load "$load" '
      def r(x): if x == null then "–" else (x * 10 | round / 10 | tostring) end;
      "| \($r) | \($p) | \(r(.rss_kib / 1024)) | \(r(100 * .steady_cpu_s / .window_s)) | \(r(.ramp_cpu_s)) | \(r(.rollout.cpu_to_synced_s)) | \(r(.restart.rss_kib / 1024)) | \(r(.lat_p50_ms)) / \(r(.lat_p99_ms)) | \($load) |"
    ' "$f"
  done
done
