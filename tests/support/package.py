"""The collection as users get it: a copy of the checkout (tracked and new files, not ignored) and the tarball
`ansible-galaxy collection build` makes from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def galaxy_version():
    return yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))["version"]


def checkout_copy(dest):
    """The checkout's files in a git repository of their own at ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *cmd], cwd=dest, check=True, capture_output=True)
    return dest


def build(src, out):
    """``ansible-galaxy collection build`` of ``src`` into ``out``; the tarball's path."""
    subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(src)],
                   check=True, capture_output=True, timeout=120)
    return Path(out) / ("qfieldcloud-ops-%s.tar.gz" % galaxy_version())
