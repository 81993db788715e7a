"""qfc_job_cleanup against a real PostgreSQL with QFieldCloud's schema, through real Ansible runs."""

from __future__ import annotations

import docker
import pytest
from conftest import all_versions, run_module, with_test_oplog

from tests.support import datagen
from tests.support.pgcluster import SCHEMA_VERSIONS

CLEANUP = "qfieldcloud.ops.qfc_job_cleanup"
UPSTREAM_FEEDBACK = {"error_stack": "", "error": "Job unexpectedly terminated.", "error_origin": "worker_wrapper",
                     "container_exit_code": -2}


@pytest.fixture
def cleanup(ansible_module):
    """qfc_job_cleanup on ``db``'s .env: in-process through pytest-ansible's ansible_module; in check mode as an
    ad-hoc run (run_module), since pytest-ansible cannot run a module in check mode (tests/support/ansible_run.py)."""

    def run(db, check=False, **args):
        args = dict(args, env_file=str(db.env_file))
        if check:
            return run_module(args, module=CLEANUP, check=True)
        return getattr(ansible_module, CLEANUP)(**with_test_oplog(args, CLEANUP))["localhost"]

    return run


def setup_jobs(db):
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, 6, user)
    add = datagen.add_job
    jobs = {
        "stale_started": add(db.conn, projects[0], user, "started", created_ago_s=7300, started_ago_s=7200,
                             feedback={"steps": []}, output="qgis log"),
        "stale_queued": add(db.conn, projects[1], user, "queued", created_ago_s=7300, started_ago_s=7200),
        "fresh_started": add(db.conn, projects[2], user, "started", created_ago_s=100, started_ago_s=60),
        "orphaned": add(db.conn, projects[3], user, "queued", created_ago_s=7200),
        "old_pending": add(db.conn, projects[4], user, "pending", created_ago_s=3 * 86400),
        "finished": add(db.conn, projects[4], user, "finished", created_ago_s=4 * 86400, started_ago_s=4 * 86400 - 5,
                        finished_ago_s=4 * 86400 - 60),
    }
    job, deltas = datagen.add_delta_apply_job(db.conn, projects[5], user, n_deltas=2, status="started",
                                              created_ago_s=4000, started_ago_s=3600)
    jobs["stale_delta_apply"] = job
    return user, jobs, deltas


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_stale_mirrors_upstream_cron_check_run_check_run(make_db, version, cleanup):
    db = make_db(version)
    user, jobs, deltas = setup_jobs(db)
    stale = {jobs["stale_started"], jobs["stale_queued"], jobs["stale_delta_apply"]}
    check1 = cleanup(db, check=True)
    assert not check1.is_failed, check1
    assert check1["changed"] is True and check1["count"] == 3 and {j["id"] for j in check1["jobs"]} == stale
    assert db.status(jobs["stale_started"]) == "started"
    run1 = cleanup(db)
    assert run1["changed"] is True and run1["count"] == 3 and {j["id"] for j in run1["jobs"]} == stale
    assert run1["threshold_s"] == 610
    check2 = cleanup(db, check=True)
    assert check2["changed"] is False and check2["count"] == 0
    run2 = cleanup(db)
    assert run2["changed"] is False and run2["count"] == 0

    status, output, feedback, finished = db.one(
        "SELECT status, output, feedback, finished_at IS NOT NULL FROM core_job WHERE id = %s", [jobs["stale_started"]])
    assert (status, output, finished) == ("failed", "Job unexpectedly terminated.", True)
    audit = feedback.pop("qfc_cleanup")
    assert feedback == UPSTREAM_FEEDBACK
    assert audit["previous_status"] == "started" and audit["mode"] == "stale"
    assert audit["previous_feedback"] == {"steps": []} and audit["previous_started_at"] and audit["at"]
    for key in ("fresh_started", "orphaned", "old_pending"):
        assert db.status(jobs[key]) in ("started", "queued", "pending"), key
    assert db.status(jobs["finished"]) == "finished"
    # delta_apply: the deltas and the apply-job links are set to error, as upstream does
    rows = db.all("SELECT last_status, last_feedback, last_modified_pk, last_apply_attempt_by_id, "
                  "last_apply_attempt_at IS NOT NULL FROM core_delta WHERE id = ANY(%s::uuid[])", [deltas])
    assert rows == [("error", None, None, user, True)] * 2
    assert db.all("SELECT DISTINCT status FROM core_applyjobdelta WHERE apply_job_id = %s",
                  [jobs["stale_delta_apply"]]) == [("error",)]


def test_stale_threshold_follows_the_worker_timeout(qfcdb, cleanup):
    _user, jobs, _deltas = setup_jobs(qfcdb)
    result = cleanup(qfcdb, worker_timeout_s=20)
    assert result["threshold_s"] == 30
    assert jobs["fresh_started"] in {j["id"] for j in result["jobs"]}
    qfcdb.env_file.write_text(qfcdb.env_text().replace("QFIELDCLOUD_WORKER_TIMEOUT_S=600",
                                                       "QFIELDCLOUD_WORKER_TIMEOUT_S=86400"))
    assert cleanup(qfcdb, check=True)["threshold_s"] == 86410


