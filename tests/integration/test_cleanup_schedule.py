"""The job_cleanup role's own schedule (cron.d entry or systemd timer) on real parts: a throwaway PostgreSQL with
QFieldCloud's schema, real ansible-playbook runs, the exact command from the cron entry, systemd-analyze on the units.

The scheduled command must fail exactly the jobs the module fails, the same way: the same data is copied into a
twin database (CREATE DATABASE ... TEMPLATE), the module runs on the twin, the cron command on the original, and the
rows are compared."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import BIN, ROOT, QfcDb, assert_no_secrets, run_module, run_playbook
from psycopg2 import sql

from tests.support import datagen

PLAYBOOK = ROOT / "playbooks" / "cleanup.yml"
CLEANUP = "qfieldcloud.ops.qfc_job_cleanup"
MODES = ["stale", "orphaned_queued"]


def inventory(db, tmp_path, with_password=True, **host_vars):
    """One local host; the project's .env points at ``db``; the schedule's paths are in tmp."""
    project = tmp_path / "qfieldcloud"
    project.mkdir(exist_ok=True)
    (project / ".env").write_text(db.env_text())
    (tmp_path / "cron.d").mkdir(exist_ok=True)
    (tmp_path / "systemd").mkdir(exist_ok=True)
    values = {"ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python"),
              "qfc_project_src": str(project), "qfc_cleanup_schedule_dir": str(tmp_path / "opt" / "cleanup"),
              "qfc_cleanup_cron_file": str(tmp_path / "cron.d" / "qfieldcloud-job-cleanup"),
              "qfc_cleanup_systemd_dir": str(tmp_path / "systemd"),
              "qfc_cleanup_schedule_python": str(BIN / "python"),
              "qfc_cleanup_schedule_install_packages": False}
    if with_password:  # the password given to the role (not only in .env): it goes to its own 0600 file
        values["qfc_db_password"] = db.pg.password
    values.update(host_vars)
    path = tmp_path / "inventory.yml"
    path.write_text("qfieldcloud:\n  hosts:\n    qfc1:\n"
                    + "".join("      %s: %s\n" % (k, json.dumps(v)) for k, v in values.items()))
    return path, values


def paths(values):
    directory = ROOT.joinpath(values["qfc_cleanup_schedule_dir"])
    return {"dir": directory, "config": directory / "cleanup.json", "password": directory / "db.password",
            "cron": ROOT.joinpath(values["qfc_cleanup_cron_file"]),
            "service": ROOT.joinpath(values["qfc_cleanup_systemd_dir"], "qfc-job-cleanup.service"),
            "timer": ROOT.joinpath(values["qfc_cleanup_systemd_dir"], "qfc-job-cleanup.timer")}


def changed(proc):
    match = re.search(r"qfc1\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", proc.stdout)
    assert match and match.group(2) == "0", proc.stdout[-4000:]
    return int(match.group(1))


def cron_command(p):
    lines = [ln for ln in p["cron"].read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1, lines
    return lines[0]


def run_cron_command(p, timeout=120):
    """The cron entry's command exactly, through sh as cron runs it, but with stdout kept."""
    command = cron_command(p).split(None, 6)[6].replace(" >/dev/null", "")
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=False)


def stuck_jobs(db):
    (user,) = datagen.make_users(db.conn, 1)
    a, b, c, d = datagen.make_projects(db.conn, db.project_table, 4, user)
    delta_job, deltas = datagen.add_delta_apply_job(db.conn, d, user, n_deltas=2, status="started",
                                                    created_ago_s=9000, started_ago_s=8000)
    return {"stale": datagen.add_job(db.conn, a, user, "started", created_ago_s=7300, started_ago_s=7200),
            "orphaned": datagen.add_job(db.conn, b, user, "queued", created_ago_s=7200),
            "pending": datagen.add_job(db.conn, c, user, "pending", created_ago_s=3 * 86400),
            "delta_apply": delta_job, "deltas": deltas}


def twin(db, tmp_path):
    """A copy of ``db`` (same rows, same ids) with its own .env; dropped by the caller."""
    name = db.name + "_twin"
    db.conn.close()
    admin = db.pg.connect(dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(db.name)))
    finally:
        admin.close()
        db.conn = db.pg.connect(dbname=db.name)
    env_file = tmp_path / "twin.env"
    copy = QfcDb(db.pg, name, db.version, env_file)
    env_file.write_text(copy.env_text())
    return copy


def drop(db):
    db.conn.close()
    admin = db.pg.connect(dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))
    admin.close()


