#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_job_cleanup
short_description: Fail stuck QFieldCloud jobs the way upstream does, and close the gaps it leaves
version_added: 0.1.0
description:
  - Marks stuck jobs in QFieldCloud's C(core_job) as C(failed). It never deletes a job.
  - O(mode=stale) mirrors upstream's C(SetTerminatedWorkersToFinalStatusJob) cron exactly. C(queued)/C(started) jobs
    whose C(started_at) is older than the worker timeout + 10 s get C(status=failed), C(finished_at=now()), upstream's
    feedback and output C(Job unexpectedly terminated.). For C(delta_apply) jobs their deltas get C(last_status=error)
    (and the other C(last_*) fields) and their C(core_applyjobdelta) rows C(status=error).
  - O(mode=orphaned_queued) sweeps C(queued) jobs that never started (C(started_at) is NULL) and have not been touched
    for O(older_than). Upstream never sweeps these and they block their whole project. When the Docker Engine is
    reachable, jobs with a running container labelled with their C(job_id) are left alone.
  - O(mode=age) is the operations write-up's rule. Jobs in O(statuses) created (and, if started, started) more than
    O(older_than) ago are failed.
    Failing C(pending) jobs needs O(allow_pending=true), because upstream would still run them.
  - Each job's previous status, C(started_at) and feedback, the reason and the time are kept in
    C(feedback.qfc_cleanup), for audit and reversal.
  - "The output gets a note in the write-up's style, such as C(Auto-cleanup: stuck >24h)."
  - Works in batches of short transactions. Each batch locks its rows with C(FOR UPDATE SKIP LOCKED) and re-checks
    the condition under the lock, so a job a worker has just picked up is never overwritten, and no row stays locked
    longer than one batch.
extends_documentation_fragment:
  - qfieldcloud.ops._postgres
  - qfieldcloud.ops._attributes
attributes:
  check_mode:
    support: full
    details: [Check mode runs the same selection read-only and reports the exact jobs and count that would be failed.]
  diff_mode:
    support: none
  idempotent:
    support: full
    details: [Failed jobs no longer match, so a second run reports no change.]
options:
  mode:
    description: Which stuck jobs to fail.
    type: str
    choices: [stale, orphaned_queued, age]
    default: stale
  worker_timeout_s:
    description:
      - QFieldCloud's worker timeout. Defaults to C(QFIELDCLOUD_WORKER_TIMEOUT_S) from C(.env), else 600.
      - O(mode=stale) uses timeout + 10 s, as upstream; it is also the default O(older_than) of O(mode=orphaned_queued).
    type: int
  older_than:
    description:
      - Age threshold such as C(24h), C(2d), C(90m), C(1h30m) or a number of seconds.
      - Required for O(mode=age). For O(mode=orphaned_queued) it defaults to the worker timeout + 10 s.
    type: str
  statuses:
    description: Statuses O(mode=age) fails.
    type: list
    elements: str
    default: [queued, started]
  allow_pending:
    description: Allow O(mode=age) to fail C(pending) jobs, which upstream would still run.
    type: bool
    default: false
  batch_size:
    description: Jobs per transaction.
    type: int
    default: 500
  check_containers:
    description:
      - For O(mode=orphaned_queued), skip jobs that have a running container labelled C(job_id=<id>) (Docker SDK for
        Python). When the SDK or the engine is not available, a warning is given and no job is skipped.
    type: bool
    default: true
  lock_timeout:
    description: Milliseconds a batch waits for a table lock before it fails (rows locked by others are skipped).
    type: int
    default: 1000
seealso:
  - module: qfieldcloud.ops.qfc_queue_facts
  - name: Upstream's cron
    description: SetTerminatedWorkersToFinalStatusJob in qfieldcloud/core/cron.py.
    link: https://github.com/opengisch/QFieldCloud/blob/master/docker-app/qfieldcloud/core/cron.py
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: What upstream's cron does, now (connection from .env)
  qfieldcloud.ops.qfc_job_cleanup:
    project_src: /opt/qfieldcloud

- name: Queued jobs that never started and block their project
  qfieldcloud.ops.qfc_job_cleanup:
    project_src: /opt/qfieldcloud
    mode: orphaned_queued
    older_than: 30m

- name: The write-up's weekly rule, previewed first
  qfieldcloud.ops.qfc_job_cleanup:
    project_src: /opt/qfieldcloud
    mode: age
    older_than: 24h
  check_mode: true
  register: preview
"""

RETURN = r"""
count:
  description: Jobs failed (in check mode, jobs that would be failed).
  returned: always
  type: int
  sample: 3
jobs:
  description: The jobs failed (or that would be), oldest first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 0e6f54b2-6a0e-4b53-9d7e-0b9d3c1f2a11
      project_id: 5a1c0d7e-9b1f-4c55-8f00-3f3b2a1e4d22
      type: package
      previous_status: queued
      created_at: "2026-11-27T10:00:00+00:00"
