#!/usr/bin/env bash
# The slow fault tests, on SQLite and, when a server answers on 127.0.0.1:5432, on
# PostgreSQL: 20 rounds of kill -9 at random points under load and 10 bursts killed right
# after their last 202 (every accepted event delivered, the duplicates of each kill
# counted and printed, at most 5 % per round of steady load). On SQLite they run in both
# sync modes: `full` (the default), then every crash test again with `normal`, whose
# promise is the one a kill -9 tests (a process crash loses nothing). About a minute per
# SQLite mode, two or three on PostgreSQL. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# slow [FILTER]: the ignored tests, or with a filter every test it matches, ignored or not.
slow() {
    local log
    log=$(mktemp)
    local status=0
    local which=(--ignored)
    if [ $# -gt 0 ]; then
        which=("$1" --include-ignored)
    fi
    cargo test --locked -p waggle --test api -- "${which[@]}" --nocapture >"$log" 2>&1 || status=$?
    # The rounds' figures and the verdicts; the rest is in the log on failure.
    grep -E "^(kill|test |test result)" "$log" || true
    if [ "$status" -ne 0 ]; then
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

echo "== slow fault tests on SQLite =="
slow
echo "== every crash test on SQLite with --sqlite-sync normal =="
WAGGLE_SQLITE_SYNC=normal slow crash::
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    echo "== slow fault tests on PostgreSQL =="
    WAGGLE_TEST_BACKEND=postgres slow
elif [ "${WAGGLE_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "PostgreSQL is required (WAGGLE_REQUIRE_POSTGRES=1) but nothing answers on 127.0.0.1:5432" >&2
    exit 1
else
    echo "SKIPPED: the slow fault tests on PostgreSQL (no server on 127.0.0.1:5432)." >&2
fi
