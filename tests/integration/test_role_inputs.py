"""The roles' inputs and deadlines, through real ansible-playbook runs of playbooks/scale.yml and playbooks/cleanup.yml.

- Bad numbers (non-finite, negative, zero where it means nothing, huge) and bad names (a newline or `=` in the
  variable or service name) are refused with a message that names the variable, before anything changes: the .env is
  byte-identical and no backup appears.
- The scale role's health gate has a deadline (qfc_health_gate_timeout): a database whose postmaster is stopped with
  SIGSTOP (it accepts the TCP connection and then never answers) fails the host in time with a clear message."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from conftest import BIN, ROOT, ansible_env, make_stack

from tests.support.pgcluster import PgCluster

SCALE = ROOT / "playbooks" / "scale.yml"
CLEANUP = ROOT / "playbooks" / "cleanup.yml"


def run(playbook, inventory, extra_vars, check=False, timeout=300):
    cmd = [str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory), "-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def write_inventory(tmp_path, project, **host_vars):
    lines = ["qfieldcloud:", "  hosts:", "    qfc1:", "      ansible_connection: local",
             "      ansible_python_interpreter: %s" % (BIN / "python"), "      qfc_project_src: %s" % project]
    lines += ["      %s: %s" % kv for kv in host_vars.items()]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_health_gate_fails_in_time_when_the_database_hangs(tmp_path):
    """A stopped postmaster: the TCP connection is accepted by the kernel, the login never answered. The gate's
    task timeout (shorter here than the module's own connect_timeout) fails the host before anything changes."""
    stack = make_stack(tmp_path, start=False)  # the gate fails before the change: nothing to run
    before = stack.env_text()
    gate_timeout = 4
    with PgCluster() as pg:
        inventory = write_inventory(tmp_path, stack.path, qfc_db_host=pg.host, qfc_db_port=pg.port,
                                    qfc_db_user=pg.user, qfc_db_name=pg.dbname)
        postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)
        try:
            start = time.monotonic()
            proc = run(SCALE, inventory, {"qfc_worker_replicas": 3, "qfc_db_password": pg.password,
                                          "qfc_health_gate_timeout": gate_timeout})
            elapsed = time.monotonic() - start
        finally:
            os.kill(postmaster, signal.SIGCONT)
    print("hung database: the gate failed the run after %.1f s (qfc_health_gate_timeout=%d)" % (elapsed, gate_timeout))
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert ("the health gate could not read the queue within qfc_health_gate_timeout=%ds: the database (or the "
            "Docker Engine) does not answer" % gate_timeout) in proc.stdout, proc.stdout[-3000:]
    assert "failed at the health gate before the change" in proc.stdout
    assert elapsed < gate_timeout + 10  # measured 6.9 s with 4: ansible-playbook starts, prints the summary
    assert stack.env_text() == before and stack.backups() == []
    assert pg.password not in proc.stdout + proc.stderr


def test_health_gate_after_the_change_hangs_and_the_host_is_scaled_back(tmp_path):
    """The database answers the gate before the change, then hangs (SIGSTOP as soon as .env holds the new count):
    the gate after the change fails at its deadline and the role scales the host back to the count it had."""
    stack = make_stack(tmp_path)  # 2 workers running
    gate_timeout = 4
    try:
        with PgCluster() as pg:
            pg.load_schema()
            inventory = write_inventory(tmp_path, stack.path, qfc_db_host=pg.host, qfc_db_port=pg.port,
                                        qfc_db_user=pg.user, qfc_db_name=pg.dbname)
            postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
            stopped = threading.Event()
            done = threading.Event()

            def stop_when_changed():
                while not done.is_set():
                    if stack.env_value() == "3":
                        os.kill(postmaster, signal.SIGSTOP)
                        stopped.set()
                        return
                    time.sleep(0.05)

            watcher = threading.Thread(target=stop_when_changed, daemon=True)
            watcher.start()
            try:
                start = time.monotonic()
                # the delay gives the watcher time to stop the server before the gate reads the queue again
                proc = run(SCALE, inventory, {"qfc_worker_replicas": 3, "qfc_db_password": pg.password,
                                              "qfc_health_gate_timeout": gate_timeout, "qfc_health_gate_delay": 2})
                elapsed = time.monotonic() - start
            finally:
                done.set()
                watcher.join()
                os.kill(postmaster, signal.SIGCONT)
        print("hung database after the change: the run took %.1f s, rolled back (qfc_health_gate_timeout=%d)"
              % (elapsed, gate_timeout))
        assert stopped.is_set()
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert "the health gate could not read the queue within qfc_health_gate_timeout=%ds" % gate_timeout \
            in proc.stdout, proc.stdout[-3000:]
        assert "failed at the health gate after the change, rolled back" in proc.stdout, proc.stdout[-3000:]
        assert stack.env_value() == "2" and len(stack.running()) == 2
        assert pg.password not in proc.stdout + proc.stderr
    finally:
        stack.down()


