#!/usr/bin/env bash
# Installs and starts everything the demo and the tests need, idempotently:
# a Python venv with Ansible, a Docker Engine, the Compose v2 CLI plugin, offline test images,
# and a collections path that points at this checkout.
# Root on Debian installs what is missing; elsewhere it says what to install and stops.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${QFC_VENV:-$ROOT/.venv}
STATE=$ROOT/.state
mkdir -p "$STATE"
log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

is_debian_root() { [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] && command -v apt-get >/dev/null; }
APT_UPDATED=
apt_install() {
  is_debian_root || die "missing: $*. Install them (Debian/Ubuntu as root: apt-get install $*) and re-run."
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Python venv ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/ansible-playbook" ] || ! cmp -s requirements-dev.txt "$VENV/.requirements-dev.txt"; then
  log "creating venv $VENV"
  python3 -m venv "$VENV" || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
  "$VENV/bin/pip" install -q -r requirements-dev.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
  cp requirements-dev.txt "$VENV/.requirements-dev.txt"
fi

# --- shellcheck, used by ansible-test sanity's shellcheck test on scripts/ --------------------
if ! command -v shellcheck >/dev/null; then
  if is_debian_root; then apt_install shellcheck; else log "shellcheck not found: ansible-test sanity will skip its shellcheck test"; fi
fi

# --- logrotate: the monitoring role's rules are run for real in its tests (tests/integration/test_faults_collector.py)
if ! command -v logrotate >/dev/null && ! [ -x /usr/sbin/logrotate ]; then
  if is_debian_root; then apt_install logrotate; else die "missing: logrotate. Install it and re-run."; fi
fi

# --- PostgreSQL server binaries: tests start throwaway clusters (tests/support/pgcluster.py) ------------
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  log "installing the PostgreSQL server (only its binaries are used; tests run their own clusters)"
  apt_install postgresql
fi

# --- PostGIS for that server: the recorded QFieldCloud schemas (tests/fixtures/qfieldcloud-schema) create it ------
# The package matching the newest installed server major, which is the one pgcluster.py uses.
pg_major=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/postgis.control" ]; then
  log "installing PostGIS for PostgreSQL $pg_major"
  apt_install "postgresql-$pg_major-postgis-3"
elif [ -z "$pg_major" ] && ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then
  log "PostGIS not found: the tests load QFieldCloud schemas that need it (install PostGIS 3 for your PostgreSQL)"
fi

# --- cron: the monitoring role's cron entries (ansible.builtin.cron needs the crontab binary) ------------
if ! command -v crontab >/dev/null; then
  if is_debian_root; then apt_install cron; else log "crontab not found: the monitoring tests need the cron package"; fi
fi

# --- promtool, to check docs/monitoring/prometheus-rules.yml (the test falls back to a schema check without it)
bash "$ROOT/scripts/install-promtool.sh"

# --- ssh and ssh-keygen: Ansible reaches the test fleet (tests/support/fleet.py) over real SSH --------------
if ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
  if is_debian_root; then apt_install openssh-client; else die "ssh/ssh-keygen not found: install openssh-client"; fi
fi

# --- collections path: ansible_collections/qfieldcloud/ops -> this checkout ---------------
mkdir -p .collections/ansible_collections/qfieldcloud
ln -sfn ../../.. .collections/ansible_collections/qfieldcloud/ops

# --- Docker Engine ----------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { log "installing Docker Engine (docker.io)"; apt_install docker.io; }
  command -v docker >/dev/null || die "no docker client on PATH"
  log "starting dockerd (no bridge: test services use host or none networking)"
  setsid dockerd --bridge=none --iptables=false --ip6tables=false >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; die "dockerd did not start"; }
fi

# --- Compose v2 -------------------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
  is_debian_root || die "Docker Compose v2 is missing: install the docker-compose-plugin package and re-run."
  log "installing Compose v2 from Debian trixie (the package has no dependency beyond libc6)"
  work=$(mktemp -d); chmod 755 "$work"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || die "cannot find the Debian mirror in apt's sources"
  echo "deb $mirror trixie main" >"$work/sources.list"
  mkdir -p "$work/lists/partial"
  opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$work/lists" -o APT::Get::List-Cleanup=0)
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" download -qq docker-compose/trixie)
  dpkg -x "$work"/docker-compose_*.deb "$work/x"
  install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$work"
  docker compose version >/dev/null || die "Compose v2 plugin installed but not working"
fi

# --- offline test image: busybox in a scratch image (no registry, no build network) -------
if ! docker image inspect qfc-test/busybox:1 >/dev/null 2>&1; then
  bb=$(command -v busybox || true)
  if [ -z "$bb" ] || ! "$bb" --list >/dev/null 2>&1 || ! file -L "$bb" 2>/dev/null | grep -q static; then
    [ -x /bin/busybox-static ] || [ -x /usr/bin/busybox-static ] || apt_install busybox-static
  fi
  bb=$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -1)
  [ -n "$bb" ] || die "busybox-static not found"
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/out"
  cp "$bb" "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/sh"]' - qfc-test/busybox:1 >/dev/null
  rm -rf "$rootfs"
  log "built image qfc-test/busybox:1"
fi
# --- offline worker simulator image: Python + psycopg2 (debootstrap), for the DB-backed stack -----------
bash "$ROOT/scripts/build-test-image.sh" worker-sim
bash "$ROOT/scripts/build-test-image.sh" fleet-node

log "ready: $("$VENV/bin/ansible" --version | head -1), $(docker compose version), engine $(docker version -f '{{.Server.Version}}')"
