"""The monitoring role's collector script as code: what it imports is what the role copies beside it, and the rows it
writes itself are rows of the metrics log's format (tests/integration/test_monitoring.py parses a real run's)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import yaml

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "roles" / "monitoring" / "files" / "qfc_queue_collector.py"
MODULE_UTILS = ROOT / "plugins" / "module_utils"
PACKAGE = "ansible_collections.qfieldcloud.ops.plugins.module_utils"


def load_collector():
    spec = importlib.util.spec_from_file_location("qfc_queue_collector", COLLECTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_module_utils(path):
    """The collection's module_utils a file imports (``from PACKAGE import a, b`` or ``from PACKAGE.a import x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
            names.add(node.module.rsplit(".", 1)[1])
    return names


def test_the_role_copies_exactly_what_the_collector_imports():
    needed, todo = set(), imported_module_utils(COLLECTOR)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo |= imported_module_utils(MODULE_UTILS / (name + ".py"))
    copied = yaml.safe_load((ROOT / "roles/monitoring/vars/main.yml").read_text())["_qfc_monitoring_module_utils"]
    assert sorted(copied) == sorted(name + ".py" for name in needed)
    assert "_metrics_log" in needed and "_policy" in needed


def test_a_row_the_collector_writes_on_failure_parses(tmp_path):
    collector = load_collector()
    config = {"csv_log": str(tmp_path / "log" / "q.log"), "textfile": str(tmp_path / "prom" / "q.prom"),
              "state_file": str(tmp_path / "var" / "state.json")}
    collector.record_failure(config, {"project": "qfc"}, collector.Run(5), "collection took longer than 5s, really")
    (line,) = (tmp_path / "log" / "q.log").read_text().splitlines(True)
    row = _metrics_log.parse_line(line)
    assert (row["status"], row["error"], row["queue_depth"]) == (
        "error", "collection took longer than 5s; really", None)
    assert 'qfieldcloud_collector_up{project="qfc"} 0' in (tmp_path / "prom" / "q.prom").read_text()
    assert not (tmp_path / "var" / "state.json").exists()  # a failed run leaves the alert state as it was