def test_queue_report_fails_in_time_when_the_database_hangs(tmp_path):
    """playbooks/queue_report.yml has the same deadline (qfc_queue_report_timeout) for its read of the queue."""
    stack = make_stack(tmp_path, start=False)
    report_timeout = 4
    with PgCluster() as pg:
        inventory = write_inventory(tmp_path, stack.path, qfc_db_host=pg.host, qfc_db_port=pg.port,
                                    qfc_db_user=pg.user, qfc_db_name=pg.dbname)
        postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)
        try:
            start = time.monotonic()
            proc = run(ROOT / "playbooks" / "queue_report.yml", inventory,
                       {"qfc_db_password": pg.password, "qfc_queue_report_timeout": report_timeout})
            elapsed = time.monotonic() - start
        finally:
            os.kill(postmaster, signal.SIGCONT)
    print("hung database: queue_report failed after %.1f s (qfc_queue_report_timeout=%d)" % (elapsed, report_timeout))
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert ("the queue could not be read within qfc_queue_report_timeout=%ds: the database (or the Docker Engine) "
            "does not answer" % report_timeout) in proc.stdout, proc.stdout[-3000:]
    assert elapsed < report_timeout + 10
    assert pg.password not in proc.stdout + proc.stderr


NAN, INF = float("nan"), float("inf")
# One run per kind of bad input; the role names every bad variable in one message. Values are what -e JSON gives the
# role: numbers (NaN and Infinity too) and strings.
SCALE_BAD = {
    "non-finite floats": {"qfc_settle_time": NAN, "qfc_max_replicas_per_core": INF},
    "non-finite strings": {"qfc_settle_time": "nan", "qfc_max_replicas_per_core": "-inf"},
    "negative": {"qfc_wait_timeout": -5, "qfc_settle_time": -1, "qfc_max_replicas_per_core": -2.5,
                 "qfc_lock_timeout": -1, "qfc_auto_max_replicas": -1, "qfc_health_gate_delay": -1,
                 "qfc_health_gate_timeout": -1, "qfc_worker_timeout_s": -1, "qfc_db_port": -1,
                 "qfc_command_timeout": -1, "qfc_backup_keep": -1},
    "zero where it means nothing": {"qfc_wait_timeout": 0, "qfc_max_replicas_per_core": 0,
                                    "qfc_auto_max_replicas": 0, "qfc_health_gate_timeout": 0,
                                    "qfc_command_timeout": 0, "qfc_backup_keep": 0},
    "huge": {"qfc_wait_timeout": 10 ** 12, "qfc_settle_time": 1e300, "qfc_max_replicas_per_core": 1e9,
             "qfc_lock_timeout": 10 ** 15, "qfc_auto_max_replicas": 10 ** 6, "qfc_health_gate_delay": 10 ** 9,
             "qfc_health_gate_timeout": 10 ** 9, "qfc_worker_timeout_s": 10 ** 12, "qfc_db_port": 70000,
             "qfc_command_timeout": 10 ** 9, "qfc_backup_keep": 10 ** 9},
    "settle time not shorter than the wait": {"qfc_settle_time": 30, "qfc_wait_timeout": 30},
    "env_var with a newline": {"qfc_env_var": "QFC_X\nPOSTGRES_PASSWORD"},
    "env_var with =": {"qfc_env_var": "QFC_X=1"},
    "service with a newline": {"qfc_worker_service": "worker_wrapper\napp"},
    "service with =": {"qfc_worker_service": "worker_wrapper=app"},
}
# what the message must say for each variable (the settle/wait rule names both)
EXPECTED = {"settle time not shorter than the wait": ["qfc_wait_timeout (30 s) must be longer than qfc_settle_time"]}


