#!/usr/bin/env bash
# What the web page's browser tests (tests/web_ui.rs) need: Debian's Chromium and Node.js
# (apt-get, only when missing) and the pinned npm packages of tests/web (playwright-core,
# axe-core; `npm ci`, only when package-lock.json changed since the last install). Playwright's
# own browser downloads are not used: the tests drive /usr/bin/chromium. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages for the web page's tests: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# playwright-core 1.x needs Node.js 18 or later.
major=$(node -e 'process.stdout.write(process.versions.node.split(".")[0])')
if [ "$major" -lt 18 ]; then
  echo "Node.js $(node --version) is too old for playwright-core (18 or later needed)" >&2
  exit 1
fi

# npm ci again only when the lock file changed (its copy in node_modules says what is there).
web=tests/web
if ! cmp -s "$web/package-lock.json" "$web/node_modules/.package-lock.json.installed" 2>/dev/null; then
  echo "installing the web tests' npm packages (npm ci in $web)"
  (cd "$web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$web/package-lock.json" "$web/node_modules/.package-lock.json.installed"
fi
