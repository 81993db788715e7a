"""Shared by the benchmarks: replace (or append) one marked section of docs/performance.md."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_section(name, table):
    """``table`` starts with ``<!-- name:begin -->`` and ends with ``<!-- name:end -->``."""
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    text = DOC.read_text()
    if begin in text:
        text = text[:text.index(begin)] + table + text[text.index(end) + len(end):]
    else:
        text += "\n" + table + "\n"
    DOC.write_text(text)
