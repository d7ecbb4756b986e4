#!/usr/bin/env bash
# Builds the real OpAMP peers gitamp's interop tests run against, from the Go module proxy alone:
#   bin/otelcol-gitamp   an OpenTelemetry Collector built by the Collector Builder from
#                        tests/collector/manifest.yaml
#   bin/opampsupervisor  the collector's OpAMP supervisor, from tests/collector/supervisor/
#   bin/opamp-driver     our opamp-go client, from tests/opamp-go/
# into a cache outside the clone that survives between runs:
#   ${GITAMP_PEERS_DIR:-$HOME/.cache/gitamp-peers}
# Each binary is rebuilt only when its inputs change (a stamp of their hashes lies next to it). Go's own
# module and build caches (GOMODCACHE, GOCACHE) are used as they are, so they survive too.
#
# Usage: scripts/build-peers.sh [--env] [--force] [otelcol|supervisor|driver ...]
#   (no target)  build all three
#   --env        print only `export GITAMP_...=...` lines on stdout, for
#                  eval "$(scripts/build-peers.sh --env)"
#                all build chatter goes to stderr (it always does)
#   --force      rebuild even when the stamps match
# Needs Go 1.26 or newer on PATH (or at /usr/local/go/bin/go). A cold collector build downloads several
# hundred modules (2.1 GB) and took 494 s on 2 cores with empty Go caches; a cached run takes under 0.1 s.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
peers="${GITAMP_PEERS_DIR:-${HOME:-/tmp}/.cache/gitamp-peers}"
bin="$peers/bin"

env_mode=0
force=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --env) env_mode=1 ;;
    --force) force=1 ;;
    otelcol|supervisor|driver) targets+=("$arg") ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-peers: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(otelcol supervisor driver)

say() { echo "build-peers: $*" >&2; }
die() { echo "build-peers: error: $*" >&2; exit 1; }

# --- Go ----------------------------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
  else
    die "'go' not found on PATH. Install Go 1.26 or newer (the official tarball unpacked to /usr/local/go,
  then add /usr/local/go/bin to PATH; Debian's golang-go package is too old) and run this again."
  fi
fi
go_version="$(go env GOVERSION)"
case "$go_version" in
  go1.2[6-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
  *) die "Go 1.26 or newer is needed (the collector's module graph says 'go 1.26.0'); found $go_version at $(command -v go)" ;;
esac
export CGO_ENABLED=0
# A project build must not wander off to fetch another toolchain; modules come from the proxy only.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

mkdir -p "$bin" "$peers/build" "$peers/tools"
# One build at a time per cache (two test runs may start together).
exec 9>"$peers/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9 || die "could not lock $peers/.lock"
fi

# Hash of the given files (paths relative to the repo, so a moved clone keeps its stamps) plus extra words.
inputs_hash() {
  local extra="$1"; shift
  {
    echo "$extra"
    echo "$go_version"
    local f
    for f in "$@"; do
      echo "== ${f#"$repo"/}"
      cat "$f"
    done
  } | sha256sum | cut -d' ' -f1
}

# up_to_date NAME HASH: the binary exists and its stamp holds HASH.
up_to_date() {
  [ "$force" = 0 ] && [ -x "$bin/$1" ] && [ -f "$bin/$1.stamp" ] && [ "$(cat "$bin/$1.stamp")" = "$2" ]
}

stamp() { printf '%s\n' "$2" > "$bin/$1.stamp.tmp" && mv -f "$bin/$1.stamp.tmp" "$bin/$1.stamp"; }

