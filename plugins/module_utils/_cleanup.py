# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""One run of qfc_job_cleanup: the plan (what to fail and why, from the options), the batches, and what a failure at
any step reports. The SQL it runs is _jobs.py's (the job table's one home); the Engine is asked through _engine.py."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Mapping

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine, _jobs, _oplog, _postgres

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
ENGINE_TIMEOUT_S = 5.0  # one Engine API call: the job containers of an orphaned_queued run


class Plan:
    """What to fail and why, from the options: the WHERE clause, its parameters, and the notes written.

    The options are checked at once, before any connection; the thresholds that depend on the worker timeout are set
    by :meth:`resolve` once the database has told where the release reads it."""

    def __init__(self, params: Mapping[str, Any], env: Mapping[str, str]) -> None:
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
        self.worker_timeout_s: int | None = None
        self.worker_timeout_source: str | None = None
        self.threshold_s: int | None = None
        self.params: dict[str, Any] = {}
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
            self.where = _jobs.AGE_SQL  # started_at too: a job a worker took a minute ago is running, not stuck
            self.params.update(statuses=list(statuses), older_than_s=self.threshold_s)
            self._notes("stuck >%s" % self.older_than)

    def _notes(self, label: str) -> None:
        self.output = "Auto-cleanup: %s" % label
        self.reason = label
        self.feedback = {"error_stack": "", "error": self.output, "error_origin": "qfieldcloud.ops",
                         "container_exit_code": -2}

    def resolve(self, cursor: Any, schema: Mapping[str, Any], compose_text: str | None = None) -> None:
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


def running_job_ids(warn: Callable[[str], object],
                    lookup: Callable[..., set[str | None] | None] = _engine.running_job_ids_checked,
                    socket_path: str = _engine.DOCKER_SOCKET) -> set[str | None]:
    """``job_id`` labels of running containers (QFieldCloud labels each QGIS job container with its job id), asked of
    the engine whose socket QFieldCloud's compose file mounts into worker_wrapper, where the workers start the job
    containers. An empty set and a warning (``warn``) when the engine cannot be asked within ENGINE_TIMEOUT_S (no
    socket, refused, no whole answer in time); ``_engine.BadAnswer`` raised when what answers is not a container list
    (another service on the socket, an HTTP error, another shape), which :func:`run` turns into a failure of the mode
    with nothing changed."""
    ids = lookup(timeout=ENGINE_TIMEOUT_S, socket_path=socket_path)
    if ids is None:
        warn("Docker Engine not reachable at unix://%s within %ss: queued jobs are not checked for running containers."
             % (socket_path, ENGINE_TIMEOUT_S))
        return set()
    return ids


def job_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "project_id": row[1], "type": row[2], "previous_status": row[3],
            "created_at": row[4].isoformat()}


