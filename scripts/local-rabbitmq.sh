#!/usr/bin/env bash
# A local RabbitMQ for the service's tests and benchmark, on a machine without systemd.
#
#   scripts/local-rabbitmq.sh [start]   start Debian's rabbitmq-server unless one answers on
#                                       localhost:5672 already (then: quick no-op)
#   scripts/local-rabbitmq.sh status    exit 0 when a broker answers on localhost:5672
#   scripts/local-rabbitmq.sh stop      stop the local node (rabbitmqctl stop)
#
# The broker test (service_src/tests/test_broker.py) stops the broker itself, with
# `rabbitmqctl stop_app` or a SIGKILL of the node, and brings it back with this script's start,
# which handles both (a node with its application stopped, or no node at all).
# Needs root or the rabbitmq user.
set -euo pipefail

PORT=${AMQP_PORT:-5672}
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

start() {
  if answers; then
    echo "rabbitmq: already answering on localhost:$PORT"
    return 0
  fi
  command -v rabbitmq-server >/dev/null || {
    echo "rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
    return 1
  }
  # The node may be up with its application stopped (e.g. an interrupted restart test).
  # (`status` fails while the application is stopped; `ping` answers whenever the node runs)
  if timeout 20 rabbitmqctl -q ping >/dev/null 2>&1; then
    echo "rabbitmq: node running, starting its application"
    timeout 60 rabbitmqctl -q start_app
  else
    echo "rabbitmq: starting rabbitmq-server (detached)"
    # The Debian wrapper switches to the rabbitmq user when run as root.
    # The node outlives this script: it must not inherit our open files, above all the fd of
    # a caller's `flock /tmp/roboshop-service.lock ...` (a broker started under the lock kept
    # it held for as long as it ran, and every later flock waited on it).
    (
      for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; then eval "exec $fd>&-"; fi
      done
      exec rabbitmq-server -detached
    )
  fi
  # await_startup fails at once while the node is not registered yet: retry it.
  local i
  for i in $(seq 1 60); do
    timeout 60 rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
  done
  for i in $(seq 1 100); do
    answers && { echo "rabbitmq: ready on localhost:$PORT"; return 0; }
    sleep 0.2
  done
  echo "rabbitmq: started but localhost:$PORT does not answer" >&2
  return 1
}

case "${1:-start}" in
  start) start ;;
  status) answers ;;
  stop) rabbitmqctl -q stop ;;
  *) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac
