"""Where Ansible and the tests find this checkout as the collection ``qfieldcloud.ops``.

scripts/bootstrap.sh links ``.collections/ansible_collections/qfieldcloud/ops`` to the checkout, and ansible.cfg puts
``./.collections`` first in ``collections_path``. pytest-ansible (``--ansible-unit-inject-only``, set in
pyproject.toml) installs Ansible's collection finder on ``ANSIBLE_COLLECTIONS_PATH`` when pytest starts, so the unit
tests import ``ansible_collections.qfieldcloud.ops`` and the in-process runs of its ``ansible_module`` fixture find
the modules through the same finder. :func:`export_collections_path` sets that variable to ansible.cfg's value
before the plugin reads it (the conftests call it at import, which pytest does before ``pytest_configure``).

Without ``--ansible-unit-inject-only`` pytest-ansible would instead symlink every entry of the checkout into a new
``./collections/ansible_collections/qfieldcloud/ops``, which ansible-lint and ansible-test would then read twice.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".collections"
# ansible.cfg's collections_path, with ./.collections made absolute (the tests run Ansible from other directories too)
PATHS = (str(COLLECTIONS), "~/.ansible/collections", "/usr/share/ansible/collections")
ENV_VAR = "ANSIBLE_COLLECTIONS_PATH"


def collections_path(current=None):
    """``current`` (a ``:``-separated list) with this checkout's ``.collections`` first; ansible.cfg's list when
    ``current`` is empty."""
    entries = [p for p in (current or "").split(os.pathsep) if p]
    if not entries:
        return os.pathsep.join(PATHS)
    return os.pathsep.join([str(COLLECTIONS)] + [p for p in entries if p != str(COLLECTIONS)])


def export_collections_path(environ=None):
    """Put this checkout first in ``ANSIBLE_COLLECTIONS_PATH`` of ``environ`` (default: this process)."""
    environ = os.environ if environ is None else environ
    environ[ENV_VAR] = collections_path(environ.get(ENV_VAR))
    return environ[ENV_VAR]
