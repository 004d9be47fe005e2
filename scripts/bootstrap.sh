#!/usr/bin/env bash
# Install everything the project needs on a Debian 12 controller, and nothing twice:
#   1. apt packages (podman + runc, debootstrap, rabbitmq-server for the service tests, ...)
#   2. the project venv (.venv) from the pinned requirements-dev.txt
#   3. the test-host image (scripts/build-image.sh, cached by recipe hash)
# Each step checks first and returns quickly when already done. Then it checks its own
# postconditions and stops with one line that says what is wrong and what to run:
#   - the venv's tools import (ansible-core, molecule, testinfra);
#   - podman uses the netavark network backend (containers find each other by name);
#   - two containers on a fresh project network resolve each other by name.
# A machine whose podman used CNI before (networks without DNS) is switched over: the
# project's own test hosts left on a CNI network are removed (they are disposable).
source "$(dirname "$0")/lib.sh"

# netavark + aardvark-dns: podman networks with DNS (without them, Debian's podman uses CNI,
# whose networks have none). iptables: Debian 12's netavark (1.4) sets up every network's
# NAT and forwarding by running the iptables command, and no package pulls it in (a machine
# without it: "Error: netavark: No such file or directory" on the first container).
# openssh-client: Ansible reaches every host over SSH. gcc, libc6-dev, python3-dev: pip
# compiles uWSGI (sdist only) into the venv; a stock Debian 12 image has none of them.
APT_PACKAGES=(podman runc netavark aardvark-dns iptables debootstrap openssh-client
  rabbitmq-server redis-server python3-venv python3-dev gcc libc6-dev git)

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

# The network backend podman uses with the project's containers.conf.
check_backend() {
  local backend
  backend=$(podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null) ||
    die "podman does not run: try 'CONTAINERS_CONF=$CONTAINERS_CONF podman info'"
  [[ $backend == netavark ]] ||
    die "podman's network backend is '$backend', not netavark (no DNS between test hosts):" \
      "run 'apt-get install netavark aardvark-dns' and keep network_backend = \"netavark\"" \
      "in $CONTAINERS_CONF"
  command -v iptables >/dev/null ||
    die "iptables is not installed: netavark needs it for every podman network:" \
      "run 'apt-get install iptables'"
}

# Test hosts created while podman used CNI sit on networks netavark does not know: their
# names resolve nowhere. The project's own (on a roboshop-* network) are removed; anything
# else is named with the command to run.
switch_from_cni() {
  local name nets net stale=()
  while read -r name nets; do
    [[ -n $name ]] || continue
    for net in ${nets//,/ }; do
      podman network exists "$net" 2>/dev/null && continue
      if [[ $net == roboshop-* ]]; then
        log "removing $name: a test host on the CNI network $net (no DNS), made before netavark"
        podman rm -f -t 2 "$name" >/dev/null 2>&1 || true
      else
        stale+=("$name")
      fi
      break
    done
  done < <(podman ps -a --format '{{.Names}} {{.Networks}}' 2>/dev/null)
  [[ ${#stale[@]} -eq 0 ]] || log "WARNING: containers on networks podman no longer knows" \
    "(made under CNI): ${stale[*]}; remove them with: podman rm -f ${stale[*]}"
}

# Two containers on a fresh project network must resolve each other by name.
check_dns() {
  local net=roboshop-dnscheck probe=roboshop-dnscheck-a out="" err
  err=$(mktemp)
  podman rm -f -t 0 "$probe" >/dev/null 2>&1 || true
  podman network rm "$net" >/dev/null 2>&1 || true
  podman network create "$net" >/dev/null
  if [[ "$(podman network inspect "$net" --format '{{.DNSEnabled}}')" == true ]] &&
    podman run -d --name "$probe" --network "$net" --network-alias dnscheck-peer \
      "$TESTHOST_IMAGE" sleep 30 >/dev/null 2>"$err"; then
    out=$(podman run --rm --network "$net" "$TESTHOST_IMAGE" getent hosts dnscheck-peer \
      2>"$err" || true)
  fi
  podman rm -f -t 0 "$probe" >/dev/null 2>&1 || true
  podman network rm "$net" >/dev/null 2>&1 || true
  # podman's own error, when a container did not even start, is the useful part
  local why
  why=$(grep -m1 -i 'error' "$err" || true)
  rm -f "$err"
  [[ -n $out ]] || die "containers on a podman network do not resolve each other by name" \
    "(network_backend $(podman info --format '{{.Host.NetworkBackend}}')${why:+; podman: $why}):" \
    "run 'apt-get install netavark aardvark-dns iptables' and check network_backend in" \
    "$CONTAINERS_CONF"
}

main() {
  cd "$ROOT"
  local t0
  t0=$(now)
  install_apt
  install_venv
  .venv/bin/python -c 'import ansible, molecule, testinfra' 2>/dev/null ||
    die "the project venv is broken (ansible, molecule or testinfra do not import):" \
      "rm -rf .venv && bash scripts/bootstrap.sh"
  check_backend
  switch_from_cni
  bash scripts/build-image.sh
  bash scripts/build-image.sh trixie  # molecule/rabbitmq4: RabbitMQ 4.0 on Debian 13
  podman image exists "$TESTHOST_IMAGE" && podman image exists "$TESTHOST_IMAGE_13" ||
    die "a test-host image is missing after its build: bash scripts/build-image.sh [trixie]"
  check_dns
  log "bootstrap done in $(elapsed "$t0") s (podman: netavark, names resolve between hosts)"
}
main "$@"
