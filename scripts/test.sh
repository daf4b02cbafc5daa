#!/usr/bin/env bash
# Runs waggle's whole test suite:
#   1. unit and integration tests on the embedded SQLite backend,
#   2. the same integration suite on PostgreSQL, when a server answers on 127.0.0.1:5432,
#   3. the dashboard's browser tests, when Chromium and ChromeDriver are installed
#      (this script installs them when it runs as root on Debian),
#   4. the API fuzzed from its OpenAPI document (scripts/fuzz-api.sh), where the script
#      can give it a network namespace of its own (as root),
#   5. the slow fault tests (scripts/faults.sh): kill -9 in rounds, on both backends,
#   6. the packaging files' checks (scripts/check-packaging.sh).
# A delivery test also verifies with the Standard Webhooks package from PyPI, which this
# script installs into target/standard-webhooks-venv.
# Set WAGGLE_REQUIRE_POSTGRES=1, WAGGLE_REQUIRE_BROWSER=1, WAGGLE_REQUIRE_FUZZ=1 or
# WAGGLE_REQUIRE_STANDARD_WEBHOOKS=1 or WAGGLE_REQUIRE_PACKAGING=1 to fail instead of
# skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

loud() { printf '\n\033[1;33m%s\033[0m\n\n' "$*" >&2; }

if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        scripts/install-browser.sh || loud "Could not install Chromium; the browser tests will be skipped."
    fi
fi

STANDARD_WEBHOOKS_VERSION=1.3.0
SW_VENV=target/standard-webhooks-venv
sw_version() {
    "$SW_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("standardwebhooks"))' 2>/dev/null
}
if [ "$(sw_version)" != "$STANDARD_WEBHOOKS_VERSION" ]; then
    rm -rf "$SW_VENV"
    python3 -m venv "$SW_VENV" 2>/dev/null &&
        "$SW_VENV/bin/pip" install --quiet --disable-pip-version-check \
            "standardwebhooks==$STANDARD_WEBHOOKS_VERSION" || true
fi
if [ "$(sw_version)" = "$STANDARD_WEBHOOKS_VERSION" ]; then
    export WAGGLE_TEST_STANDARD_WEBHOOKS_PYTHON="$PWD/$SW_VENV/bin/python"
elif [ "${WAGGLE_REQUIRE_STANDARD_WEBHOOKS:-}" = 1 ]; then
    echo "The standardwebhooks package is required (WAGGLE_REQUIRE_STANDARD_WEBHOOKS=1) but could not be installed" >&2
    exit 1
else
    loud "SKIPPED: the check with the standardwebhooks package (it could not be installed from PyPI)."
fi

echo "== waggle tests on SQLite (unit, API, crash, browser) =="
cargo test --workspace --locked

if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    echo "== waggle API tests on PostgreSQL (127.0.0.1:5432) =="
    WAGGLE_TEST_BACKEND=postgres cargo test --locked -p waggle --test api
elif [ "${WAGGLE_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "PostgreSQL is required (WAGGLE_REQUIRE_POSTGRES=1) but nothing answers on 127.0.0.1:5432" >&2
    exit 1
else
    loud "SKIPPED: the PostgreSQL suite (no server on 127.0.0.1:5432; trust auth, user postgres, database test)."
fi

if unshare --net true 2>/dev/null && command -v python3 >/dev/null 2>&1; then
    scripts/fuzz-api.sh
elif [ "${WAGGLE_REQUIRE_FUZZ:-}" = 1 ]; then
    echo "The API fuzzing is required (WAGGLE_REQUIRE_FUZZ=1) but needs python3 and unshare --net (root)" >&2
    exit 1
else
    loud "SKIPPED: the API fuzzing (it needs python3 and a network namespace of its own: run as root)."
fi

scripts/faults.sh

scripts/check-packaging.sh
