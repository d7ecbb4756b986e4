#!/usr/bin/env bash
# Run every fuzz target for a set time and report executions.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# With cargo-fuzz and a nightly toolchain: libFuzzer (coverage-guided), corpus in
# fuzz/corpus/<target>/ (new finds are added there: commit only small, interesting ones),
# crashes in fuzz/artifacts/<target>/. Otherwise, or with GITAMP_FUZZ_STABLE=1: the stable
# runner (fuzz/src/bin/stable_fuzz.rs), seeded mutations of the same corpus, same target
# functions. Exit code 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(opamp_decode ws_frame repo_load webhook_parse)
fi

have_libfuzzer() {
  [ "${GITAMP_FUZZ_STABLE:-0}" != 1 ] &&
    cargo fuzz --version >/dev/null 2>&1 &&
    rustup toolchain list 2>/dev/null | grep -q '^nightly'
}

status=0
if have_libfuzzer; then
  echo "libFuzzer via cargo +nightly fuzz, ${secs}s per target"
  (cd fuzz && cargo +nightly fuzz build -O)
  for t in "${targets[@]}"; do
    log="$(mktemp)"
    if (cd fuzz && cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1) >"$log" 2>&1; then
      res=ok
    else
      res=CRASH
      status=1
    fi
    # libFuzzer's last lines: "#N DONE cov: C ft: F corp: K/Sb ...", "Done N runs in S
    # second(s)", and with -print_final_stats the exact counters (stat::...).
    runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)"
    n="$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)"
    [ -n "$n" ] || n="$(echo "$runs" | awk '{print $2}')"
    s="$(echo "$runs" | awk '{print $5}')"
    rate="$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log" | tail -1)"
    cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)"
    corpus="fuzz/corpus/$t"
    files="$(find "$corpus" -type f 2>/dev/null | wc -l)"
    size="$(du -sh "$corpus" 2>/dev/null | cut -f1)"
    if [ -n "$n" ] && [ -n "$s" ] && [ "$s" -gt 0 ]; then
      [ -n "$rate" ] || rate=$((n / s))
      echo "$t: $n executions in ${s} s (${rate}/s), ${cov:-cov: ?}, corpus $files files $size, $res"
    else
      echo "$t: $res (see $log)"
    fi
    if [ "$res" != ok ]; then
      tail -30 "$log"
      echo "  crash input(s): $(find fuzz/artifacts/"$t"/ -maxdepth 1 -type f -printf '%f\n' 2>/dev/null | sort | tr '\n' ' ')"
    else
      rm -f "$log"
    fi
  done
else
  echo "stable runner (no cargo-fuzz + nightly, or GITAMP_FUZZ_STABLE=1), ${secs}s per target"
  # Share the main target directory: the fuzz crate uses the same dependency versions
  # (fuzz/Cargo.lock) and dev profile, so nothing is rebuilt but the runner.
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" \
    cargo build -q --manifest-path fuzz/Cargo.toml --no-default-features --bin stable_fuzz
  for t in "${targets[@]}"; do
    "${CARGO_TARGET_DIR:-$PWD/target}/debug/stable_fuzz" "$t" "$secs" "${GITAMP_FUZZ_SEED:-24301}" || status=1
  done
fi
exit $status
