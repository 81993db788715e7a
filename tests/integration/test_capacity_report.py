"""playbooks/capacity_report.yml and qfc_capacity_report, run as users run them: fetch the hosts' queue metrics logs,
write the Markdown and HTML reports on the controller, check mode, diff, idempotence."""

from __future__ import annotations

import random
import re
import subprocess
from datetime import datetime, timedelta

import pytest
from conftest import BIN, ROOT, ansible_env, run_module, run_playbook

PLAYBOOK = ROOT / "playbooks" / "capacity_report.yml"
MODULE = "qfieldcloud.ops.qfc_capacity_report"
T0 = datetime(2025, 12, 15, 0, 0, 3)


def metrics_log(hours, seed=1, start=T0):
    """A history in the collector's format (19 columns, no header), with one database outage."""
    rnd = random.Random(seed)
    lines = []
    for i in range(hours * 12):
        stamp = (start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S")
        if i in (30, 31):
            lines.append(stamp + "," * 16 + ",error,connection to server at 127.0.0.1; port 5433 failed")
            continue
        depth, busy = rnd.randint(0, 6), rnd.randint(0, 4)
        finished, failed = rnd.randint(20, 40), rnd.randint(0, 2)
        rate = ("%.4f" % (finished / (finished + failed))).rstrip("0").rstrip(".")
        values = [stamp, depth, max(depth - 1, 0), min(depth, 1), busy, max(depth - 2, 0), 4, 4, busy, finished,
                  failed, rate, "31.5", "118.2", 0, 0, 0, "ok", ""]
        lines.append(",".join(str(v) for v in values))
    return "\n".join(lines) + "\n"


@pytest.fixture
def fleet(tmp_path):
    """Two local hosts: qfc-a with two days of metrics, qfc-b with an empty log; the report in tmp_path/report."""
    logs = tmp_path / "hosts"
    logs.mkdir()
    (logs / "a.log").write_text(metrics_log(48))
    (logs / "b.log").write_text("")
    lines = ["qfieldcloud:", "  hosts:"]
    for name, log in (("qfc-a", logs / "a.log"), ("qfc-b", logs / "b.log")):
        lines += ["    %s:" % name, "      ansible_connection: local",
                  "      ansible_python_interpreter: %s" % (BIN / "python"), "      qfc_metrics_log: %s" % log]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report"
    return inventory, report, logs


def recap(stdout, host):
    match = re.search(r"^%s\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % re.escape(host),
                      stdout, re.M)
    assert match, stdout
    return dict(zip(("ok", "changed", "unreachable", "failed"), (int(g) for g in match.groups())))


def task_status(stdout, task):
    """'ok' or 'changed' for a run_once task."""
    match = re.search(r"TASK \[%s\] \*+\n(?:.*\n)*?(ok|changed|fatal): \[" % re.escape(task), stdout)
    assert match, stdout
    return match.group(1)


def test_playbook_check_run_idempotent(fleet):
    inventory, report, _logs = fleet
    extra = {"qfc_report_dir": str(report)}
    md, page = report / "capacity_report.md", report / "capacity_report.html"

    check = run_playbook(PLAYBOOK, inventory, extra, check=True, diff=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert task_status(check.stdout, "Write the capacity report") == "changed"
    assert not md.exists() and not page.exists()
    assert "+# QFieldCloud capacity report" in check.stdout            # the diff of the Markdown report
    # the logs are fetched in check mode too (reading the hosts changes nothing on them)
    assert (report / "logs" / "qfc-a.log").read_text() == metrics_log(48)

    first = run_playbook(PLAYBOOK, inventory, extra)
    assert first.returncode == 0, first.stdout + first.stderr
    assert task_status(first.stdout, "Write the capacity report") == "changed"
    text, html = md.read_text(), page.read_text()
    assert "## qfc-a" in text and "## qfc-b" in text
    assert "| qfc-a | 576 | 99.7% |" in text
    assert "no data: the log is empty" in text
    assert "2 sample(s) could not read the queue" in text
    assert "Period: 2025-12-15 00:00:03 to 2025-12-16 23:55:03 (host local time), window 7 d" in text
    assert html.count("<svg") == 3 and "http" not in html
    assert "fleet: STOP - average queue depth" in first.stdout
    assert "hosts: qfc-a: STOP, qfc-b: MONITOR" in first.stdout

    stamps = (md.stat().st_mtime_ns, page.stat().st_mtime_ns)
    second = run_playbook(PLAYBOOK, inventory, extra)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout, "qfc-a")["changed"] == 0 and recap(second.stdout, "qfc-b")["changed"] == 0
    assert (md.stat().st_mtime_ns, page.stat().st_mtime_ns) == stamps

    again = run_playbook(PLAYBOOK, inventory, extra, check=True, diff=True)
    assert again.returncode == 0
    assert recap(again.stdout, "qfc-a")["changed"] == 0
    assert "+# QFieldCloud" not in again.stdout


def test_playbook_rewrites_when_a_log_grows_and_ignores_a_missing_log(fleet, tmp_path):
    inventory, report, logs = fleet
    extra = {"qfc_report_dir": str(report), "qfc_report_window": "24h", "qfc_report_title": "Weekly capacity"}
    assert run_playbook(PLAYBOOK, inventory, extra).returncode == 0
    before = (report / "capacity_report.md").read_text()
    assert before.startswith("# Weekly capacity\n") and "window 1 d" in before
    with open(logs / "a.log", "a") as handle:
        handle.write("2025-12-17 00:00:03,12,12,0,4,10,4,4,4,30,0,1,31.5,118.2,0,0,0,ok,\n")
    (logs / "b.log").unlink()                         # b's copy from the first run must not be used
    run = run_playbook(PLAYBOOK, inventory, extra)
    assert run.returncode == 0, run.stdout + run.stderr
    assert task_status(run.stdout, "Write the capacity report") == "changed"
    after = (report / "capacity_report.md").read_text()
    assert "to 2025-12-17 00:00:03" in after
    assert "no data: no log was fetched from this host" in after


def test_module_check_mode_diff_and_errors(tmp_path):
    log = tmp_path / "a.log"
    log.write_text(metrics_log(3))
    dest = tmp_path / "out" / "nested"
    args = {"logs": {"qfc-a": str(log), "qfc-b": None}, "dest": str(dest), "window": "2h"}

    check = run_module(args, check=True, diff=True, module=MODULE)
    assert not check.failed, check
    assert check["changed"] is True and not dest.exists()
    assert "--- before: /dev/null" in check.output                     # the printed diff
    assert "+# QFieldCloud capacity report" in check.output
    assert check["hosts"]["qfc-a"]["samples"] == 24 and check["hosts"]["qfc-b"]["log"] == "missing"
    assert check["decisions"] == {"qfc-a": "stop", "qfc-b": "monitor", "_fleet": "stop"}

    run = run_module(args, module=MODULE)
    assert run["changed"] is True and (dest / "capacity_report.html").is_file()
    assert run["files"]["markdown"] == str(dest / "capacity_report.md")
    assert run["fleet"]["jobs"]["hours_covered"] == 2
    assert run_module(args, module=MODULE)["changed"] is False

    bad = run_module(dict(args, window="a week"), module=MODULE)
    assert bad.failed and "Invalid option" in bad["msg"]
    missing = run_module(dict(args, logs={"qfc-a": str(tmp_path / "nope.log")}), module=MODULE)
    assert missing.failed and "not found" in missing["msg"]
    (tmp_path / "file").write_text("")
    not_dir = run_module(dict(args, dest=str(tmp_path / "file")), module=MODULE)
    assert not_dir.failed and "not a directory" in not_dir["msg"]


def test_ansible_doc_renders():
    proc = subprocess.run([str(BIN / "ansible-doc"), MODULE], cwd=ROOT, env=ansible_env(), capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for fragment in ("logs", "window", "duration_window", "check_mode", "diff_mode", "idempotent", "log-normal"):
        assert fragment in proc.stdout, fragment
