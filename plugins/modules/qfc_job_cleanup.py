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
    longer than one batch. For C(delta_apply) jobs it also locks their C(core_applyjobdelta) and C(core_delta) rows
    with C(SKIP LOCKED); a job any of whose rows another session holds is left alone, whole, and counted in
    C(locked_deltas) in RV(left_alone). A later run fails it.
  - Every statement, the selection included, runs with O(statement_timeout) and O(lock_timeout) (session settings),
    and the client waits for each call at most O(statement_timeout) + 2 s (the login O(connect_timeout)), so a table
    lock (a migration, C(VACUUM FULL), C(LOCK TABLE)) or a server that stops answering ends the run quickly instead of
    hanging it.
  - When a run fails, the result says exactly what was changed. Batches committed before the failure stay committed;
    C(changed), RV(count) and RV(jobs) report them, RV(failed_batch) names the batch that failed and
    RV(failed_batch_outcome) says whether it was rolled back (nothing of it changed) or, when the connection was lost
    during its C(COMMIT), V(unknown). Later batches are not run. A failure before the first batch changes nothing.
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
      - QFieldCloud's worker timeout. When set it wins (RV(worker_timeout_source=option)).
      - Otherwise it is read where the database's release reads it, as upstream's cron does. From v26.24,
        C(QFIELDCLOUD_WORKER_TIMEOUT_S) from C(.env) (V(env)); up to v26.23 the django-constance row
        C(WORKER_TIMEOUT_S) in C(constance_constance) (V(constance)), whatever C(.env) says; else 600 (V(default)).
      - The release is told by the schema (C(project_qgisproject.area_of_interest) means v26.25 or later). v26.24 has
        v26.23's schema; it is recognised by its C(docker-compose.yml) in O(project_src) (or beside O(env_file)),
        which passes C(QFIELDCLOUD_WORKER_TIMEOUT_S) to the services. Without that file a v26.24 database is read as
        v26.23.
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
    description:
      - Milliseconds any statement waits for a lock before it fails (PostgreSQL's C(lock_timeout), set for the whole
        session, so for the selection and every batch). 1 to 2147483647.
      - Rows locked by other sessions are skipped, not waited for (C(core_job) rows, and the C(core_delta) and
        C(core_applyjobdelta) rows of C(delta_apply) jobs), so this applies to table locks. With C(core_job) locked
        (C(LOCK TABLE), a migration, C(VACUUM FULL)) the run fails after about this long with C(core_job is locked
        by another session), changing nothing (or, in a later batch, nothing more).
    type: int
    default: 1000
  statement_timeout:
    description:
      - Milliseconds each statement (the selection, each batch's statements) may run before PostgreSQL cancels it.
        1 to 2147483647.
      - The default suits batches of the default size, which took about 100 ms each in a benchmark on a million
        jobs (see docs/performance.md), and leaves the selection room on large tables.
      - The client waits for each call at most O(statement_timeout) + 2 s, so that a live server's own cancel always
        arrives first; a server that does not answer at all ends the run after that long.
    type: int
    default: 5000
  max_jobs_listed:
    description:
      - Most jobs listed in RV(jobs) (the oldest ones) and in RV(failed_batch_jobs). RV(count) is always exact, and
        RV(jobs_truncated) tells when jobs were left out of the list. V(0) lists none.
    type: int
    default: 100
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
  description:
    - Jobs failed (in check mode, jobs that would be failed). Exact, however long the list in RV(jobs).
    - When the run fails, the jobs failed by the batches committed before the failure.
  returned: always
  type: int
  sample: 3
jobs:
  description:
    - The jobs failed (or that would be), oldest first; at most O(max_jobs_listed) of them.
    - When the run fails, the jobs of the batches committed before the failure.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 0e6f54b2-6a0e-4b53-9d7e-0b9d3c1f2a11
      project_id: 5a1c0d7e-9b1f-4c55-8f00-3f3b2a1e4d22
      type: package
      previous_status: queued
      created_at: "2026-11-27T10:00:00+00:00"
jobs_truncated:
  description: Whether RV(jobs) lists fewer jobs than RV(count).
  returned: always
  type: bool
  sample: false
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
worker_timeout_s:
  description: The worker timeout used, in seconds (null when the run failed before it was read).
  returned: always
  type: int
  sample: 600
worker_timeout_source:
  description:
    - Where RV(worker_timeout_s) came from. V(option) (O(worker_timeout_s)), V(env) (C(QFIELDCLOUD_WORKER_TIMEOUT_S)
      in C(.env), v26.24 and later), V(constance) (the C(WORKER_TIMEOUT_S) row, v26.23 and earlier) or V(default)
      (600, upstream's default).
  returned: always
  type: str
  sample: env
left_alone:
  description:
    - Candidates left alone, by reason. C(running_container) has a running QGIS container. C(changed_meanwhile)
      changed status or was locked by a worker between the selection and its batch. C(locked_deltas) is a
      C(delta_apply) job whose C(core_delta) or C(core_applyjobdelta) rows another session holds.
  returned: always
  type: dict
  sample: {running_container: 0, changed_meanwhile: 1, locked_deltas: 0}
batches:
  description: Transactions committed.
  returned: always
  type: int
  sample: 1
max_batch_ms:
  description: The longest batch transaction, from its first row lock to its commit, in milliseconds.
  returned: always
  type: float
  sample: 85.2
failed_batch:
  description: The number (from 1) of the batch that failed.
  returned: when a batch failed
  type: int
  sample: 2
failed_batch_jobs:
  description: The ids of the failed batch's jobs (at most O(max_jobs_listed)).
  returned: when a batch failed
  type: list
  elements: str
  sample: [9b1d2c4e-2f3a-4b5c-8d6e-7f8091a2b3c4]
failed_batch_outcome:
  description:
    - V(rolled back) (nothing of the batch was changed) or V(unknown) (the connection was lost during its C(COMMIT),
      which the server may have completed; a new run, or check mode, shows what is still stuck).
  returned: when a batch failed
  type: str
  sample: rolled back
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _jobs, _postgres, _engine

SELECT_SQL = "SELECT id::text, project_id::text, type, status, created_at FROM core_job WHERE %s ORDER BY created_at"

LOCK_SQL = "SELECT id::text FROM core_job WHERE id = ANY(%%(ids)s::uuid[]) AND (%s) FOR UPDATE SKIP LOCKED"

# The delta_apply jobs of a batch whose core_applyjobdelta or core_delta rows another session holds: every related
# row this batch can lock is locked now (SKIP LOCKED: no waiting); a job with any row left over keeps its status.
LOCK_DELTAS_SQL = """
WITH links AS (
    SELECT apply_job_id, count(*) AS n FROM core_applyjobdelta
     WHERE apply_job_id = ANY(%(ids)s::uuid[]) GROUP BY apply_job_id
), locked AS (
    SELECT ajd.apply_job_id FROM core_applyjobdelta ajd JOIN core_delta d ON d.id = ajd.delta_id
     WHERE ajd.apply_job_id = ANY(%(ids)s::uuid[])
       FOR UPDATE OF ajd, d SKIP LOCKED
), got AS (
    SELECT apply_job_id, count(*) AS n FROM locked GROUP BY apply_job_id
)
SELECT links.apply_job_id::text FROM links LEFT JOIN got USING (apply_job_id) WHERE coalesce(got.n, 0) < links.n
"""

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

# What each step touches, for a lock timeout's message.
STEP_TABLES = {
    "connect": None,
    "select": "core_job",
    "lock_jobs": "core_job",
    "lock_deltas": "core_delta or core_applyjobdelta",
    "update_deltas": "core_delta or core_applyjobdelta",
    "fail_jobs": "core_job",
    "commit": None,
}
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


class Plan:
    """What to fail and why, from the options: the WHERE clause, its parameters, and the notes written.

    The options are checked at once, before any connection; the thresholds that depend on the worker timeout are set
    by :meth:`resolve` once the database has told where the release reads it."""

    def __init__(self, params, env):
        self.mode = params["mode"]
        self.option = params["worker_timeout_s"]
        self.env = env
        if self.option is not None:
            _jobs.check_worker_timeout(self.option)
        if params["batch_size"] < 1:
            raise ValueError("batch_size must be 1 or more, got %d" % params["batch_size"])
        _postgres.check_timeout_ms("lock_timeout", params["lock_timeout"])
        _postgres.check_timeout_ms("statement_timeout", params["statement_timeout"])
        if params["max_jobs_listed"] < 0:
            raise ValueError("max_jobs_listed must be 0 or more, got %d" % params["max_jobs_listed"])
        given = params["older_than"] if self.mode != "stale" else None  # stale has no age option (as before)
        self.older_than = str(given).strip() if given else None
        self.older_than_s = _jobs.parse_duration(given) if given else None
        self.worker_timeout_s = self.worker_timeout_source = self.threshold_s = None
        self.params = {}
        if self.mode == "age":
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
            self.threshold_s = self.older_than_s
            # started_at too: a job created long ago that a worker took a minute ago is running, not stuck
            self.where = ("status = ANY(%(statuses)s) AND created_at < now() - make_interval(secs => %(older_than_s)s)"
                          " AND (started_at IS NULL OR started_at < now() - make_interval(secs => %(older_than_s)s))")
            self.params.update(statuses=list(statuses), older_than_s=self.threshold_s)
            self._notes("stuck >%s" % self.older_than)

    def _notes(self, label):
        self.output = "Auto-cleanup: %s" % label
        self.reason = label
        self.feedback = {"error_stack": "", "error": self.output, "error_origin": "qfieldcloud.ops",
                         "container_exit_code": -2}

    def resolve(self, cursor, schema, compose_text=None):
        """The worker timeout from where the release reads it (the option wins), and the thresholds that use it."""
        self.worker_timeout_s, self.worker_timeout_source, _home = _jobs.worker_timeout_from_db(
            cursor, schema, self.option, self.env, compose_text)
        timeout = self.worker_timeout_s
        if self.mode == "stale":
            self.threshold_s = timeout + _jobs.STALE_MARGIN_S
            self.where = _jobs.STUCK_SQL["stale"]
            self.params["stale_after_s"] = self.threshold_s
            self.feedback = dict(_jobs.TERMINATED_FEEDBACK)
            self.output = _jobs.TERMINATED_OUTPUT
            self.reason = "started_at older than the worker timeout + %ds (upstream's cron rule)" % _jobs.STALE_MARGIN_S
        elif self.mode == "orphaned_queued":
            self.threshold_s = self.older_than_s or timeout + _jobs.STALE_MARGIN_S
            self.where = _jobs.STUCK_SQL["orphaned_queued"]
            self.params["orphan_after_s"] = self.threshold_s
            self._notes("queued but never started >%s" % (self.older_than or _jobs.format_duration(self.threshold_s)))


def running_job_ids(module):
    """job_id labels of running containers (QFieldCloud labels each QGIS job container with its job_id)."""
    if not _engine.HAS_DOCKER_SDK:
        module.warn("Docker SDK for Python not found: queued jobs are not checked for running containers.")
        return set()
    try:
        client = _engine.engine_client()
        containers = client.containers(filters={"label": "job_id", "status": "running"})
    except _engine.DockerException as exc:
        module.warn("Docker Engine not reachable (%s): queued jobs are not checked for running containers." % exc)
        return set()
    return {(c.get("Labels") or {}).get("job_id") for c in containers}


def job_row(row):
    return {"id": row[0], "project_id": row[1], "type": row[2], "previous_status": row[3],
            "created_at": row[4].isoformat()}


def listed(jobs, limit):
    """The result's job list: the first ``limit`` (oldest first) and whether some were left out."""
    return {"jobs": jobs[:limit], "jobs_truncated": len(jobs) > limit}


class Cleanup:
    """One run, step by step, so that a failure at any step can say exactly what was already changed."""

    def __init__(self, module, plan, conn):
        self.module = module
        self.plan = plan
        self.conn = conn
        self.step = "connect"
        self.batch = 0            # number of the batch being run (1-based), 0 before the first
        self.batches = None       # total number of batches
        self.batch_ids = []       # the jobs of the batch being run
        self.done = []            # jobs failed in committed batches
        self.candidates = []
        self.left_alone = {"running_container": 0, "changed_meanwhile": 0, "locked_deltas": 0}
        self.max_batch_ms = 0.0

    def setup(self, compose_text=None):
        """Session-wide timeouts (every later statement, the selection included) and the schema check, one round
        trip; then the worker timeout where the release reads it (the constance row, one more round trip, only on
        v26.23 and before without the option). Committed so that the settings outlive the transaction."""
        p = self.module.params
        self.step = "select"
        with self.conn.cursor() as cursor:
            schema = _jobs.detect_schema(cursor, "SET statement_timeout = %d; SET lock_timeout = %d; "
                                         % (p["statement_timeout"], p["lock_timeout"]))
            self.plan.resolve(cursor, schema, compose_text)
        self.conn.commit()

    def select(self):
        self.step = "select"
        with self.conn.cursor() as cursor:
            cursor.execute(SELECT_SQL % self.plan.where, self.plan.params)
            candidates = [job_row(r) for r in cursor.fetchall()]
        self.conn.rollback()
        if self.plan.mode == "orphaned_queued" and self.module.params["check_containers"] and candidates:
            busy = running_job_ids(self.module)
            kept = [j for j in candidates if j["id"] not in busy]
            self.left_alone["running_container"] = len(candidates) - len(kept)
            candidates = kept
        self.candidates = candidates

    def run_batches(self):
        size = self.module.params["batch_size"]
        plan = self.plan
        self.batches = (len(self.candidates) + size - 1) // size
        for start in range(0, len(self.candidates), size):
            batch = self.candidates[start:start + size]
            self.batch += 1
            self.batch_ids = [j["id"] for j in batch]
            began = time.monotonic()
            with self.conn.cursor() as cursor:
                self.step = "lock_jobs"
                cursor.execute(LOCK_SQL % plan.where, dict(plan.params, ids=self.batch_ids))
                locked = [r[0] for r in cursor.fetchall()]
                self.left_alone["changed_meanwhile"] += len(self.batch_ids) - len(locked)
                failed = []
                if locked and any(j["type"] == "delta_apply" for j in batch):
                    self.step = "lock_deltas"
                    cursor.execute(LOCK_DELTAS_SQL, {"ids": locked})
                    held = {r[0] for r in cursor.fetchall()}
                    self.left_alone["locked_deltas"] += len(held)
                    locked = [i for i in locked if i not in held]
                    if locked:
                        self.step = "update_deltas"
                        cursor.execute(DELTAS_SQL, {"ids": locked})
                if locked:
                    self.step = "fail_jobs"
                    cursor.execute(FAIL_SQL, {"ids": locked, "output": plan.output,
                                              "feedback": json.dumps(plan.feedback), "mode": plan.mode,
                                              "reason": plan.reason})
                    failed = [r[0] for r in cursor.fetchall()]
            self.step = "commit"
            self.conn.commit()
            self.done.extend(failed)
            self.max_batch_ms = max(self.max_batch_ms, round((time.monotonic() - began) * 1000.0, 1))
        self.step = "done"

    def result(self, jobs, count):
        limit = self.module.params["max_jobs_listed"]
        out = {"changed": bool(count), "count": count, "mode": self.plan.mode, "threshold_s": self.plan.threshold_s,
               "worker_timeout_s": self.plan.worker_timeout_s,
               "worker_timeout_source": self.plan.worker_timeout_source,
               "left_alone": self.left_alone, "batches": self.batch, "max_batch_ms": self.max_batch_ms}
        out.update(listed(jobs, limit))
        return out

    def finished(self):
        if self.module.check_mode:
            return self.result(self.candidates, len(self.candidates))
        by_id = {j["id"]: j for j in self.candidates}
        return self.result([by_id[i] for i in self.done], len(self.done))

    def failure(self, exc, server):
        """fail_json arguments for an error at the current step: what failed, and exactly what was changed."""
        p = self.module.params
        cause = describe_error(exc, self.step, p, lost=bool(self.conn.closed))
        out = self.result([], 0) if self.module.check_mode else self.finished()  # the committed batches' jobs
        out["batches"] = max(self.batch - 1, 0)
        if self.module.check_mode or self.batch == 0:
            where = "the login" if self.step == "connect" else "the selection of stuck jobs"
            changes = "Nothing was changed."
        else:
            where = "batch %d of %d" % (self.batch, self.batches)
            # Only a connection lost during COMMIT leaves the batch's outcome open: the server may have committed it.
            uncertain = self.step == "commit" and bool(self.conn.closed)
            out.update(failed_batch=self.batch, failed_batch_jobs=self.batch_ids[:p["max_jobs_listed"]],
                       failed_batch_outcome="unknown" if uncertain else "rolled back")
            committed = self.batch - 1
            if not committed:
                before = "No batch was committed before it."
            else:
                before = "%s committed: %s failed (listed in jobs)." % (
                    "Batch 1 of %d was" % self.batches if committed == 1
                    else "Batches 1-%d of %d were" % (committed, self.batches), jobs_n(len(self.done)))
            if uncertain:
                out["changed"] = True
                now = ("Batch %d (%s, listed in failed_batch_jobs) may or may not have been committed: the "
                       "connection was lost during its COMMIT; a new run (or check mode) shows what is still stuck."
                       % (self.batch, jobs_n(len(self.batch_ids))))
            else:
                now = "Batch %d (%s) was rolled back: nothing of it was changed." % (
                    self.batch, jobs_n(len(self.batch_ids)))
            later = " Batches %d-%d were not run." % (self.batch + 1, self.batches) \
                if self.batch + 1 < self.batches else \
                (" Batch %d was not run." % self.batches if self.batch + 1 == self.batches else "")
            changes = "%s %s%s" % (before, now, later)
        out["msg"] = "Cleanup failed on %s during %s: %s %s" % (server, where, cause, changes)
        return out


def jobs_n(n):
    return "1 job" if n == 1 else "%d jobs" % n


def describe_error(exc, step, params, lost=False):
    """One sentence on what went wrong, by kind of error; ``lost``: psycopg2 has closed the connection."""
    text = " ".join(str(exc).split()).rstrip(".")
    if isinstance(exc, _postgres.NoAnswer):
        return "the server stopped answering (%s)." % text
    if lost:  # a restart, pg_terminate_backend, a network failure
        return "the connection to the server was lost (%s)." % text
    code = getattr(exc, "pgcode", None)
    if code == LOCK_NOT_AVAILABLE:
        table = STEP_TABLES.get(step) or "a table"
        return ("%s is locked by another session (a migration, VACUUM FULL or LOCK TABLE?): lock_timeout of %d ms "
                "exceeded (%s)." % (table, params["lock_timeout"], text))
    if code == QUERY_CANCELED:
        return "a statement ran longer than statement_timeout (%d ms) and the server cancelled it (%s)." % (
            params["statement_timeout"], text)
    return "%s." % text


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
        statement_timeout=dict(type="int", default=5000),
        max_jobs_listed=dict(type="int", default=100),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not _postgres.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=_postgres.PSYCOPG2_IMPORT_ERROR)
    conn = None
    cleanup = None
    conn_params = {}
    try:
        env, env_path = _postgres.load_env(module)
        plan = Plan(module.params, env)
        compose_text = _jobs.read_compose(module.params["project_src"]
                                          or (os.path.dirname(env_path) if env_path else None))
        conn_params = _postgres.connection_params(module.params, env)
        call_timeout = _postgres.call_timeout_for(module.params["statement_timeout"])
        conn = _postgres.connect(conn_params, call_timeout=call_timeout)
        if module.check_mode:
            conn.set_session(readonly=True)
        cleanup = Cleanup(module, plan, conn)
        cleanup.setup(compose_text)
        cleanup.select()
        if not module.check_mode:
            cleanup.run_batches()
        result = cleanup.finished()
    except ValueError as exc:
        module.fail_json(msg="Invalid option: %s" % exc)
    except (_postgres.ConnectionError_, _jobs.SchemaError) as exc:
        module.fail_json(msg="%s Nothing was changed." % exc)
    except _postgres.psycopg2.Error as exc:
        if cleanup is None:
            module.fail_json(msg="Cleanup failed on %s: %s Nothing was changed."
                             % (_postgres.describe(conn_params), describe_error(exc, "connect", module.params)))
        module.fail_json(**cleanup.failure(exc, _postgres.describe(conn_params)))
    finally:
        if conn is not None:
            conn.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
