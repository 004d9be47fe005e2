"""Ansible's linear strategy run through Mitogen (https://mitogen.networkgenomics.com/).

This file is the proxy that Mitogen's documentation asks for (a copy of
ansible_mitogen/plugins/strategy/mitogen_linear.py, BSD-3-Clause): it loads the real strategy
from the `mitogen` package pinned in requirements-dev.txt, so ansible.cfg can name a
project-relative `strategy_plugins` directory instead of a path inside the virtualenv.

Why: every task otherwise starts a fresh Python on the host and imports Ansible's
module_utils there again (about 0.2 s a module here, most of a re-run that changes nothing).
Mitogen keeps one interpreter per host, reached over the same connection (ssh, podman, local),
and runs every module in it. Opt-in for one run (ansible.cfg keeps ansible-core's own linear):
ANSIBLE_STRATEGY=mitogen_linear.
"""

import ansible_mitogen.affinity
import ansible_mitogen.loaders
import ansible_mitogen.strategy

# No CPU pinning. On a machine with fewer than 4 CPUs Mitogen pins its multiplexer to CPU 0
# and every process it starts (ssh, `podman exec`) to the others; on 2 cores, each host's
# work (apt, pip, compiling uWSGI in a container reached by `podman exec`) then shares one
# CPU: the uWSGI build took 40 s instead of 20 here. The scheduler balances better.
ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()

Base = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, Base):
    pass
