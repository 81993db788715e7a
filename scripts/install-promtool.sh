#!/usr/bin/env bash
# Installs promtool, Prometheus's rule checker, used by tests/unit/test_monitoring_docs.py to check and unit-test
# docs/monitoring/prometheus-rules.yml. Only the binary is taken from Debian's `prometheus` package
# (apt-get download + dpkg -x): no Prometheus service, user or dependency is installed.
# Idempotent: does nothing when promtool is already on PATH or in the destination.
# Not root on Debian, or the package cannot be had: says so and exits 0 (the test then falls back to a schema check),
# unless PROMTOOL_REQUIRED=1, which makes that an error.
# Environment: PROMTOOL_DEST (default /usr/local/bin), PROMTOOL_REQUIRED (default 0).
set -euo pipefail
DEST=${PROMTOOL_DEST:-/usr/local/bin}
REQUIRED=${PROMTOOL_REQUIRED:-0}
log() { printf '[install-promtool] %s\n' "$*"; }
give_up() {
  if [ "$REQUIRED" = 1 ]; then
    printf '[install-promtool] ERROR: %s\n' "$*" >&2
    exit 1
  fi
  log "$* - skipping: the monitoring docs test falls back to a schema check"
  exit 0
}
version_of() { "$1" --version 2>&1 | head -n 1; }

for candidate in "$(command -v promtool 2>/dev/null || true)" "$DEST/promtool"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
    log "already installed: $candidate ($(version_of "$candidate"))"
    exit 0
  fi
done

[ "$(id -u)" = 0 ] || give_up "not root"
{ [ -r /etc/debian_version ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; } \
  || give_up "not a Debian system (no apt-get/dpkg-deb)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# Downloads run as root into this private directory (apt's _apt sandbox user could not write to it).
download() { apt-get -q -o APT::Sandbox::User=root download prometheus >"$work/apt.log" 2>&1; }
if ! download; then
  log "apt-get download failed; updating the package lists and retrying"
  apt-get update -qq >>"$work/apt.log" 2>&1 || true
  download || { cat "$work/apt.log" >&2; give_up "could not download Debian's prometheus package"; }
fi
deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)
[ -n "$deb" ] || give_up "apt-get download left no prometheus_*.deb"
log "extracting promtool from $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root"
[ -x "$work/root/usr/bin/promtool" ] || give_up "the package has no usr/bin/promtool"
"$work/root/usr/bin/promtool" --version >/dev/null 2>&1 || give_up "the extracted promtool does not run here"
install -d "$DEST"
install -m 0755 "$work/root/usr/bin/promtool" "$DEST/promtool"
log "installed $DEST/promtool ($(version_of "$DEST/promtool"))"
