"""Docs that cannot drift: run by the lint stage (scripts/test.sh).

1. Every relative link in the project's Markdown files points to a file or directory that
   exists (anchors are not checked; links to the web are not followed).
2. Every role's README names each variable of its `main` entry point
   (meta/argument_specs.yml) in backticks, and names no `<role>_*` variable the entry point
   does not have: the spec is the one list of a role's variables, the README explains it.
3. Every variable in a role's defaults/main.yml is in its argument spec, and the other way
   round for every option the spec gives a default.
4. Every role's README names each `<role>_*` tag its task files set (the tags a run can be
   limited to: `--tags payment_config`); such a tag is not taken for a variable.

Prints one line per problem (file: what is wrong) and exits 1 if there is any.

    .venv/bin/python scripts/check_docs.py
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".cache", ".git", "node_modules", ".pytest_cache", ".ruff_cache"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_BLOCK = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def markdown_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.md")):
        if not SKIP.intersection(path.relative_to(ROOT).parts):
            yield path


def dead_links(path: Path) -> Iterator[str]:
    text = INLINE_CODE.sub("", CODE_BLOCK.sub("", path.read_text()))
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor in the same file
        file_part = target.split("#", 1)[0]
        if not (path.parent / file_part).exists():
            yield f"{path.relative_to(ROOT)}: dead link {target}"


def _walk(node: object, pick: Callable[[str, object], Iterable[str] | None]) -> Iterator[str]:
    """What pick(key, value) yields for each key of a YAML tree; it returns None to look
    further down that value instead."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, pick)
    elif isinstance(node, dict):
        for key, value in node.items():
            picked = pick(key, value)
            yield from _walk(value, pick) if picked is None else picked


def _facts(node: object) -> Iterator[str]:
    """Names a task file defines: set_fact keys and registered results."""

    def pick(key: str, value: object) -> Iterable[str] | None:
        if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
            return (k for k in value if k != "cacheable")
        return [value] if key == "register" and isinstance(value, str) else None

    return _walk(node, pick)


def _tags(node: object) -> Iterator[str]:
    """Tags a task file sets: `tags:` of tasks, blocks and imports, and include `apply:`."""

    def pick(key: str, value: object) -> Iterable[str] | None:
        if key != "tags":
            return None
        return [value] if isinstance(value, str) else value

    return _walk(node, pick)


def role_tags(role: Path) -> set[str]:
    """The `<role>_*` tags of a role's task files."""
    names: set[str] = set()
    for path in sorted(role.glob("tasks/*.yml")):
        names.update(_tags(yaml.safe_load(path.read_text())))
    return {tag for tag in names if tag.startswith(f"{role.name}_")}


def role_variables(role: Path) -> set[str]:
    """What else a role defines: its per-OS vars (vars/*.yml) and the facts it sets."""
    names: set[str] = set()
    for path in sorted(role.glob("vars/*.yml")):
        names.update(yaml.safe_load(path.read_text()) or {})
    for path in sorted(role.glob("tasks/*.yml")):
        names.update(_facts(yaml.safe_load(path.read_text())))
    return names


def role_problems(role: Path) -> Iterator[str]:
    spec_file = role / "meta/argument_specs.yml"
    if not spec_file.exists():
        return
    specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
    options = specs.get("main", {}).get("options", {})
    readme = role / "README.md"
    name = role.name
    rel = readme.relative_to(ROOT)
    if not readme.exists():
        yield f"{rel}: missing"
        return
    text = readme.read_text()
    # a name in backticks, not a metric (`payment_records{state}`)
    named = set(re.findall(r"`([a-z][a-z0-9_]*)(?![a-z0-9_{])", text))
    for option in options:
        if option not in named:
            yield f"{rel}: does not name `{option}` (meta/argument_specs.yml)"
    known = {o for spec in specs.values() for o in spec.get("options", {})}
    known |= role_variables(role)
    tags = role_tags(role)
    for tag in sorted(tags - named):
        yield f"{rel}: does not name the tag `{tag}` (tasks/)"
    known |= tags
    for word in sorted(named):
        if word.startswith(f"{name}_") and word not in known:
            yield f"{rel}: names `{word}`, which no entry point of the role has"
    defaults_file = role / "defaults/main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    for var in defaults or {}:
        if var not in known:
            yield f"{defaults_file.relative_to(ROOT)}: `{var}` is not in the argument spec"
    for option, spec in options.items():
        if "default" in spec and option not in (defaults or {}):
            rel_spec = spec_file.relative_to(ROOT)
            yield f"{rel_spec}: `{option}` has a default but defaults/main.yml lacks it"


def main() -> int:
    problems = [p for md in markdown_files() for p in dead_links(md)]
    for role in sorted((ROOT / "roles").iterdir()):
        if role.is_dir():
            problems.extend(role_problems(role))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