def rows(db):
    """Every job and delta as the cleanup leaves them, without what differs by when it ran."""
    jobs = {}
    for job_id, status, output, stored, finished in db.all(
            "SELECT id::text, status, output, feedback, finished_at IS NOT NULL FROM core_job ORDER BY id"):
        feedback = stored
        if isinstance(stored, dict) and isinstance(stored.get("qfc_cleanup"), dict):
            feedback = dict(stored, qfc_cleanup={k: v for k, v in stored["qfc_cleanup"].items() if k != "at"})
        jobs[job_id] = (status, output, feedback, finished)
    deltas = db.all("SELECT id::text, last_status, last_feedback IS NOT NULL FROM core_delta ORDER BY id")
    applied = db.all("SELECT apply_job_id::text, delta_id::text, status FROM core_applyjobdelta ORDER BY 1, 2")
    return jobs, deltas, applied


def test_cron_schedule_runs_like_the_module_is_idempotent_check_safe_and_removable(qfcdb, tmp_path):
    jobs = stuck_jobs(qfcdb)
    other = twin(qfcdb, tmp_path)
    try:
        inv, values = inventory(qfcdb, tmp_path, qfc_cleanup_schedule="cron")
        p = paths(values)
        # check mode predicts the install and writes nothing
        assert changed(run_playbook(PLAYBOOK, inv, check=True, diff=True)) > 0
        assert not p["dir"].exists() and not p["cron"].exists()
        # the install, with --diff: the password is never shown
        first = run_playbook(PLAYBOOK, inv, diff=True)
        assert changed(first) > 0
        assert qfcdb.pg.password not in first.stdout + first.stderr
        assert_no_secrets(first.stdout)
        # its read-only run as the schedule's user says what a run would fail, and fails nothing
        assert "stale: 2 jobs would be failed (check)" in first.stdout
        assert "orphaned_queued: 1 job would be failed (check)" in first.stdout
        assert qfcdb.status(jobs["stale"]) == "started" and qfcdb.status(jobs["orphaned"]) == "queued"
        # the cron.d entry
        text = p["cron"].read_text()
        assert "#Ansible: qfieldcloud job cleanup" in text
        assert cron_command(p) == "17 3 * * 0 root %s %s/bin/qfc-job-cleanup --config %s >/dev/null" % (
            BIN / "python", p["dir"], p["config"])
        assert oct(p["config"].stat().st_mode & 0o777) == "0o600"
        assert oct(p["password"].stat().st_mode & 0o777) == "0o600"
        assert p["password"].read_text().strip() == qfcdb.pg.password
        config = json.loads(p["config"].read_text())
        assert qfcdb.pg.password not in p["config"].read_text()
        assert config["modes"] == MODES and config["timeout"] == 600
        copied = p["dir"] / "lib/ansible_collections/qfieldcloud/ops/plugins/module_utils/_cleanup.py"
        assert copied.read_text() == (ROOT / "plugins/module_utils/_cleanup.py").read_text()
        # idempotent, and check mode agrees
        assert changed(run_playbook(PLAYBOOK, inv)) == 0
        assert changed(run_playbook(PLAYBOOK, inv, check=True, diff=True)) == 0

        # the cron command for real, and the module on the twin: the same jobs, failed the same way
        cron = run_cron_command(p)
        assert cron.returncode == 0, cron.stdout + cron.stderr
        lines = [ln for ln in cron.stdout.splitlines() if ln]
        assert [ln.split(":")[1].strip() for ln in lines] == MODES
        assert qfcdb.pg.password not in cron.stdout + cron.stderr
        counts = {}
        for mode in MODES:
            result = run_module({"env_file": str(other.env_file), "mode": mode}, module=CLEANUP)
            assert not result.failed, result
            counts[mode] = result["count"]
            ids = [j["id"] for j in result["jobs"]]
            line = next(ln for ln in lines if ln.startswith("qfc-job-cleanup: %s:" % mode))
            assert "%s: %d job%s failed (threshold %ss, worker timeout 600s from env)" % (
                mode, result["count"], "" if result["count"] == 1 else "s", result["threshold_s"]) in line
            assert all(i in line for i in ids)
        assert counts == {"stale": 2, "orphaned_queued": 1}
        assert rows(qfcdb) == rows(other)
        assert [qfcdb.status(jobs[k]) for k in ("stale", "orphaned", "delta_apply", "pending")] == [
            "failed", "failed", "failed", "pending"]
        again = run_cron_command(p)
        assert again.returncode == 0 and "stale: 0 jobs failed" in again.stdout

        # state=absent removes what the role installed, and runs no cleanup
        removed = run_playbook(PLAYBOOK, inv, {"qfc_cleanup_schedule_state": "absent"})
        assert changed(removed) > 0
        assert not p["cron"].exists() and not p["dir"].exists()
        assert p["cron"].parent.exists()
        assert changed(run_playbook(PLAYBOOK, inv, {"qfc_cleanup_schedule_state": "absent"})) == 0
    finally:
        drop(other)


