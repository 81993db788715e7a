"""The operations log in reports, run as users run them with real ansible-playbook on localhost:
playbooks/operations_report.yml (qfc_operations_log_info and the table filter) and playbooks/capacity_report.yml with
the hosts' operations logs (fetched beside the metrics logs, times converted from UTC to each host's zone)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import BIN, ROOT, run_module, run_playbook
from test_capacity_report import metrics_log, task_status

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _oplog

OPS_PLAYBOOK = ROOT / "playbooks" / "operations_report.yml"
CAPACITY_PLAYBOOK = ROOT / "playbooks" / "capacity_report.yml"
NEW_YORK = Path("/usr/share/zoneinfo/America/New_York")


def write_oplog(path, changes, host="node"):
    """changes: (UTC datetime, action, before, after, result, actor) appended with _oplog, as the writers do."""
    for when, action, before, after, result, actor in changes:
        _oplog.append(str(path), _oplog.make_record(action, before, after, "because %s" % action, result, actor,
                                                    host=host, now=when))


def inventory(tmp_path, hosts):
    lines = ["qfieldcloud:", "  hosts:"]
    for name, variables in hosts.items():
        lines += ["    %s:" % name, "      ansible_connection: local",
                  "      ansible_python_interpreter: %s" % (BIN / "python")]
        lines += ["      %s: %s" % (k, json.dumps(v)) for k, v in variables.items()]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cells(stdout, needle):
    """The columns of the one table line (in the debug output's JSON list) that holds ``needle``."""
    lines = [line.strip().strip('",') for line in stdout.splitlines() if needle in line]
    assert len(lines) == 1, stdout
    return re.split(r"\s{2,}", lines[0])


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


AWX = _oplog.make_actor("4711", "alice")
BOB = _oplog.make_actor(user="bob")


def test_operations_report_prints_the_last_records_per_host(tmp_path):
    log_a, log_b = tmp_path / "a" / "operations.jsonl", tmp_path / "b" / "operations.jsonl"
    write_oplog(log_a, [(utc(2026, 12, 2, 10, i), "scale", i, i + 1, "changed", BOB) for i in range(1, 6)])
    write_oplog(log_a, [(utc(2026, 12, 2, 11, 0), "autoscale", 6, 8, "rolled_back", AWX)])
    with open(log_a, "a") as handle:
        handle.write("{not json\n")
    inv = inventory(tmp_path, {"qfc-a": {"qfc_operations_log": str(log_a)},
                               "qfc-b": {"qfc_operations_log": str(log_b)}})
    extra = {"qfc_operations_limit": 3, "qfc_become": False}

    for check in (False, True):
        run = run_playbook(OPS_PLAYBOOK, inv, extra, check=check)
        assert run.returncode == 0, run.stdout + run.stderr
        out = run.stdout
        assert cells(out, "10:04:00") == ["2026-12-02 10:04:00", "scale", "4 -> 5", "changed", "bob", "because scale"]
        assert cells(out, "11:00:00") == ["2026-12-02 11:00:00", "autoscale", "6 -> 8", "rolled back",
                                          "AWX job 4711 (alice)", "because autoscale"]
        assert "3 -> 4" not in out                                       # only the last three
        assert "3 record(s), oldest first; 1 unreadable line(s) skipped." in out
        assert "No change recorded." in out                              # qfc-b has no log yet
        assert "changed=0" in out and "changed=1" not in out
    assert not log_b.exists()                                            # reading created nothing

    every = run_playbook(OPS_PLAYBOOK, inv, dict(extra, qfc_operations_limit=0))
    assert every.returncode == 0 and "6 record(s), oldest first" in every.stdout


def test_operations_log_module_refuses_what_it_cannot_read(tmp_path):
    module = "qfieldcloud.ops.qfc_operations_log_info"
    bad = run_module({"path": str(tmp_path), "limit": 5}, module=module)
    assert bad.failed and "not a regular file" in bad["msg"]
    negative = run_module({"path": str(tmp_path / "x.jsonl"), "limit": -1}, module=module)
    assert negative.failed and "limit must be 0" in negative["msg"]
    missing = run_module({"path": str(tmp_path / "x.jsonl")}, module=module, check=True)
    assert not missing.failed and missing["records"] == [] and missing["exists"] is False


@pytest.mark.skipif(not NEW_YORK.is_file(), reason="no zoneinfo database on this machine")
def test_capacity_report_draws_the_changes_in_each_hosts_time_zone(tmp_path):
    # Metrics from 2025-12-15 00:00:03 to 12-16 23:55:03, host local time. qfc-a runs in New York (UTC-5 in
    # December, its zone file fetched as its /etc/localtime), qfc-b at +05:30 from the inventory.
    logs = tmp_path / "hosts"
    logs.mkdir()
    (logs / "a.log").write_text(metrics_log(48))
    (logs / "b.log").write_text(metrics_log(48, seed=2))
    write_oplog(logs / "a.jsonl", [
        (utc(2025, 12, 9, 12, 0), "scale", 1, 2, "changed", BOB),           # more than 7 days before: not shown
        (utc(2025, 12, 15, 14, 30), "autoscale", 4, 6, "changed", AWX),     # 09:30 in New York
        (utc(2025, 12, 17, 2, 0), "autoscale", 6, 5, "failed", AWX),        # 12-16 21:00 in New York: inside
        (utc(2025, 12, 17, 6, 0), "autoscale", 5, 4, "changed", AWX),       # 12-17 01:00 there: after the end
    ])
    write_oplog(logs / "b.jsonl", [(utc(2025, 12, 16, 3, 0), "rollback", 8, 4, "rolled_back", BOB)])  # 08:30 there
    inv = inventory(tmp_path, {
        "qfc-a": {"qfc_metrics_log": str(logs / "a.log"), "qfc_operations_log": str(logs / "a.jsonl"),
                  "qfc_timezone_file": str(NEW_YORK)},
        "qfc-b": {"qfc_metrics_log": str(logs / "b.log"), "qfc_operations_log": str(logs / "b.jsonl"),
                  "qfc_timezone": "+05:30"},
    })
    report = tmp_path / "report"
    extra = {"qfc_report_dir": str(report), "qfc_report_window": "7d"}

    run = run_playbook(CAPACITY_PLAYBOOK, inv, extra)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "changes in this period: 3" in run.stdout, run.stdout[-3000:]
    md = (report / "capacity_report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| 2025-")]
    assert rows == [
        "| 2025-12-15 09:30:00 | qfc-a | autoscale | 4 -> 6 | changed | AWX job 4711 (alice) | because autoscale |",
        "| 2025-12-16 08:30:00 | qfc-b | rollback | 8 -> 4 | rolled back | bob | because rollback |",
        "| 2025-12-16 21:00:00 | qfc-a | autoscale | 6 -> 5 | failed | AWX job 4711 (alice) | because autoscale |",
    ]
    page = (report / "capacity_report.html").read_text()
    assert page.count(">4-&gt;6</text>") == 3 and page.count(">6-&gt;5 failed</text>") == 3
    assert page.count(">8-&gt;4 rolled back</text>") == 3
    assert (report / "logs" / "qfc-a.localtime").read_bytes() == NEW_YORK.read_bytes()
    assert not (report / "logs" / "qfc-b.localtime").exists()             # qfc_timezone given: nothing fetched

    again = run_playbook(CAPACITY_PLAYBOOK, inv, extra)
    assert again.returncode == 0 and task_status(again.stdout, "Write the capacity report") == "ok"

    # a host without an operations log is fine; without the option the report is the one without changes
    (logs / "b.jsonl").unlink()
    run = run_playbook(CAPACITY_PLAYBOOK, inv, extra)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "8 -> 4" not in (report / "capacity_report.md").read_text()
    off = run_playbook(CAPACITY_PLAYBOOK, inv, dict(extra, qfc_report_operations=False))
    assert off.returncode == 0, off.stdout + off.stderr
    assert "Changes in this period" not in (report / "capacity_report.md").read_text()


