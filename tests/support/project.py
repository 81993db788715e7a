"""Instantiate a compose fixture (tests/fixtures/stack, stack-db) as a QFieldCloud checkout: used by the tests and the
benchmarks alike."""

from __future__ import annotations

import re
import shutil


def copy_project(fixture, path, settings, extra_env=None):
    """Copy ``fixture`` to ``path`` and write its .env: env.example with ``settings`` replacing existing keys and
    ``extra_env`` appended. env.example itself is not kept."""
    shutil.copytree(fixture, path)
    env = (path / "env.example").read_text()
    (path / "env.example").unlink()
    for key, value in settings.items():
        env = re.sub(r"^%s=.*$" % key, "%s=%s" % (key, value), env, flags=re.M)
    env += "".join("%s=%s\n" % kv for kv in (extra_env or {}).items())
    (path / ".env").write_text(env)
