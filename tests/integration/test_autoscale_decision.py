"""qfc_autoscale_decision against the real parts: a QFieldCloud-shaped Compose stack whose two workers run (counted
through the Engine's socket by Compose labels), its .env pointing at a real PostgreSQL with QFieldCloud's schema,
the collector's metrics log and the operations log written in their own formats. One stack and one database for the
module; each test empties the queue and writes its own logs."""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import assert_no_secrets, drop_database, make_stack, run_module

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log, _oplog
from tests.support import datagen
from tests.support.pgcluster import NEWEST, free_port
from tests.support.stacks import QfcDb

DECISION = "qfieldcloud.ops.qfc_autoscale_decision"
CORE_LIMIT = max(int(min((os.cpu_count() or 1) * 2.5, 100)), 1)


@pytest.fixture(scope="module")
def world(pg, tmp_path_factory):
    base = tmp_path_factory.mktemp("decision")
    name = "qfct_%s" % uuid.uuid4().hex[:10]
    pg.create_database(name, NEWEST)
    db = QfcDb(pg, name, NEWEST, base / "unused.env")
    stack = make_stack(base, replicas=2)
    for key, value in (("POSTGRES_HOST", "127.0.0.1"), ("POSTGRES_PORT", pg.port), ("POSTGRES_DB", name),
                       ("POSTGRES_USER", pg.user), ("POSTGRES_PASSWORD", pg.password),
                       ("POSTGRES_SSLMODE", "disable")):
        stack.set_env(key, value)
    assert len(stack.running()) == 2
    yield stack, db
    stack.down()
    db.conn.close()
    drop_database(pg, name)


@pytest.fixture
def env(world, tmp_path):
    stack, db = world
    with db.conn, db.conn.cursor() as cur:
        cur.execute("TRUNCATE core_job CASCADE")
    paths = {"metrics": tmp_path / "queue_metrics.log", "oplog": tmp_path / "operations.jsonl"}
    args = {"project_src": str(stack.path), "metrics_log": str(paths["metrics"]),
            "operations_log": str(paths["oplog"]), "max_replicas": 10}
    return stack, db, paths, args


def decide(args, check=False, **more):
    result = run_module(dict(args, **more), module=DECISION, check=check, timeout=120)
    assert_no_secrets(result.output)
    return result


def burst(db, started=2, waiting=18, waited_s=700):
    """``started`` jobs running on their own projects and ``waiting`` projects with a pending job each."""
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, started + waiting, user)
    for project in projects[:started]:
        datagen.add_job(db.conn, project, user, "started", created_ago_s=waited_s + 60, started_ago_s=30)
    for i, project in enumerate(projects[started:]):
        datagen.add_job(db.conn, project, user, "pending", created_ago_s=waited_s - i)


def history(path, minutes, step_min, backlog, configured, busy):
    """The collector's rows (its format, the host's local time) for the last ``minutes`` minutes."""
    queue = {"queue_depth": backlog, "by_status": {"pending": backlog, "queued": 0, "started": busy},
             "useful_backlog": backlog, "last_hour": {"finished": 10, "failed": 0, "success_rate": 1.0},
             "duration": {"p50_s": 1.0, "p95_s": 2.0}, "stuck": {"stale": 0, "orphaned_queued": 0, "old_pending": 0},
             "worker_timeout_source": "env"}
    counts = {"configured": configured, "running": configured, "busy": busy}
    now = datetime.now()
    path.write_text("".join(_metrics_log.format_row(now - timedelta(minutes=m), queue, counts)
                            for m in range(minutes, -1, -step_min)))