def test_capacity_report_module_refuses_a_bad_time_zone(tmp_path):
    log = tmp_path / "a.log"
    log.write_text(metrics_log(2))
    args = {"logs": {"a": str(log)}, "dest": str(tmp_path / "r"), "operations": {"a": None},
            "timezones": {"a": "Mars/Olympus"}}
    bad = run_module(args, module="qfieldcloud.ops.qfc_capacity_report")
    assert bad.failed and "Time zone of a" in bad["msg"] and not (tmp_path / "r").exists()
    garbage = tmp_path / "zone"
    garbage.write_text("not a zone file")
    bad = run_module(dict(args, timezones={"a": str(garbage)}), module="qfieldcloud.ops.qfc_capacity_report")
    assert bad.failed and "TZif" in bad["msg"]
    ok = run_module(dict(args, timezones={"a": "UTC"}), module="qfieldcloud.ops.qfc_capacity_report", check=True)
    assert not ok.failed and ok["changes"] == [] and ok["hosts"]["a"]["operations"]["log"] is False


def test_the_oplog_timestamps_are_utc_on_a_non_utc_controller(tmp_path, monkeypatch):
    # the report's conversion uses the host's zone, never the controller's TZ
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    log = tmp_path / "a.log"
    log.write_text(metrics_log(2))
    oplog = tmp_path / "a.jsonl"
    write_oplog(oplog, [(utc(2025, 12, 15, 0, 30), "scale", 1, 2, "changed", BOB)])
    run = run_module({"logs": {"a": str(log)}, "dest": str(tmp_path / "r"), "operations": {"a": str(oplog)},
                      "timezones": {"a": "UTC"}}, module="qfieldcloud.ops.qfc_capacity_report", check=True)
    assert not run.failed, run
    assert [c["local_time"] for c in run["changes"]] == ["2025-12-15 00:30:00"]


