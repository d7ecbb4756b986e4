#!/usr/bin/env bash
# Create .venv with the Python packages the interop tests drive (idempotent).
# The PyPI package opentelemetry-opamp-client installs the module `opentelemetry._opamp`; the
# check below also compares the installed version with the pin, so a bumped pin reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/interop/requirements.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want=$(sed -n 's/^opentelemetry-opamp-client==\([^ ]*\).*/\1/p' "$req")
if ! .venv/bin/python - "$want" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import opentelemetry._opamp  # noqa: F401  (the module the package really provides)
from opentelemetry._opamp import OpAMPAgent, OpAMPCallbacks, OpAMPClient  # noqa: F401
import websockets.sync.client  # noqa: F401  (tests/interop/ws_client.py)
want = sys.argv[1]
sys.exit(0 if not want or version("opentelemetry-opamp-client") == want else 1)
PY
then
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  .venv/bin/python -c 'import opentelemetry._opamp' \
    || { echo "python-env: opentelemetry._opamp still not importable after install" >&2; exit 1; }
fi
