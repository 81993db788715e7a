"""qfc_queue_facts against a real PostgreSQL with QFieldCloud's schema, through real Ansible runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import all_versions, run_module

from tests.support import datagen
from tests.support.pgcluster import PROJECT_TABLE, SCHEMA_VERSIONS

FACTS = "qfieldcloud.ops.qfc_queue_facts"


def facts(args, **kwargs):
    result = run_module(args, module=FACTS, **kwargs)
    assert not result.failed, result
    return result["ansible_facts"]["qfc_queue"]


def scenario(db):
    """A queue with one case of everything the facts distinguish."""
    (user,) = datagen.make_users(db.conn, 1)
    locked, busy, free, free2, stale_p, orphan_p, old_p, hist = datagen.make_projects(
        db.conn, db.project_table, 8, user, locked=1)
    add = datagen.add_job
    ids = {
        "locked_pending": add(db.conn, locked, user, "pending", created_ago_s=30),
        "busy_started": add(db.conn, busy, user, "started", created_ago_s=100, started_ago_s=50),
        "busy_pending": add(db.conn, busy, user, "pending", created_ago_s=90),
        "free_pending_1": add(db.conn, free, user, "pending", created_ago_s=80),
        "free_pending_2": add(db.conn, free, user, "pending", created_ago_s=70),
        "free2_pending": add(db.conn, free2, user, "pending", created_ago_s=20),
        "stale": add(db.conn, stale_p, user, "started", created_ago_s=7300, started_ago_s=7200),
        "orphaned": add(db.conn, orphan_p, user, "queued", created_ago_s=7200),
        "old_pending": add(db.conn, old_p, user, "pending", created_ago_s=3 * 86400),
    }
    # Last hour: 8 finished (durations 10..80 s), 2 failed; one finished yesterday (in the 24h window only).
    for i in range(8):
        add(db.conn, hist, user, "finished", created_ago_s=3000, started_ago_s=1000 + 10 * (i + 1),
            finished_ago_s=1000)
    for _n in range(2):
        add(db.conn, hist, user, "failed", created_ago_s=3000, started_ago_s=1500, finished_ago_s=1400)
    add(db.conn, hist, user, "finished", created_ago_s=80000, started_ago_s=79000, finished_ago_s=78900)
    add(db.conn, hist, user, "finished", created_ago_s=10 * 86400, started_ago_s=9 * 86400, finished_ago_s=9 * 86400)
    return ids


@pytest.mark.parametrize("version, project_table", [(v, PROJECT_TABLE[v]) for v in SCHEMA_VERSIONS])
def test_facts_match_the_database(make_db, version, project_table):
    db = make_db(version)
    before = time.monotonic()
    scenario(db)
    q = facts({"env_file": str(db.env_file)})
    took = time.monotonic() - before  # the jobs' ages grow from their insertion until the query: by at most `took`
    assert q["project_table"] == project_table
    # live statuses now; final statuses within the 24h window (the job finished 9 days ago is not counted)
    assert q["by_status"] == {"pending": 6, "queued": 1, "started": 2, "finished": 9, "stopped": 0, "failed": 2}
    assert q["by_status"] == dict(db.all(
        "SELECT status, count(*) FROM core_job WHERE status IN ('pending', 'queued', 'started')"
        " OR coalesce(finished_at, updated_at) >= now() - interval '24 hours' GROUP BY status"), stopped=0)
    assert q["queue_depth"] == 7
    # one per eligible project, as upstream's dequeue: free (its older of 2 jobs), free2, old_pending; not the
    # locked project, not the busy ones
    assert (q["useful_backlog"], q["eligible_projects"]) == (3, 3)
    assert q["busy_projects"] == 3 and q["locked_projects_waiting"] == 1
    assert 3 * 86400 - 1 <= q["oldest_pending_age_s"] <= 3 * 86400 + took + 1
    assert q["stuck"] == {"stale": 1, "orphaned_queued": 1, "old_pending": 1}
    assert q["last_hour"] == {"finished": 8, "failed": 2, "success_rate": 0.8}
    assert q["duration"]["count"] == 9
    assert q["duration"]["p50_s"] == pytest.approx(50.0) and q["duration"]["avg_s"] == pytest.approx(51.1, abs=0.1)
    assert q["duration"]["p95_s"] == pytest.approx(92.0, abs=0.5)
    assert q["workers"] == {"configured": 2, "running": None, "busy": 1}  # the stale and orphaned jobs run nowhere
    codes = {a["code"]: a["severity"] for a in q["alerts"]}
    assert codes == {"stuck_stale": "warning", "stuck_orphaned_queued": "warning", "stuck_old_pending": "warning"}
    assert q["decision"]["action"] == "monitor"  # depth 7 but success 80% is not > 80%, and not < 80% either
    assert q["recommended_replicas"] == min(1 + 3, int(2.5 * (os.cpu_count() or 1)))
    assert q["query_ms"] < 1000


@all_versions
def test_thresholds_window_and_timeout_options(qfcdb):
    scenario(qfcdb)
    q = facts({"env_file": str(qfcdb.env_file), "window": "2h", "worker_timeout_s": 86400,
               "thresholds": {"queue_depth_warning": 5, "failed_ratio_critical": 0.1, "pending_after_s": 4 * 86400}})
    assert q["duration"]["count"] == 8 and q["duration"]["window_s"] == 7200
    assert (q["by_status"]["finished"], q["by_status"]["failed"]) == (8, 2)
    assert q["stuck"] == {"stale": 0, "orphaned_queued": 0, "old_pending": 0}
    codes = {a["code"] for a in q["alerts"]}
    assert codes == {"queue_depth_high", "failure_rate_high"}


def test_check_mode_reports_the_same(qfcdb):
    scenario(qfcdb)
    normal = facts({"env_file": str(qfcdb.env_file)})
    checked = facts({"env_file": str(qfcdb.env_file)}, check=True)
    for key in ("by_status", "useful_backlog", "stuck", "last_hour", "alerts", "decision"):
        assert normal[key] == checked[key]


def test_explicit_login_options(qfcdb):
    scenario(qfcdb)
    q = facts({"login_host": "127.0.0.1", "login_port": qfcdb.pg.port, "login_user": qfcdb.pg.user,
               "login_password": qfcdb.pg.password, "login_db": qfcdb.name, "ssl_mode": "disable"})
    assert q["by_status"]["pending"] == 6 and q["workers"]["configured"] is None


def test_compose_service_host_uses_the_published_port(qfcdb):
    qfcdb.env_file.write_text(qfcdb.env_text(host="db", port=5432, HOST_POSTGRES_PORT=qfcdb.pg.port))
    q = facts({"env_file": str(qfcdb.env_file)})
    assert q["queue_depth"] == 0 and q["decision"]["action"] == "monitor"


def test_wrong_password_is_not_echoed(qfcdb):
    result = run_module({"env_file": str(qfcdb.env_file), "login_password": "Wr0ng-Secret-77"}, module=FACTS,
                        verbose=True)
    assert result.failed and "password authentication failed" in result["msg"]
    assert "Wr0ng-Secret-77" not in result.output and qfcdb.pg.password not in result.output


def test_unreachable_host(qfcdb):
    result = run_module({"env_file": str(qfcdb.env_file), "login_port": 1, "connect_timeout": 2}, module=FACTS)
    assert result.failed and "Cannot connect to PostgreSQL at qfieldcloud_db_admin@127.0.0.1:1" in result["msg"]


def test_before_v25_26_is_refused_clearly(make_db):
    db = make_db("v25.26")  # the first release with locked_at, turned back into the one before
    with db.conn, db.conn.cursor() as cur:
        cur.execute("ALTER TABLE core_project DROP COLUMN locked_at,"
                    " ADD COLUMN is_locked boolean NOT NULL DEFAULT false")
    result = run_module({"env_file": str(db.env_file)}, module=FACTS)
    assert result.failed and "before v25.26 (Project.is_locked) is not supported" in result["msg"]


def test_database_without_qfieldcloud_tables(pg, tmp_path):
    env = tmp_path / ".env"
    env.write_text("POSTGRES_USER=%s\nPOSTGRES_PASSWORD=%s\nPOSTGRES_DB=%s\nPOSTGRES_HOST=127.0.0.1\n"
                   "POSTGRES_PORT=%d\n" % (pg.user, pg.password, pg.dbname, pg.port))
    result = run_module({"env_file": str(env)}, module=FACTS)
    assert result.failed and "has no QFieldCloud job tables" in result["msg"]


@pytest.mark.parametrize("args, fragment", [
    ({"window": "soon"}, "a duration must be like"),
    ({"window": "-1h"}, "a duration must be like"),
    ({"thresholds": {"queue_depth": 3}}, "Unknown thresholds: queue_depth"),
    ({"thresholds": {"queue_depth_warning": "many"}}, "Invalid option"),
    ({"worker_timeout_s": -5}, "worker_timeout_s must be positive"),
])
def test_bad_options(qfcdb, args, fragment):
    result = run_module(dict(args, env_file=str(qfcdb.env_file)), module=FACTS)
    assert result.failed and fragment in result["msg"]


def test_missing_env_file_and_malformed_env(qfcdb, tmp_path):
    result = run_module({"env_file": str(tmp_path / "nope.env")}, module=FACTS)
    assert result.failed and "does not exist" in result["msg"]
    qfcdb.env_file.write_text(qfcdb.env_text() + 'POSTGRES_PASSWORD="unterminated\n')
    result = run_module({"env_file": str(qfcdb.env_file)}, module=FACTS)
    assert result.failed and "unterminated double quote" in result["msg"] and "unterminated\n" not in result["msg"]


def test_missing_psycopg2_is_reported(qfcdb, tmp_path):
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    result = run_module({"env_file": str(qfcdb.env_file)}, module=FACTS, python=str(bare / "bin" / "python"))
    assert result.failed and "Failed to import the required Python library (psycopg2)" in result["msg"]


def test_statement_timeout_cancels_a_slow_query(qfcdb):
    # Hold an exclusive lock on core_job so the facts query waits; the statement timeout must end it.
    blocker = qfcdb.pg.connect(dbname=qfcdb.name)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE core_job IN ACCESS EXCLUSIVE MODE")
        result = run_module({"env_file": str(qfcdb.env_file), "statement_timeout": 300}, module=FACTS)
    finally:
        blocker.rollback()
        blocker.close()
    assert result.failed and "statement timeout" in result["msg"]


def test_workers_unknown_when_compose_cannot_answer(qfcdb, tmp_path):
    (tmp_path / ".env").write_text(qfcdb.env_text())  # a checkout with .env but no compose file
    result = run_module({"project_src": str(tmp_path)}, module=FACTS)
    assert not result.failed, result
    q = result["ansible_facts"]["qfc_queue"]
    assert q["workers"] == {"configured": 2, "running": None, "busy": 0}
    # (the count asks the Engine by Compose labels, as the collector does; without a Compose file there is no project)
    assert "Running workers unknown: no Compose file in %s" % tmp_path in result.output
