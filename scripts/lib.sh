# shellcheck shell=bash
# Common settings for the project's scripts. Source it; do not run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export CONTAINERS_CONF="$ROOT/.podman/containers.conf"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export PATH="$ROOT/.venv/bin:$PATH"
# The test-host image: a Debian 12 systemd host built by scripts/build-image.sh; its Debian 13
# twin (`scripts/build-image.sh trixie`: RabbitMQ 4.0, Redis 8, Python 3.13 on the hosts).
export TESTHOST_IMAGE="localhost/roboshop-testhost:debian12"
export TESTHOST_IMAGE_13="localhost/roboshop-testhost:debian13"
# The newest-Ansible controller: Debian 13, Python 3.13, requirements-controller.txt
# (scripts/build-controller.sh builds it, scripts/controller.sh runs a command in it).
export CONTROLLER_IMAGE="localhost/roboshop-controller:debian13"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# debootstrap of a release newer than this debootstrap knows (trixie on Debian 12's
# debootstrap, which has no script for it): sid's script, which trixie's is a link to.
suite_script() {
  if [[ -e "/usr/share/debootstrap/scripts/$1" ]]; then
    printf '%s' ""
  else
    printf '%s' /usr/share/debootstrap/scripts/sid
  fi
}

# The apt mirror of this machine's own apt configuration (never written into the repo): the
# test-host and controller images are debootstrapped from it. Empty: debootstrap's default.
apt_mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"
}

# This machine's extra CA certificates, which the images trust too (pip reaches PyPI).
extra_ca_files() { compgen -G '/usr/local/share/ca-certificates/*.crt' || true; }
