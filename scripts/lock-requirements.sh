#!/usr/bin/env bash
# service_src/requirements.lock: every package the service installs, transitive ones
# included, pinned with the sha256 of each of its files on PyPI (pip-tools' pip-compile,
# pinned in requirements-dev.txt). Its first line records requirements.txt's sha256.
#
#   bash scripts/lock-requirements.sh           regenerate the lock (after any change to
#                                               service_src/requirements.txt)
#   bash scripts/lock-requirements.sh --check   exit 1 when the lock is older than
#                                               requirements.txt (scripts/test.sh lint)
#
# Resolved by pip-compile running on the hosts' Python: Debian 12's /usr/bin/python3 (3.11.2;
# LOCK_PYTHON to change), in .cache/lock-venv with the pip-tools pinned in
# requirements-dev.txt. The project venv's newer 3.11 would drop dependencies that only older
# Pythons need (redis needs async-timeout below 3.11.3); pip-compile keeps their markers, so
# the lock still installs on newer Pythons.
# Resolved against PyPI only (this machine's pip.conf adds local indexes and find-links,
# whose files would otherwise add hashes no other machine knows). Versions already in the
# lock are kept unless requirements.txt asks for others (pip-compile's default).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/service_src"
sum="$(sha256sum requirements.txt | cut -d' ' -f1)"
header="# requirements.txt sha256: $sum"

if [[ ${1:-} == --check ]]; then
  if [[ "$(head -n1 requirements.lock 2>/dev/null)" != "$header" ]]; then
    echo "service_src/requirements.lock is out of date with requirements.txt:" \
      "run bash scripts/lock-requirements.sh and commit the lock" >&2
    exit 1
  fi
  exit 0
fi

python="${LOCK_PYTHON:-/usr/bin/python3}"
venv="$ROOT/.cache/lock-venv"
piptools="$(grep -E '^pip-tools==' "$ROOT/requirements-dev.txt")"
if ! "$venv/bin/pip-compile" --version 2>/dev/null | grep -q "${piptools#pip-tools==}" \
  || [[ "$("$venv/bin/python" -V 2>&1)" != "$("$python" -V 2>&1)" ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q "$piptools"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
[[ -f requirements.lock ]] && tail -n +2 requirements.lock >"$tmp/requirements.lock"
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
  CUSTOM_COMPILE_COMMAND="bash scripts/lock-requirements.sh" \
  "$venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-emit-index-url \
  --output-file "$tmp/requirements.lock" requirements.txt
{ echo "$header"; cat "$tmp/requirements.lock"; } >requirements.lock
echo "wrote service_src/requirements.lock ($(grep -c '^[a-z0-9]' requirements.lock) packages)"
