# shellcheck shell=bash
# Common settings for the project's scripts. Source it; do not run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export CONTAINERS_CONF="$ROOT/.podman/containers.conf"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export PATH="$ROOT/.venv/bin:$PATH"
# The test-host image: a Debian 12 systemd host built by scripts/build-image.sh.
export TESTHOST_IMAGE="localhost/roboshop-testhost:debian12"
# The newest-Ansible controller: Debian 13, Python 3.13, requirements-controller.txt
# (scripts/build-controller.sh builds it, scripts/controller.sh runs a command in it).
export CONTROLLER_IMAGE="localhost/roboshop-controller:debian13"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
