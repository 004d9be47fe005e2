#!/usr/bin/env bash
# Every test, from a fresh Debian 12 machine: installs what it needs (scripts/bootstrap.sh),
# then lint, the service's tests against a real RabbitMQ, the newest ansible-core as the
# controller (scripts/controller-check.sh), and every molecule scenario.
# Ends with a table of what ran, passed and how long it took, and a closing
# "N passed, N failed" line; before it, the last lines of each failed stage's output (the whole
# output of every stage is kept in .cache/test-logs/<stage>.log), so that a CI log cut down to
# its tail still names what failed. Exit status: non-zero when anything failed.
#
#   scripts/test.sh                 everything
#   scripts/test.sh lint service    only the named stages (lint, service, controller,
#                                   molecule:<scenario>)
#   scripts/test.sh bench           the deploy benchmark (scripts/bench-deploy.sh); never by default
#   scripts/test.sh bench-cluster   POST /pay through HAProxy, 1 and 2 payment hosts (never by default)
#
# Scenarios whose images come from a registry (molecule/rocky: docker.io/rockylinux, run once
# per release as molecule:rocky9 and molecule:rocky8) run only with ROBOSHOP_REGISTRY=1
# (docs/rocky.md); otherwise the table lists them as "off".
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

RESULTS=()
PASSED=0
FAILED=0
FAILED_LOGS=()
LOGS="$ROOT/.cache/test-logs"
mkdir -p "$LOGS"

stage() {
  local name=$1; shift
  local t0 rc=0 logfile="$LOGS/${name//:/-}.log"
  t0=$(now)
  log "[$name] $*"
  # The output goes to the terminal as it comes and to the stage's log file.
  set +e
  "$@" 2>&1 | tee "$logfile"
  rc=${PIPESTATUS[0]}
  set -e
  local secs
  secs=$(elapsed "$t0")
  if [[ $rc -eq 0 ]]; then
    PASSED=$((PASSED + 1)); RESULTS+=("$(printf '%-28s %-6s %8ss' "$name" ok "$secs")")
  else
    FAILED=$((FAILED + 1)); RESULTS+=("$(printf '%-28s %-6s %8ss' "$name" FAILED "$secs")")
    FAILED_LOGS+=("$name=$logfile")
  fi
}

plain() { sed 's/\x1b\[[0-9;]*m//g' "$1" | cut -c1-400; }

# What failed, again at the end: pytest's short summary when there is one, else the log's tail.
recap_failures() {
  local entry name logfile
  set +e # a grep that finds nothing is not a failure here
  for entry in "${FAILED_LOGS[@]}"; do
    name=${entry%%=*}; logfile=${entry#*=}
    printf '\n----- %s FAILED; its output: %s -----\n' "$name" "${logfile#"$ROOT"/}"
    if grep -q 'short test summary info' "$logfile"; then
      # Each failure's header and its "E" lines, then the summary.
      plain "$logfile" | grep -E '^(_{3,} .* _{3,}|E  )' | tail -n 40
      plain "$logfile" | sed -n '/short test summary info/,$p' | tail -n 30
    else
      # Ansible's failed tasks (molecule), then the end of the output.
      plain "$logfile" | grep -E -A3 '^(fatal|failed): \[|^ERROR|CRITICAL' | tail -n 30
      plain "$logfile" | tail -n 15
    fi
  done
  set -e
}

lint() {
  local rc=0
  yamllint --strict . || rc=1
  ansible-lint --profile production --strict || rc=1
  ruff check . || rc=1
  ruff format --check . || rc=1
  # service_src/requirements.lock must be regenerated whenever requirements.txt changes
  bash scripts/lock-requirements.sh --check || rc=1
  # dead links; role READMEs and defaults against meta/argument_specs.yml
  python scripts/check_docs.py || rc=1
  return $rc
}

# Scenarios that pull their image from a container registry.
registry_scenario() { [[ $1 == rocky* ]]; }

# Stage names: one per scenario, the parameterised Rocky scenario once per release.
scenarios() {
  local d s
  for d in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$d")")
    if [[ $s == rocky ]]; then echo rocky9 rocky8; else echo "$s"; fi
  done
}

# molecule test for a stage name (rocky<N>: the rocky scenario with ROCKY_RELEASE=N), one
# at a time on this machine (container names and SSH ports are fixed per scenario).
MOLECULE_LOCK=/tmp/roboshop-molecule.lock
molecule_test() {
  if [[ $1 == rocky* ]]; then
    ROCKY_RELEASE=${1#rocky} flock "$MOLECULE_LOCK" molecule test -s rocky
  else
    flock "$MOLECULE_LOCK" molecule test -s "$1"
  fi
}

off() {
  RESULTS+=("$(printf '%-28s %-6s %8s  %s' "$1" off - "$2")")
}

wanted() {
  [[ ${#ONLY[@]} -eq 0 ]] && return 0
  local w
  for w in "${ONLY[@]}"; do [[ $w == "$1" || $1 == "$w":* ]] && return 0; done
  return 1
}

ONLY=("$@")
T0=$(now)
stage bootstrap bash scripts/bootstrap.sh
wanted lint && stage lint lint
wanted service && stage service bash scripts/service-tests.sh
# The newest ansible-core (Debian 13 controller) against the lab hosts over SSH.
wanted controller && stage controller bash scripts/controller-check.sh
for s in $(scenarios); do
  wanted "molecule:$s" || continue
  if registry_scenario "$s" && [[ ${ROBOSHOP_REGISTRY:-0} != 1 ]]; then
    off "molecule:$s" "needs a registry: ROBOSHOP_REGISTRY=1 (docs/rocky.md)"
    continue
  fi
  stage "molecule:$s" molecule_test "$s"
done
# The benchmark only when asked for by name (it is not a test: it measures).
for w in "${ONLY[@]}"; do
  [[ $w == bench ]] && stage bench bash scripts/bench-deploy.sh
  [[ $w == bench-cluster ]] && stage bench-cluster bash scripts/bench-cluster.sh
done

[[ ${#FAILED_LOGS[@]} -eq 0 ]] || recap_failures
printf '\n%-28s %-6s %9s\n' STAGE RESULT TIME
printf '%s\n' "${RESULTS[@]}"
printf '%-28s %-6s %8ss\n' total "" "$(elapsed "$T0")"
echo
echo "stages: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
