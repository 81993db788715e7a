"""The operations log against the real stack: qfc_scale records each change once (changed, rolled_back, failed),
never a no-op, check mode or a failure before any change; an unwritable log never undoes or hides a scale."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from datetime import datetime, timezone

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _oplog
from tests.support import datagen
from tests.support.ansible_run import BIN, ROOT, SECRETS, ansible_env, assert_no_secrets, run_module, run_playbook

ACTOR = {"awx_job_id": "42", "awx_user_name": "alice"}


def scale(stack, log, replicas, check=False, **args):
    module_args = {"project_src": str(stack.path), "replicas": replicas, "operations_log": str(log),
                   "operation_actor": ACTOR}
    module_args.update(args)
    return run_module(module_args, check=check)


def records(log):
    found, bad = _oplog.read(str(log))
    assert bad == 0
    return found


def test_one_record_per_change_none_for_noop_or_check_mode(stack, tmp_path):
    log = tmp_path / "log" / "operations.jsonl"
    check = scale(stack, log, 4, check=True)
    assert not check.failed and check["changed"] and check["operation_record"] is None
    assert not log.exists()

    first = scale(stack, log, 4)
    assert not first.failed, first
    written = records(log)
    assert written == [first["operation_record"]]
    record = written[0]
    assert (record["action"], record["before"], record["after"], record["result"]) == ("scale", 2, 4, "changed")
    assert record["actor"] == {"kind": "awx", "awx_job_id": "42", "user": "alice"}
    assert record["reason"] == "replicas 2 -> 4 requested"
    assert record["details"]["running_before"] == 2 and record["details"]["running_after"] == 4
    assert _oplog.parse_time(record["time"])
    assert oct(log.stat().st_mode & 0o777) == oct(0o640)

    again = scale(stack, log, 4)
    assert not again.failed and again["changed"] is False and again["operation_record"] is None
    assert len(records(log)) == 1
    assert_no_secrets(log.read_text() + first.output + again.output)


def test_reconcile_is_recorded_with_its_own_reason_and_options(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    stack.compose("rm", "-sf", "worker_wrapper")  # every worker gone, .env still says 2
    result = scale(stack, log, 2, operation="autoscale", operation_reason="queue deep for 10 min",
                   operation_actor={"user": "bob"})
    assert not result.failed and result["changed"], result
    (record,) = records(log)
    assert (record["action"], record["before"], record["after"], record["reason"], record["actor"]) == (
        "autoscale", 2, 2, "queue deep for 10 min", {"kind": "controller", "user": "bob"})
    assert record["details"]["env_changed"] is False and record["details"]["running_before"] == 0


def test_default_reason_for_a_reconcile(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    stack.compose("rm", "-sf", "worker_wrapper")
    assert not scale(stack, log, 2).failed
    assert records(log)[0]["reason"] == "running 0 -> 2 reconciled (.env already 2)"


def test_a_rolled_back_failure_is_recorded_as_rolled_back(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    stack.set_env("QFC_SIM_CRASH", "1")  # new containers crash on start
    result = scale(stack, log, 4, wait_timeout=6)
    assert result.failed and result["rolled_back"] is True
    (record,) = records(log)
    assert record == result["operation_record"]
    assert (record["result"], record["before"], record["after"]) == ("rolled_back", 2, 2)
    assert record["details"]["requested"] == 4 and "Rolled back" in record["details"]["error"]


def test_a_failure_without_rollback_is_recorded_as_failed(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    stack.set_env("QFC_SIM_CRASH", "1")
    result = scale(stack, log, 3, wait_timeout=4, rollback=False)
    assert result.failed and result["rolled_back"] is False
    (record,) = records(log)
    assert (record["result"], record["before"], record["after"]) == ("failed", 2, 3)


def test_a_failure_before_any_change_is_not_recorded(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    result = scale(stack, log, 4, service="no_such_service")
    assert result.failed and result["operation_record"] is None
    assert not log.exists()


def test_a_bad_operation_name_fails_before_any_change(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    result = scale(stack, log, 4, operation="scale now")
    assert result.failed and "operation must be" in result["msg"] and "Nothing was changed" in result["msg"]
    assert stack.env_value() == "2" and not log.exists()


def test_an_unwritable_log_neither_undoes_nor_hides_the_scale(stack, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # a path under a file cannot be created, even by root
    result = scale(stack, blocker / "operations.jsonl", 3)
    assert not result.failed, result
    assert result["changed"] is True and result["running"] == 3 and stack.env_value() == "3"
    assert result["operation_record"] is None
    assert "was not written" in result["operations_log_error"]
    assert "was not written" in result.output  # the warning
    assert blocker.read_text() == ""


def test_logging_off(stack, tmp_path):
    result = scale(stack, tmp_path / "x", 3, operations_log="")
    assert not result.failed and result["changed"] and result["operation_record"] is None
    assert list(tmp_path.glob("x*")) == []


def test_secrets_in_the_reason_are_masked(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    result = scale(stack, log, 3, operation_reason="pw was %s" % SECRETS[0])
    assert not result.failed
    text = log.read_text()
    assert_no_secrets(text)
    assert json.loads(text)["reason"] == "pw was ********"


def playbook_inventory(stack, tmp_path, log):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("qfieldcloud:\n  hosts:\n    qfc1:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n      qfc_project_src: %s\n"
                         "      qfc_health_gate: false\n      qfc_operations_log: %s\n"
                         % (BIN / "python", stack.path, log))
    return inventory


def test_scale_playbook_records_the_awx_actor_once(stack, tmp_path):
    log = tmp_path / "ops" / "operations.jsonl"
    inventory = playbook_inventory(stack, tmp_path, log)
    awx = {"qfc_worker_replicas": 4, "awx_job_id": 42, "awx_user_name": "alice"}
    check = run_playbook(ROOT / "playbooks" / "scale.yml", inventory, awx, check=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not log.exists()

    first = run_playbook(ROOT / "playbooks" / "scale.yml", inventory, awx)
    assert first.returncode == 0, first.stdout + first.stderr
    (record,) = records(log)
    assert record["actor"] == {"kind": "awx", "awx_job_id": "42", "user": "alice"}
    assert (record["action"], record["before"], record["after"], record["result"]) == ("scale", 2, 4, "changed")
    assert "was converted" not in first.stdout + first.stderr  # the job id reaches the module as a string
    assert_no_secrets(log.read_text())

    again = run_playbook(ROOT / "playbooks" / "scale.yml", inventory, awx)
    assert again.returncode == 0
    assert len(records(log)) == 1


def test_scale_playbook_outside_awx_records_the_controller_user(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    inventory = playbook_inventory(stack, tmp_path, log)
    proc = run_playbook(ROOT / "playbooks" / "scale.yml", inventory,
                        {"qfc_worker_replicas": 3, "qfc_scale_operation": "autoscale",
                         "qfc_scale_reason": "queue 12 deep for 10 min"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = records(log)
    expected_user = os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name
    assert record["actor"] == {"kind": "controller", "user": expected_user}
    assert (record["action"], record["reason"]) == ("autoscale", "queue 12 deep for 10 min")


def test_controller_user_without_USER_comes_from_id(stack, tmp_path):
    log = tmp_path / "operations.jsonl"
    inventory = playbook_inventory(stack, tmp_path, log)
    env = ansible_env()
    env.pop("USER", None)  # cron and some execution environments set no USER
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(ROOT / "playbooks" / "scale.yml"), "-i", str(inventory),
                           "-e", json.dumps({"qfc_worker_replicas": 3})], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert records(log)[0]["actor"] == {"kind": "controller", "user": pwd.getpwuid(os.getuid()).pw_name}


def test_job_cleanup_records_the_jobs_it_failed_once(qfcdb, tmp_path):
    log = tmp_path / "operations.jsonl"
    (user,) = datagen.make_users(qfcdb.conn, 1)
    projects = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 4, user)
    for project, status in zip(projects, ("started", "queued", "started")):  # stale: started 2 h ago
        datagen.add_job(qfcdb.conn, project, user, status, created_ago_s=7300, started_ago_s=7200)
    datagen.add_job(qfcdb.conn, projects[3], user, "started", created_ago_s=100, started_ago_s=60)  # not stuck
    args = {"env_file": str(qfcdb.env_file), "operations_log": str(log), "operation_actor": ACTOR}
    check = run_module(args, module="qfieldcloud.ops.qfc_job_cleanup", check=True)
    assert check["count"] == 3 and check["operation_record"] is None and not log.exists()
    run = run_module(args, module="qfieldcloud.ops.qfc_job_cleanup")
    assert not run.failed and run["count"] == 3, run
    (record,) = records(log)
    assert record == run["operation_record"]
    assert (record["action"], record["result"]) == ("job_cleanup", "changed")
    assert record["before"] == {"queued": 1, "started": 2} and record["after"] == {"failed": 3}
    assert sorted(record["details"]["job_ids"]) == sorted(j["id"] for j in run["jobs"])
    assert record["actor"] == {"kind": "awx", "awx_job_id": "42", "user": "alice"}
    assert record["reason"].startswith("mode stale: 3 jobs stuck longer than")
    again = run_module(args, module="qfieldcloud.ops.qfc_job_cleanup")
    assert again["count"] == 0 and again["operation_record"] is None
    assert len(records(log)) == 1
    assert_no_secrets(log.read_text())


YEAR_ZERO = (b'{"time": "0001-01-01T00:00:00+01:00", "action": "scale", "before": 1, "after": 2, '
             b'"result": "changed"}')


def test_the_autoscaler_decides_past_any_bad_line_in_the_operations_log(qfcdb, tmp_path):
    # issue 21, defect 1: the year-zero record (OverflowError) or 100,000 "[" (RecursionError) stopped every decision
    log = tmp_path / "operations.jsonl"
    change = _oplog.make_record("scale", 3, 4, "by hand", "changed", _oplog.make_actor(user="bob"), host="h",
                                now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    _oplog.append(str(log), change)
    with open(log, "ab") as handle:
        handle.write(YEAR_ZERO + b"\n" + b"[" * 100_000 + b"\n" + b"\xff\x00\n" + b'{"a": NaN}')
    args = {"env_file": str(qfcdb.env_file), "operations_log": str(log), "metrics_log": str(tmp_path / "none.log")}
    result = run_module(args, module="qfieldcloud.ops.qfc_autoscale_decision", timeout=120)
    assert not result.failed, result
    assert result["qfc_autoscale"]["last_change"] == json.loads(_oplog.to_line(change))
    assert "3 unreadable line(s) in the operations log %s were skipped" % log in result.output


def test_a_symlinked_log_is_never_written_through_and_the_cleanup_stands(qfcdb, tmp_path):
    # issue 21, defect 6: in a directory owned by nobody, operations.jsonl linked to a root-owned 0600 file, and a
    # root append wrote into it
    target = tmp_path / "root-only"
    target.write_bytes(b"root's\n")
    target.chmod(0o600)
    logdir = tmp_path / "nobodys"
    logdir.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(logdir, nobody.pw_uid, nobody.pw_gid)
    (logdir / "operations.jsonl").symlink_to(target)
    (user,) = datagen.make_users(qfcdb.conn, 1)
    (project,) = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 1, user)
    datagen.add_job(qfcdb.conn, project, user, "started", created_ago_s=7300, started_ago_s=7200)
    args = {"env_file": str(qfcdb.env_file), "operations_log": str(logdir / "operations.jsonl")}
    run = run_module(args, module="qfieldcloud.ops.qfc_job_cleanup")
    assert not run.failed and run["changed"] and run["count"] == 1, run  # the cleanup stands
    assert run["operation_record"] is None and "was not written" in run["operations_log_error"]
    assert "was not written" in run.output  # the warning
    assert target.read_bytes() == b"root's\n" and (logdir / "operations.jsonl").is_symlink()
    # a dangling link creates nothing either
    (logdir / "operations.jsonl").unlink()
    (logdir / "operations.jsonl").symlink_to(tmp_path / "created-through-the-link")
    datagen.add_job(qfcdb.conn, project, user, "started", created_ago_s=7300, started_ago_s=7200)
    again = run_module(dict(args, operations_log=str(logdir / "operations.jsonl")),
                       module="qfieldcloud.ops.qfc_job_cleanup")
    assert not again.failed and again["count"] == 1 and again["operation_record"] is None
    assert not (tmp_path / "created-through-the-link").exists()
