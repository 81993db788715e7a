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
  - qfieldcloud.ops._attributes
attributes:
  check_mode:
    support: full
    details: [Read-only; runs the same queries in check mode.]
  diff_mode:
    support: none
  idempotent:
    support: full
    details: [Never changes anything.]
options:
  worker_timeout_s:
    description:
      - QFieldCloud's worker timeout, for the stale definition (C(started_at) older than timeout + 10 s, as upstream's
        cron). When set it wins (C(worker_timeout_source=option)).
      - Otherwise it is read where the database's release reads it, as upstream's cron does. From v26.24,
        C(QFIELDCLOUD_WORKER_TIMEOUT_S) from C(.env) (C(env)); up to v26.23 the django-constance row
        C(WORKER_TIMEOUT_S) in C(constance_constance) (C(constance)), whatever C(.env) says; else 600 (C(default)).
      - The release is told by the schema (C(project_qgisproject.area_of_interest) means v26.25 or later). v26.24 has
        v26.23's schema; it is recognised by its C(docker-compose.yml) in O(project_src) (or beside O(env_file)),
        which passes C(QFIELDCLOUD_WORKER_TIMEOUT_S) to the services. Without that file a v26.24 database is read as
        v26.23.
    type: int
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
  thresholds:
    description:
      - Overrides of the alert thresholds C(queue_depth_warning) (10), C(failed_ratio_critical) (0.30),
        C(idle_grace_s) (60) and C(pending_after_s) (86400). Numbers, finite and not negative.
    type: dict
    default: {}
  statement_timeout:
    description:
      - Milliseconds each statement may run before PostgreSQL cancels it (the server's C(statement_timeout), set for
        the facts' read-only transaction). 1 to 2147483647.
      - "Deadlines, from the inside out: the server cancels a statement after O(statement_timeout) and answers
        C(canceling statement due to statement timeout). The client waits for each call at most
        O(statement_timeout) + 2 s, a little longer, so that a live server's own cancel always arrives first; only a
        server that does not answer at all (hung, paused, frozen) reaches that client-side limit, and the module
        then fails with C(PostgreSQL at user@host:port/db stopped answering). The login has O(connect_timeout).
        The whole database part of a run ends within O(connect_timeout) + O(statement_timeout) + 2 s."
    type: int
    default: 5000
  service:
    description: The Compose service of the workers.
    type: str
    default: worker_wrapper
  env_var:
    description: The C(.env) variable holding the configured worker count.
    type: str
    default: QFIELDCLOUD_WORKER_REPLICAS
  docker_cli:
    description:
      - Not used since running workers are counted through the Docker Engine's socket (as the metrics collector
        counts them) instead of C(docker compose ps); accepted so that existing tasks keep working.
    type: path
  max_replicas_per_core:
    description: Upper bound of the recommended worker count per CPU core of the target. Above 0, at most 64.
    type: float
    default: 2.5
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

import math
import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _compose, _engine, _jobs, _policy, _postgres
from ansible_collections.qfieldcloud.ops.plugins.module_utils import _queue

# The option's ceiling: far above any real guideline (2.5, _replicas.DEFAULT_MAX_REPLICAS_PER_CORE), it only refuses
# typos; the count itself is capped by _replicas.MAX_REPLICAS whatever the cores.
MAX_REPLICAS_PER_CORE = 64


def main():
    spec = _postgres.argument_spec()
    spec.update(
        worker_timeout_s=dict(type="int"),
        window=dict(type="str", default="24h"),
        thresholds=dict(type="dict", default={}),
        statement_timeout=dict(type="int", default=5000),
        service=dict(type="str", default="worker_wrapper"),
        env_var=dict(type="str", default="QFIELDCLOUD_WORKER_REPLICAS"),
        docker_cli=dict(type="path"),
        max_replicas_per_core=dict(type="float", default=_policy.DEFAULT_MAX_REPLICAS_PER_CORE),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not _postgres.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=_postgres.PSYCOPG2_IMPORT_ERROR)
    p = module.params
    try:
        thresholds_ = _policy.check_thresholds(p["thresholds"])
    except KeyError as exc:
        module.fail_json(msg="Unknown thresholds: %s. Known: %s." % (exc.args[0], ", ".join(sorted(
            _policy.DEFAULT_THRESHOLDS))))
    except (TypeError, ValueError) as exc:
        module.fail_json(msg="Invalid option: %s" % exc)
    try:
        window_s = _jobs.parse_duration(p["window"])
        if p["worker_timeout_s"] is not None:
            _jobs.check_worker_timeout(p["worker_timeout_s"])
        statement_timeout = _postgres.check_timeout_ms("statement_timeout", p["statement_timeout"])
        per_core = p["max_replicas_per_core"]
        if not math.isfinite(per_core) or not 0 < per_core <= MAX_REPLICAS_PER_CORE:
            raise ValueError("max_replicas_per_core must be above 0 and at most %d, got %s"
                             % (MAX_REPLICAS_PER_CORE, per_core))
    except (TypeError, ValueError) as exc:
        module.fail_json(msg="Invalid option: %s" % exc)
    conn_params = None
    try:
        env, env_path = _postgres.load_env(module)
        compose_text = _jobs.read_compose(p["project_src"] or (os.path.dirname(env_path) if env_path else None))
        conn_params = _postgres.connection_params(p, env)
        # The whole database part: the login (connect_timeout) and then the statements, each cancelled by the
        # server at statement_timeout; the client gives up a little later, when the server does not answer at all.
        call_timeout = _postgres.call_timeout_for(statement_timeout)
        deadline = time.monotonic() + p["connect_timeout"] + call_timeout
        facts = _queue.gather(conn_params, p["worker_timeout_s"], window_s, thresholds_["pending_after_s"],
                              statement_timeout, call_timeout=call_timeout, deadline=deadline, env=env,
                              compose_text=compose_text)
    except ValueError as exc:
        module.fail_json(msg="Invalid option: %s" % exc)
    except (_postgres.ConnectionError_, _jobs.SchemaError) as exc:
        module.fail_json(msg="%s The facts are read-only: nothing was changed." % exc)
    except _postgres.NoAnswer as exc:
        module.fail_json(msg="PostgreSQL at %s stopped answering: %s. The facts are read-only: nothing was changed."
                         % (_postgres.describe(conn_params), str(exc).strip()))
    except _postgres.psycopg2.Error as exc:
        module.fail_json(msg="Query failed on %s: %s. The facts are read-only: nothing was changed."
                         % (_postgres.describe(conn_params), str(exc).strip()))
    workers = _engine.worker_counts(env, p["project_src"], p["env_var"], p["service"], module.warn,
                                    bool(p["project_src"]) and bool(_compose.compose_files(p["project_src"], env)))
    workers["busy"] = _queue.busy_workers(facts)
    facts["workers"] = workers
    facts["alerts"] = _policy.alerts(facts, workers, thresholds_)
    facts["decision"] = _policy.decision(facts)
    facts["recommended_replicas"] = _policy.recommended_replicas(facts, workers, os.cpu_count() or 1,
                                                                 p["max_replicas_per_core"])
    module.exit_json(changed=False, ansible_facts={"qfc_queue": facts})


if __name__ == "__main__":
    main()
