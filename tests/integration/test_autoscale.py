"""playbooks/autoscale.yml on real parts, run the way a schedule runs it (ansible-playbook): a real PostgreSQL with
the QFieldCloud schema, a real Compose stack whose worker_wrapper containers are the worker simulator working that
queue, the decision module, the scale role and the operations log. One stack and one database for the whole module
(CI budget); each test starts from a clean state (:func:`reset`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import (BIN, ROOT, QfcDb, ansible_env, assert_no_secrets, custom_stats, drop_database, make_db_stack,
                      run_playbook)

from tests.support import datagen
from tests.support.pgcluster import NEWEST, free_port

sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log, _oplog  # noqa: E402

PLAYBOOK = ROOT / "playbooks" / "autoscale.yml"
ACTOR = {"awx_job_id": 7, "awx_user_name": "ops"}
# Fast runs: the policy acts on the queue as it is now (up_after 0), no cooldown unless a test sets one, and the scale
# role settles and gates quickly.
FAST = {"qfc_autoscale_up_after": 0, "qfc_autoscale_cooldown": 0, "qfc_settle_time": 0.2}


@pytest.fixture(scope="module")
def world(pg, tmp_path_factory):
    """(stack, db): the DB-backed stack (simulated workers, 1 s jobs) on one fresh database."""
    base = tmp_path_factory.mktemp("autoscale")
    name = "qfct_%s" % uuid.uuid4().hex[:10]
    pg.create_database(name, NEWEST)
    env_file = base / ("%s.env" % name)
    db = QfcDb(pg, name, NEWEST, env_file)
    env_file.write_text(db.env_text())
    stack = make_db_stack(base, db, replicas=1)
    yield stack, db
    stack.down()
    db.conn.close()
    drop_database(pg, name)


@pytest.fixture
def env(world, tmp_path):
    """A clean start: no jobs, one fresh worker, an inventory, an empty operations log and metrics log path."""
    stack, db = world
    reset(stack, db, 1)
    paths = {"oplog": tmp_path / "operations.jsonl", "metrics": tmp_path / "queue_metrics.log",
             "inventory": tmp_path / "inventory.yml"}
    paths["inventory"].write_text(
        "qfieldcloud:\n  hosts:\n    qfc1:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n"
        "      qfc_project_src: %s\n      qfc_operations_log: %s\n      qfc_autoscale_metrics_log: %s\n"
        % (BIN / "python", stack.path, paths["oplog"], paths["metrics"]))
    return stack, db, paths


def reset(stack, db, replicas):
    """Remove the workers (kill: a busy simulated worker would finish its long job first), empty the queue, start
    ``replicas`` fresh workers."""
    stack.compose("kill", "worker_wrapper", check=False)
    stack.compose("rm", "-f", "worker_wrapper", check=False)
    with db.conn, db.conn.cursor() as cur:
        cur.execute("TRUNCATE core_job CASCADE")
    stack.set_env("QFIELDCLOUD_WORKER_REPLICAS", replicas)
    stack.up()
    assert len(stack.running()) == replicas


def burst(db, projects=20, jobs=40, seconds=30):
    """``jobs`` long jobs round-robin over ``projects`` fresh projects: far more work than one worker can start."""
    (user,) = datagen.make_users(db.conn, 1)
    ids = datagen.make_projects(db.conn, db.project_table, projects, user)
    for i in range(jobs):
        datagen.add_job(db.conn, ids[i % projects], user, "pending", created_ago_s=jobs - i,
                        feedback={"sim_seconds": seconds})


def idle_history(path, minutes, workers):
    """The monitoring collector's rows (its own format, _metrics_log.format_row) for the last ``minutes`` minutes,
    one a minute, of an empty queue with ``workers`` idle workers; host local time, as the collector writes."""
    facts = {"queue_depth": 0, "by_status": {"pending": 0, "queued": 0, "started": 0}, "useful_backlog": 0,
             "last_hour": {"finished": 12, "failed": 0, "success_rate": 1.0},
             "duration": {"p50_s": 1.0, "p95_s": 1.2}, "stuck": {"stale": 0, "orphaned_queued": 0, "old_pending": 0},
             "worker_timeout_source": "env"}
    counts = {"configured": workers, "running": workers, "busy": 0}
    now = datetime.now()
    path.write_text("".join(_metrics_log.format_row(now - timedelta(minutes=m), facts, counts)
                            for m in range(minutes, -1, -1)))


def run(paths, extra=None, check=False):
    """ansible-playbook playbooks/autoscale.yml as AWX launches it (the actor's extra vars), custom stats shown."""
    proc = run_playbook(PLAYBOOK, paths["inventory"], dict(FAST, **ACTOR, **(extra or {})), check=check, timeout=300,
                        env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert_no_secrets(proc.stdout + proc.stderr)
    return proc


def artifact(output):
    """The job artifact (set_stats) as AWX and ansible-runner get it: qfc_autoscale_decisions by host."""
    return custom_stats(output)["qfc_autoscale_decisions"]


def recap(output):
    match = re.search(r"^qfc1\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+"
                      r"rescued=(\d+)\s+ignored=(\d+)", output, re.M)
    assert match, output
    return dict(zip(("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"),
                    map(int, match.groups())))


def decision(output):
    """The decision the role printed: (ACTION, current, target)."""
    match = re.search(r"autoscale (UP|DOWN|HOLD|INVESTIGATE): worker_wrapper (\d+) -> (\d+)", output)
    assert match, output
    return match.group(1), int(match.group(2)), int(match.group(3))


def records(paths):
    return _oplog.read(str(paths["oplog"]))[0]


def state(stack):
    return stack.env_value(), len(stack.running())


def test_a_burst_raises_the_count_in_one_run_and_the_change_is_logged_once_with_the_actor(env):
    stack, db, paths = env
    burst(db)
    proc = run(paths, {"qfc_autoscale_max_replicas": 4})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    action, current, target = decision(proc.stdout)
    assert (action, current) == ("UP", 1) and 1 < target <= 4
    assert state(stack) == (str(target), target)
    assert "worker_wrapper: running 1 -> %d" % target in proc.stdout  # the scale role's outcome
    assert "Rollout summary" in proc.stdout
    table = proc.stdout[proc.stdout.index("Autoscale summary"):]
    assert re.search(r"host +action +current -> target +reason", table[:800]), table[:800]
    (record,) = records(paths)
    summary = (record["action"], record["before"], record["after"], record["result"])
    assert summary == ("autoscale", 1, target, "changed")
    assert record["actor"] == {"kind": "awx", "awx_job_id": "7", "user": "ops"}
    assert record["reason"] and record["host"] == socket.gethostname()
    published = artifact(proc.stdout)["qfc1"]
    assert (published["action"], published["current"], published["target"]) == ("up", 1, target)
    assert record["reason"] == published["reason"]
    # the next run inside the cooldown changes nothing and writes nothing
    again = run(paths, {"qfc_autoscale_max_replicas": 4, "qfc_autoscale_cooldown": 900})
    assert again.returncode == 0 and decision(again.stdout)[0] == "HOLD", again.stdout
    assert state(stack) == (str(target), target) and len(records(paths)) == 1


def test_check_mode_and_dry_run_change_nothing(env):
    stack, db, paths = env
    burst(db)
    before = stack.env_text()
    proc = run(paths, check=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert decision(proc.stdout)[0] == "UP"
    assert "[check mode: predicted]" in proc.stdout  # the scale role's prediction
    dry = run(paths, {"qfc_autoscale_dry_run": "true"})  # as the AWX survey sends it
    assert dry.returncode == 0 and decision(dry.stdout)[0] == "UP", dry.stdout
    assert "[dry run: no change]" in dry.stdout and recap(dry.stdout)["changed"] == 0
    assert stack.env_text() == before and len(stack.running()) == 1
    assert not paths["oplog"].exists()


def test_no_change_inside_the_cooldown(env):
    stack, db, paths = env
    _oplog.append(str(paths["oplog"]), _oplog.make_record(
        "scale", 2, 1, "by hand", "changed", _oplog.make_actor(user="alice"),
        now=datetime.now(timezone.utc) - timedelta(seconds=30)))
    burst(db)
    proc = run(paths, {"qfc_autoscale_cooldown": 600})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    action, current, target = decision(proc.stdout)
    assert (action, current, target) == ("HOLD", 1, 1)
    assert "cooldown" in proc.stdout
    assert state(stack) == ("1", 1) and len(records(paths)) == 1


def test_a_drained_queue_lowers_one_step_only_after_down_after_and_never_below_min(env):
    stack, db, paths = env
    reset(stack, db, 3)
    bounds = {"qfc_autoscale_min_replicas": 2, "qfc_autoscale_down_after": 600}
    idle_history(paths["metrics"], 3, 3)  # idle for 3 minutes: not yet down_after
    early = run(paths, bounds)
    assert early.returncode == 0 and decision(early.stdout) == ("HOLD", 3, 3), early.stdout
    idle_history(paths["metrics"], 15, 3)  # idle for 15 minutes
    down = run(paths, bounds)
    assert down.returncode == 0, down.stdout + down.stderr
    assert decision(down.stdout) == ("DOWN", 3, 2)
    assert state(stack) == ("2", 2)
    idle_history(paths["metrics"], 15, 2)
    floor = run(paths, bounds)
    assert floor.returncode == 0 and decision(floor.stdout) == ("HOLD", 2, 2), floor.stdout
    assert state(stack) == ("2", 2)
    assert [(r["action"], r["before"], r["after"]) for r in records(paths)] == [("autoscale", 3, 2)]


def test_per_host_bounds_come_from_the_inventory(env):
    stack, db, paths = env
    with paths["inventory"].open("a") as inventory:
        inventory.write("      qfc_autoscale_max_replicas: 1\n")
    burst(db)
    proc = run(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert decision(proc.stdout)[1:] == (1, 1)
    assert state(stack) == ("1", 1) and not paths["oplog"].exists()


def test_database_down_means_no_change_and_a_clear_reason(env):
    stack, db, paths = env
    before = stack.env_text()
    proc = run(paths, {"qfc_db_port": free_port()})
    assert proc.returncode != 0
    assert recap(proc.stdout)["failed"] == 1
    assert re.search(r"[Nn]o change|[Nn]othing was changed", proc.stdout), proc.stdout
    assert stack.env_text() == before and len(stack.running()) == 1
    assert not paths["oplog"].exists()


def test_a_critical_failure_rate_means_investigate_and_no_change(env):
    stack, db, paths = env
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, 10, user)
    for i, project in enumerate(projects):  # half of the last hour's jobs failed (limit 30%)
        datagen.add_job(db.conn, project, user, "failed" if i % 2 else "finished", created_ago_s=600,
                        started_ago_s=500, finished_ago_s=490)
    burst(db, projects=5, jobs=10)
    proc = run(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert decision(proc.stdout)[0] == "INVESTIGATE"
    assert "INVESTIGATE:" in proc.stdout and recap(proc.stdout)["ignored"] == 1
    assert state(stack) == ("1", 1) and not paths["oplog"].exists()
    strict = run(paths, {"qfc_autoscale_fail_on_investigate": True})
    assert strict.returncode != 0 and recap(strict.stdout)["failed"] == 1
    assert state(stack) == ("1", 1)


def test_oscillating_load_changes_once_per_cooldown(env):
    """Bursts and idle spells (with the collector's idle history) one after the other: the first burst scales up,
    then every run inside the cooldown holds, whichever way the load swings; one record in the operations log."""
    stack, db, paths = env
    timings = {"qfc_autoscale_cooldown": 600, "qfc_autoscale_down_after": 60}
    seen = []
    for swing in range(4):
        if swing % 2 == 0:
            burst(db)
        else:
            with db.conn, db.conn.cursor() as cur:
                cur.execute("TRUNCATE core_job CASCADE")
            idle_history(paths["metrics"], 15, int(stack.env_value()))
        proc = run(paths, timings)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        seen.append(decision(proc.stdout)[0])
    assert seen == ["UP", "HOLD", "HOLD", "HOLD"]
    assert [(r["action"], r["before"]) for r in records(paths)] == [("autoscale", 1)]


def holders_of(directory):
    """The pids with ``directory`` open: qfc_scale holds the project directory open while it holds or waits for its
    lock (an flock on it, polled), and nothing else the test runs opens it."""
    target, pids = os.path.realpath(directory), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(os.readlink("/proc/%s/fd/%s" % (pid, fd)) == target for fd in os.listdir("/proc/%s/fd" % pid)):
                pids.add(int(pid))
    return pids


def wait_for(what, predicate, timeout=90):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.2)


def test_a_decision_made_before_a_manual_scale_that_held_the_lock_is_not_applied(env, tmp_path):
    """Issue 21 defect 10, two real runs: a manual qfc_scale 3 -> 1 holds the project lock (its docker CLI waits in
    the preflight, before its .env write, until the test lets it go); meanwhile the scheduled autoscale run decides
    DOWN 3 -> 2 on the count it reads then, and its qfc_scale waits for the lock. When the manual run is done, the
    autoscale's change, decided on a count that no longer holds, must not be applied: it holds with the reason, the
    run does not fail, .env keeps the manual value and the operations log only the manual change."""
    stack, db, paths = env
    reset(stack, db, 3)
    idle_history(paths["metrics"], 15, 3)  # idle long enough: the autoscaler's decision is DOWN 3 -> 2
    backups = len(stack.backups())
    release, holding = tmp_path / "release", tmp_path / "holding"
    cli = tmp_path / "docker"
    cli.write_text('#!/bin/sh\nif [ ! -e %s ]; then touch %s; while [ ! -e %s ]; do sleep 0.1; done; fi\nexec %s "$@"\n'
                   % (release, holding, release, shutil.which("docker")))
    cli.chmod(0o755)
    manual_args = {"project_src": str(stack.path), "replicas": 1, "docker_cli": str(cli), "settle_time": 0.2,
                   "operations_log": str(paths["oplog"]), "operation_reason": "by hand, during the autoscale run"}
    manual = subprocess.Popen(
        [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e",
         "ansible_python_interpreter=%s" % (BIN / "python"), "-m", "qfieldcloud.ops.qfc_scale", "-a",
         json.dumps(manual_args)], cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    autoscale_out = tmp_path / "autoscale.out"
    autoscale = None
    try:
        wait_for("the manual run to hold the lock", holding.exists)
        (holder,) = holders_of(stack.path)
        assert stack.env_value() == "3"  # the manual run has not written yet: the autoscaler decides on 3
        with autoscale_out.open("w") as out:
            autoscale = subprocess.Popen(
                [str(BIN / "ansible-playbook"), str(PLAYBOOK), "-i", str(paths["inventory"]), "-e",
                 json.dumps(dict(FAST, **ACTOR, qfc_autoscale_down_after=600))],
                cwd=ROOT, env=ansible_env({"ANSIBLE_SHOW_CUSTOM_STATS": "1"}), stdout=out, stderr=subprocess.STDOUT)
        # the autoscale run decided, passed its health gate, and its qfc_scale now waits for the lock
        wait_for("the autoscale run's qfc_scale to wait for the lock", lambda: holders_of(stack.path) - {holder})
        assert autoscale.poll() is None and "autoscale DOWN: worker_wrapper 3 -> 2" in autoscale_out.read_text()
    finally:
        release.touch()
        manual_out, _manual_err = manual.communicate(timeout=180)
        if autoscale is not None:
            autoscale.wait(timeout=300)
    assert manual.returncode == 0 and '"changed": true' in manual_out, manual_out
    output = autoscale_out.read_text()
    assert_no_secrets(output)
    assert autoscale.returncode == 0, output
    assert decision(output) == ("DOWN", 3, 2)  # what it decided, on the count before the manual change
    hold = ("autoscale HOLD: worker_wrapper 1 -> 1 (the configured count changed from 3 to 1 since the decision; "
            "nothing was changed; the next run decides again)")
    assert hold in output, output
    assert recap(output)["failed"] == 0
    assert re.search(r"^\s*\"?qfc1\s+server\s+\S+\s+1\s+refused", output, re.M), output  # the rollout summary
    table = output[output.index("Autoscale summary"):]
    assert re.search(r"qfc1\s+hold\s+1 -> 1\s+the configured count changed from 3 to 1", table), table
    published = artifact(output)["qfc1"]
    assert (published["action"], published["current"], published["target"]) == ("hold", 1, 1)
    assert published["decided"]["action"] == "down" and published["decided"]["target"] == 2
    # nothing changed after the manual run: its count, its backup, its record only
    assert state(stack) == ("1", 1) and len(stack.backups()) == backups + 1
    assert [(r["action"], r["before"], r["after"], r["reason"]) for r in records(paths)] == [
        ("scale", 3, 1, "by hand, during the autoscale run")]
