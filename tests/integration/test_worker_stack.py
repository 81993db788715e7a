"""The whole loop on real parts: simulated workers dequeue from PostgreSQL like upstream, qfc_scale changes their
number, qfc_queue_facts reports the queue, qfc_job_cleanup fails what a killed worker left behind."""

from __future__ import annotations

import time

from conftest import all_versions

from tests.support import datagen


def wait_for(predicate, timeout=60, interval=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within %ss" % timeout)


def live(db):
    return db.one("SELECT count(*) FROM core_job WHERE status IN ('pending', 'queued', 'started')")[0]


@all_versions
def test_workers_drain_the_queue_and_facts_match(db_stack, run_qfc_module):
    stack, db = db_stack
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, 5, user)
    for i in range(10):
        datagen.add_job(db.conn, projects[i % 5], user, "pending", created_ago_s=10 - i)
    scaled = run_qfc_module({"project_src": str(stack.path), "replicas": 4})
    assert not scaled.is_failed and scaled["running"] == 4, scaled
    wait_for(lambda: live(db) == 0)
    result = run_qfc_module({"project_src": str(stack.path)}, module="qfieldcloud.ops.qfc_queue_facts")
    assert not result.is_failed, result
    q = result["ansible_facts"]["qfc_queue"]
    assert q["by_status"] == dict({s: 0 for s in ("pending", "queued", "started", "stopped", "failed")},
                                  finished=10)
    assert q["workers"] == {"configured": 4, "running": 4, "busy": 0}
    assert q["last_hour"] == {"finished": 10, "failed": 0, "success_rate": 1.0}
    assert q["duration"]["count"] == 10 and 0.9 <= q["duration"]["p50_s"] <= 2.5
    assert q["alerts"] == [] and q["decision"]["action"] == "stop"
    # one job per project at a time, as upstream's dequeue guarantees: no two runs of a project overlap
    overlaps = db.one("""SELECT count(*) FROM core_job a JOIN core_job b ON a.project_id = b.project_id AND a.id < b.id
                         WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at""")[0]
    assert overlaps == 0


def test_killed_worker_leaves_a_stale_job_that_cleanup_fails_and_the_project_runs_again(db_stack, run_qfc_module):
    stack, db = db_stack
    (user,) = datagen.make_users(db.conn, 1)
    project, other = datagen.make_projects(db.conn, db.project_table, 2, user)
    long_job = datagen.add_job(db.conn, project, user, "pending", created_ago_s=5, feedback={"sim_seconds": 120})
    follow_up = datagen.add_job(db.conn, project, user, "pending", created_ago_s=1)
    container_id = wait_for(lambda: db.one("SELECT container_id FROM core_job WHERE id = %s AND status = 'started'",
                                           [long_job]))[0]
    stack.client.containers.get(container_id).kill()  # SIGKILL: no chance to finish the job
    time.sleep(2)
    assert db.status(long_job) == "started" and db.status(follow_up) == "pending"  # the project is blocked

    wait_for(lambda: db.one("SELECT now() - started_at > interval '11 seconds' FROM core_job WHERE id = %s",
                            [long_job])[0], timeout=20)
    facts = run_qfc_module({"project_src": str(stack.path), "worker_timeout_s": 1},
                           module="qfieldcloud.ops.qfc_queue_facts")["ansible_facts"]["qfc_queue"]
    assert facts["stuck"]["stale"] == 1 and facts["workers"]["running"] == 1
    assert {"stuck_stale", "workers_missing"} <= {a["code"] for a in facts["alerts"]}

    cleaned = run_qfc_module({"project_src": str(stack.path), "mode": "stale", "worker_timeout_s": 1},
                             module="qfieldcloud.ops.qfc_job_cleanup")
    assert not cleaned.is_failed, cleaned
    assert [j["id"] for j in cleaned["jobs"]] == [long_job]
    assert db.status(long_job) == "failed"
    # the freed project runs its next job; the killed worker is brought back by reconciling the count
    reconciled = run_qfc_module({"project_src": str(stack.path), "replicas": 2})
    assert reconciled["changed"] and reconciled["running"] == 2
    wait_for(lambda: db.status(follow_up) == "finished", timeout=30)
    datagen.add_job(db.conn, other, user, "pending")
    wait_for(lambda: live(db) == 0, timeout=30)


def test_scale_down_lets_a_running_job_finish(db_stack, run_qfc_module):
    stack, db = db_stack
    (user,) = datagen.make_users(db.conn, 1)
    (project,) = datagen.make_projects(db.conn, db.project_table, 1, user)
    job = datagen.add_job(db.conn, project, user, "pending", feedback={"sim_seconds": 4})
    wait_for(lambda: db.status(job) == "started")
    # SIGTERM within stop_grace_period: the simulated dequeue loop finishes its job before it exits, as upstream's
    result = run_qfc_module({"project_src": str(stack.path), "replicas": 0})
    assert not result.is_failed and result["running"] == 0, result
    assert db.status(job) == "finished"
    assert db.one("SELECT finished_at - started_at >= interval '4 seconds' FROM core_job WHERE id = %s", [job])[0]
