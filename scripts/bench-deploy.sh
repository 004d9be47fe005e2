#!/usr/bin/env bash
# Deploy timings of the real site.yml: a cold deploy to 1 and to N (5) payment hosts, each
# followed by a no-change re-run. Prints the times, the ratios (N hosts / 1 host, no-change /
# cold) and how many tasks changed on each re-run (must be 0), then checks the goals:
#   no-change <= 15 % of cold;  N hosts <= 1.5 x 1 host.
# Exit status: 0 when every goal is met, 1 otherwise.
#
#   scripts/bench-deploy.sh     BENCH_HOSTS=5 (default); BENCH_KEEP=1 keeps the hosts;
#                               BENCH_CONTROLLER_CACHE=fresh (default) | warm
#                               BENCH_CONNECTION=podman (default) | nsenter | nsenter-plain
#                               BENCH_SERIAL='["100%"]' (default; payment_serial)
#
# Connection: the project's ansible.cfg runs the Mitogen strategy, which keeps one Python
# per host for the run over ssh (ops), podman (the lab, this benchmark) or local: the
# default, podman, is what ops get over ssh, one channel per host. nsenter (community.docker
# .nsenter with pipelining declared, testing/connection_plugins/nsenter_pipelined.py) and
# nsenter-plain are connections Mitogen does not know: every task then starts a Python on
# the host as without Mitogen, for comparison. (Without Mitogen, containers.podman.podman
# pays a `podman exec` for each step of every task, 0.6-1.9 s a task here.)
# Serial: what is measured is how the deploy scales with hosts deployed together, so every
# host is in one batch ("100%", as for a new fleet that serves nothing yet). A canary batch
# first ('[1, "100%"]') adds a whole one-host deploy before the others start: 5 hosts then
# cost at least one host plus a batch of four, whatever the per-host work. A live fleet
# keeps the role's rolling default [1, "25%"] (a canary, then a quarter at a time).
#
# Every run starts from fresh containers (bench-*, on the podman network roboshop-bench, the
# lab's group_vars; stubs and rabbitmq are network aliases) and a fresh fact cache, so "cold"
# is cold on the hosts. The controller's cache of packed releases and wheels
# (payment_release_cache_dir) is empty for each cold run too unless
# BENCH_CONTROLLER_CACHE=warm (then it is the user's ~/.cache/roboshop-payment, as ops keep it).
# Logs of every run stay in the work directory printed at the end.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

N=${BENCH_HOSTS:-5}
NETWORK=roboshop-bench
WORK=$(mktemp -d /tmp/bench-deploy.XXXXXX)
CONTROLLER_CACHE=${BENCH_CONTROLLER_CACHE:-fresh}
[[ $CONTROLLER_CACHE == fresh || $CONTROLLER_CACHE == warm ]] ||
  die "BENCH_CONTROLLER_CACHE must be fresh or warm"
CONNECTION=${BENCH_CONNECTION:-podman}
case $CONNECTION in
  podman) PLUGIN=podman ;; # the short name, which Mitogen recognises
  nsenter) PLUGIN=nsenter_pipelined ;;
  nsenter-plain) PLUGIN=community.docker.nsenter ;;
  *) die "BENCH_CONNECTION must be podman, nsenter or nsenter-plain" ;;
esac
export ANSIBLE_CONNECTION_PLUGINS="$ROOT/testing/connection_plugins"
SERIAL=${BENCH_SERIAL:-'["100%"]'}
GOAL_NOCHANGE=0.15
GOAL_SCALE=1.5

containers() { podman ps -a --format '{{.Names}}' | grep '^bench-' || true; }

down() {
  local c
  for c in $(containers); do podman rm -f -t 2 "$c" >/dev/null 2>&1 || true; done
  podman network rm "$NETWORK" >/dev/null 2>&1 || true
}

start_host() { # name alias
  podman run -d --name "$1" --hostname "$1" --network "$NETWORK" --network-alias "$2" \
    --systemd=always "$TESTHOST_IMAGE" /sbin/init >/dev/null
}