@all_versions
def test_orphaned_queued_and_running_containers(qfcdb, cleanup):
    _user, jobs, _deltas = setup_jobs(qfcdb)
    (user,) = datagen.make_users(qfcdb.conn, 1)
    (project,) = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 1, user)
    busy = datagen.add_job(qfcdb.conn, project, user, "queued", created_ago_s=7200)
    client = docker.from_env(version="auto")
    container = client.containers.run("qfc-test/busybox:1", ["sleep", "60"], detach=True, network_mode="none",
                                      labels={"app": "production_worker", "job_id": busy, "type": "package"})
    try:
        result = cleanup(qfcdb, mode="orphaned_queued")
    finally:
        container.remove(force=True)
    assert not result.is_failed, result
    assert [j["id"] for j in result["jobs"]] == [jobs["orphaned"]]
    assert result["left_alone"]["running_container"] == 1
    assert qfcdb.status(busy) == "queued"
    output, feedback = qfcdb.one("SELECT output, feedback FROM core_job WHERE id = %s", [jobs["orphaned"]])
    assert output == "Auto-cleanup: queued but never started >610s"
    assert feedback["qfc_cleanup"]["previous_status"] == "queued" and feedback["error_origin"] == "qfieldcloud.ops"
    assert cleanup(qfcdb, mode="orphaned_queued", older_than="3h")["count"] == 0


def test_age_mode_leaves_a_long_waiting_job_that_just_started(qfcdb, cleanup):
    (user,) = datagen.make_users(qfcdb.conn, 1)
    (project,) = datagen.make_projects(qfcdb.conn, qfcdb.project_table, 1, user)
    waited = datagen.add_job(qfcdb.conn, project, user, "started", created_ago_s=2 * 86400, started_ago_s=60)
    result = cleanup(qfcdb, mode="age", older_than="24h")
    assert not result.is_failed and result["count"] == 0
    assert qfcdb.status(waited) == "started"


@all_versions
def test_age_mode_needs_opt_in_for_pending(qfcdb, cleanup):
    _user, jobs, _deltas = setup_jobs(qfcdb)
    refused = cleanup(qfcdb, mode="age", older_than="24h", statuses=["pending", "queued"])
    assert refused.is_failed and "allow_pending=true" in refused["msg"]
    assert qfcdb.status(jobs["old_pending"]) == "pending"
    result = cleanup(qfcdb, mode="age", older_than="24h", statuses=["pending", "queued"], allow_pending=True)
    assert [j["id"] for j in result["jobs"]] == [jobs["old_pending"]]
    output, feedback = qfcdb.one("SELECT output, feedback FROM core_job WHERE id = %s", [jobs["old_pending"]])
    assert output == "Auto-cleanup: stuck >24h"
    assert feedback["qfc_cleanup"]["previous_status"] == "pending"
    assert feedback["qfc_cleanup"]["reason"] == "stuck >24h"


def test_locked_rows_are_skipped_and_rechecked(qfcdb, cleanup):
    _user, jobs, _deltas = setup_jobs(qfcdb)
    # A worker holds the row (as dequeue does inside its transaction): the cleanup must not wait or overwrite it.
    worker = qfcdb.pg.connect(dbname=qfcdb.name)
    try:
        with worker.cursor() as cur:
            cur.execute("SELECT 1 FROM core_job WHERE id = %s FOR UPDATE", [jobs["stale_queued"]])
        result = cleanup(qfcdb)
    finally:
        worker.rollback()
        worker.close()
    assert result["count"] == 2 and result["left_alone"]["changed_meanwhile"] == 1
    assert qfcdb.status(jobs["stale_queued"]) == "queued"
    assert cleanup(qfcdb)["count"] == 1


def test_batches(qfcdb, cleanup):
    ids = datagen.add_stuck(qfcdb.conn, qfcdb.project_table, 120, "stale")
    result = cleanup(qfcdb, batch_size=50, max_jobs_listed=200)
    assert result["count"] == 120 and result["batches"] == 3 and result["jobs_truncated"] is False
    assert {j["id"] for j in result["jobs"]} == set(ids)
    assert qfcdb.one("SELECT count(*) FROM core_job WHERE status = 'failed'")[0] == 120


@pytest.mark.parametrize("args, fragment", [
    ({"mode": "age"}, "mode=age needs older_than"),
    ({"mode": "age", "older_than": "yesterday"}, "a duration must be like"),
    ({"mode": "age", "older_than": "-2h"}, "a duration must be like"),
    ({"mode": "age", "older_than": "0"}, "must be positive"),
    ({"mode": "age", "older_than": "24h", "statuses": ["stuck"]}, "unknown job status 'stuck'"),
    ({"mode": "age", "older_than": "24h", "statuses": ["finished"]}, "already final"),
    ({"batch_size": 0}, "batch_size must be 1 or more"),
    ({"worker_timeout_s": -1}, "worker_timeout_s must be positive"),
    ({"mode": "sometimes"}, "value of mode must be one of"),
])
def test_bad_input(qfcdb, args, fragment, cleanup):
    _user, jobs, _deltas = setup_jobs(qfcdb)
    result = cleanup(qfcdb, **args)
    assert result.is_failed and fragment in result["msg"], result
    assert qfcdb.status(jobs["stale_started"]) == "started"


def test_wrong_password_unreachable_and_foreign_database(qfcdb, pg, tmp_path, cleanup):
    # -vvv output is read for the password: an ad-hoc run, whose output a test can read (run_module)
    result = run_module({"env_file": str(qfcdb.env_file), "login_password": "N0t-The-Password"}, module=CLEANUP,
                        verbose=True)
    assert result.failed and "password authentication failed" in result["msg"]
    assert "N0t-The-Password" not in result.output and pg.password not in result.output
    result = cleanup(qfcdb, login_port=1, connect_timeout=2)
    assert result.is_failed and "Cannot connect to PostgreSQL" in result["msg"]
    result = cleanup(qfcdb, login_db=pg.dbname)
    assert result.is_failed and "has no QFieldCloud job tables" in result["msg"]