mode:
  description: The mode used.
  returned: always
  type: str
  sample: stale
threshold_s:
  description: The age threshold in seconds (worker timeout + 10 for stale).
  returned: always
  type: int
  sample: 610
left_alone:
  description: Candidates left alone, by reason (C(running_container), C(changed_meanwhile)).
  returned: always
  type: dict
  sample: {running_container: 0, changed_meanwhile: 1}
batches:
  description: Transactions used.
  returned: always
  type: int
  sample: 1
max_batch_ms:
  description: The longest batch transaction, from its first row lock to its commit, in milliseconds.
  returned: always
  type: float
  sample: 85.2
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _jobs, _postgres, _workers

SELECT_SQL = "SELECT id::text, project_id::text, type, status, created_at FROM core_job WHERE %s ORDER BY created_at"

LOCK_SQL = "SELECT id::text FROM core_job WHERE id = ANY(%%(ids)s::uuid[]) AND (%s) FOR UPDATE SKIP LOCKED"

# Upstream: ApplyJob.deltas_to_apply.update(last_status=ERROR, last_feedback=None, last_modified_pk=None,
# last_apply_attempt_at=job.started_at, last_apply_attempt_by=job.created_by), then the ApplyJobDelta rows.
DELTAS_SQL = """
UPDATE core_delta d SET last_status = 'error', last_feedback = NULL, last_modified_pk = NULL,
       last_apply_attempt_at = j.started_at, last_apply_attempt_by_id = j.created_by_id
  FROM core_applyjobdelta ajd JOIN core_job j ON j.id = ajd.apply_job_id
 WHERE ajd.delta_id = d.id AND j.id = ANY(%(ids)s::uuid[]) AND j.type = 'delta_apply';
UPDATE core_applyjobdelta ajd SET status = 'error', feedback = NULL, modified_pk = NULL
  FROM core_job j WHERE j.id = ajd.apply_job_id AND j.id = ANY(%(ids)s::uuid[]) AND j.type = 'delta_apply';
"""

FAIL_SQL = """
UPDATE core_job SET status = 'failed', finished_at = now(), output = %(output)s,
       feedback = %(feedback)s::jsonb || jsonb_build_object('qfc_cleanup', jsonb_build_object(
           'previous_status', status, 'previous_started_at', started_at, 'previous_feedback', feedback,
           'mode', %(mode)s, 'reason', %(reason)s, 'at', now()))
 WHERE id = ANY(%(ids)s::uuid[]) RETURNING id::text
"""


class Plan:
    """What to fail and why, from the options: the WHERE clause, its parameters, and the notes written."""

    def __init__(self, params, env):
        self.mode = params["mode"]
        timeout = _jobs.worker_timeout(env, params["worker_timeout_s"])
        if timeout <= 0:
            raise ValueError("worker_timeout_s must be positive")
        if params["batch_size"] < 1:
            raise ValueError("batch_size must be 1 or more, got %d" % params["batch_size"])
        if params["lock_timeout"] < 1:
            raise ValueError("lock_timeout must be 1 ms or more")
        self.params = {}
        if self.mode == "stale":
            self.threshold_s = timeout + _jobs.STALE_MARGIN_S
            self.where = _jobs.STUCK_SQL["stale"]
            self.params["stale_after_s"] = self.threshold_s
            self.feedback = dict(_jobs.TERMINATED_FEEDBACK)
            self.output = _jobs.TERMINATED_OUTPUT
            self.reason = "started_at older than the worker timeout + %ds (upstream's cron rule)" % _jobs.STALE_MARGIN_S
            return
        if self.mode == "orphaned_queued":
            self.threshold_s = _jobs.parse_duration(params["older_than"] or timeout + _jobs.STALE_MARGIN_S)
            self.where = _jobs.STUCK_SQL["orphaned_queued"]
            self.params["orphan_after_s"] = self.threshold_s
            given = str(params["older_than"]).strip() if params["older_than"] else None
            label = "queued but never started >%s" % (given or _jobs.format_duration(self.threshold_s))
        else:
            if not params["older_than"]:
                raise ValueError("mode=age needs older_than, for example 24h or 2d")
            statuses = params["statuses"]
            if not statuses:
                raise ValueError("mode=age needs at least one status")
            _jobs.check_statuses(statuses)
            final = [s for s in statuses if s not in _jobs.LIVE_STATUSES]
            if final:
                raise ValueError("status %s is already final; mode=age fails pending, queued or started jobs"
                                 % ", ".join(final))
            if "pending" in statuses and not params["allow_pending"]:
                raise ValueError("failing pending jobs needs allow_pending=true: upstream still runs pending jobs "
                                 "once their project is free")
            self.threshold_s = _jobs.parse_duration(params["older_than"])
            # started_at too: a job created long ago that a worker took a minute ago is running, not stuck
            self.where = ("status = ANY(%(statuses)s) AND created_at < now() - make_interval(secs => %(older_than_s)s)"
                          " AND (started_at IS NULL OR started_at < now() - make_interval(secs => %(older_than_s)s))")
            self.params.update(statuses=list(statuses), older_than_s=self.threshold_s)
            label = "stuck >%s" % str(params["older_than"]).strip()
        self.output = "Auto-cleanup: %s" % label
        self.reason = label
        self.feedback = {"error_stack": "", "error": self.output, "error_origin": "qfieldcloud.ops",
                         "container_exit_code": -2}


