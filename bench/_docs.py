"""Shared by the benchmarks: replace (or append) one marked section of docs/performance.md, and make sure the
ansible-playbook runs measure this checkout."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
LINK = ROOT / ".collections" / "ansible_collections" / "qfieldcloud" / "ops"


def write_section(name, table):
    """``table`` starts with ``<!-- name:begin -->`` and ends with ``<!-- name:end -->``."""
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    text = DOC.read_text()
    if begin in text:
        text = text[:text.index(begin)] + table + text[text.index(end) + len(end):]
    else:
        text += "\n" + table + "\n"
    DOC.write_text(text)


def ensure_collection_link():
    """ansible.cfg finds qfieldcloud.ops through ./.collections (scripts/bootstrap.sh links it). On a fresh clone
    without it, Ansible would fall back to ~/.ansible/collections, an installed (older) copy or none: link it here,
    and refuse a link that points at another checkout, so a benchmark always measures this tree."""
    if not os.path.lexists(LINK):
        LINK.parent.mkdir(parents=True, exist_ok=True)
        LINK.symlink_to(Path("..", "..", ".."))
    if LINK.resolve() != ROOT:
        raise SystemExit("%s points at %s, not this checkout %s" % (LINK, LINK.resolve(), ROOT))
