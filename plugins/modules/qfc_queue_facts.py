#!/usr/bin/python
# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qfc_queue_facts
short_description: Gather QFieldCloud job queue facts, alerts and a capacity decision
version_added: 0.1.0
description:
  - Reads QFieldCloud's C(core_job) table in one read-only transaction with a C(statement_timeout), all metrics in one
    SQL statement (after one query that detects the schema), and returns them as C(ansible_facts.qfc_queue).
  - Counts by status (C(pending), C(queued) and C(started) now; C(finished), C(stopped) and C(failed) that ended
    within O(window)), queue depth, the useful backlog (the jobs free workers could start now; upstream's dequeue
    starts the oldest pending job of each project that has no queued or started job and no C(locked_at), one per
    project), stuck jobs by kind, the last hour's success rate, job durations over a window, and the worker count
    configured in C(.env) and running by Compose labels.
  - Running workers are counted with O(project_src) only, through the local Docker Engine socket (a C(unix://)
    E(DOCKER_HOST), a rootless engine for example, else C(/var/run/docker.sock)) under Compose's project name
    (C(COMPOSE_PROJECT_NAME) from the environment or C(.env), else the directory name), as the monitoring collector
    counts them; no Docker SDK is needed. The Engine gets 5 s for its whole answer. When it does not answer in that
    time, what answers is not a container list, E(DOCKER_HOST) is not a local socket, or the directory has no Compose
    file, the count is null and the task warns.
  - Adds alerts with the operations guideline's thresholds, the capacity decision matrix and a recommended worker count.
  - Read-only. Every failure (database down, wrong password, a server that stops answering, a lock held past
    O(statement_timeout)) fails the task with a message that names the server (never the password), and changes
    nothing.
  - Works with QFieldCloud v26.21 and later (C(project_project)) and v25.26 to v26.20 (C(core_project)). Earlier
    versions, whose projects have C(is_locked) instead of C(locked_at), are refused with a clear message.
extends_documentation_fragment:
  - qfieldcloud.ops._postgres
  - qfieldcloud.ops._queue
  - qfieldcloud.ops._attributes
  - qfieldcloud.ops._attributes.action_group
attributes:
  action_group:
    membership: [qfieldcloud.ops.qfc, qfieldcloud.ops.qfc_db, qfieldcloud.ops.qfc_project]
  check_mode:
    support: full
    details: [Read-only; runs the same queries in check mode.]
  diff_mode:
    support: none
  idempotent:
    support: full
    details: [Never changes anything.]
options:
  window:
    description:
      - Window for the final-status counts and the job durations (C(24h), C(2d), C(90m), or seconds).
      - A job counts when it ended within the window (C(finished_at), or C(updated_at) for a final job without one),
        however long ago it was created, so jobs failed now by upstream's cron or M(qfieldcloud.ops.qfc_job_cleanup)
        count now. No upstream index covers C(finished_at), so this reads every row of C(core_job) (about 0.4 s on a
        million jobs); an index on C(core_job.finished_at) that the operator creates brings it back to milliseconds
        (see docs/queue.md).
    type: str
    default: 24h
seealso:
  - module: qfieldcloud.ops.qfc_job_cleanup
author:
  - qfieldcloud.ops contributors (@qfieldcloud-ops)
"""

EXAMPLES = r"""
- name: Gather queue facts from the database named in .env
  qfieldcloud.ops.qfc_queue_facts:
    project_src: /opt/qfieldcloud

- name: Show the decision
  ansible.builtin.debug:
    msg: "{{ ansible_facts.qfc_queue.decision.action }}: depth {{ ansible_facts.qfc_queue.queue_depth }}"

- name: Explicit connection, stricter alerting
  qfieldcloud.ops.qfc_queue_facts:
    login_host: db.internal
    login_user: qfieldcloud_db_admin
    login_password: "{{ vault_qfc_db_password }}"
    login_db: qfieldcloud_db
    thresholds:
      queue_depth_warning: 5
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    qfc_queue:
      description: The queue snapshot.
      returned: always
      type: dict
      sample:
        by_status: {pending: 3, queued: 1, started: 2, finished: 9950, stopped: 0, failed: 44}
        queue_depth: 4
        useful_backlog: 2
        eligible_projects: 2
        busy_projects: 3
        locked_projects_waiting: 0
        oldest_pending_age_s: 42.0
        oldest_eligible_age_s: 12.5
        stuck: {stale: 0, orphaned_queued: 0, old_pending: 0}
        last_hour: {finished: 120, failed: 3, success_rate: 0.9756}
        duration: {window_s: 86400, count: 2400, avg_s: 48.2, p50_s: 31.0, p95_s: 160.4}
        workers: {configured: 4, running: 4, busy: 3}
        alerts: []
        decision: {action: stop, reason: configuration is sufficient (queue < 5, success > 90%)}
        recommended_replicas: 5
        project_table: project_project
        release: ">= v26.25"
        worker_timeout_s: 600
        worker_timeout_source: env
        query_ms: 38.1
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _compose, _engine, _jobs, _policy, _postgres
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _queue

UNCHANGED = " The facts are read-only: nothing was changed."


def main():
    spec = _postgres.argument_spec()
    spec.update(_queue.argument_spec())
    spec.update(window=dict(type="str", default="24h"))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    _postgres.ensure_required_libs(module)
    p = module.params
    window_s, thresholds, statement_timeout = _queue.check_options(
        module, first=lambda params: _jobs.parse_duration(params["window"]))
    facts, env = _queue.read(module, window_s, thresholds["pending_after_s"], statement_timeout, UNCHANGED,
                             option_note="")
    workers = _engine.worker_counts(env, p["project_src"], p["env_var"], p["service"], module.warn,
                                    bool(p["project_src"]) and bool(_compose.compose_files(p["project_src"], env)))
    workers["busy"] = _queue.busy_workers(facts)
    facts["workers"] = workers
    facts["alerts"] = _policy.alerts(facts, workers, thresholds)
    facts["decision"] = _policy.decision(facts)
    facts["recommended_replicas"] = _policy.recommended_replicas(facts, workers, os.cpu_count() or 1,
                                                                 p["max_replicas_per_core"])
    module.exit_json(changed=False, ansible_facts={"qfc_queue": facts})


if __name__ == "__main__":
    main()
