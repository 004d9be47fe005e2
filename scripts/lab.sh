#!/usr/bin/env bash
# The main job on the embedded default: a local lab of three Debian 12 systemd hosts
# (payment, rabbitmq, stubs) on the podman network `roboshop-lab`, deployed by the real
# `ansible-playbook -i inventory/lab site.yml`, ending with a real payment and its order
# read back from RabbitMQ.
#
#   scripts/lab.sh [up]    create or reuse the hosts, deploy, prove (safe to repeat)
#   scripts/lab.sh down    remove the hosts and the network
#   scripts/lab.sh status  show the hosts
source "$(dirname "$0")/lib.sh"

NETWORK=roboshop-lab
HOSTS=(payment rabbitmq stubs)

start_host() {
  local name=$1 cname="lab-$1"
  if [[ "$(podman inspect -f '{{.State.Running}}' "$cname" 2>/dev/null)" == true ]]; then
    return 0
  fi
  podman rm -f "$cname" >/dev/null 2>&1 || true
  podman run -d --name "$cname" --hostname "$name" \
    --network "$NETWORK" --network-alias "$name" \
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

up() {
  local t0
  t0=$(now)
  bash "$ROOT/scripts/bootstrap.sh"
  cd "$ROOT"
  podman network exists "$NETWORK" || podman network create "$NETWORK" >/dev/null
  local h
  for h in "${HOSTS[@]}"; do start_host "$h"; done
  wait_booted
  log "stub Cart/User/gateway (test-only play)"
  ansible-playbook -i inventory/lab testing/lab/stubs.yml
  log "ansible-playbook -i inventory/lab site.yml"
  ansible-playbook -i inventory/lab site.yml
  log "proof: /health, a real payment, its order in the queue"
  ansible-playbook -i inventory/lab testing/lab/demo.yml
  log "lab ready in $(elapsed "$t0") s (tear down: scripts/lab.sh down)"
}

down() {
  local h
  for h in "${HOSTS[@]}"; do podman rm -f -t 2 "lab-$h" >/dev/null 2>&1 || true; done
  podman network rm "$NETWORK" >/dev/null 2>&1 || true
  log "lab removed"
}

status() {
  podman ps -a --filter "name=^lab-" --format '{{.Names}}\t{{.Status}}'
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 [up|down|status]" ;;
esac
