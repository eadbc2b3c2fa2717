#!/usr/bin/env bash
# What only the test suite needs on top of scripts/setup.sh: headless Chromium for the browser tests of the
# annotation app and the report (Debian packages; never a downloaded browser). `make test` runs it, `make demo` does not.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
