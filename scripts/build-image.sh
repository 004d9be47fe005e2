#!/usr/bin/env bash
# Build the test-host image offline: a Debian 12 (bookworm) rootfs made by debootstrap,
# with systemd as PID 1, python3 for Ansible, and this machine's extra CA certificates
# (so pip inside the hosts trusts the same network the controller does). The image is
# tagged with a hash of this recipe and the CA files, and rebuilt only when they change.
#
# Hosts are reached as ops reach real ones: sshd, and an unprivileged account `ops` with
# passwordless sudo (what a cloud image's default user has). The image holds no key: each
# lab or scenario authorizes its own (testing/provision.yml), and each container makes its
# own SSH host keys at its first boot. No passwords; root cannot log in over SSH.
#
#   scripts/build-image.sh            Debian 12, localhost/roboshop-testhost:debian12
#   scripts/build-image.sh trixie     Debian 13, localhost/roboshop-testhost:debian13 (the
#                                     RabbitMQ 4.0 cluster: ROBOSHOP_TESTHOST_IMAGE, docs/testing.md)
source "$(dirname "$0")/lib.sh"

SUITE="${1:-bookworm}"
case "$SUITE" in
  bookworm) IMAGE="$TESTHOST_IMAGE" ;;
  trixie) IMAGE="$TESTHOST_IMAGE_13" ;;
  *) die "unknown suite '$SUITE': bookworm (Debian 12) or trixie (Debian 13)" ;;
esac

PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps"
PACKAGES+=",openssh-server,sudo"
OPS_USER=ops


recipe_hash() {
  { cat "$0"; echo "$SUITE"; for f in $(extra_ca_files); do sha256sum "$f"; done; } \
    | sha256sum | cut -c1-12
}

main() {
  local tag hash
  hash=$(recipe_hash)
  tag="$IMAGE-$hash"
  if podman image exists "$tag"; then
    podman tag "$tag" "$IMAGE"
    log "test-host image up to date ($tag)"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap missing: run scripts/bootstrap.sh"
  local t0
  t0=$(now)
  ROOTFS=$(mktemp -d /var/tmp/roboshop-rootfs.XXXXXX)
  trap 'rm -rf "$ROOTFS"' EXIT
  log "debootstrap $SUITE into $ROOTFS"
  # shellcheck disable=SC2046
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" $(apt_mirror) \
    $(suite_script "$SUITE") \
    > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; die "debootstrap failed"; }
  rm -f "$ROOTFS.log"

  # Trust this machine's extra CAs the standard Debian way.
  for f in $(extra_ca_files); do cp "$f" "$ROOTFS/usr/local/share/ca-certificates/"; done
  chroot "$ROOTFS" update-ca-certificates >/dev/null

  # A container is not a VM: no getty, no udev-triggered hardware setup.
  chroot "$ROOTFS" systemctl mask getty.target console-getty.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount >/dev/null 2>&1 || true
  # The ops account: key-only SSH, sudo without a password (no password exists).
  chroot "$ROOTFS" useradd --create-home --shell /bin/bash --uid 1000 "$OPS_USER"
  install -d -m 0700 -o 1000 -g 1000 "$ROOTFS/home/$OPS_USER/.ssh"
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$OPS_USER" > "$ROOTFS/etc/sudoers.d/$OPS_USER"
  chmod 0440 "$ROOTFS/etc/sudoers.d/$OPS_USER"
  cat > "$ROOTFS/etc/ssh/sshd_config.d/roboshop-testhost.conf" <<'CONF'
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF
  # Host keys per container, made at its first boot (the image carries none).
  rm -f "$ROOTFS"/etc/ssh/ssh_host_*
  mkdir -p "$ROOTFS/etc/systemd/system/ssh.service.d"
  cat > "$ROOTFS/etc/systemd/system/ssh.service.d/host-keys.conf" <<'CONF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
CONF
  : > "$ROOTFS/etc/machine-id"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

  log "importing as $tag"
  tar -C "$ROOTFS" -c . | podman import \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$tag" >/dev/null
  podman tag "$tag" "$IMAGE"
  log "test-host image built in $(elapsed "$t0") s"
}
main "$@"
