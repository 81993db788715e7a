#!/usr/bin/env bash
# `make release VERSION=x.y.z`: a release from a clean checkout.
#   1. galaxy.yml gets the version;
#   2. antsibull-changelog turns changelogs/fragments into changelogs/changelog.yaml and CHANGELOG.md (new modules,
#      filters and roles are found by their version_added), and removes the fragments;
#   3. the tarball goes to dist/.
# Then review CHANGELOG.md, commit, tag vX.Y.Z and publish the tarball (ansible-galaxy collection publish).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${QFC_VENV:-$ROOT/.venv}
export PATH="$VENV/bin:$PATH"  # antsibull-changelog runs ansible-doc to list the collection's plugins and roles
VERSION=${1:-}
die() { echo "release: $*" >&2; exit 2; }
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "usage: make release VERSION=x.y.z (semantic version), got '$VERSION'"
cd "$ROOT"
[ -z "$(git status --porcelain --untracked-files=no)" ] || die "commit or stash your changes first"
sed -i "s/^version: .*/version: $VERSION/" galaxy.yml
antsibull-changelog release --version "$VERSION"
rm -f changelogs/.plugin-cache.yaml
ansible-galaxy collection build --force --output-path dist . >/dev/null
echo "release: qfieldcloud.ops $VERSION: CHANGELOG.md, changelogs/changelog.yaml, galaxy.yml updated;" \
  "tarball dist/qfieldcloud-ops-$VERSION.tar.gz. Review, commit, tag v$VERSION, publish."
