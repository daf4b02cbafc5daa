#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document: schemathesis (pinned, in a venv under
# target/) generates requests for every operation against a live `waggle serve` on a
# fresh SQLite file, and checks each answer: no 5xx, every status, header, content type
# and body as the document says, invalid input refused, deleted things gone, no call
# accepted without a key. Prints the number of cases and each failure; fails on any, or
# when fewer than WAGGLE_FUZZ_MIN_CASES (1,000) cases ran.
#
# The server and the fuzzer run in a network namespace of their own that has only a
# loopback interface: generated webhook URLs and Test URL calls point anywhere, and
# nothing they make can leave this machine, whatever the code under test does.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MIN_CASES=${WAGGLE_FUZZ_MIN_CASES:-1000}
MAX_EXAMPLES=${WAGGLE_FUZZ_MAX_EXAMPLES:-60}
SEED=${WAGGLE_FUZZ_SEED:-$RANDOM}
VENV=target/fuzz-venv
BIN=${WAGGLE_BIN:-target/debug/waggle}

if [ -z "${WAGGLE_FUZZ_ISOLATED:-}" ]; then
    if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
        echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV =="
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    [ -n "${WAGGLE_BIN:-}" ] || cargo build --locked -p waggle
    if ! unshare --net true 2>/dev/null; then
        echo "The API fuzzing needs a network namespace of its own (unshare --net, as root):" >&2
        echo "without one, generated destinations could be reached. Not run." >&2
        exit 1
    fi
    exec unshare --net env WAGGLE_FUZZ_ISOLATED=1 "$0" "$@"
fi

ip link set lo up
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
db="sqlite://$work/waggle.db"
key=$("$BIN" org create --name "Fuzzed Org" --database "$db" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
port=18231
"$BIN" serve --listen "127.0.0.1:$port" --database "$db" --rate-limit 0 >"$work/serve.log" 2>&1 &
server=$!

echo "== fuzzing the API from its OpenAPI document (seed $SEED, up to $MAX_EXAMPLES cases per operation and phase) =="
status=0
root=$PWD
# From the scratch folder: schemathesis keeps a cache where it runs.
(cd "$work" && SCHEMATHESIS_HOOKS="$root/scripts/fuzz/hooks.py" "$root/$VENV/bin/schemathesis" --no-color --config-file "$root/scripts/fuzz/schemathesis.toml" run \
    "http://127.0.0.1:$port/api/v1/openapi.json" \
    --wait-for-schema 30 \
    --header "Authorization: Bearer $key" \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1) >"$work/out.txt" 2>&1 || status=$?
# The failures and the summary; the run's progress lines are many and say nothing more.
if grep -q '^=* *FAILURES' "$work/out.txt"; then
    sed -n '/^=* *FAILURES/,$p' "$work/out.txt"
elif grep -q '^=* *SUMMARY' "$work/out.txt"; then
    sed -n '/^=* *SUMMARY/,$p' "$work/out.txt"
else
    cat "$work/out.txt"
fi

cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$work/out.txt" | tail -n 1)
# A run whose key stopped working tested nothing but 401s from then on.
if ! python3 - "$port" "$key" <<'PY'
import sys, urllib.request
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/v1/webhooks",
                                 headers={"Authorization": f"Bearer {sys.argv[2]}"})
sys.exit(0 if urllib.request.urlopen(request).status == 200 else 1)
PY
then
    echo "The fuzzer's own API key no longer works: the run lost its key" >&2
    status=1
fi
echo "API fuzzing: ${cases:-0} cases generated over every operation, exit status $status"
if grep -q "ERROR\|panicked" "$work/serve.log"; then
    echo "The server logged errors while fuzzed:" >&2
    grep "ERROR\|panicked" "$work/serve.log" | head -20 >&2
    status=1
fi
if [ "${cases:-0}" -lt "$MIN_CASES" ]; then
    echo "Too few cases: ${cases:-0} < $MIN_CASES" >&2
    status=1
fi
exit "$status"
