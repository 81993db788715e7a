"""The monitoring role's collector script as code: what it imports is what the role copies beside it, and the rows it
writes itself are rows of the metrics log's format (tests/integration/test_monitoring.py parses a real run's)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log

from tests.support import host_programs

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "roles" / "monitoring" / "files" / "qfc_queue_collector.py"


def load_collector():
    return host_programs.load(COLLECTOR, "qfc_queue_collector")


def test_the_role_copies_exactly_what_the_collector_imports():
    needed = host_programs.module_utils_closure(COLLECTOR)
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
