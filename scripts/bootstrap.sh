#!/usr/bin/env bash
# Install everything the project needs on a Debian 12 controller, and nothing twice:
#   1. apt packages (podman + runc, debootstrap, rabbitmq-server for the service tests, ...)
#   2. the project venv (.venv) from the pinned requirements-dev.txt
#   3. the test-host image (scripts/build-image.sh, cached by recipe hash)
# Each step checks first and returns in well under a second when already done.
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(podman runc debootstrap rabbitmq-server redis-server python3-venv git)

apt_missing() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s ' "$p"
  done
}

install_apt() {
  local missing
  missing=$(apt_missing)
  [[ -z "$missing" ]] && return 0
  [[ $EUID -eq 0 ]] || die "missing packages ($missing) and not root: run as root or install them"
  log "apt-get install $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # The service tests start their own broker; the package's auto-started one (where an init
  # system runs) is harmless: scripts/local-rabbitmq.sh reuses whatever answers on 5672.
}

install_venv() {
  local stamp want
  want=$(cat requirements-dev.txt service_src/requirements.txt | sha256sum | cut -c1-16)
  stamp=.venv/.requirements-$want
  [[ -f $stamp ]] && return 0
  log "creating the project venv (.venv) from requirements-dev.txt"
  local py=${PYTHON:-python3}
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$py is $("$py" -V 2>&1); the controller needs Python >= 3.11 (ansible-core 2.19)"
  [[ -x .venv/bin/python ]] || "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r requirements-dev.txt
  rm -f .venv/.requirements-*
  touch "$stamp"
}

main() {
  cd "$ROOT"
  local t0
  t0=$(now)
  install_apt
  install_venv
  bash scripts/build-image.sh
  log "bootstrap done in $(elapsed "$t0") s"
}
main "$@"
