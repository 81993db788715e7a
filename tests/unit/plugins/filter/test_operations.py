"""The operations log's filters (plugins/filter/operations.py): the readable table of operations_report.yml and the
per-host inputs capacity_report.yml hands to qfc_capacity_report."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.qfieldcloud.ops.plugins.filter.operations import (
    FilterModule, qfc_fetched_paths, qfc_operations_table, qfc_report_timezones)

AWX = {"kind": "awx", "awx_job_id": "4711", "user": "alice"}
SCALE = {"time": "2026-12-02T23:59:01Z", "host": "qfc1", "action": "autoscale", "before": 2, "after": 4,
         "reason": "queue depth 12 > 10 for 600 s", "actor": AWX, "result": "changed"}
ROLLBACK = {"time": "2026-12-03T00:10:00Z", "host": "qfc1", "action": "rollback", "before": 6, "after": 4,
            "reason": "health gate:\n  success 40%", "actor": {"kind": "controller", "user": "bob"},
            "result": "rolled_back"}
CLEANUP = {"time": "2026-12-03T01:00:00Z", "host": "qfc1", "action": "job_cleanup", "before": None,
           "after": {"stale": 3, "orphaned_queued": 1}, "reason": "", "actor": {"kind": "schedule", "user": "root"},
           "result": "changed"}


def test_the_filters_are_exported():
    assert set(FilterModule().filters()) == {"qfc_operations_table", "qfc_fetched_paths", "qfc_report_timezones"}


def test_table_aligns_columns_and_counts():
    lines = qfc_operations_table([SCALE, ROLLBACK, CLEANUP])
    assert lines[0].split() == ["time", "(UTC)", "action", "before", "->", "after", "result", "actor", "reason"]
    assert lines[1].startswith("2026-12-02 23:59:01  autoscale    2 -> 4")
    assert "AWX job 4711 (alice)" in lines[1] and lines[1].endswith("queue depth 12 > 10 for 600 s")
    assert "rolled back" in lines[2] and lines[2].endswith("health gate: success 40%")   # one line per record
    assert "orphaned_queued=1, stale=3" in lines[3] and "schedule (root)" in lines[3] and lines[3].endswith("-")
    # every column starts at the same place on every line
    for column in ("action", "result", "actor", "reason"):
        start = lines[0].index(column)
        assert all(line[start - 2:start] == "  " for line in lines[1:4]), column
    assert lines[-1] == "3 record(s), oldest first."


@pytest.mark.parametrize("records, skipped, expected", [
    ([], 0, ["No change recorded."]),
    ([], 2, ["No change recorded; 2 unreadable line(s) skipped."]),
])
def test_table_without_records(records, skipped, expected):
    assert qfc_operations_table(records, skipped) == expected


def test_table_names_skipped_lines_and_survives_sparse_records():
    lines = qfc_operations_table([{"action": "scale"}], 1)
    assert lines[1].split()[:2] == ["-", "scale"]
    assert lines[-1] == "1 record(s), oldest first; 1 unreadable line(s) skipped."


def test_table_cuts_long_cells_but_never_the_reason():
    long = dict(SCALE, after={"k%d" % i: i for i in range(30)}, reason="r" * 300)
    line = qfc_operations_table([long])[1]
    assert "..." in line and line.endswith("r" * 300)


@pytest.mark.parametrize("bad", [None, "text", [1, 2], {"time": "x"}])
def test_table_refuses_what_is_not_a_list_of_records(bad):
    with pytest.raises(AnsibleFilterError):
        qfc_operations_table(bad)


HOSTVARS = {
    "a": {"qfc_fetched_oplog": {"dest": "/r/logs/a.operations.jsonl", "changed": True},
          "qfc_fetched_tz": {"dest": "/r/logs/a.localtime"}},
    "b": {"qfc_fetched_oplog": {"file": "/var/log/qfieldcloud/operations.jsonl",
                                "msg": "the remote file does not exist, not transferring, ignored"},
          "qfc_fetched_tz": {"skipped": True, "changed": False}, "qfc_timezone": "Europe/Zurich"},
    "c": {"qfc_fetched_oplog": {"skipped": True, "dest": "/stale"}, "qfc_timezone": "  "},
}


def test_fetched_paths_only_what_this_run_fetched():
    assert qfc_fetched_paths(["a", "b", "c", "d"], HOSTVARS, "qfc_fetched_oplog") == {
        "a": "/r/logs/a.operations.jsonl", "b": "", "c": "", "d": ""}


def test_timezones_prefer_the_inventory_then_the_fetched_file_then_utc():
    assert qfc_report_timezones(["a", "b", "c", "d"], HOSTVARS, "qfc_fetched_tz") == {
        "a": "/r/logs/a.localtime", "b": "Europe/Zurich", "c": "", "d": ""}
