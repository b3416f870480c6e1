#!/usr/bin/env bash
# Installs everything the test suite needs (system packages and Python packages) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# nats-server for the NATS tests; gcc for the native part of the wire path (collector/_wirec.c), which the
# tests check is built
if ! command -v nats-server >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server gcc >/dev/null
fi
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider "$@"
