"""playbooks/cleanup.yml (role job_cleanup) and playbooks/queue_report.yml, run as users run them."""

from __future__ import annotations

import re

from conftest import BIN, ROOT, assert_no_secrets, make_db_stack, run_playbook

from tests.support import datagen


def inventory(db, tmp_path, **host_vars):
    """A host whose qfc_project_src holds the .env that points at the test database."""
    project = tmp_path / "qfieldcloud"
    project.mkdir(exist_ok=True)
    (project / ".env").write_text(db.env_text())
    lines = ["qfieldcloud:", "  hosts:", "    qfc1:", "      ansible_connection: local",
             "      ansible_python_interpreter: %s" % (BIN / "python"), "      qfc_project_src: %s" % project]
    lines += ["      %s: %s" % kv for kv in host_vars.items()]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def stuck_jobs(db):
    (user,) = datagen.make_users(db.conn, 1)
    a, b, c = datagen.make_projects(db.conn, db.project_table, 3, user)
    return {
        "stale": datagen.add_job(db.conn, a, user, "started", created_ago_s=7300, started_ago_s=7200),
        "orphaned": datagen.add_job(db.conn, b, user, "queued", created_ago_s=7200),
        "pending": datagen.add_job(db.conn, c, user, "pending", created_ago_s=3 * 86400),
    }


def test_cleanup_playbook_check_then_run_then_idempotent(qfcdb, tmp_path):
    jobs = stuck_jobs(qfcdb)
    inv = inventory(qfcdb, tmp_path)
    playbook = ROOT / "playbooks" / "cleanup.yml"
    check = run_playbook(playbook, inv, check=True)
    assert check.returncode == 0, check.stdout
    assert "stale: 1 job(s) would be failed" in check.stdout
    assert "orphaned_queued: 1 job(s) would be failed" in check.stdout
    assert qfcdb.status(jobs["stale"]) == "started"
    first = run_playbook(playbook, inv)
    assert first.returncode == 0, first.stdout
    assert re.search(r"qfc1\s+: ok=\d+\s+changed=1\s", first.stdout)
    assert [qfcdb.status(jobs[k]) for k in ("stale", "orphaned", "pending")] == ["failed", "failed", "pending"]
    second = run_playbook(playbook, inv)
    assert re.search(r"qfc1\s+: ok=\d+\s+changed=0\s", second.stdout), second.stdout
    assert_no_secrets(first.stdout + second.stdout)
    assert qfcdb.pg.password not in first.stdout


def test_cleanup_playbook_age_mode_and_argument_spec(qfcdb, tmp_path):
    jobs = stuck_jobs(qfcdb)
    inv = inventory(qfcdb, tmp_path)
    playbook = ROOT / "playbooks" / "cleanup.yml"
    bad = run_playbook(playbook, inv, {"qfc_cleanup_modes": ["sometimes"]})
    assert bad.returncode != 0 and "qfc_cleanup_modes" in bad.stdout
    run = run_playbook(playbook, inv, {"qfc_cleanup_modes": ["age"], "qfc_cleanup_age_older_than": "2d",
                                       "qfc_cleanup_age_statuses": ["pending"], "qfc_cleanup_allow_pending": True})
    assert run.returncode == 0, run.stdout
    assert "age: 1 job(s) failed" in run.stdout and jobs["pending"] in run.stdout
    assert qfcdb.status(jobs["pending"]) == "failed" and qfcdb.status(jobs["stale"]) == "started"


def test_queue_report(qfcdb, tmp_path):
    stuck_jobs(qfcdb)
    stack = make_db_stack(tmp_path, qfcdb, replicas=0)  # no worker, so the queue holds still while we read it
    inv = tmp_path / "report.yml"
    inv.write_text("qfieldcloud:\n  hosts:\n    qfc1:\n      ansible_connection: local\n"
                   "      ansible_python_interpreter: %s\n      qfc_project_src: %s\n" % (BIN / "python", stack.path))
    try:
        proc = run_playbook(ROOT / "playbooks" / "queue_report.yml", inv)
    finally:
        stack.down()
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout
    assert "queue depth 2 (pending 1, queued 1, started 1)" in out
    assert "1 could start now (one per free project)" in out
    assert "stuck: 1 stale, 1 queued never started, 1 old pending" in out
    assert "warning: 1 jobs queued/started past the worker timeout" in out
    assert "workers: 0 running of 0 configured, 0 busy; recommended 1" in out
    assert "oldest pending 2592" in out
    assert "last hour: 0 finished, 0 failed, success -;" in out
    assert "decision: MONITOR" in out
    assert_no_secrets(out)