# --- the collector -----------------------------------------------------------------------------------
build_otelcol() {
  local manifest="$repo/tests/collector/manifest.yaml"
  [ -f "$manifest" ] || die "missing $manifest"
  local builder_version
  builder_version="$(sed -n 's/^# builder-version: *\(v[0-9][0-9.]*\).*/\1/p' "$manifest" | head -1)"
  [ -n "$builder_version" ] || die "$manifest has no '# builder-version: vX.Y.Z' line"
  local hash
  hash="$(inputs_hash "builder $builder_version" "$manifest")"
  if up_to_date otelcol-gitamp "$hash"; then
    say "otelcol-gitamp up to date ($bin/otelcol-gitamp)"
    return
  fi

  local start=$SECONDS
  local tooldir="$peers/tools/builder-$builder_version"
  if [ ! -x "$tooldir/builder" ]; then
    say "installing go.opentelemetry.io/collector/cmd/builder@$builder_version into $tooldir"
    mkdir -p "$tooldir"
    GOBIN="$tooldir" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2 \
      || die "could not install the Collector Builder $builder_version from the Go module proxy"
  fi

  local work="$peers/build/otelcol-gitamp"
  rm -rf "$work"
  mkdir -p "$work"
  # The builder writes its generated module to dist.output_path: point it into the cache.
  sed "s|^\(  *output_path:\).*|\1 $work/src|" "$manifest" > "$work/manifest.yaml"
  grep -q "output_path: $work/src" "$work/manifest.yaml" || die "could not set output_path in the manifest copy"
  say "building otelcol-gitamp with the Collector Builder $builder_version (cold, with empty Go caches: about 8 min on 2 cores)"
  if ! "$tooldir/builder" --config="$work/manifest.yaml" >"$work/builder.log" 2>&1; then
    tail -n 60 "$work/builder.log" >&2
    die "the Collector Builder failed (full log: $work/builder.log)"
  fi
  [ -x "$work/src/otelcol-gitamp" ] || die "the builder reported success but $work/src/otelcol-gitamp is missing (log: $work/builder.log)"
  # mv, not cp: the binary is large (~165 MB) and the generated sources are kept only for debugging.
  mv -f "$work/src/otelcol-gitamp" "$bin/otelcol-gitamp.tmp"
  mv -f "$bin/otelcol-gitamp.tmp" "$bin/otelcol-gitamp"
  stamp otelcol-gitamp "$hash"
  say "built otelcol-gitamp in $((SECONDS - start)) s"
}

# --- a plain Go main module (the supervisor, the opamp-go driver) -------------------------------------
# build_go_module NAME DIR
build_go_module() {
  local name="$1" dir="$2"
  local files=()
  mapfile -t files < <(cd "$dir" && find . -name '*.go' -o -name go.mod -o -name go.sum | grep -v '/testdata/' | LC_ALL=C sort | sed "s|^\./|$dir/|")
  local hash
  hash="$(inputs_hash "$name" "${files[@]}")"
  if up_to_date "$name" "$hash"; then
    say "$name up to date ($bin/$name)"
    return
  fi
  local start=$SECONDS
  say "building $name from ${dir#"$repo"/}"
  (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$bin/$name.tmp" .) >&2 \
    || die "go build of $name failed in $dir"
  mv -f "$bin/$name.tmp" "$bin/$name"
  stamp "$name" "$hash"
  say "built $name in $((SECONDS - start)) s"
}

build_supervisor() {
  local dir="$repo/tests/collector/supervisor"
  [ -f "$dir/go.mod" ] || die "missing $dir/go.mod"
  build_go_module opampsupervisor "$dir"
}

build_driver() {
  local dir="$repo/tests/opamp-go"
  [ -f "$dir/go.mod" ] || die "the opamp-go driver is missing: no $dir/go.mod"
  build_go_module opamp-driver "$dir"
}

for t in "${targets[@]}"; do
  case "$t" in
    otelcol) build_otelcol ;;
    supervisor) build_supervisor ;;
    driver) build_driver ;;
  esac
done

# --- what the tests read -----------------------------------------------------------------------------
exports=("export GITAMP_PEERS_DIR=$(printf %q "$peers")")
for t in "${targets[@]}"; do
  case "$t" in
    otelcol) exports+=("export GITAMP_TEST_OTELCOL=$(printf %q "$bin/otelcol-gitamp")") ;;
    supervisor) exports+=("export GITAMP_TEST_SUPERVISOR=$(printf %q "$bin/opampsupervisor")") ;;
    driver) exports+=("export GITAMP_TEST_OPAMP_GO=$(printf %q "$bin/opamp-driver")") ;;
  esac
done
if [ "$env_mode" = 1 ]; then
  printf '%s\n' "${exports[@]}"
else
  say "done; for the tests:"
  printf '  %s\n' "${exports[@]}" >&2
fi
