#!/usr/bin/env bash
# Run one command in a throwaway container of the newest-Ansible controller image (Debian 13,
# Python 3.13, requirements-controller.txt), with the repo mounted at /project as its working
# directory, on the host's network (ssh reaches the same hosts as from here):
#   scripts/controller.sh ansible-playbook -i inventory/lab --syntax-check site.yml
#   scripts/controller.sh ansible-galaxy collection list
# The image is built first when the current recipe's image is missing (scripts/build-controller.sh).
#
# What reaches the container from the caller's environment:
#   ANSIBLE_*          every one set, except ANSIBLE_CONFIG (always /project/ansible.cfg) and
#                      ANSIBLE_CACHE_PLUGIN_CONNECTION (facts are cached in the container's /tmp,
#                      never mixed with the host's .cache/facts). Paths in them must exist inside:
#                      /project/... for the repo's files, or ROBOSHOP_SSH_DIR's.
#   ANSIBLE_STRATEGY   defaults to `linear`: Mitogen (ansible.cfg's mitogen_linear) is not in the
#                      image and does not support this ansible-core.
#   ROBOSHOP_*         every one set (ROBOSHOP_SSH_DIR included).
#   ROBOSHOP_SSH_DIR   a directory (keys, known_hosts, ssh config) mounted read-only at the same
#                      path, so inventory values such as ansible_ssh_private_key_file work as is.
#   SSH_AUTH_SOCK      the caller's ssh agent, when set: the socket is mounted at the same path.
#   ROBOSHOP_CONTROLLER_PODMAN_ARGS  extra `podman run` options, split on blanks.
# Nothing else: no pip or proxy settings, no HOME. The command runs as the caller's uid and gid,
# with HOME=/tmp (so ~/.ansible and ~/.ssh/known_hosts stay in the container) and without
# bytecode files, so the repo gets nothing the host's own ansible-playbook would not write.
# The one thing kept between runs: XDG_CACHE_HOME=/project/.cache/controller (git-ignored),
# where the payment role keeps its packed releases and wheels (payment_release_cache_dir),
# so a re-run finds them as on the host and changes nothing.
source "$(dirname "$0")/lib.sh"

[[ $# -gt 0 ]] || die "usage: scripts/controller.sh CMD [ARGS...]  (e.g. ansible --version)"

tag=$(bash "$ROOT/scripts/build-controller.sh" --print-tag)
if ! podman image exists "$tag"; then
  bash "$ROOT/scripts/build-controller.sh" >&2
fi

mkdir -p "$ROOT/.cache/controller"
uid=$(id -u)
gid=$(id -g)
args=(
  --rm --network host --name "ctl-controller-$$"
  --user "$uid:$gid" --passwd-entry "${USER:-ansible}:*:$uid:$gid::/tmp:/bin/sh"
  -v "$ROOT:/project" -w /project
  -e HOME=/tmp -e PYTHONDONTWRITEBYTECODE=1 -e XDG_CACHE_HOME=/project/.cache/controller
  -e ANSIBLE_CONFIG=/project/ansible.cfg
  -e ANSIBLE_CACHE_PLUGIN_CONNECTION=/tmp/facts
  -e ANSIBLE_STRATEGY="${ANSIBLE_STRATEGY:-linear}"
)
while IFS= read -r name; do
  case $name in
    ANSIBLE_CONFIG | ANSIBLE_CACHE_PLUGIN_CONNECTION | ANSIBLE_STRATEGY) ;;
    ANSIBLE_* | ROBOSHOP_*) args+=(-e "$name") ;;
  esac
done < <(compgen -e)
if [[ -n ${ROBOSHOP_SSH_DIR:-} ]]; then
  [[ -d $ROBOSHOP_SSH_DIR ]] || die "ROBOSHOP_SSH_DIR=$ROBOSHOP_SSH_DIR is not a directory"
  args+=(-v "$ROBOSHOP_SSH_DIR:$ROBOSHOP_SSH_DIR:ro")
fi
if [[ -n ${SSH_AUTH_SOCK:-} && -S $SSH_AUTH_SOCK ]]; then
  args+=(-v "$SSH_AUTH_SOCK:$SSH_AUTH_SOCK" -e SSH_AUTH_SOCK)
fi
if [[ -n ${ROBOSHOP_CONTROLLER_PODMAN_ARGS:-} ]]; then
  read -r -a extra <<<"$ROBOSHOP_CONTROLLER_PODMAN_ARGS"
  args+=("${extra[@]}")
fi
# A terminal when there is one (vault password prompts, colours); none in CI.
if [[ -t 0 && -t 1 ]]; then args+=(-it); fi

exec podman run "${args[@]}" "$tag" "$@"
