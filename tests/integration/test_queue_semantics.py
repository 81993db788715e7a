"""The queue numbers mean what upstream's behaviour means, on the recorded schemas, through real Ansible runs.

- useful_backlog is the number of jobs an upstream-like dequeue (tests/fixtures/worker_sim/dequeue.py, which mirrors
  `manage.py dequeue`) starts on the same data with enough free workers: one per eligible project.
- Final statuses count by when the job ended: a job created days ago and failed half an hour ago (by upstream's cron,
  or by qfc_job_cleanup) is in last_hour.failed.
- The worker timeout is read where the release reads it: django-constance's WORKER_TIMEOUT_S row up to v26.23
  (written the way django-constance 4.3.x writes it), QFIELDCLOUD_WORKER_TIMEOUT_S in .env from v26.24 (the row is
  then stale and ignored).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT, all_versions

from tests.support import datagen

FACTS = "qfieldcloud.ops.qfc_queue_facts"
CLEANUP = "qfieldcloud.ops.qfc_job_cleanup"
CONSTANCE_RELEASES = ("v25.26", "v26.20", "v26.23")  # the recorded schemas whose release reads constance


def load_dequeue():
    path = ROOT / "tests" / "fixtures" / "worker_sim" / "dequeue.py"
    spec = importlib.util.spec_from_file_location("qfc_worker_sim_dequeue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def facts(run_qfc_module):
    def run(db, **args):
        result = run_qfc_module(dict({"env_file": str(db.env_file)}, **args), module=FACTS)
        assert not result.is_failed, result
        return result["ansible_facts"]["qfc_queue"]

    return run


@pytest.fixture
def cleanup(run_qfc_module):
    def run(db, check=False, **args):
        result = run_qfc_module(dict({"env_file": str(db.env_file), "check_containers": False}, **args),
                                module=CLEANUP, check=check)
        assert not result.is_failed, result
        return result

    return run


def constance_value(value):
    """The value django-constance 4.3.x's DatabaseBackend.set() stores (constance.codecs.dumps): QFieldCloud v25.26
    pins django-constance 4.3.2, v26.20 to v26.25 pin 4.3.5; both write this JSON."""
    return json.dumps({"__type__": "default", "__value__": value})


def set_constance(db, value):
    with db.conn, db.conn.cursor() as cur:
        cur.execute("INSERT INTO constance_constance (key, value) VALUES ('WORKER_TIMEOUT_S', %s)",
                    [constance_value(value)])


@all_versions
def test_useful_backlog_is_what_upstreams_dequeue_starts(qfcdb, facts):
    db = qfcdb
    (user,) = datagen.make_users(db.conn, 1)
    locked, busy, free, free2, orphan, old = datagen.make_projects(db.conn, db.project_table, 6, user, locked=1)
    add = datagen.add_job
    add(db.conn, locked, user, "pending", created_ago_s=30)             # locked_at: skipped
    add(db.conn, busy, user, "started", created_ago_s=100, started_ago_s=50)
    add(db.conn, busy, user, "pending", created_ago_s=90)               # waits for its project's started job
    first = add(db.conn, free, user, "pending", created_ago_s=80)       # two pending jobs of one free project:
    add(db.conn, free, user, "pending", created_ago_s=70)               # one start, the other waits for it
    add(db.conn, free2, user, "pending", created_ago_s=20)
    add(db.conn, orphan, user, "queued", created_ago_s=7200)            # a queued job blocks its project too
    add(db.conn, orphan, user, "pending", created_ago_s=60)
    add(db.conn, old, user, "pending", created_ago_s=3 * 86400)

    q = facts(db)
    assert q["by_status"]["pending"] == 7

    # Enough free workers: dequeue until upstream's rule gives nothing more, without running anything.
    dequeue = load_dequeue()
    conn = db.pg.connect(dbname=db.name)
    try:
        started = []
        while (job := dequeue.dequeue(conn, db.project_table)) is not None:
            started.append(job)
    finally:
        conn.close()
    assert len(started) == 3  # free, free2, old: one each
    assert started[0][0] == first or started[1][0] == first or started[2][0] == first  # the free project's oldest
    assert q["useful_backlog"] == len(started) == q["eligible_projects"]
    assert q["oldest_eligible_age_s"] == pytest.approx(3 * 86400, abs=5)


@all_versions
def test_a_job_created_days_ago_and_failed_recently_counts_in_the_last_hour(qfcdb, facts, cleanup):
    db = qfcdb
    (user,) = datagen.make_users(db.conn, 1)
    p1, p2, p3, p4 = datagen.make_projects(db.conn, db.project_table, 4, user)
    add = datagen.add_job
    # Upstream's cron failed it 30 minutes ago with QuerySet.update(): finished_at now, updated_at untouched.
    by_cron = add(db.conn, p1, user, "started", created_ago_s=3 * 86400, started_ago_s=3 * 86400 - 60)
    with db.conn, db.conn.cursor() as cur:
        cur.execute("UPDATE core_job SET status = 'failed', finished_at = now() - interval '30 minutes',"
                    " feedback = '{\"error\": \"Job unexpectedly terminated.\"}' WHERE id = %s", [by_cron])
    # qfc_job_cleanup fails one now.
    stale = add(db.conn, p2, user, "started", created_ago_s=3 * 86400, started_ago_s=3 * 86400 - 60)
    assert [j["id"] for j in cleanup(db, mode="stale", worker_timeout_s=600)["jobs"]] == [stale]
    # Waited 3 days in the queue, then ran and finished 10 minutes ago (upstream's wrapper saves only status and
    # finished_at: updated_at stays at its creation).
    add(db.conn, p3, user, "finished", created_ago_s=3 * 86400, started_ago_s=700, finished_ago_s=600)
    with db.conn, db.conn.cursor() as cur:
        cur.execute("UPDATE core_job SET updated_at = created_at WHERE project_id = %s", [p3])
    add(db.conn, p4, user, "finished", created_ago_s=3 * 86400, started_ago_s=2 * 86400, finished_ago_s=2 * 86400)

    q = facts(db)
    assert q["last_hour"] == {"finished": 1, "failed": 2, "success_rate": 0.3333}
    assert (q["by_status"]["finished"], q["by_status"]["failed"]) == (1, 2)  # the one from 2 days ago is out
    assert q["duration"]["count"] == 1 and q["duration"]["p50_s"] == pytest.approx(100, abs=1)
    assert "failure_rate_high" in {a["code"] for a in q["alerts"]}
    assert q["decision"]["action"] == "investigate"  # success 33% < 80%
    # The window option: 3 days includes the job that ended 2 days ago
    assert facts(db, window="3d")["by_status"]["finished"] == 2


@all_versions
def test_worker_timeout_is_read_where_the_release_reads_it(qfcdb, facts, cleanup):
    db = qfcdb
    reads_constance = db.version in CONSTANCE_RELEASES
    (user,) = datagen.make_users(db.conn, 1)
    (project,) = datagen.make_projects(db.conn, db.project_table, 1, user)
    job = datagen.add_job(db.conn, project, user, "started", created_ago_s=1100, started_ago_s=1000)
    # .env says 600 (QfcDb.env_text); constance says 1800. Upstream's cron fails the job at 610 s on v26.24+ and at
    # 1810 s up to v26.23, so after 1000 s it is stale only on v26.25.
    set_constance(db, 1800)
    q = facts(db)
    checked = cleanup(db, check=True)
    if reads_constance:
        assert (q["worker_timeout_s"], q["worker_timeout_source"], q["stuck"]["stale"]) == (1800, "constance", 0)
        assert (checked["threshold_s"], checked["worker_timeout_source"], checked["count"]) == (1810, "constance", 0)
    else:
        assert q["release"] == ">= v26.25"
        assert (q["worker_timeout_s"], q["worker_timeout_source"], q["stuck"]["stale"]) == (600, "env", 1)
        assert (checked["threshold_s"], checked["worker_timeout_source"], checked["count"]) == (610, "env", 1)
    # The option always wins.
    q = facts(db, worker_timeout_s=900)
    assert (q["worker_timeout_source"], q["stuck"]["stale"]) == ("option", 1)
    # No row: upstream's default, 600, whatever .env says on the constance releases.
    with db.conn, db.conn.cursor() as cur:
        cur.execute("DELETE FROM constance_constance")
    db.env_file.write_text(db.env_text().replace("QFIELDCLOUD_WORKER_TIMEOUT_S=600",
                                                 "QFIELDCLOUD_WORKER_TIMEOUT_S=7200"))
    q = facts(db)
    if reads_constance:
        assert (q["worker_timeout_s"], q["worker_timeout_source"], q["stuck"]["stale"]) == (600, "default", 1)
    else:
        assert (q["worker_timeout_s"], q["worker_timeout_source"], q["stuck"]["stale"]) == (7200, "env", 0)
    result = cleanup(db)
    assert [j["id"] for j in result["jobs"]] == ([job] if reads_constance else [])


def test_a_constance_row_that_is_not_a_number_is_refused_clearly(make_db, run_qfc_module):
    db = make_db("v26.23")
    with db.conn, db.conn.cursor() as cur:
        cur.execute("INSERT INTO constance_constance (key, value) VALUES ('WORKER_TIMEOUT_S', %s)",
                    [json.dumps({"__type__": "default", "__value__": "ten minutes"})])
    for module in (FACTS, CLEANUP):
        result = run_qfc_module({"env_file": str(db.env_file)}, module=module)
        assert result.is_failed
        assert "WORKER_TIMEOUT_S cannot be used as the worker timeout" in result["msg"], result
        assert "Nothing was changed" in result["msg"] or "nothing was changed" in result["msg"]
