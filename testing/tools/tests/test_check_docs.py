"""scripts/check_docs.py finds what drifted: a dead link, an option the README does not
name, a README variable the role does not have, a default outside the spec, a tag the README
does not name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import check_docs


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(check_docs, "ROOT", tmp_path)
    return tmp_path


def test_dead_links_only(root: Path) -> None:
    (root / "docs").mkdir()
    (root / "docs/there.md").write_text("x")
    md = root / "README.md"
    md.write_text(
        "[ok](docs/there.md#part) [web](https://example.org/x) [self](#top)\n"
        "[gone](docs/architecture.md) `[code](not/a/link.md)`\n"
        "```\n[block](also/not.md)\n```\n"
    )
    assert list(check_docs.dead_links(md)) == ["README.md: dead link docs/architecture.md"]


def test_role_readme_and_defaults_against_the_spec(root: Path) -> None:
    role = root / "roles/demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "tasks").mkdir()
    (role / "meta/argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n"
        "      demo_port: {type: int, default: 1}\n"
        "      demo_name: {type: str, default: a}\n"
    )
    (role / "defaults/main.yml").write_text("demo_port: 1\ndemo_extra: 2\n")
    (role / "tasks/main.yml").write_text(
        "- ansible.builtin.set_fact:\n    demo_fact: 1\n  register: demo_result\n"
        "  tags: [always, demo_install]\n"
        "- ansible.builtin.import_tasks: configure.yml\n  tags: demo_configure\n"
        "- ansible.builtin.include_tasks:\n    file: x.yml\n    apply: {tags: [demo_apply]}\n"
    )
    (role / "README.md").write_text(
        "`demo_port`, `demo_fact`, `demo_result`, `demo_metric{x}`, `demo_stale`,\n"
        "`demo_install`, `demo_configure`\n"
    )
    assert sorted(check_docs.role_problems(role)) == sorted(
        [
            "roles/demo/README.md: does not name `demo_name` (meta/argument_specs.yml)",
            "roles/demo/README.md: names `demo_stale`, which no entry point of the role has",
            "roles/demo/README.md: does not name the tag `demo_apply` (tasks/)",
            "roles/demo/defaults/main.yml: `demo_extra` is not in the argument spec",
            "roles/demo/meta/argument_specs.yml: `demo_name` has a default but "
            "defaults/main.yml lacks it",
        ]
    )
