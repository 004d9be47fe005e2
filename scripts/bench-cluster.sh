#!/usr/bin/env bash
# POST /pay through HAProxy with 1 and 2 payment hosts, in one run, and CPU per payment for
# each tier (scripts/bench_cluster.py). Converges molecule/cluster's hosts first (under the
# molecule lock: never beside another scenario) and removes them at the end unless
# BENCH_KEEP=1. A benchmark prints numbers; it is not a test (scripts/test.sh bench-cluster).
#
#   scripts/bench-cluster.sh [--seconds 20] [--workers 8]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/bootstrap.sh
mkdir -p "$ROOT/.cache/test-logs"
flock /tmp/roboshop-molecule.lock bash -c '
  molecule converge -s cluster >"$0" 2>&1 || { tail -n 40 "$0"; exit 1; }
  .venv/bin/python scripts/bench_cluster.py "${@}"
  rc=$?
  [[ ${BENCH_KEEP:-0} == 1 ]] || molecule destroy -s cluster >/dev/null 2>&1
  exit $rc
' "$ROOT/.cache/test-logs/bench-cluster-converge.log" "$@"
