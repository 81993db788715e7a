# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Queue facts: one SQL statement for every metric (with _jobs, the collection's SQL home) and the shaping of its
answer into the documented ``qfc_queue`` structure. qfc_queue_facts and the metrics collector use the same code; the
alerts, the decision and the recommended worker count on top of these facts are _policy's.

The queue modules' shared body is here too: their options (:func:`argument_spec`, paired with the
``qfieldcloud.ops._queue`` doc fragment), the check of those options (:func:`check_options`) and the one read that
turns every failure into the task's failure (:func:`read`)."""

from __future__ import annotations

import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Mapping

    from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _jobs, _policy, _postgres
from ansible_collections.qfieldcloud.ops.plugins.module_utils._jobs import STUCK_SQL

# Final statuses are counted by when the job ENDED: every job whose finished_at (updated_at when a final job has no
# finished_at) lies within the window, however long ago it was created. Upstream's cron and qfc_job_cleanup fail
# jobs created days ago, and upstream's wrapper saves finished_at without touching updated_at
# (save(update_fields=["status", "finished_at"])), so neither created_at nor updated_at can bound the scan; no
# upstream index covers finished_at, and the query reads the final-status rows (see docs/performance.md for the cost
# and the optional operator-created index that removes it).
#
# useful_backlog is what upstream's dequeue can start now: it takes the oldest pending job of a project with no
# queued or started job and no locked_at, and once it is queued the project is busy, so free workers start at most one
# job per eligible project. `startable` is that job for each such project (the same rule as
# tests/fixtures/worker_sim/dequeue.py and upstream's `manage.py dequeue`).
FACTS_SQL = """
WITH live AS (
    SELECT status, count(*) AS n FROM core_job WHERE status IN ('pending', 'queued', 'started') GROUP BY status
), busy_projects AS (
    SELECT DISTINCT project_id FROM core_job WHERE status IN ('queued', 'started')
), startable AS (
    SELECT DISTINCT ON (j.project_id) j.project_id, j.created_at
      FROM core_job j JOIN {project_table} p ON p.id = j.project_id
     WHERE j.status = 'pending' AND p.locked_at IS NULL
       AND j.project_id NOT IN (SELECT project_id FROM busy_projects)
     ORDER BY j.project_id, j.created_at
), recent AS (
    SELECT status, started_at, coalesce(finished_at, updated_at) AS ended_at FROM core_job
    WHERE status IN ('finished', 'stopped', 'failed')
      AND (finished_at >= now() - make_interval(secs => %(scan_s)s)
           OR finished_at IS NULL AND updated_at >= now() - make_interval(secs => %(scan_s)s))
), in_window AS (
    SELECT * FROM recent WHERE ended_at >= now() - make_interval(secs => %(window_s)s)
), durations AS (
    SELECT extract(epoch FROM ended_at - started_at) AS d FROM in_window
    WHERE status = 'finished' AND started_at IS NOT NULL
)
SELECT json_build_object(
    'by_status', (SELECT coalesce(json_object_agg(status, n), '{{}}') FROM (
                    SELECT status, n FROM live
                    UNION ALL SELECT status, count(*) FROM in_window GROUP BY status) s),
    'oldest_pending_age_s', (SELECT extract(epoch FROM now() - min(created_at)) FROM core_job WHERE status = 'pending'),
    'useful_backlog', (SELECT count(*) FROM startable),
    'eligible_projects', (SELECT count(*) FROM startable),
    'oldest_eligible_age_s', (SELECT extract(epoch FROM now() - min(created_at)) FROM startable),
    'busy_projects', (SELECT count(*) FROM busy_projects),
    'locked_projects_waiting', (SELECT count(DISTINCT j.project_id) FROM core_job j
                                JOIN {project_table} p ON p.id = j.project_id
                                WHERE j.status = 'pending' AND p.locked_at IS NOT NULL),
    'stuck_stale', (SELECT count(*) FROM core_job WHERE {stale}),
    'stuck_orphaned_queued', (SELECT count(*) FROM core_job WHERE {orphaned_queued}),
    'stuck_old_pending', (SELECT count(*) FROM core_job WHERE {old_pending}),
    'last_hour_finished', (SELECT count(*) FROM recent WHERE status = 'finished'
                           AND ended_at >= now() - interval '1 hour'),
    'last_hour_failed', (SELECT count(*) FROM recent WHERE status = 'failed'
                         AND ended_at >= now() - interval '1 hour'),
    'duration_count', (SELECT count(*) FROM durations),
    'duration_avg_s', (SELECT avg(d) FROM durations),
    'duration_p50_s', (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) FROM durations),
    'duration_p95_s', (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY d) FROM durations)
)
"""


def facts_sql(project_table: str) -> str:
    return FACTS_SQL.format(project_table=project_table, **STUCK_SQL)


