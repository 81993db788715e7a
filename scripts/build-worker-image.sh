#!/usr/bin/env bash
# Builds the offline test image qfc-test/worker-sim:2 (Debian bookworm minbase + python3 + python3-psycopg2 + psql),
# used by tests/fixtures/stack-db to run the worker simulator tests/fixtures/worker_sim/dequeue.py.
# No registry is needed: debootstrap fetches packages from the Debian mirror apt already uses, and the
# root filesystem is turned into an image with `docker import`. A fast no-op when the image exists.
# Needs root (debootstrap) and a running Docker Engine.
# Environment: QFC_WORKER_SIM_IMAGE (default qfc-test/worker-sim:2), QFC_DEBIAN_MIRROR (default: from apt's sources).
set -euo pipefail

IMAGE=${QFC_WORKER_SIM_IMAGE:-qfc-test/worker-sim:2}
SUITE=bookworm
# postgresql-client: psql for the benchmark baseline, the seed write-up's `docker exec ... psql` per metric.
INCLUDE=python3,python3-psycopg2,postgresql-client
LOCK=${TMPDIR:-/tmp}/qfc-build-worker-image.lock

log() { printf '[build-worker-image] %s\n' "$*"; }
die() { printf '[build-worker-image] ERROR: %s\n' "$*" >&2; exit 1; }

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
WORK=$(mktemp -d /var/tmp/qfc-worker-sim.XXXXXX)
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

tar --numeric-owner -C "$ROOTFS" -c . | docker import --change 'CMD ["/usr/bin/python3"]' - "$IMAGE" >/dev/null
have_image || die "docker import did not produce $IMAGE"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built image $IMAGE from $MIRROR in $(( $(date +%s) - start ))s ($(( size / 1000000 )) MB)"
