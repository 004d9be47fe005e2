#!/usr/bin/env bash
# Every test, from a fresh Debian 12 machine: installs what it needs (scripts/bootstrap.sh),
# then lint, the service's tests against a real RabbitMQ, and every molecule scenario.
# Ends with a table of what ran, passed and how long it took, and a closing
# "N passed, N failed" line. Exit status: non-zero when anything failed.
#
#   scripts/test.sh                 everything
#   scripts/test.sh lint service    only the named stages (lint, service, molecule:<scenario>)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

RESULTS=()
PASSED=0
FAILED=0

stage() {
  local name=$1; shift
  local t0 rc=0
  t0=$(now)
  log "[$name] $*"
  "$@" || rc=$?
  local secs
  secs=$(elapsed "$t0")
  if [[ $rc -eq 0 ]]; then
    PASSED=$((PASSED + 1)); RESULTS+=("$(printf '%-28s %-6s %8ss' "$name" ok "$secs")")
  else
    FAILED=$((FAILED + 1)); RESULTS+=("$(printf '%-28s %-6s %8ss' "$name" FAILED "$secs")")
  fi
}

lint() {
  local rc=0
  yamllint --strict . || rc=1
  ansible-lint --profile production --strict || rc=1
  ruff check . || rc=1
  ruff format --check . || rc=1
  return $rc
}

scenarios() {
  local d
  for d in molecule/*/molecule.yml; do basename "$(dirname "$d")"; done
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
for s in $(scenarios); do
  wanted "molecule:$s" && stage "molecule:$s" molecule test -s "$s"
done

printf '\n%-28s %-6s %9s\n' STAGE RESULT TIME
printf '%s\n' "${RESULTS[@]}"
printf '%-28s %-6s %8ss\n' total "" "$(elapsed "$T0")"
echo
echo "stages: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