def gather(conn_params: Mapping[str, Any], worker_timeout: int | None, window_s: int, pending_after_s: int,
           statement_timeout_ms: int, call_timeout: float | None = None, deadline: float | None = None,
           env: Mapping[str, str] | None = None, compose_text: str | None = None) -> dict[str, Any]:
    """Connect, detect the schema, resolve the worker timeout and run FACTS_SQL in one read-only transaction; returns
    the shaped facts.

    ``worker_timeout``: the explicit option (it wins), or None to read it where the detected release reads it
    (``env``: the .env variables; ``compose_text``: the deployment's docker-compose.yml, which tells v26.24 from
    v26.23, see :func:`_jobs.timeout_home`). The facts say which in ``worker_timeout_source``.

    Round trips: the statement timeout with the schema query, the constance row (only on releases that read it and
    without the option), every metric in one statement, the rollback.

    Deadlines: the login waits at most ``conn_params["connect_timeout"]`` seconds; every later call at most
    ``call_timeout`` seconds (default: ``statement_timeout_ms`` plus :data:`_postgres.CANCEL_GRACE_S`, so that a live
    server's own statement timeout always wins and only a server that does not answer reaches the client-side one);
    ``deadline`` (a ``time.monotonic()`` value) caps the whole gathering, login included. A server that stops
    answering raises :class:`_postgres.NoAnswer`; a login that gets no answer raises
    :class:`_postgres.ConnectionFailed`.
    """
    if call_timeout is None:
        call_timeout = _postgres.call_timeout_for(statement_timeout_ms)
    conn = _postgres.connect(conn_params, call_timeout=call_timeout, deadline=deadline)
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cursor:
            schema = _jobs.detect_schema(cursor, "SET LOCAL statement_timeout = %d; " % int(statement_timeout_ms))
            project_table = schema["project_table"]
            _jobs.check_locked_at(cursor, project_table)
            timeout, source, _home = _jobs.worker_timeout_from_db(
                cursor, schema, worker_timeout, env or {}, compose_text)
            started = time.monotonic()
            cursor.execute(facts_sql(project_table), {
                "stale_after_s": timeout + _jobs.STALE_MARGIN_S,
                "orphan_after_s": timeout + _jobs.STALE_MARGIN_S,
                "pending_after_s": pending_after_s,
                "window_s": window_s,
                "scan_s": max(window_s, 3600),  # the window, and at least the last hour
            })
            raw = cursor.fetchone()[0]
            query_ms = (time.monotonic() - started) * 1000.0
        conn.rollback()
    finally:
        conn.close()
    if isinstance(raw, str):
        raw = json.loads(raw)
    facts = shape(raw, window_s)
    facts.update(project_table=project_table, release=schema["release"], worker_timeout_s=timeout,
                 worker_timeout_source=source, query_ms=round(query_ms, 1))
    return facts


