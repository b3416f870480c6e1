#!/usr/bin/env bash
# Installs everything the test suite needs (system packages and Python packages) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nats-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server >/dev/null
fi
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider "$@"