def scale_inventory(tmp_path):
    stack = make_stack(tmp_path, start=False)  # refused before anything: nothing needs to run
    return stack, write_inventory(tmp_path, stack.path)


@pytest.mark.parametrize("case", list(SCALE_BAD))
def test_scale_role_refuses_bad_numbers_and_names_before_any_change(tmp_path, case):
    stack, inventory = scale_inventory(tmp_path)
    before = stack.env_file.read_bytes()
    proc = run(SCALE, inventory, dict(SCALE_BAD[case], qfc_worker_replicas=3))
    assert proc.returncode != 0
    for fragment in EXPECTED.get(case, ["%s must be" % name for name in SCALE_BAD[case]]):
        assert fragment in proc.stdout, (fragment, proc.stdout[-3000:])
    assert "Nothing was changed." in proc.stdout
    # the rollout's steps: the input check only, neither the gate's read nor qfc_scale
    assert '"Check the numbers and names (before anything changes)"' in proc.stdout
    assert '"Health gate - read the queue' not in proc.stdout
    assert '"Scale QFieldCloud workers (backup' not in proc.stdout
    assert stack.env_file.read_bytes() == before and stack.backups() == []


@pytest.mark.parametrize("extra, fragment", [
    # the argument spec's int type refuses these first (Ansible's own message)
    ({"qfc_wait_timeout": "inf"}, "cannot convert Infinity to integer"),
    ({"qfc_lock_timeout": "nan"}, "argument 'qfc_lock_timeout'"),
    ({"qfc_lock_timeout": 0.5}, "argument 'qfc_lock_timeout'"),
])
def test_scale_role_refuses_what_the_argument_spec_stops(tmp_path, extra, fragment):
    stack, inventory = scale_inventory(tmp_path)
    before = stack.env_file.read_bytes()
    proc = run(SCALE, inventory, dict({"qfc_worker_replicas": 3}, **extra))
    assert proc.returncode != 0 and fragment in proc.stdout, proc.stdout[-3000:]
    assert "TASK [qfieldcloud.ops.scale : Scale QFieldCloud workers" not in proc.stdout
    assert stack.env_file.read_bytes() == before and stack.backups() == []


@pytest.mark.parametrize("replicas", [9223372036854775807, 101])
def test_a_count_above_the_hard_ceiling_is_refused_by_qfc_scale_before_any_change(tmp_path, replicas):
    """The count is checked once, by qfc_scale (issue 11), above the ceiling also with qfc_force; the role's message
    names its variable. The gate is off: it would read the queue first, and this stack has no database."""
    stack, inventory = scale_inventory(tmp_path)
    before = stack.env_file.read_bytes()
    proc = run(SCALE, inventory, {"qfc_worker_replicas": replicas, "qfc_force": True, "qfc_health_gate": False})
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "qfc_worker_replicas=%d is above the hard ceiling of 100 workers per host" % replicas in proc.stdout, \
        proc.stdout[-3000:]
    assert "Nothing was changed." in proc.stdout
    assert stack.env_file.read_bytes() == before and stack.backups() == []


