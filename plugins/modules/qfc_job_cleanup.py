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
  - qfieldcloud.ops._oplog
  - qfieldcloud.ops._attributes
  - qfieldcloud.ops._attributes.action_group
attributes:
  action_group:
    membership: [qfieldcloud.ops.qfc, qfieldcloud.ops.qfc_db, qfieldcloud.ops.qfc_project]
  check_mode:
    support: full
    details:
      - Check mode runs the same selection read-only and reports the exact jobs and count that would be failed.
      - Nothing is written to the operations log (O(operations_log)).
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
      - For O(mode=orphaned_queued), skip jobs that have a running container labelled C(job_id=<id>).
      - The Engine is asked over C(/var/run/docker.sock), the socket QFieldCloud's compose file mounts into
        C(worker_wrapper), where the workers start the job containers; E(DOCKER_HOST) and CLI contexts do not apply.
        Python's standard library is used, so the Docker SDK is not needed.
      - When the engine cannot be asked within 5 s (no socket, connection refused, or no whole answer within 5 s,
        one deadline for the request however slowly the answer comes), a warning is given and no job is skipped.
      - When what answers on the socket is not a container list (not HTTP, an HTTP error, not JSON, JSON of another
        shape), the run fails before any change, saying so. Set O(check_containers=false) to sweep without the check.
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
operation_record:
  description:
    - The record appended to O(operations_log) (secret values masked), V(null) in check mode, when no job was failed,
      with O(operations_log=""), or when the log could not be written.
    - C(before) counts the jobs failed by their previous status, C(after) by the status set (one key, C(failed)).
      C(result) is V(changed), or V(failed) when the run failed after committing a batch; C(details) then holds the
      error, the number of jobs committed and the outcome of the batch that failed.
  returned: always
  type: dict
  sample:
    time: "2026-12-02T23:59:01Z"
    host: qfc1
    action: job_cleanup
    before: {queued: 1, started: 2}
    after: {failed: 3}
    reason: "mode stale: 3 jobs stuck longer than 1200 s set to failed"
    actor: {kind: controller, user: alice}
    result: changed
    details: {mode: stale, threshold_s: 1200, job_ids: [11, 12, 13], jobs_truncated: false}
operations_log_error:
  description: Why the operations log could not be written (the cleanup itself stands; a warning says the same).
  returned: when the log could not be written
  type: str
  sample: >-
    The operations log /var/log/qfieldcloud/operations.jsonl was not written ([Errno 28] No space left on device);
    the job_cleanup itself stands.
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _cleanup, _jobs, _oplog, _postgres


def main():
    spec = _postgres.argument_spec()
    spec.update(
        mode=dict(type="str", choices=["stale", "orphaned_queued", "age"], default="stale"),
        worker_timeout_s=dict(type="int"),
        older_than=dict(type="str"),
        statuses=dict(type="list", elements="str", default=list(_jobs.BUSY_STATUSES)),
        allow_pending=dict(type="bool", default=False),
        batch_size=dict(type="int", default=500),
        check_containers=dict(type="bool", default=True),
        lock_timeout=dict(type="int", default=1000),
        statement_timeout=dict(type="int", default=5000),
        max_jobs_listed=dict(type="int", default=100),
    )
    spec.update(_oplog.argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    _postgres.ensure_required_libs(module)
    result = _cleanup.run(module)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
