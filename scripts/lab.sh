#!/usr/bin/env bash
# The main job on the embedded default: a local lab of four Debian 12 systemd hosts
# (payment, rabbitmq, stubs, lb: HAProxy) on the podman network `roboshop-lab`, deployed by the real
# `ansible-playbook -i inventory/lab site.yml` over SSH as the unprivileged `ops` account
# with sudo (as in production), ending with a real payment and its order read back from
# RabbitMQ. Each host's sshd is published on 127.0.0.1 at its ansible_port
# (inventory/lab/hosts.yml); the lab's key and known_hosts live in .cache/lab/ssh.
#
#   scripts/lab.sh [up]    create or reuse the hosts, deploy, prove (safe to repeat)
#   scripts/lab.sh hosts   only create or reuse the hosts and provision them (no deploy)
#   scripts/lab.sh down    remove the hosts and the network
#   scripts/lab.sh status  show the hosts
#
# ROBOSHOP_LAB_TLS=1 scripts/lab.sh up: the same lab with AMQPS (opt-in): the lab CA is made
# on the controller first (testing/lab/tls-ca.yml, kept in .cache/lab/tls) and site.yml runs
# with testing/lab/tls-vars.yml (payment connects to rabbitmq:5671 and verifies the broker).
# Back to plain AMQP: `scripts/lab.sh up` again (the TLS listener then goes away, 5672 stays).
source "$(dirname "$0")/lib.sh"

NETWORK=roboshop-lab
HOSTS=(payment rabbitmq stubs lb)
SSH_DIR="$ROOT/.cache/lab/ssh"

# ssh_port NAME: the host's ansible_port in inventory/lab/hosts.yml
ssh_port() {
  "$ROOT/.venv/bin/python" -c 'import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
for group in inv["all"]["children"].values():
    if sys.argv[2] in group["hosts"]:
        print(group["hosts"][sys.argv[2]]["ansible_port"])' "$ROOT/inventory/lab/hosts.yml" "$1"
}

start_host() {
  local name=$1 cname="lab-$1" port
  port=$(ssh_port "$cname")
  # A running host from before this recipe (no published sshd) is replaced.
  if [[ "$(podman inspect -f '{{.State.Running}}' "$cname" 2>/dev/null)" == true ]] &&
    podman port "$cname" 22/tcp 2>/dev/null | grep -qx "127.0.0.1:$port"; then
    return 0
  fi
  podman rm -f "$cname" >/dev/null 2>&1 || true
  podman run -d --name "$cname" --hostname "$name" \
    --network "$NETWORK" --network-alias "$name" \
    --publish "127.0.0.1:$port:22" \
    --systemd=always \
    "$TESTHOST_IMAGE" /sbin/init >/dev/null
}

wait_booted() {
  local h state
  for h in "${HOSTS[@]}"; do
    for _ in $(seq 1 60); do
      state=$(podman exec "lab-$h" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && break
      sleep 0.5
    done
  done
}

hosts() {
  cd "$ROOT"
  podman network exists "$NETWORK" || podman network create "$NETWORK" >/dev/null
  local h
  for h in "${HOSTS[@]}"; do start_host "$h"; done
  wait_booted
  log "provision: the lab's SSH key for ops, host keys, names between hosts (test-only play)"
  ansible-playbook -i inventory/lab testing/provision.yml
}

up() {
  local t0
  t0=$(now)
  bash "$ROOT/scripts/bootstrap.sh"
  hosts
  log "stub Cart/User/gateway (test-only play)"
  ansible-playbook -i inventory/lab testing/lab/stubs.yml
  local tls=()
  if [[ ${ROBOSHOP_LAB_TLS:-0} == 1 ]]; then
    export ROBOSHOP_LAB_TLS_DIR="$ROOT/.cache/lab/tls"
    log "the lab CA and the broker's certificate (test-only play, on the controller)"
    ansible-playbook -i localhost, testing/lab/tls-ca.yml
    tls=(-e @testing/lab/tls-vars.yml)
  fi
  log "ansible-playbook -i inventory/lab site.yml ${tls[*]}"
  ansible-playbook -i inventory/lab site.yml "${tls[@]}"
  log "proof: /health, a real payment, its order in the queue"
  ansible-playbook -i inventory/lab testing/lab/demo.yml
  log "lab ready in $(elapsed "$t0") s (tear down: scripts/lab.sh down)"
}

down() {
  local h
  for h in "${HOSTS[@]}"; do podman rm -f -t 2 "lab-$h" >/dev/null 2>&1 || true; done
  podman network rm "$NETWORK" >/dev/null 2>&1 || true
  rm -rf "$SSH_DIR"
  log "lab removed"
}

status() {
  podman ps -a --filter "name=^lab-" --format '{{.Names}}\t{{.Status}}'
}

case "${1:-up}" in
  up) up ;;
  hosts) hosts ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 [up|hosts|down|status]" ;;
esac