def test_a_burst_over_many_projects_means_up_towards_the_demand(env):
    stack, db, paths, args = env
    burst(db)
    result = decide(args)
    assert not result.failed and result["changed"] is False, result
    got = result["qfc_autoscale"]
    # 2 busy + 18 waiting wanted; a doubling at most (4), within max_replicas 10 and the core guard
    assert (got["action"], got["current"], got["target"]) == ("up", 2, min(4, CORE_LIMIT)), got["reason"]
    assert "18 job(s) could start now and have waited 7" in got["reason"] and "from the snapshot" in got["reason"]
    s = got["signals"]
    assert (s["configured"], s["running"], s["busy"], s["useful_backlog"]) == (2, 2, 2, 18)
    assert got["alert"] is None and got["last_change"] is None and got["history_samples"] == 0
    # the same from a recorded history of 15 minutes of backlog, and the same in check mode
    history(paths["metrics"], 15, 1, 18, 2, 2)
    checked = decide(args, check=True)["qfc_autoscale"]
    assert (checked["action"], checked["target"]) == ("up", min(4, CORE_LIMIT))
    assert checked["signals"]["backlog_window"]["source"] == "history" and checked["history_samples"] == 16
    assert stack.env_value() == "2" and len(stack.running()) == 2  # read-only


def test_a_recent_change_in_the_operations_log_holds_for_the_cooldown(env):
    stack, db, paths, args = env
    record = _oplog.make_record("autoscale", 1, 2, "burst", "changed", _oplog.make_actor(user="alice"),
                                now=datetime.now(timezone.utc) - timedelta(seconds=60))
    _oplog.append(str(paths["oplog"]), record)
    burst(db)
    got = decide(args)["qfc_autoscale"]
    assert (got["action"], got["target"]) == ("hold", 2)
    assert re.search(r"the last change \(autoscale 1 -> 2, 6\ds ago\) is within the cooldown of 900s", got["reason"])
    assert got["last_change"] == record
    assert 830 <= got["signals"]["cooldown"]["remaining_s"] <= 840
    # after the cooldown (a shorter one) the same queue scales up
    assert decide(args, cooldown=30)["qfc_autoscale"]["action"] == "up"


def test_idle_history_longer_than_down_after_lowers_by_one(env):
    stack, db, paths, args = env
    history(paths["metrics"], 40, 5, 0, 2, 0)
    got = decide(args)["qfc_autoscale"]
    assert (got["action"], got["current"], got["target"]) == ("down", 2, 1), got["reason"]
    assert re.search(r"workers idle for 240\ds \(down_after 1800s", got["reason"]), got["reason"]
    assert got["history_samples"] == 9
    # the floor holds it
    held = decide(args, min_replicas=2)["qfc_autoscale"]
    assert (held["action"], held["target"]) == ("hold", 2) and "min_replicas 2" in held["reason"]
    # 20 minutes of idle samples are not enough
    history(paths["metrics"], 20, 5, 0, 2, 0)
    assert decide(args)["qfc_autoscale"]["action"] == "hold"


def test_database_down_fails_clearly_and_changes_nothing(env):
    stack, db, paths, args = env
    result = decide(args, login_port=free_port(), connect_timeout=2)
    assert result.failed
    assert "Cannot connect to PostgreSQL at" in result["msg"] and "no change was made" in result["msg"]
    assert stack.env_value() == "2" and len(stack.running()) == 2 and not paths["oplog"].exists()


def test_a_critical_failure_rate_means_investigate(env):
    stack, db, paths, args = env
    (user,) = datagen.make_users(db.conn, 1)
    (project,) = datagen.make_projects(db.conn, db.project_table, 1, user)
    for i in range(10):  # 5 of 10 failed in the last hour: above 30%
        datagen.add_job(db.conn, project, user, "failed" if i % 2 else "finished", created_ago_s=900,
                        started_ago_s=800, finished_ago_s=700)
    burst(db)
    got = decide(args)["qfc_autoscale"]
    assert (got["action"], got["target"], got["alert"]) == ("investigate", 2, "failure_rate_high")
    assert "5 of 10 jobs failed in the last hour" in got["reason"]


def test_bad_bounds_and_an_unreadable_operations_log_fail_before_any_decision(env):
    stack, db, paths, args = env
    result = decide(args, min_replicas=5, max_replicas=4)
    assert result.failed and "min_replicas (5) is above max_replicas (4)" in result["msg"]
    assert "no change was made" in result["msg"]
    paths["oplog"].mkdir()
    result = decide(args)
    assert result.failed and "Cannot read the operations log" in result["msg"]
    assert "cooldown cannot be honoured" in result["msg"]
