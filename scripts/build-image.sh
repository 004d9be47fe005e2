#!/usr/bin/env bash
# Build the test-host image offline: a Debian 12 (bookworm) rootfs made by debootstrap,
# with systemd as PID 1, python3 for Ansible, and this machine's extra CA certificates
# (so pip inside the hosts trusts the same network the controller does). The image is
# tagged with a hash of this recipe and the CA files, and rebuilt only when they change.
source "$(dirname "$0")/lib.sh"

PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps"

# The apt mirror is read from this machine's own apt configuration, never written here.
mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"   # empty: debootstrap's own default
}

ca_files() { compgen -G '/usr/local/share/ca-certificates/*.crt' || true; }

recipe_hash() {
  { cat "$0"; for f in $(ca_files); do sha256sum "$f"; done; } | sha256sum | cut -c1-12
}

main() {
  local tag hash
  hash=$(recipe_hash)
  tag="$TESTHOST_IMAGE-$hash"
  if podman image exists "$tag"; then
    podman tag "$tag" "$TESTHOST_IMAGE"
    log "test-host image up to date ($tag)"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap missing: run scripts/bootstrap.sh"
  local t0
  t0=$(now)
  ROOTFS=$(mktemp -d /var/tmp/roboshop-rootfs.XXXXXX)
  trap 'rm -rf "$ROOTFS"' EXIT
  log "debootstrap bookworm into $ROOTFS"
  # shellcheck disable=SC2046
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" $(mirror) \
    > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; die "debootstrap failed"; }
  rm -f "$ROOTFS.log"

  # Trust this machine's extra CAs the standard Debian way.
  for f in $(ca_files); do cp "$f" "$ROOTFS/usr/local/share/ca-certificates/"; done
  chroot "$ROOTFS" update-ca-certificates >/dev/null

  # A container is not a VM: no getty, no udev-triggered hardware setup.
  chroot "$ROOTFS" systemctl mask getty.target console-getty.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount >/dev/null 2>&1 || true
  : > "$ROOTFS/etc/machine-id"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

  log "importing as $tag"
  tar -C "$ROOTFS" -c . | podman import \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$tag" >/dev/null
  podman tag "$tag" "$TESTHOST_IMAGE"
  log "test-host image built in $(elapsed "$t0") s"
}
main "$@"
