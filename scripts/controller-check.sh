#!/usr/bin/env bash
# The newest Ansible as a controller (Debian 13, Python 3.13, requirements-controller.txt;
# scripts/controller.sh), against fresh lab hosts over SSH as ops with sudo, as ops would run
# it: the stubs, `ansible-playbook site.yml` (converge), site.yml again (must report 0 changed),
# then the proof payment (testing/lab/demo.yml). Any [DEPRECATION WARNING] fails the check:
# what this ansible-core deprecates is fixed before it breaks. Leaves no lab behind.
# Exit status: 0 when all of it passed.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

LOGS="$ROOT/.cache/controller-check"
rm -rf "$LOGS"
mkdir -p "$LOGS"
export ANSIBLE_DEPRECATION_WARNINGS=true ANSIBLE_NOCOLOR=1
# The lab's key and known_hosts (inventory/lab/hosts.yml) sit under /project inside.

# play LABEL PLAYBOOK: run it on the new controller; fail on its failure or on a deprecation
play() {
  local label=$1 log="$LOGS/$1.log"
  shift
  log "[newest ansible] ansible-playbook -i inventory/lab $* ($label)"
  bash scripts/controller.sh ansible-playbook -i inventory/lab "$@" 2>&1 | tee "$log" ||
    die "$label failed on the newest ansible (log: ${log#"$ROOT"/})"
  if grep -q 'DEPRECATION WARNING' "$log"; then
    grep -A2 'DEPRECATION WARNING' "$log" >&2
    die "$label printed a deprecation warning on the newest ansible (log: ${log#"$ROOT"/})"
  fi
}

# changed TOTAL of a run's PLAY RECAP
changed() {
  awk '/^PLAY RECAP/ {r=1; next} r && /changed=/ { for (i = 1; i <= NF; i++)
    if ($i ~ /^changed=/) { split($i, a, "="); s += a[2] } } END { print s + 0 }' "$1"
}

trap 'bash scripts/lab.sh down >/dev/null 2>&1 || true' EXIT
bash scripts/lab.sh down
bash scripts/build-controller.sh
bash scripts/controller.sh ansible --version | head -n 3
bash scripts/lab.sh hosts
play stubs testing/lab/stubs.yml
play converge site.yml
play rerun site.yml
n=$(changed "$LOGS/rerun.log")
[[ $n -eq 0 ]] || die "the second site.yml run on the newest ansible changed $n task(s)"
play proof testing/lab/demo.yml
log "newest ansible: converge, a re-run with 0 changed, a real payment; no deprecation warning"