def running_job_ids(module):
    """job_id labels of running containers (QFieldCloud labels each QGIS job container with its job_id)."""
    if not _workers.HAS_DOCKER_SDK:
        module.warn("Docker SDK for Python not found: queued jobs are not checked for running containers.")
        return set()
    try:
        client = _workers.engine_client()
        containers = client.containers(filters={"label": "job_id", "status": "running"})
    except _workers.DockerException as exc:
        module.warn("Docker Engine not reachable (%s): queued jobs are not checked for running containers." % exc)
        return set()
    return {(c.get("Labels") or {}).get("job_id") for c in containers}


def job_row(row):
    return {"id": row[0], "project_id": row[1], "type": row[2], "previous_status": row[3],
            "created_at": row[4].isoformat()}


def run(module, plan, conn):
    result = {"changed": False, "count": 0, "jobs": [], "mode": plan.mode, "threshold_s": plan.threshold_s,
              "left_alone": {"running_container": 0, "changed_meanwhile": 0}, "batches": 0, "max_batch_ms": 0.0}
    with conn.cursor() as cursor:
        cursor.execute(SELECT_SQL % plan.where, plan.params)
        candidates = [job_row(r) for r in cursor.fetchall()]
    conn.rollback()
    if plan.mode == "orphaned_queued" and module.params["check_containers"] and candidates:
        busy = running_job_ids(module)
        kept = [j for j in candidates if j["id"] not in busy]
        result["left_alone"]["running_container"] = len(candidates) - len(kept)
        candidates = kept
    if module.check_mode:
        result.update(changed=bool(candidates), count=len(candidates), jobs=candidates)
        return result
    by_id = {j["id"]: j for j in candidates}
    size = module.params["batch_size"]
    done = []
    for start in range(0, len(candidates), size):
        ids = [j["id"] for j in candidates[start:start + size]]
        began = time.monotonic()
        with conn.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = %d" % module.params["lock_timeout"])
            cursor.execute(LOCK_SQL % plan.where, dict(plan.params, ids=ids))
            locked = [r[0] for r in cursor.fetchall()]
            if locked:
                cursor.execute(DELTAS_SQL, {"ids": locked})
                cursor.execute(FAIL_SQL, {"ids": locked, "output": plan.output, "feedback": json.dumps(plan.feedback),
                                          "mode": plan.mode, "reason": plan.reason})
                failed = [r[0] for r in cursor.fetchall()]
                done.extend(failed)
        conn.commit()
        result["max_batch_ms"] = max(result["max_batch_ms"], round((time.monotonic() - began) * 1000.0, 1))
        result["batches"] += 1
        result["left_alone"]["changed_meanwhile"] += len(ids) - len(locked)
    result.update(changed=bool(done), count=len(done), jobs=[by_id[i] for i in done])
    return result


def main():
    spec = _postgres.argument_spec()
    spec.update(
        mode=dict(type="str", choices=["stale", "orphaned_queued", "age"], default="stale"),
        worker_timeout_s=dict(type="int"),
        older_than=dict(type="str"),
        statuses=dict(type="list", elements="str", default=["queued", "started"]),
        allow_pending=dict(type="bool", default=False),
        batch_size=dict(type="int", default=500),
        check_containers=dict(type="bool", default=True),
        lock_timeout=dict(type="int", default=1000),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not _postgres.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=_postgres.PSYCOPG2_IMPORT_ERROR)
    conn = None
    try:
        env, _path = _postgres.load_env(module)
        plan = Plan(module.params, env)
        conn_params = _postgres.connection_params(module.params, env)
        conn = _postgres.connect(conn_params)
        if module.check_mode:
            conn.set_session(readonly=True)
        with conn.cursor() as cursor:
            _jobs.detect_project_table(cursor)
        result = run(module, plan, conn)
    except ValueError as exc:
        module.fail_json(msg="Invalid option: %s" % exc)
    except (_postgres.ConnectionError_, _jobs.SchemaError) as exc:
        module.fail_json(msg=str(exc))
    except _postgres.psycopg2.Error as exc:
        module.fail_json(msg="Cleanup failed on %s, nothing of the failing batch was changed: %s"
                         % (_postgres.describe(conn_params), str(exc).strip()))
    finally:
        if conn is not None:
            conn.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
