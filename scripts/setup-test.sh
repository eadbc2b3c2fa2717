#!/usr/bin/env bash
# What only the test suite needs on top of scripts/setup.sh (Debian packages; never a downloaded binary):
# headless Chromium for the browser tests of the annotation app and the report, and PostgreSQL's server binaries
# for the annotation store's PostgreSQL runs (the tests start and stop their own throwaway server; nothing is
# started here). `make test` runs it, `make demo` does not.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "warning: could not install ${missing[*]}; browser tests (chromium) or PostgreSQL runs (postgresql) will be skipped" >&2
fi
