"""Make `ansible_collections.qfieldcloud.ops` importable from this checkout.

pytest-ansible does it (``--ansible-unit-inject-only`` in pyproject.toml): it installs Ansible's collection finder on
``ANSIBLE_COLLECTIONS_PATH``, which this conftest sets, at import, to ansible.cfg's collections_path with the
checkout's ``.collections`` (linked by scripts/bootstrap.sh) first. See tests/support/collection.py."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support

from tests.support.collection import export_collections_path  # noqa: E402

export_collections_path()
