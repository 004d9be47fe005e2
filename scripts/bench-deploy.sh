#!/usr/bin/env bash
# Deploy timings of the real site.yml on the users' path: SSH as the unprivileged `ops`
# account with sudo (pipelining, ControlPersist: ansible.cfg), a cold deploy to 1 and to N (5)
# payment hosts, each followed by a no-change re-run, for Ansible's own strategy (`linear`,
# the default) and Mitogen (the opt-in, ANSIBLE_STRATEGY=mitogen_linear) side by side in one
# run. Prints the times, the ratios (no-change / cold, N hosts / 1 host) and how many tasks
# changed on each re-run (must be 0), then checks the goals for the default strategy:
#   no-change <= 15 % of cold, at 1 and at N hosts;  0 tasks changed on a re-run.
# Exit status: 0 when every goal is met, 1 otherwise.
#
#   scripts/bench-deploy.sh     BENCH_HOSTS=5 (default); BENCH_KEEP=1 keeps the last hosts;
#                               BENCH_STRATEGIES="linear mitogen_linear" (default, in order);
#                               BENCH_CONTROLLER_CACHE=fresh (default) | warm
#                               BENCH_SERIAL='["100%"]' (default; payment_serial)
#
# Serial: what is measured is how the deploy scales with hosts deployed together, so every
# host is in one batch ("100%", as for a new fleet that serves nothing yet). A live fleet keeps
# the role's rolling default [1, "25%"] (a canary, then a quarter at a time).
#
# Every deploy pair starts from fresh containers (bench-*, on the podman network
# roboshop-bench, the lab's group_vars; stubs and rabbitmq are network aliases), provisioned
# like the lab's (testing/provision.yml: ops' key, host keys), with a fresh fact cache and
# fresh SSH master connections, so "cold" is cold on the hosts. The controller's cache of
# packed releases and wheels (payment_release_cache_dir) is empty for each cold run too unless
# BENCH_CONTROLLER_CACHE=warm (then it is the user's ~/.cache/roboshop-payment, as ops keep it).
# Logs of every run stay in the work directory printed at the end.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

N=${BENCH_HOSTS:-5}
NETWORK=roboshop-bench
PORT0=22160 # sshd of bench-rabbitmq; bench-stubs +1; bench-paymentI +1+I
REDIS_PORT=22170 # sshd of bench-redis (with more than one payment host)
read -r -a STRATEGIES <<<"${BENCH_STRATEGIES:-linear mitogen_linear}"
WORK=$(mktemp -d /tmp/bench-deploy.XXXXXX)
CONTROLLER_CACHE=${BENCH_CONTROLLER_CACHE:-fresh}
[[ $CONTROLLER_CACHE == fresh || $CONTROLLER_CACHE == warm ]] ||
  die "BENCH_CONTROLLER_CACHE must be fresh or warm"
SERIAL=${BENCH_SERIAL:-'["100%"]'}
GOAL_NOCHANGE=0.15

containers() { podman ps -a --format '{{.Names}}' | grep '^bench-' || true; }

down() {
  local c
  for c in $(containers); do podman rm -f -t 2 "$c" >/dev/null 2>&1 || true; done
  podman network rm "$NETWORK" >/dev/null 2>&1 || true
}

