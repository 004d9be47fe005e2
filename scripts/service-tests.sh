#!/usr/bin/env bash
# The payment service's tests: a real RabbitMQ on localhost (started here when none answers),
# the real stub servers and uWSGI on free loopback ports. Exit status: pytest's.
# pytest's settings (options, python_files, pythonpath) are in service_src/pyproject.toml;
# the rootdir stays the repo root, so test ids read service_src/tests/... as before.
#
#   scripts/service-tests.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/local-rabbitmq.sh start
exec "$ROOT/.venv/bin/pytest" -c service_src/pyproject.toml --rootdir "$ROOT" \
  service_src/tests testing/tools/tests "$@"
