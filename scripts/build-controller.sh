#!/usr/bin/env bash
# Build the controller image offline: a Debian 13 (trixie, Python 3.13) rootfs made by
# debootstrap, with the newest Ansible pinned in requirements-controller.txt in the venv
# /opt/ansible, ssh for reaching hosts, and this machine's extra CA certificates.
# ansible-core >= 2.20 needs Python >= 3.12, which Debian 12 (the project venv) lacks.
# The wheels are downloaded by the host's pip (which knows this machine's index settings) and
# installed inside the chroot with --no-index: the chroot needs no network and no pip config.
# The image is tagged with a hash of this recipe, the requirements and the CA files, and is
# rebuilt only when one of them changes. Run a command in it: scripts/controller.sh.
#   scripts/build-controller.sh               build (or re-tag) localhost/roboshop-controller:debian13
#   scripts/build-controller.sh --print-tag   only print the recipe-hash tag it would build
source "$(dirname "$0")/lib.sh"

PACKAGES="python3,python3-venv,openssh-client,ca-certificates"
REQUIREMENTS="$ROOT/requirements-controller.txt"
# The wheels the host downloads for the image's Python (trixie: CPython 3.13, glibc 2.41).
PY_VERSION=3.13
PLATFORMS=(manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)


recipe_hash() {
  { cat "$0" "$REQUIREMENTS"; for f in $(extra_ca_files); do sha256sum "$f"; done; } | sha256sum | cut -c1-12
}

pinned() { sed -n "s/^$1==//p" "$REQUIREMENTS"; }

# Postcondition: the image answers with the pinned ansible-core on Python 3.13.
check() {
  local tag=$1 out core
  core=$(pinned ansible-core)
  out=$(podman run --rm --network none --name "ctl-controller-check-$$" "$tag" \
    ansible-playbook --version 2>&1) || true
  grep -q "core $core\]" <<<"$out" && grep -q "python version = $PY_VERSION\." <<<"$out" \
    || die "$tag: ansible-playbook --version does not report core $core on Python $PY_VERSION: $(head -c 300 <<<"$out" | tr '\n' ' ')"
}

main() {
  local tag hash
  [[ -f $REQUIREMENTS ]] || die "$REQUIREMENTS missing"
  hash=$(recipe_hash)
  tag="$CONTROLLER_IMAGE-$hash"
  # scripts/controller.sh asks which image the current recipe makes, without building it.
  if [[ ${1:-} == --print-tag ]]; then printf '%s\n' "$tag"; return 0; fi
  if podman image exists "$tag"; then
    podman tag "$tag" "$CONTROLLER_IMAGE"
    check "$CONTROLLER_IMAGE"
    log "controller image up to date ($tag)"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap missing: run scripts/bootstrap.sh"
  local t0
  t0=$(now)
  ROOTFS=$(mktemp -d /var/tmp/ctl-rootfs.XXXXXX)
  trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT

  # The wheels first: a resolution error shows in seconds, not after debootstrap.
  local wheels="$ROOTFS/tmp/wheels" platform_args=() p
  for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
  log "downloading the wheels of requirements-controller.txt for CPython $PY_VERSION"
  mkdir -p "$wheels"
  "$ROOT/.venv/bin/pip" download -q --disable-pip-version-check --python-version "$PY_VERSION" \
    --implementation cp --only-binary=:all: "${platform_args[@]}" \
    -r "$REQUIREMENTS" -d "$wheels" > "$ROOTFS.log" 2>&1 \
    || { grep -v 'is ignored' "$ROOTFS.log" | tail -20; die "pip download failed"; }
  cp "$REQUIREMENTS" "$wheels/requirements.txt"

  log "debootstrap trixie into $ROOTFS"
  # shellcheck disable=SC2046
  debootstrap --variant=minbase --include="$PACKAGES" trixie "$ROOTFS" $(apt_mirror) $(suite_script trixie) \
    > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; die "debootstrap failed"; }
  rm -f "$ROOTFS.log"

  # Trust this machine's extra CAs the standard Debian way.
  for f in $(extra_ca_files); do cp "$f" "$ROOTFS/usr/local/share/ca-certificates/"; done
  chroot "$ROOTFS" update-ca-certificates 2>&1 >/dev/null | { grep -v '^rehash: warning' || true; } >&2

  # The venv, offline, with a clean environment: no pip setting of this host leaks in.
  log "installing requirements-controller.txt into /opt/ansible (offline)"
  chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
    python3 -m venv /opt/ansible
  chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
    PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/ansible/bin/pip install -q --no-index --no-cache-dir \
    --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
    || die "pip install into /opt/ansible failed"
  rm -rf "$wheels" "$ROOTFS"/root/.cache
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  : > "$ROOTFS/etc/machine-id"

  log "importing as $tag"
  # Ansible refuses a non-UTF-8 locale; C.UTF-8 is built into Debian's libc, no `locales`.
  tar -C "$ROOTFS" -c . | podman import --quiet \
    --change 'ENV PATH=/opt/ansible/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'ENV LC_ALL=C.UTF-8' \
    --change 'CMD ["ansible", "--version"]' - "$tag" >/dev/null
  podman tag "$tag" "$CONTROLLER_IMAGE"
  check "$CONTROLLER_IMAGE"
  log "controller image built in $(elapsed "$t0") s ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
  podman run --rm --network none --name "ctl-controller-version-$$" "$CONTROLLER_IMAGE" \
    sh -c 'ansible --version; pip list --format=freeze 2>/dev/null | grep -i "^ansible"' >&2
}
main "$@"
