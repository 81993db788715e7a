#!/usr/bin/env bash
# Builds an offline Debian bookworm test image. No registry is needed: debootstrap fetches packages from the
# Debian mirror apt already uses, and the root filesystem becomes an image with `docker import`. A fast no-op
# when the image exists. Needs root (debootstrap) and a running Docker Engine.
#   scripts/build-test-image.sh worker-sim   qfc-test/worker-sim:2  python3 + psycopg2 + psql: the worker simulator
#                                            of tests/fixtures/stack-db (tests/fixtures/worker_sim/dequeue.py)
#   scripts/build-test-image.sh fleet-node   qfc-test/fleet-node:1  sshd + python3 + the docker SDK + PyYAML +
#                                            psycopg2: one server of the SSH test fleet (tests/support/fleet.py)
# Environment: QFC_DEBIAN_MIRROR (default: from apt's sources); QFC_WORKER_SIM_IMAGE / QFC_FLEET_NODE_IMAGE
# override the image names.
set -euo pipefail

KIND=${1:-worker-sim}
SUITE=bookworm
case "$KIND" in
  worker-sim)
    IMAGE=${QFC_WORKER_SIM_IMAGE:-qfc-test/worker-sim:2}
    # postgresql-client: psql for the benchmark baseline, the seed write-up's `docker exec ... psql` per metric.
    INCLUDE=python3,python3-psycopg2,postgresql-client
    CMD='["/usr/bin/python3"]' ;;
  fleet-node)
    IMAGE=${QFC_FLEET_NODE_IMAGE:-qfc-test/fleet-node:1}
    # What a QFieldCloud server offers Ansible: sshd, python3, and the modules' libraries. The Docker CLI and
    # the Compose plugin are bind-mounted from the host by tests/support/fleet.py (one engine, one client version).
    INCLUDE=openssh-server,python3,python3-docker,python3-yaml,python3-psycopg2
    CMD='["/usr/sbin/sshd", "-D", "-e"]' ;;
  *) printf '[build-test-image] ERROR: unknown image kind %s (worker-sim, fleet-node)\n' "$KIND" >&2; exit 2 ;;
esac
LOCK=${TMPDIR:-/tmp}/qfc-build-test-image-$KIND.lock

log() { printf '[build-test-image] %s\n' "$*"; }
die() { printf '[build-test-image] ERROR: %s\n' "$*" >&2; exit 1; }

have_image() { docker image inspect "$IMAGE" >/dev/null 2>&1; }

if have_image; then
  log "image $IMAGE present, nothing to do"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building $IMAGE needs root (debootstrap); run as root or build it once beforehand"
docker info >/dev/null 2>&1 || die "Docker Engine is not answering (start it with scripts/bootstrap.sh)"

# Two concurrent callers must not both build: the second waits, then finds the image.
exec 9>"$LOCK"
flock 9
if have_image; then
  log "image $IMAGE present (built by a concurrent run), nothing to do"
  exit 0
fi

debian_mirror() {
  local m=${QFC_DEBIAN_MIRROR:-}
  if [ -z "$m" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    # deb822: first URI of the first stanza that is not the security archive.
    m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    # one-line format: deb [options] URI suite components
    m=$(awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                           if ($i !~ /security/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || die "cannot find the Debian mirror in apt's sources; set QFC_DEBIAN_MIRROR"
  printf '%s\n' "$m"
}

if ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } \
    || die "could not install debootstrap"
fi

MIRROR=$(debian_mirror)
WORK=$(mktemp -d "/var/tmp/qfc-$KIND.XXXXXX")
ROOTFS=$WORK/rootfs

cleanup() {
  # debootstrap mounts proc/sys inside the target; never let rm walk into them.
  local mp
  if [ -r /proc/mounts ]; then
    awk -v r="$ROOTFS" 'index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r mp; do
      umount -l "$mp" 2>/dev/null || true
    done
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

start=$(date +%s)
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 20 "$WORK/debootstrap.log" >&2
  [ -r "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 20 "$ROOTFS/debootstrap/debootstrap.log" >&2
  die "debootstrap $SUITE from $MIRROR failed"
fi

# Trim what a test container never needs (the image stays a plain minbase otherwise).
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
  "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/debootstrap

tar --numeric-owner -C "$ROOTFS" -c . | docker import --change "CMD $CMD" - "$IMAGE" >/dev/null
have_image || die "docker import did not produce $IMAGE"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built image $IMAGE from $MIRROR in $(( $(date +%s) - start ))s ($(( size / 1000000 )) MB)"
