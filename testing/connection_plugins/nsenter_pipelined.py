"""community.docker.nsenter with pipelining, for the deploy benchmark's container hosts.

Ops reach their hosts over SSH with pipelining on (ansible.cfg): a module is sent on the
command's stdin and runs in one round trip. community.docker.nsenter declares no pipelining,
so every task costs a temporary directory, a file copy, the run and a clean-up, each one more
nsenter: that measures the connection, not the playbook. Its exec_command already passes
stdin through (as the local connection it is derived from does); this only declares it, so
Ansible pipelines as it would over SSH. Used by scripts/bench-deploy.sh (BENCH_CONNECTION).
"""

from __future__ import annotations

from ansible_collections.community.docker.plugins.connection.nsenter import (
    Connection as NsenterConnection,
)

DOCUMENTATION = r"""
name: nsenter_pipelined
short_description: community.docker.nsenter with pipelining
description:
  - Runs tasks in the namespaces of a process (a container's init) as community.docker.nsenter
    does, sending modules on stdin (pipelining) like an SSH connection with pipelining on.
author: roboshop-payment
options:
  nsenter_pid:
    description: PID whose namespaces to enter (a container's init).
    type: int
    default: 1
    vars:
      - name: ansible_nsenter_pid
"""


class Connection(NsenterConnection):
    transport = "nsenter_pipelined"
    has_pipelining = True