def test_operations_log_module_skips_every_bad_line_and_bounds_its_limit(tmp_path):
    # issue 21, defect 1: one bad line stopped the module (RecursionError, OverflowError), a huge limit crashed it.
    # The count is skipped_lines: a key named skipped made Ansible show the task as skipped, without its JSON.
    log = tmp_path / "operations.jsonl"
    write_oplog(log, [(utc(2026, 12, 2, 10, i), "scale", i, i + 1, "changed", BOB) for i in range(1, 4)])
    year_zero = (b'{"time": "0001-01-01T00:00:00+01:00", "action": "scale", "before": 1, "after": 2, '
                 b'"result": "changed", "reason": "year zero"}')
    with open(log, "ab") as handle:
        handle.write(b"[" * 100_000 + b"\n" + b"\xff\xfe\x00\n" + b'{"a": NaN}\n' + b'{"a": 1e400}\n' + year_zero
                     + b"\n" + b'{"a": ' + b"[" * 50 + b"]" * 50 + b"}\n"
                     + b'{"reason": "lone \\ud800", "time": "2026-12-02T11:00:00Z"}')  # no newline at the end
    inv = inventory(tmp_path, {"qfc-a": {"qfc_operations_log": str(log)}})
    every = run_playbook(OPS_PLAYBOOK, inv, {"qfc_operations_limit": 0, "qfc_become": False})
    assert every.returncode == 0, every.stdout + every.stderr
    assert "5 record(s), oldest first; 5 unreadable line(s) skipped." in every.stdout
    assert cells(every.stdout, "10:03:00")[2] == "3 -> 4" and "year zero" in every.stdout
    assert cells(every.stdout, "11:00:00")[-1] == "lone \ufffd"
    last = run_playbook(OPS_PLAYBOOK, inv, {"qfc_operations_limit": 2, "qfc_become": False})
    assert last.returncode == 0, last.stdout + last.stderr
    # only the part read counts: from the end back to the oldest record returned
    assert "2 record(s), oldest first; 1 unreadable line(s) skipped." in last.stdout and "10:03:00" not in last.stdout

    module = "qfieldcloud.ops.qfc_operations_log_info"
    direct = run_module({"path": str(log), "limit": 0}, module=module)
    assert not direct.failed and direct["skipped_lines"] == 5 and len(direct["records"]) == 5, direct.output
    for limit in (10 ** 20, 10_001, -1):
        bad = run_module({"path": str(log), "limit": limit}, module=module)
        assert bad.failed and "limit must be 0 (every record) or from 1 to 10000, got %d" % limit in bad["msg"]
        assert "Traceback" not in bad.output
    assert not run_module({"path": str(tmp_path / "none.jsonl"), "limit": 10_000}, module=module).failed
