#!/usr/bin/env bash
# Create .venv with the Python packages the tests drive (idempotent): the interop clients and
# schemathesis (tests/api_contract.rs). The PyPI package opentelemetry-opamp-client installs the
# module `opentelemetry._opamp`; the check below also compares each installed version with its
# pin, so a bumped pin reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/interop/requirements.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pin() { sed -n "s/^$1==\\([^ ]*\\).*/\\1/p" "$req"; }
if ! .venv/bin/python - "$(pin opentelemetry-opamp-client)" "$(pin schemathesis)" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import opentelemetry._opamp  # noqa: F401  (the module the package really provides)
from opentelemetry._opamp import OpAMPAgent, OpAMPCallbacks, OpAMPClient  # noqa: F401
import websockets.sync.client  # noqa: F401  (tests/interop/ws_client.py)
pins = {"opentelemetry-opamp-client": sys.argv[1], "schemathesis": sys.argv[2]}
sys.exit(0 if all(not want or version(name) == want for name, want in pins.items()) else 1)
PY
then
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  .venv/bin/python -c 'import opentelemetry._opamp' \
    || { echo "python-env: opentelemetry._opamp still not importable after install" >&2; exit 1; }
  .venv/bin/schemathesis --version >/dev/null \
    || { echo "python-env: .venv/bin/schemathesis does not run after install" >&2; exit 1; }
fi
