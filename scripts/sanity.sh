#!/usr/bin/env bash
# ansible-test sanity needs the tree at .../ansible_collections/qfieldcloud/ops, outside any other git checkout
# (inside one, it lists files with git and sees none). Copy the files git would ship there; keep tests/output,
# where ansible-test caches the venvs of its sanity tools.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# A venv of its own: ansible-test --requirements pins its tools (pylint, yamllint, ...) into the venv it runs in,
# which must not disturb ansible-lint's. (ansible-test --venv would fetch get-pip from a host we cannot reach.)
SANITY_VENV=${QFC_SANITY_VENV:-$ROOT/.state/venv-sanity}
if [ ! -x "$SANITY_VENV/bin/ansible-test" ]; then
  python3 -m venv "$SANITY_VENV"
  "$SANITY_VENV/bin/pip" install -q "$(grep -E '^ansible-core' "$ROOT/requirements-dev.txt")" 2>&1 | { grep -v "is ignored" || true; }
fi
DEST=${QFC_SANITY_DIR:-/tmp/qfc-sanity}/ansible_collections/qfieldcloud/ops
mkdir -p "$DEST"
find "$DEST" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
find "$DEST/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} + 2>/dev/null || true
pip_version=$(grep -oE "pip='[0-9.]+'" "$SANITY_VENV"/lib/python*/site-packages/ansible_test/_internal/python_requirements.py | grep -oE "[0-9.]+" | head -1)
cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
install -D -m 0644 "$ROOT/scripts/ansible-test-get-pip.py" "$cache"
cd "$ROOT"
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [ -e "$f" ] && cp --parents -P "$f" "$DEST"/
done
cd "$DEST"
exec "$SANITY_VENV/bin/ansible-test" sanity --local --requirements --color no \
  --python "$("$SANITY_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "$@"