def _round(value: Any, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def shape(raw: Mapping[str, Any], window_s: int) -> dict[str, Any]:
    """Turn the query's JSON into the documented ``qfc_queue`` structure (without workers, alerts and decision)."""
    by_status = {s: 0 for s in ("pending", "queued", "started", "finished", "stopped", "failed")}
    by_status.update({k: int(v) for k, v in (raw.get("by_status") or {}).items()})
    finished, failed = int(raw["last_hour_finished"]), int(raw["last_hour_failed"])
    return {
        "by_status": by_status,
        "queue_depth": by_status["pending"] + by_status["queued"],
        "useful_backlog": int(raw["useful_backlog"]),
        "eligible_projects": int(raw["eligible_projects"]),
        "busy_projects": int(raw["busy_projects"]),
        "locked_projects_waiting": int(raw["locked_projects_waiting"]),
        "oldest_pending_age_s": _round(raw["oldest_pending_age_s"]),
        "oldest_eligible_age_s": _round(raw["oldest_eligible_age_s"]),
        "stuck": {
            "stale": int(raw["stuck_stale"]),
            "orphaned_queued": int(raw["stuck_orphaned_queued"]),
            "old_pending": int(raw["stuck_old_pending"]),
        },
        "last_hour": {
            "finished": finished,
            "failed": failed,
            "success_rate": round(finished / (finished + failed), 4) if finished + failed else None,
        },
        "duration": {
            "window_s": window_s,
            "count": int(raw["duration_count"]),
            "avg_s": _round(raw["duration_avg_s"]),
            "p50_s": _round(raw["duration_p50_s"]),
            "p95_s": _round(raw["duration_p95_s"]),
        },
    }


def busy_workers(facts: Mapping[str, Any]) -> int:
    """Stuck jobs occupy no worker: busy counts the queued and started jobs that are not stale or orphaned."""
    active = facts["by_status"]["queued"] + facts["by_status"]["started"]
    return max(active - facts["stuck"]["stale"] - facts["stuck"]["orphaned_queued"], 0)


# The queue modules' ceiling for max_replicas_per_core: far above any real guideline
# (_replicas.DEFAULT_MAX_REPLICAS_PER_CORE), it only refuses typos; the count itself is capped by _replicas.MAX_REPLICAS
# whatever the cores. (qfc_scale's ceiling is 100: issue 22's rules table is to make them one.)
MAX_REPLICAS_PER_CORE = 64


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options qfc_queue_facts and qfc_autoscale_decision share beyond the connection's
    (:func:`_postgres.argument_spec`), documented by the ``qfieldcloud.ops._queue`` doc fragment."""
    return dict(
        worker_timeout_s=dict(type="int"),
        thresholds=dict(type="dict", default={}),
        statement_timeout=dict(type="int", default=5000),
        service=dict(type="str", default="worker_wrapper"),
        env_var=dict(type="str", default="QFIELDCLOUD_WORKER_REPLICAS"),
        max_replicas_per_core=dict(type="float", default=_policy.DEFAULT_MAX_REPLICAS_PER_CORE),
    )


def check_per_core(per_core: float) -> float:
    if not math.isfinite(per_core) or not 0 < per_core <= MAX_REPLICAS_PER_CORE:
        raise ValueError("max_replicas_per_core must be above 0 and at most %d, got %s"
                         % (MAX_REPLICAS_PER_CORE, per_core))
    return per_core


def check_options(module: AnsibleModule, note: str = "",
                  first: Callable[[dict[str, Any]], Any] | None = None) -> tuple[Any, dict[str, float], int]:
    """The shared options checked, or the task failed with ``Unknown thresholds: ...`` or ``Invalid option: ...``
    followed by ``note``. ``first(params)``, when given, checks the module's own options before them (a ValueError or
    TypeError fails the task the same way).

    Returns ``(first's result, the thresholds with their defaults, statement_timeout)``."""
    p = module.params
    try:
        own = first(p) if first else None
        thresholds = _policy.check_thresholds(p["thresholds"])
        if p["worker_timeout_s"] is not None:
            _jobs.check_worker_timeout(p["worker_timeout_s"])
        statement_timeout = _postgres.check_timeout_ms("statement_timeout", p["statement_timeout"])
        check_per_core(p["max_replicas_per_core"])
    except KeyError as exc:
        module.fail_json(msg="Unknown thresholds: %s. Known: %s.%s" % (
            exc.args[0], ", ".join(sorted(_policy.DEFAULT_THRESHOLDS)), note))
    except (TypeError, ValueError) as exc:
        module.fail_json(msg="Invalid option: %s%s" % (exc, note))
    return own, thresholds, statement_timeout


def read(module: AnsibleModule, window_s: int, pending_after_s: int, statement_timeout: int, note: str,
         option_note: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The queue modules' read: ``.env`` (``env_file`` or ``project_src``), the connection, and :func:`gather` under
    one deadline for the whole database part (the login's ``connect_timeout``, then each statement cancelled by the
    server at ``statement_timeout``; the client gives up a little later, when the server does not answer at all).

    Returns ``(facts, env)``. Every failure fails the task here, with a message that names the server (never the
    password) and ends in ``note`` (what was not changed); a bad option's message ends in ``option_note`` (default:
    ``note``)."""
    p = module.params
    option_note = note if option_note is None else option_note
    conn_params: dict[str, Any] = {}  # {} until connection_params() returns: describe() cannot fail on it
    try:
        env, env_path = _postgres.load_env(module)
        compose_text = _jobs.read_compose(p["project_src"] or (os.path.dirname(env_path) if env_path else None))
        conn_params = _postgres.connection_params(p, env)
        call_timeout = _postgres.call_timeout_for(statement_timeout)
        deadline = time.monotonic() + p["connect_timeout"] + call_timeout
        facts = gather(conn_params, p["worker_timeout_s"], window_s, pending_after_s, statement_timeout,
                       call_timeout=call_timeout, deadline=deadline, env=env, compose_text=compose_text)
    except ValueError as exc:
        module.fail_json(msg="Invalid option: %s%s" % (exc, option_note))
    except (_postgres.ConnectionFailed, _jobs.SchemaError) as exc:
        module.fail_json(msg="%s%s" % (exc, note))
    except _postgres.NoAnswer as exc:
        module.fail_json(msg="PostgreSQL at %s stopped answering: %s.%s"
                         % (_postgres.describe(conn_params), str(exc).strip(), note))
    except _postgres.psycopg2.Error as exc:
        module.fail_json(msg="Query failed on %s: %s.%s" % (_postgres.describe(conn_params), str(exc).strip(), note))
    return facts, env