wait_booted() {
  local c state
  for c in "$@"; do
    for _ in $(seq 1 120); do
      state=$(podman exec "$c" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && break
      sleep 0.5
    done
  done
}

# host_vars NAME: the inline host variables of a container in the inventory
host_vars() {
  [[ $CONNECTION == nsenter* ]] || return 0
  printf ' {ansible_nsenter_pid: %s}' "$(podman inspect -f '{{.State.Pid}}' "$1")"
}

# up K: fresh hosts (K payment hosts, rabbitmq, stubs) and their inventory in $WORK/inv-K
up() {
  local k=$1 i inv="$WORK/inv-$1"
  down
  podman network create "$NETWORK" >/dev/null
  local hosts=(bench-rabbitmq bench-stubs)
  start_host bench-rabbitmq rabbitmq
  start_host bench-stubs stubs
  for i in $(seq 1 "$k"); do
    start_host "bench-payment$i" "bench-payment$i"
    hosts+=("bench-payment$i")
  done
  wait_booted "${hosts[@]}"
  mkdir -p "$inv"
  ln -s "$ROOT/inventory/lab/group_vars" "$inv/group_vars"
  {
    echo "all:"
    echo "  vars:"
    echo "    ansible_connection: $PLUGIN"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "  children:"
    echo "    payment:"
    echo "      hosts:"
    for i in $(seq 1 "$k"); do echo "        bench-payment$i:$(host_vars "bench-payment$i")"; done
    echo "    rabbitmq:"
    echo "      hosts:"
    echo "        bench-rabbitmq:$(host_vars bench-rabbitmq)"
    echo "    stubs:"
    echo "      hosts:"
    echo "        bench-stubs:$(host_vars bench-stubs)"
  } >"$inv/hosts.yml"
  # a fresh fact cache per set of hosts: the cold run gathers, the re-run may reuse
  rm -rf "$WORK/facts-$k" "$WORK/cache-$k"
  ANSIBLE_CACHE_PLUGIN_CONNECTION="$WORK/facts-$k" \
    ansible-playbook -i "$inv" testing/lab/stubs.yml >"$WORK/stubs-$k.log" 2>&1 ||
    die "stubs play failed: $WORK/stubs-$k.log"
}

# deploy LABEL K -> sets SECS and CHANGED; the log is $WORK/LABEL.log
deploy() {
  local label=$1 k=$2 t0 rc=0 extra=(-e "{\"payment_serial\": $SERIAL}")
  [[ $CONTROLLER_CACHE == fresh ]] && extra+=(-e "payment_release_cache_dir=$WORK/cache-$k")
  log "$label: ansible-playbook site.yml ($k payment host(s), $CONNECTION connection," \
    "serial $SERIAL, $CONTROLLER_CACHE controller cache)"
  t0=$(now)
  ANSIBLE_CACHE_PLUGIN_CONNECTION="$WORK/facts-$k" ANSIBLE_NOCOLOR=1 \
    ansible-playbook -i "$WORK/inv-$k" site.yml "${extra[@]}" >"$WORK/$label.log" 2>&1 || rc=$?
  SECS=$(elapsed "$t0")
  [[ $rc -eq 0 ]] || die "$label failed (rc=$rc): see $WORK/$label.log"
  CHANGED=$(awk '/^PLAY RECAP/ {r=1; next} r && /changed=/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { split($i, a, "="); s += a[2] } }
      END { print s + 0 }' "$WORK/$label.log")
  log "$label: $SECS s, $CHANGED task(s) changed"
}

# the tasks that reported "changed" in a log (to explain a non-zero re-run)
changed_tasks() {
  awk '/^TASK \[/ {t=$0} /^changed: / {print "    " t " " $2}' "$1" | sort -u | head -20
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

trap '[[ ${BENCH_KEEP:-0} == 1 ]] || down' EXIT
T0=$(now)

up 1
deploy cold-1 1
COLD1=$SECS
deploy nochange-1 1
NOCH1=$SECS
CH1=$CHANGED

up "$N"
deploy "cold-$N" "$N"
COLDN=$SECS
deploy "nochange-$N" "$N"
NOCHN=$SECS
CHN=$CHANGED

R_COLD=$(ratio "$COLDN" "$COLD1")
R_NOCH=$(ratio "$NOCHN" "$NOCH1")
R_1=$(ratio "$NOCH1" "$COLD1")
R_N=$(ratio "$NOCHN" "$COLDN")

FAILED=0
verdict() { # ok-condition label
  if eval "$1"; then printf '  met      %s\n' "$2"; else printf '  MISSED   %s\n' "$2"; FAILED=1; fi
}

echo
echo "deploy timings (site.yml, $(nproc) cores, fresh hosts, $CONNECTION connection,"
echo "strategy ${ANSIBLE_STRATEGY:-from ansible.cfg: $(awk -F' *= *' '$1 == "strategy" {print $2}' ansible.cfg)},"
echo "serial $SERIAL, $CONTROLLER_CACHE controller cache;"
echo "logs in $WORK)"
printf '  %-30s %10s %10s %8s\n' "" "1 host" "$N hosts" "$N / 1"
printf '  %-30s %9ss %9ss %8s\n' "cold deploy" "$COLD1" "$COLDN" "$R_COLD"
printf '  %-30s %9ss %9ss %8s\n' "no-change re-run" "$NOCH1" "$NOCHN" "$R_NOCH"
printf '  %-30s %10s %10s\n' "no-change / cold" "$R_1" "$R_N"
printf '  %-30s %10s %10s\n' "tasks changed on the re-run" "$CH1" "$CHN"
echo
echo "goals"
verdict '[[ $CH1 -eq 0 && $CHN -eq 0 ]]' "no-change re-run changes 0 tasks ($CH1, $CHN)"
verdict 'le "$R_1" "$GOAL_NOCHANGE" && le "$R_N" "$GOAL_NOCHANGE"' \
  "no-change <= ${GOAL_NOCHANGE} x cold ($R_1 at 1 host, $R_N at $N hosts)"
verdict 'le "$R_COLD" "$GOAL_SCALE"' "cold: $N hosts <= ${GOAL_SCALE} x 1 host ($R_COLD)"
verdict 'le "$R_NOCH" "$GOAL_SCALE"' "no-change: $N hosts <= ${GOAL_SCALE} x 1 host ($R_NOCH)"
for f in nochange-1 "nochange-$N"; do
  if [[ -n $(changed_tasks "$WORK/$f.log") ]]; then
    echo "  changed in $f:"
    changed_tasks "$WORK/$f.log"
  fi
done
echo
log "benchmark done in $(elapsed "$T0") s"
exit "$FAILED"
