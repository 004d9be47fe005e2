"""Which Python runs Ansible's modules on a RHEL 9 host once python_runtime has installed
python3.11 next to the platform's /usr/bin/python3 (docs/rocky.md).

The project's ansible.cfg names /usr/bin/python3 (interpreter_python): the platform Python,
the one dnf's and SELinux's bindings exist for. ansible-core's discovery (auto, auto_silent)
would take the first of INTERPRETER_PYTHON_FALLBACK that the host has, python3.11 before
/usr/bin/python3. The choice does not depend on facts (the interpreter runs the module that
gathers them), so the host here is the controller itself (connection local) with a PATH
that holds what such a host has: python3.11 (a link to this machine's /usr/bin/python3) and
/usr/bin/python3 by its absolute path. setup's `python` facts tell which one ran the module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAY = """
- hosts: rhel9
  gather_facts: false
  tasks:
    - ansible.builtin.setup:
        gather_subset: ["!all", "!min", python]
    - ansible.builtin.debug:
        msg: "PYTHON={{ ansible_facts['python']['executable'] }}"
"""

pytestmark = pytest.mark.skipif(
    not os.access("/usr/bin/python3", os.X_OK), reason="needs /usr/bin/python3 on this machine"
)


def module_python(tmp_path: Path, host_vars: str = "", **env: str) -> str:
    """The interpreter that ran a module on the host, with the project's ansible.cfg."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").symlink_to("/usr/bin/python3")
    # the local connection appends `&& sleep 0` to each command
    (bin_dir / "sleep").symlink_to(shutil.which("sleep") or "/bin/sleep")
    (tmp_path / "hosts.ini").write_text(f"rhel9 ansible_connection=local {host_vars}\n")
    (tmp_path / "play.yml").write_text(PLAY)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "hosts.ini", "play.yml"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": str(bin_dir),
             "HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1",
             # the repository's fact cache (.cache/facts) is left alone
             "ANSIBLE_CACHE_PLUGIN": "memory", **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.findall(r'"msg": "PYTHON=(.*)"', out.stdout)
    assert len(found) == 1, out.stdout
    return found[0]


def test_modules_run_with_the_platform_python(tmp_path: Path) -> None:
    assert module_python(tmp_path) == "/usr/bin/python3"


def test_discovery_would_take_python311(tmp_path: Path) -> None:
    """Why ansible.cfg names the interpreter (this ansible-core's own behaviour)."""
    found = module_python(tmp_path, ANSIBLE_PYTHON_INTERPRETER="auto_silent")
    assert found == str(tmp_path / "bin/python3.11")


def test_an_inventory_interpreter_still_wins(tmp_path: Path) -> None:
    python311 = tmp_path / "bin/python3.11"
    assert module_python(tmp_path, f"ansible_python_interpreter={python311}") == str(python311)