def test_systemd_units_are_written_verified_and_a_missing_systemd_says_what_to_do(qfcdb, tmp_path):
    assert not os.path.isdir("/run/systemd/system"), "this test expects a host without a running systemd"
    inv, values = inventory(qfcdb, tmp_path, qfc_cleanup_schedule="systemd",
                            qfc_cleanup_schedule_on_calendar="Mon *-*-* 04:00:00")
    p = paths(values)
    proc = run_playbook(PLAYBOOK, inv)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert ("The unit files %s and .timer were written, but systemd is not running on this host (no "
            "/run/systemd/system)" % p["service"]) in out, proc.stdout[-3000:]
    assert "systemctl daemon-reload && systemctl enable --now qfc-job-cleanup.timer" in out
    assert "qfc_cleanup_schedule=cron" in out
    service, timer = p["service"].read_text(), p["timer"].read_text()
    assert "ExecStart=%s %s/bin/qfc-job-cleanup --config %s" % (BIN / "python", p["dir"], p["config"]) in service
    assert "User=root" in service and "Type=oneshot" in service
    assert "OnCalendar=Mon *-*-* 04:00:00" in timer and "Persistent=true" in timer
    verify = subprocess.run(["systemd-analyze", "verify", str(p["service"]), str(p["timer"])],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stderr
    assert qfcdb.pg.password not in service + timer
    # switching to cron removes the units; absent removes the rest
    assert changed(run_playbook(PLAYBOOK, inv, {"qfc_cleanup_schedule": "cron"})) > 0
    assert not p["service"].exists() and not p["timer"].exists() and p["cron"].exists()
    assert changed(run_playbook(PLAYBOOK, inv, {"qfc_cleanup_schedule_state": "absent"})) > 0
    assert not p["cron"].exists() and not p["dir"].exists()


def test_run_now_with_a_schedule_runs_the_module_as_well(qfcdb, tmp_path):
    jobs = stuck_jobs(qfcdb)
    inv, _values = inventory(qfcdb, tmp_path, qfc_cleanup_schedule="cron", qfc_cleanup_run_now=True)
    proc = run_playbook(PLAYBOOK, inv)
    assert changed(proc) > 0
    assert "stale: 2 jobs would be failed (check)" in proc.stdout  # the installed command's read-only run first
    assert "stale: 2 job(s) failed" in proc.stdout and "orphaned_queued: 1 job(s) failed" in proc.stdout
    assert qfcdb.status(jobs["stale"]) == "failed" and qfcdb.status(jobs["pending"]) == "pending"


def test_units_that_the_role_did_not_write_are_left_alone(qfcdb, tmp_path):
    inv, values = inventory(qfcdb, tmp_path)
    p = paths(values)
    p["timer"].write_text("[Timer]\nOnCalendar=daily\n")
    proc = run_playbook(PLAYBOOK, inv, {"qfc_cleanup_schedule_state": "absent"})
    assert proc.returncode != 0 and "were not written by this role" in proc.stdout
    assert p["timer"].exists()


@pytest.mark.parametrize("extra, message", [
    ({"qfc_cleanup_schedule": "weekly"}, "qfc_cleanup_schedule"),
    ({"qfc_cleanup_schedule_cron": "17 3 * *"},
     "it needs 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ({"qfc_cleanup_schedule_cron": "61 3 * * 0"}, "minute field 61: 61 is not 0 to 59"),
    ({"qfc_cleanup_schedule_cron": "17 3 * * funday"}, "day of week field funday: funday is not 0 to 7"),
    ({"qfc_cleanup_schedule_cron": "17 3 * * 0; rm -rf /"}, "it needs 5 fields"),
    ({"qfc_cleanup_schedule_cron": "@reboot"}, "@reboot is not one of @hourly"),
    ({"qfc_project_src": ""}, "qfc_project_src is required with a schedule"),
    ({"qfc_project_src": "/nonexistent/qfieldcloud"}, "has no .env"),
    ({"qfc_cleanup_schedule": "systemd", "qfc_cleanup_schedule_on_calendar": "someday"},
     "is not a systemd calendar expression"),
    ({"qfc_cleanup_schedule_timeout": 0}, "qfc_cleanup_schedule_timeout must be a whole number from 1 to 86400"),
    ({"qfc_cleanup_schedule_dir": "/opt"}, "qfc_cleanup_schedule_dir must be an absolute path at least two levels"),
    # a trailing newline or carriage return ($ matches before a final newline: "cleanup\n" and a cron entry split
    # over three lines used to converge); {tmp} is the test's directory, {python} the test interpreter
    ({"qfc_cleanup_schedule_dir": "{tmp}/opt/cleanup\n"}, r'qfc_cleanup_schedule_dir must be an absolute path'
                                                          r' at least two levels deep'),
    ({"qfc_cleanup_schedule_dir": "{tmp}/opt/cleanup/\n"}, r'opt/cleanup/\n"'),
    ({"qfc_cleanup_schedule_dir": "{tmp}/opt/cleanup\r"}, r'cleanup\r"'),
    ({"qfc_cleanup_schedule_python": "{python}\n"}, "qfc_cleanup_schedule_python must be an absolute path"),
    ({"qfc_cleanup_cron_file": "{tmp}/cron.d/qfieldcloud-job-cleanup\n"}, "qfc_cleanup_cron_file must be"),
    ({"qfc_cleanup_cron_file": "qfc.cleanup"}, "qfc_cleanup_cron_file must be"),
    ({"qfc_cleanup_schedule": "systemd", "qfc_cleanup_systemd_dir": "{tmp}/systemd\n"},
     "qfc_cleanup_systemd_dir must be an absolute path"),
    ({"qfc_cleanup_schedule": "systemd", "qfc_cleanup_schedule_on_calendar": "daily\nExecStartPre=/bin/true"},
     "qfc_cleanup_schedule_on_calendar must be one line"),
])
def test_bad_schedule_input_is_refused_before_any_change(qfcdb, tmp_path, extra, message):
    jobs = stuck_jobs(qfcdb)
    inv, values = inventory(qfcdb, tmp_path, qfc_cleanup_schedule="cron")
    p = paths(values)
    extra = {k: v.replace("{tmp}", str(tmp_path)).replace("{python}", str(BIN / "python")) if isinstance(v, str)
             else v for k, v in extra.items()}
    proc = run_playbook(PLAYBOOK, inv, extra)
    assert proc.returncode != 0
    assert message in " ".join(proc.stdout.split()), proc.stdout[-3000:]
    assert not p["dir"].exists() and not p["cron"].exists() and not p["timer"].exists()
    # nothing at all: no directory under another name ("cleanup\n"), no cron file or unit under another name
    assert not (tmp_path / "opt").exists()
    assert list((tmp_path / "cron.d").iterdir()) == [] and list((tmp_path / "systemd").iterdir()) == []
    assert qfcdb.status(jobs["stale"]) == "started"
    assert qfcdb.pg.password not in proc.stdout + proc.stderr


def test_the_command_has_a_lock_and_one_deadline_against_a_hung_database(qfcdb, tmp_path):
    jobs = stuck_jobs(qfcdb)
    timeout = 4
    inv, values = inventory(qfcdb, tmp_path, qfc_cleanup_schedule="cron", qfc_cleanup_schedule_timeout=timeout,
                            qfc_cleanup_lock_timeout=600000, qfc_cleanup_statement_timeout=600000)
    p = paths(values)
    assert changed(run_playbook(PLAYBOOK, inv)) > 0

    # another run holds the lock: this one does nothing and says so at once
    lock_file = p["dir"] / "var" / "qfc-job-cleanup.lock"
    with open(lock_file, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        locked = run_cron_command(p)
        assert time.monotonic() - started < 10
    assert locked.returncode == 4, locked.stdout + locked.stderr
    assert "holds the lock %s; nothing was done" % lock_file in locked.stderr
    assert qfcdb.status(jobs["stale"]) == "started"

    # core_job locked by another session, and the backend waiting for it stopped: the run ends at its deadline
    blocker = qfcdb.pg.connect(dbname=qfcdb.name)
    monitor = qfcdb.pg.connect(dbname=qfcdb.name)
    monitor.autocommit = True
    stopped = None
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE")
        command = cron_command(p).split(None, 6)[6].replace(" >/dev/null", "")
        started = time.monotonic()
        run = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while stopped is None and time.monotonic() < deadline and run.poll() is None:
            with monitor.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'qfieldcloud.ops'"
                            " AND datname = %s AND wait_event_type = 'Lock'", [qfcdb.name])
                row = cur.fetchone()
            if row:
                stopped = row[0]
                os.kill(stopped, signal.SIGSTOP)
            time.sleep(0.02)
        assert stopped is not None, "the command's backend never waited for the lock"
        out, err = run.communicate(timeout=timeout + 30)
        elapsed = time.monotonic() - started
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        blocker.rollback()
        blocker.close()
        monitor.close()
    assert elapsed < timeout + 5, elapsed
    assert run.returncode == 2, out + err
    assert "stale: FAILED: Cleanup failed on" in err and "the server stopped answering" in err
    assert "out of time (timeout %ss): orphaned_queued not run" % timeout in err
    assert qfcdb.pg.password not in out + err
    assert qfcdb.status(jobs["stale"]) == "started"
