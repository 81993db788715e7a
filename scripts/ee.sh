#!/usr/bin/env bash
# `make ee`: the execution environment's build context from this checkout.
#   1. ansible-galaxy collection build -> dist/qfieldcloud-ops-<version>.tar.gz, copied to dist/qfieldcloud-ops.tar.gz
#      (the fixed name execution-environment.yml and awx/requirements.yml refer to);
#   2. ansible-builder create -> ./context (or $1), which `podman build` / `docker build` turn into the image.
# Then it checks that the collection resolves the way the image's galaxy stage installs it (from the context's _build
# directory, offline; --force, as a collections path of this machine may already hold the collection), so a broken
# requirements file fails here and not in a registry build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${QFC_VENV:-$ROOT/.venv}
CONTEXT=${1:-$ROOT/context}
cd "$ROOT"
rm -rf dist "$CONTEXT"
"$VENV/bin/ansible-galaxy" collection build --output-path dist . >/dev/null
version=$("$VENV/bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')
cp "dist/qfieldcloud-ops-$version.tar.gz" dist/qfieldcloud-ops.tar.gz
"$VENV/bin/ansible-builder" create -f execution-environment.yml --context "$CONTEXT" >/dev/null
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
(cd "$CONTEXT/_build" && ANSIBLE_GALAXY_DISABLE_GPG_VERIFY=1 "$VENV/bin/ansible-galaxy" collection install --offline --force \
  -r requirements.yml --collections-path "$check" 2>&1 >/dev/null | { grep -v "is not part of the configured\|playbook-adjacent" >&2 || true; })
installed=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' \
  "$check/ansible_collections/qfieldcloud/ops/MANIFEST.json")
[ "$installed" = "$version" ] || { echo "ee: the context installs qfieldcloud.ops $installed, expected $version" >&2; exit 1; }
echo "ee: build context in $CONTEXT (qfieldcloud.ops $version from dist/qfieldcloud-ops.tar.gz); build it with:"
echo "    podman build -t qfieldcloud-ops-ee:$version $CONTEXT"
