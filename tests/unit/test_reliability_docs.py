"""docs/reliability.md states only what holds: every test a row names exists, and every row of a table whose last
column is "test" names at least one (issue 21). A renamed or removed test, or a row added without one, fails here.

A row names tests as `ABBR::test_name` (ABBR from the page's legends, such as `F_SC` =
`tests/integration/test_faults_scale.py`), as `tests/path.py::test_name`, as `::test_name` (the file named before it
in the same cell) or as a whole file `tests/path.py`; "same test" repeats the row above.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reliability.md"
LEGEND_RE = re.compile(r"`([A-Z][A-Z_]*)`\s+=\s+`(tests/[^`]+\.py)`")
SAME = ("same test", "same tests", "same test file")
REF_RE = re.compile(r"`((?:[A-Z][A-Z_]*|tests/[^`:]+\.py)?)(?:::(\w+)(?:\[[^\]`]*\])?)?`")


def legend(text):
    return dict(LEGEND_RE.findall(text))


def table_rows(text):
    """(line number, last cell) of every body row of a table whose header's last column is "test"."""
    rows, in_table = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:
            in_table, header = True, cells
            continue
        if set(line.replace("|", "").strip()) <= {"-", " ", ":"}:
            continue
        if header[-1] == "test":
            # "same test": the tests of the row above
            rows.append((number, rows[-1][1] if cells[-1] in SAME and rows else cells[-1]))
    return rows


def references(cell, files):
    """(file, test name or None) of every test a cell names."""
    found, current = [], None
    for prefix, name in REF_RE.findall(cell):
        if prefix and not prefix.startswith("tests/") and prefix not in files:
            if name:
                raise AssertionError("unknown abbreviation %s in %r" % (prefix, cell))
            continue  # a backticked word, not a reference
        if prefix:
            current = files.get(prefix, prefix)
        elif not name:
            continue
        if current is None:
            raise AssertionError("::%s names no file in %r" % (name, cell))
        found.append((current, name or None))
    return found


TEXT = PAGE.read_text()
FILES = legend(TEXT)
ROWS = table_rows(TEXT)


def test_the_page_has_its_tables_and_legends():
    assert len(ROWS) > 80 and {"F_SC", "F_DB", "F_CO", "OP", "F_EN", "CAS"} <= set(FILES)


@pytest.mark.parametrize("line, cell", ROWS, ids=["line %d" % n for n, _c in ROWS])
def test_every_row_names_tests_that_exist(line, cell):
    refs = references(cell, FILES)
    assert refs or "reasoned" in cell, "line %d names no test: %r" % (line, cell)
    for path, name in refs:
        source = ROOT / path
        assert source.is_file(), "line %d: %s does not exist" % (line, path)
        if name:
            assert re.search(r"^(?:async )?def %s\(" % name, source.read_text(), re.M), \
                "line %d: %s has no test %s" % (line, path, name)


def test_the_parser_finds_what_a_row_names():
    files = {"F_SC": "tests/integration/test_faults_scale.py"}
    cell = ("`F_SC::test_a`, `tests/unit/x.py::test_b`, `::test_c[case]`, `tests/unit/y.py`, `qfc_scale`, "
            "`--diff`")
    assert references(cell, files) == [("tests/integration/test_faults_scale.py", "test_a"),
                                       ("tests/unit/x.py", "test_b"), ("tests/unit/x.py", "test_c"),
                                       ("tests/unit/y.py", None)]
    with pytest.raises(AssertionError, match="unknown abbreviation"):
        references("`XX::test_a`", files)