def listed(jobs: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The result's job list: the first ``limit`` (oldest first) and whether some were left out."""
    return {"jobs": jobs[:limit], "jobs_truncated": len(jobs) > limit}


class Cleanup:
    """One run, step by step, so that a failure at any step can say exactly what was already changed."""

    def __init__(self, module: Any, plan: Plan, conn: Any) -> None:
        self.module = module
        self.plan = plan
        self.conn = conn
        self.step = "connect"
        self.batch = 0            # number of the batch being run (1-based), 0 before the first
        self.batches = 0          # total number of batches (set by run_batches, before the first)
        self.batch_ids: list[Any] = []  # the jobs of the batch being run
        self.done: list[Any] = []       # jobs failed in committed batches
        self.candidates: list[dict[str, Any]] = []
        self.left_alone = {"running_container": 0, "changed_meanwhile": 0, "locked_deltas": 0}
        self.max_batch_ms = 0.0

    def setup(self, compose_text: str | None = None) -> None:
        """Session-wide timeouts (every later statement, the selection included) and the schema check, one round
        trip; then the worker timeout where the release reads it (the constance row, one more round trip, only on
        v26.23 and before without the option). Committed so that the settings outlive the transaction."""
        p = self.module.params
        self.step = "select"
        with self.conn.cursor() as cursor:
            schema = _jobs.detect_schema(cursor, _postgres.session_timeouts_sql(p["statement_timeout"],
                                                                                p["lock_timeout"]))
            self.plan.resolve(cursor, schema, compose_text)
        self.conn.commit()

    def select(self) -> None:
        self.step = "select"
        with self.conn.cursor() as cursor:
            cursor.execute(_jobs.CLEANUP_SELECT_SQL % self.plan.where, self.plan.params)
            candidates = [job_row(r) for r in cursor.fetchall()]
        self.conn.rollback()
        if self.plan.mode == "orphaned_queued" and self.module.params["check_containers"] and candidates:
            busy = running_job_ids(self.module.warn)
            kept = [j for j in candidates if j["id"] not in busy]
            self.left_alone["running_container"] = len(candidates) - len(kept)
            candidates = kept
        self.candidates = candidates

    def run_batches(self) -> None:
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
                cursor.execute(_jobs.CLEANUP_LOCK_SQL % plan.where, dict(plan.params, ids=self.batch_ids))
                locked = [r[0] for r in cursor.fetchall()]
                self.left_alone["changed_meanwhile"] += len(self.batch_ids) - len(locked)
                failed = []
                if locked and any(j["type"] == "delta_apply" for j in batch):
                    self.step = "lock_deltas"
                    cursor.execute(_jobs.CLEANUP_LOCK_DELTAS_SQL, {"ids": locked})
                    held = {r[0] for r in cursor.fetchall()}
                    self.left_alone["locked_deltas"] += len(held)
                    locked = [i for i in locked if i not in held]
                    if locked:
                        self.step = "update_deltas"
                        cursor.execute(_jobs.CLEANUP_DELTAS_SQL, {"ids": locked})
                if locked:
                    self.step = "fail_jobs"
                    cursor.execute(_jobs.CLEANUP_FAIL_SQL, {
                        "ids": locked, "output": plan.output, "feedback": json.dumps(plan.feedback),
                        "mode": plan.mode, "reason": plan.reason})
                    failed = [r[0] for r in cursor.fetchall()]
            self.step = "commit"
            self.conn.commit()
            self.done.extend(failed)
            self.max_batch_ms = max(self.max_batch_ms, round((time.monotonic() - began) * 1000.0, 1))
        self.step = "done"

    def result(self, jobs: list[dict[str, Any]], count: int) -> dict[str, Any]:
        limit = self.module.params["max_jobs_listed"]
        out = {"changed": bool(count), "count": count, "mode": self.plan.mode, "threshold_s": self.plan.threshold_s,
               "worker_timeout_s": self.plan.worker_timeout_s,
               "worker_timeout_source": self.plan.worker_timeout_source,
               "left_alone": self.left_alone, "batches": self.batch, "max_batch_ms": self.max_batch_ms}
        out.update(listed(jobs, limit))
        return out

    def finished(self) -> dict[str, Any]:
        if self.module.check_mode:
            return self.result(self.candidates, len(self.candidates))
        by_id = {j["id"]: j for j in self.candidates}
        return self.result([by_id[i] for i in self.done], len(self.done))

    def failure(self, exc: Exception, server: str) -> dict[str, Any]:
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


def jobs_n(n: int) -> str:
    return "1 job" if n == 1 else "%d jobs" % n


def describe_error(exc: Exception, step: str, params: Mapping[str, Any], lost: bool = False) -> str:
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


def run(module: Any, deadline: float | None = None) -> dict[str, Any]:
    """One mode from the options to the result: what qfc_job_cleanup and the job_cleanup role's scheduled command
    both run. ``module``: an AnsibleModule, or anything with ``params``, ``check_mode``, ``warn`` and
    ``no_log_values`` (and optionally ``actor_kind``, the operations log's actor kind); ``deadline``: a
    ``time.monotonic()`` that caps every database call. A failure's result has ``failed`` and the message that says
    what was already changed. A run that failed jobs appends one record to the operations log (``operation_record``).
    """
    state: dict[str, Cleanup] = {}
    out = _run(module, deadline, state)
    out.update(log_operation(module, out, state.get("cleanup")))
    return out


def log_operation(module: Any, out: Mapping[str, Any], cleanup: Cleanup | None) -> dict[str, Any]:
    """The run's record in the operations log: result keys ``operation_record`` (and ``operations_log_error``).

    Recorded when jobs were failed: ``changed``, or ``failed`` for a run that failed after committing a batch (or
    lost its connection during a COMMIT); ``before`` counts the touched jobs by their previous status, ``after`` by
    the status set. Nothing in check mode or for a run that changed nothing.
    """
    result: dict[str, Any] = {"operation_record": None}
    if module.check_mode or cleanup is None:
        return result
    uncertain = out.get("failed_batch_outcome") == "unknown"
    if not cleanup.done and not uncertain:
        return result
    params = module.params
    limit = params.get("max_jobs_listed") or 100
    by_id = {j["id"]: j for j in cleanup.candidates}
    before = dict(sorted(Counter(by_id[i]["previous_status"] for i in cleanup.done if i in by_id).items()))
    details: dict[str, Any] = {"mode": cleanup.plan.mode, "threshold_s": cleanup.plan.threshold_s,
                               "job_ids": cleanup.done[:limit], "jobs_truncated": len(cleanup.done) > limit}
    if out.get("failed"):
        details.update(error=out.get("msg"), committed=len(cleanup.done),
                       failed_batch_outcome=out.get("failed_batch_outcome"),
                       failed_batch_jobs=out.get("failed_batch_jobs"))
    threshold = cleanup.plan.threshold_s
    reason = "mode %s: %s%s set to failed" % (cleanup.plan.mode, jobs_n(len(cleanup.done)),
                                              " stuck longer than %s s" % threshold if threshold is not None else "")
    record, error = _oplog.record_change(params, "job_cleanup", before, {"failed": len(cleanup.done)}, reason,
                                         "failed" if out.get("failed") else "changed",
                                         secrets=getattr(module, "no_log_values", ()), details=details,
                                         actor_kind=getattr(module, "actor_kind", None), warn=module.warn)
    result["operation_record"] = record
    if error:
        result["operations_log_error"] = error
    return result


def _run(module: Any, deadline: float | None, state: dict[str, Cleanup]) -> dict[str, Any]:
    params, check_mode = module.params, module.check_mode
    conn: Any = None
    cleanup: Cleanup | None = None
    conn_params: dict[str, Any] = {}
    try:
        _oplog.check_options(params)
        env, env_path = _postgres.load_env(module)
        plan = Plan(params, env)
        compose_text = _jobs.read_compose(params["project_src"] or (os.path.dirname(env_path) if env_path else None))
        conn_params = _postgres.connection_params(params, env)
        call_timeout = _postgres.call_timeout_for(params["statement_timeout"])
        conn = _postgres.connect(conn_params, call_timeout=call_timeout, deadline=deadline)
        if check_mode:
            conn.set_session(readonly=True)
        cleanup = state["cleanup"] = Cleanup(module, plan, conn)
        cleanup.setup(compose_text)
        cleanup.select()
        if not check_mode:
            cleanup.run_batches()
        return cleanup.finished()
    except ValueError as exc:
        return {"failed": True, "changed": False, "msg": "Invalid option: %s" % exc}
    except (_postgres.ConnectionFailed, _jobs.SchemaError) as exc:
        return {"failed": True, "changed": False, "msg": "%s Nothing was changed." % exc}
    except _engine.BadAnswer as exc:  # orphaned_queued's check for running job containers, before any batch
        out = cleanup.result([], 0) if cleanup is not None else {}
        out.update(failed=True, changed=False, msg=(
            "Cleanup failed on %s before the first batch: mode orphaned_queued leaves alone the queued jobs that have "
            "a running container, and the Docker Engine gave no usable answer (%s). Nothing was changed. Set "
            "check_containers=false to fail these jobs without that check."
            % (_postgres.describe(conn_params), str(exc).rstrip("."))))
        return out
    except _postgres.psycopg2.Error as exc:
        if cleanup is None:
            cause = describe_error(exc, "connect", params)
            return {"failed": True, "changed": False, "msg": "Cleanup failed on %s: %s Nothing was changed."
                    % (_postgres.describe(conn_params), cause)}
        return dict(cleanup.failure(exc, _postgres.describe(conn_params)), failed=True)
    finally:
        if conn is not None:
            conn.close()