start_host() { # name alias port
  podman run -d --name "$1" --hostname "$1" --network "$NETWORK" --network-alias "$2" \
    --publish "127.0.0.1:$3:22" --systemd=always "$TESTHOST_IMAGE" /sbin/init >/dev/null
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

# up LABEL K: fresh hosts (K payment hosts, rabbitmq, stubs), provisioned, their inventory in
# $WORK/LABEL/inventory, the stubs deployed
up() {
  local label=$1 k=$2 i dir="$WORK/$1"
  down
  podman network create "$NETWORK" >/dev/null
  local hosts=(bench-rabbitmq bench-stubs)
  start_host bench-rabbitmq rabbitmq "$PORT0"
  start_host bench-stubs stubs "$((PORT0 + 1))"
  for i in $(seq 1 "$k"); do
    start_host "bench-payment$i" "bench-payment$i" "$((PORT0 + 1 + i))"
    hosts+=("bench-payment$i")
  done
  # several payment hosts share their Idempotency-Keys in Redis (the preflight refuses sqlite)
  if ((k > 1)); then
    start_host bench-redis redis "$REDIS_PORT"
    hosts+=(bench-redis)
  fi
  wait_booted "${hosts[@]}"
  mkdir -p "$dir/inventory"
  ln -s "$ROOT/inventory/lab/group_vars" "$dir/inventory/group_vars"
  {
    echo "all:"
    echo "  vars:"
    echo "    ansible_connection: ssh"
    echo "    ansible_host: 127.0.0.1"
    echo "    ansible_user: ops"
    echo "    ansible_become: true"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "    testhost_ssh_dir: $dir/ssh"
    echo "    ansible_ssh_private_key_file: $dir/ssh/id_ed25519"
    echo "    ansible_ssh_common_args: >-"
    echo "      -o UserKnownHostsFile=$dir/ssh/known_hosts -o StrictHostKeyChecking=yes"
    echo "    ansible_control_path_dir: $dir/ssh/cp"
    echo "  children:"
    echo "    payment:"
    echo "      hosts:"
    for i in $(seq 1 "$k"); do
      echo "        bench-payment$i: {ansible_port: $((PORT0 + 1 + i))}"
    done
    echo "    rabbitmq:"
    echo "      hosts:"
    echo "        bench-rabbitmq: {ansible_port: $PORT0}"
    echo "    stubs:"
    echo "      hosts:"
    echo "        bench-stubs: {ansible_port: $((PORT0 + 1))}"
    if ((k > 1)); then
      echo "    redis:"
      echo "      hosts:"
      echo "        bench-redis: {ansible_port: $REDIS_PORT}"
    fi
  } >"$dir/inventory/hosts.yml"
  { ansible-playbook -i "$dir/inventory" testing/provision.yml &&
    ANSIBLE_CACHE_PLUGIN_CONNECTION="$dir/facts" \
      ansible-playbook -i "$dir/inventory" testing/lab/stubs.yml; } >"$dir/setup.log" 2>&1 ||
    die "setting up the hosts failed: $dir/setup.log"
}

# deploy LABEL RUN STRATEGY -> sets SECS and CHANGED; the log is $WORK/LABEL/RUN.log
deploy() {
  local label=$1 run=$2 strategy=$3 dir="$WORK/$1" t0 rc=0
  local extra=(-e "{\"payment_serial\": $SERIAL}")
  [[ $CONTROLLER_CACHE == fresh ]] && extra+=(-e "payment_release_cache_dir=$dir/cache")
  log "$label $run: ansible-playbook site.yml (strategy $strategy, serial $SERIAL," \
    "$CONTROLLER_CACHE controller cache)"
  t0=$(now)
  ANSIBLE_STRATEGY=$strategy ANSIBLE_CACHE_PLUGIN_CONNECTION="$dir/facts" ANSIBLE_NOCOLOR=1 \
    ansible-playbook -i "$dir/inventory" site.yml "${extra[@]}" >"$dir/$run.log" 2>&1 || rc=$?
  SECS=$(elapsed "$t0")
  [[ $rc -eq 0 ]] || die "$label $run failed (rc=$rc): see $dir/$run.log"
  CHANGED=$(awk '/^PLAY RECAP/ {r=1; next} r && /changed=/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { split($i, a, "="); s += a[2] } }
      END { print s + 0 }' "$dir/$run.log")
  log "$label $run: $SECS s, $CHANGED task(s) changed"
}

# the tasks that reported "changed" in a log (to explain a non-zero re-run)
changed_tasks() {
  awk '/^TASK \[/ {t=$0} /^changed: / {print "    " t " " $2}' "$1" | sort -u | head -20
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

trap '[[ ${BENCH_KEEP:-0} == 1 ]] || down' EXIT
T0=$(now)

declare -A COLD NOCH CHG
for s in "${STRATEGIES[@]}"; do
  for k in 1 "$N"; do
    up "$s-$k" "$k"
    deploy "$s-$k" cold "$s"
    COLD[$s-$k]=$SECS
    deploy "$s-$k" nochange "$s"
    NOCH[$s-$k]=$SECS
    CHG[$s-$k]=$CHANGED
  done
done

FAILED=0
verdict() { # ok-condition label
  if eval "$1"; then printf '  met      %s\n' "$2"; else printf '  MISSED   %s\n' "$2"; FAILED=1; fi
}

echo
echo "deploy timings (site.yml over SSH as ops with sudo, $(nproc) cores, fresh hosts,"
echo "serial $SERIAL, $CONTROLLER_CACHE controller cache; logs in $WORK)"
printf '  %-16s %-22s %9s %9s %8s\n' strategy "" "1 host" "$N hosts" "$N / 1"
for s in "${STRATEGIES[@]}"; do
  a=$s-1 b=$s-$N
  printf '  %-16s %-22s %8ss %8ss %8s\n' "$s" "cold deploy" "${COLD[$a]}" "${COLD[$b]}" \
    "$(ratio "${COLD[$b]}" "${COLD[$a]}")"
  printf '  %-16s %-22s %8ss %8ss %8s\n' "" "no-change re-run" "${NOCH[$a]}" "${NOCH[$b]}" \
    "$(ratio "${NOCH[$b]}" "${NOCH[$a]}")"
  printf '  %-16s %-22s %9s %9s\n' "" "no-change / cold" "$(ratio "${NOCH[$a]}" "${COLD[$a]}")" \
    "$(ratio "${NOCH[$b]}" "${COLD[$b]}")"
  printf '  %-16s %-22s %9s %9s\n' "" "changed on re-run" "${CHG[$a]}" "${CHG[$b]}"
done
if [[ ${#STRATEGIES[@]} -gt 1 ]]; then
  s0=${STRATEGIES[0]}
  for s in "${STRATEGIES[@]:1}"; do
    printf '  %-39s %9s %9s\n' "$s / $s0, cold" "$(ratio "${COLD[$s-1]}" "${COLD[$s0-1]}")" \
      "$(ratio "${COLD[$s-$N]}" "${COLD[$s0-$N]}")"
    printf '  %-39s %9s %9s\n' "$s / $s0, no-change" "$(ratio "${NOCH[$s-1]}" "${NOCH[$s0-1]}")" \
      "$(ratio "${NOCH[$s-$N]}" "${NOCH[$s0-$N]}")"
  done
fi
echo
s=${STRATEGIES[0]}
echo "goals ($s)"
verdict '[[ ${CHG[$s-1]} -eq 0 && ${CHG[$s-$N]} -eq 0 ]]' \
  "a no-change re-run changes 0 tasks (${CHG[$s-1]}, ${CHG[$s-$N]})"
r1=$(ratio "${NOCH[$s-1]}" "${COLD[$s-1]}")
rn=$(ratio "${NOCH[$s-$N]}" "${COLD[$s-$N]}")
verdict 'le "$r1" "$GOAL_NOCHANGE" && le "$rn" "$GOAL_NOCHANGE"' \
  "no-change <= ${GOAL_NOCHANGE} x cold ($r1 at 1 host, $rn at $N hosts)"
for s in "${STRATEGIES[@]}"; do
  for k in 1 "$N"; do
    if [[ -n $(changed_tasks "$WORK/$s-$k/nochange.log") ]]; then
      echo "  changed in $s-$k no-change:"
      changed_tasks "$WORK/$s-$k/nochange.log"
    fi
  done
done
echo
log "benchmark done in $(elapsed "$T0") s"
exit "$FAILED"