@pytest.mark.parametrize("extra, fragment", [
    # Ansible alone would run no task at all and exit 0 with a negative max_fail_percentage
    ({"qfc_max_fail_percentage": -5}, "qfc_max_fail_percentage must be a number from 0 to 100, got -5"),
    ({"qfc_max_fail_percentage": "nan"}, "qfc_max_fail_percentage must be a number from 0 to 100, got nan"),
    ({"qfc_max_fail_percentage": INF}, "qfc_max_fail_percentage must be a number from 0 to 100, got inf"),
    ({"qfc_max_fail_percentage": 1000}, "qfc_max_fail_percentage must be a number from 0 to 100, got 1000"),
    # Ansible alone would crash ("Unexpected Exception") on these
    ({"qfc_serial": "nan"}, "qfc_serial must be batch sizes"),
    ({"qfc_serial": [1, INF]}, "qfc_serial must be batch sizes"),
    ({"qfc_serial": "0"}, "qfc_serial must be batch sizes"),
    ({"qfc_serial": "1,-1"}, "qfc_serial must be batch sizes"),
    ({"qfc_serial": "1,250%"}, "qfc_serial must be batch sizes"),
    ({"qfc_serial": []}, "qfc_serial must be batch sizes"),
])
def test_scale_playbook_refuses_bad_batches_before_any_task(tmp_path, extra, fragment):
    stack, inventory = scale_inventory(tmp_path)
    before = stack.env_file.read_bytes()
    proc = run(SCALE, inventory, dict({"qfc_worker_replicas": 3}, **extra))
    assert proc.returncode != 0 and fragment in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr
    assert "Nothing was changed." in proc.stdout + proc.stderr
    assert "TASK [" not in proc.stdout
    assert stack.env_file.read_bytes() == before and stack.backups() == []


def test_scale_role_accepts_the_limits(tmp_path):
    """The ends of every range pass the role's checks (check mode, gate off: the module predicts the change)."""
    stack, inventory = scale_inventory(tmp_path)
    before = stack.env_file.read_bytes()
    limits = {"qfc_settle_time": 0, "qfc_lock_timeout": 0, "qfc_max_replicas_per_core": 100,
              "qfc_auto_max_replicas": 100, "qfc_wait_timeout": 86400, "qfc_health_gate_delay": 3600,
              "qfc_health_gate_timeout": 3600, "qfc_worker_timeout_s": 0, "qfc_db_port": 65535,
              "qfc_command_timeout": 10, "qfc_backup_keep": 1000,
              "qfc_health_gate": False, "qfc_worker_replicas": "auto"}
    proc = run(SCALE, inventory, limits, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"running 0 -> \d+ .*\[check mode: predicted\]", proc.stdout), proc.stdout[-3000:]
    assert stack.env_file.read_bytes() == before


CLEANUP_BAD = {
    "negative": {"qfc_cleanup_batch_size": -1, "qfc_worker_timeout_s": -1, "qfc_db_port": -1,
                 "qfc_cleanup_lock_timeout": -1, "qfc_cleanup_statement_timeout": -1},
    "zero": {"qfc_cleanup_batch_size": 0, "qfc_cleanup_lock_timeout": 0, "qfc_cleanup_statement_timeout": 0},
    "huge": {"qfc_cleanup_batch_size": 10 ** 9, "qfc_cleanup_lock_timeout": 10 ** 12,
             "qfc_cleanup_statement_timeout": 10 ** 12, "qfc_worker_timeout_s": 10 ** 12, "qfc_db_port": 70000},
}


@pytest.mark.parametrize("case", list(CLEANUP_BAD) + ["non-finite"])
def test_cleanup_role_refuses_bad_numbers_before_any_change(tmp_path, case):
    project = tmp_path / "qfieldcloud"
    project.mkdir()
    (project / ".env").write_text("POSTGRES_HOST=127.0.0.1\nPOSTGRES_PORT=9\nPOSTGRES_PASSWORD=unused-pw-123\n")
    inventory = write_inventory(tmp_path, project)
    extra = CLEANUP_BAD.get(case, {"qfc_cleanup_batch_size": "inf"})
    proc = run(CLEANUP, inventory, extra)
    assert proc.returncode != 0
    if case == "non-finite":
        assert "cannot convert Infinity to integer" in proc.stdout, proc.stdout[-3000:]
    else:
        for name in extra:
            assert "%s must be a whole number" % name in proc.stdout, (name, proc.stdout[-3000:])
        assert "Nothing was changed." in proc.stdout
    assert "TASK [qfieldcloud.ops.job_cleanup : Fail stuck jobs]" not in proc.stdout
