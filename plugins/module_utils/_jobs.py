# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""QFieldCloud's job table: statuses, schema detection, and the one definition of "stuck" that both the queue
facts and the cleanup use."""

from __future__ import annotations

import re

STATUSES = ("pending", "queued", "started", "finished", "stopped", "failed")
LIVE_STATUSES = ("pending", "queued", "started")
BUSY_STATUSES = ("queued", "started")
DEFAULT_WORKER_TIMEOUT_S = 600
STALE_MARGIN_S = 10  # upstream's SetTerminatedWorkersToFinalStatusJob: started_at < now() - (timeout + 10 s)

# Upstream's cron writes exactly this feedback and output (qfieldcloud/core/cron.py).
TERMINATED_FEEDBACK = {"error_stack": "", "error": "Job unexpectedly terminated.", "error_origin": "worker_wrapper",
                       "container_exit_code": -2}
TERMINATED_OUTPUT = "Job unexpectedly terminated."

# Stuck kinds, as SQL conditions on core_job with named parameters. Facts count them; cleanup fails them.
STUCK_SQL = {
    "stale": "status IN ('queued', 'started') AND started_at < now() - make_interval(secs => %(stale_after_s)s)",
    # Upstream never sweeps these (started_at IS NULL never matches `started_at < ...`) and they block their project.
    # created_at and updated_at are both old: the job has not been touched for the whole threshold.
    "orphaned_queued": "status = 'queued' AND started_at IS NULL"
                       " AND created_at < now() - make_interval(secs => %(orphan_after_s)s)"
                       " AND updated_at < now() - make_interval(secs => %(orphan_after_s)s)",
    "old_pending": "status = 'pending' AND created_at < now() - make_interval(secs => %(pending_after_s)s)",
}

MAX_DURATION_S = 100 * 365 * 86400  # 100 years: beyond it now() - interval leaves PostgreSQL's timestamp range

DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s?)?\s*$", re.IGNORECASE)


class SchemaError(Exception):
    pass


def parse_duration(value):
    """``"24h"``, ``"2d"``, ``"1h30m"``, ``"90m"``, ``"45s"`` or a number of seconds -> seconds (int)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be like 24h, 2d, 90m, 1h30m or a number of seconds, got %r" % value)
    if isinstance(value, (int, float)):
        seconds = int(value)
    else:
        match = DURATION_RE.match(str(value))
        if not match or not any(match.groups()):
            raise ValueError("a duration must be like 24h, 2d, 90m, 1h30m or a number of seconds, got %r" % value)
        d, h, m, s = (int(g or 0) for g in match.groups())
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds <= 0:
        raise ValueError("a duration must be positive, got %r" % value)
    if seconds > MAX_DURATION_S:
        raise ValueError("a duration must be at most %dd, got %r" % (MAX_DURATION_S // 86400, value))
    return seconds


def check_worker_timeout(value):
    """worker_timeout_s: 1 s to MAX_DURATION_S (PostgreSQL's timestamps overflow far beyond)."""
    if isinstance(value, bool) or not 1 <= value <= MAX_DURATION_S:
        raise ValueError("worker_timeout_s must be positive and at most %d, got %s" % (MAX_DURATION_S, value))
    return value


def format_duration(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def check_statuses(statuses):
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise ValueError("unknown job status %s; QFieldCloud's statuses are %s"
                         % (", ".join(repr(s) for s in unknown), ", ".join(STATUSES)))


def detect_project_table(cursor, prefix=""):
    """``project_project`` from v26.21, ``core_project`` before. Fails clearly on a database without QFieldCloud.

    ``prefix`` is SQL sent in the same round trip (a ``SET LOCAL``)."""
    cursor.execute(prefix + "SELECT to_regclass('core_job') IS NOT NULL, to_regclass('project_project') IS NOT NULL,"
                   " to_regclass('core_project') IS NOT NULL, current_database()")
    has_job, has_new, has_old, database = cursor.fetchone()
    if not has_job or not (has_new or has_old):
        raise SchemaError("Database %s has no QFieldCloud job tables (core_job and project_project or core_project). "
                          "Check login_db/POSTGRES_DB, or run QFieldCloud's migrations." % database)
    return "project_project" if has_new else "core_project"


def check_locked_at(cursor, project_table):
    """The queue facts need ``locked_at`` (QFieldCloud v25.26+; ``is_locked`` before) to tell which pending jobs a
    worker could take."""
    cursor.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
                   " AND table_name = %s AND column_name = 'locked_at'", [project_table])
    if not cursor.fetchone()[0]:
        raise SchemaError("%s has no locked_at column: QFieldCloud before v25.26 (Project.is_locked) is not supported "
                          "by the queue facts. qfc_job_cleanup does not need it." % project_table)


def worker_timeout(env, override=None):
    if override is not None:
        return override
    value = env.get("QFIELDCLOUD_WORKER_TIMEOUT_S")
    return int(value) if value and value.strip().isdigit() else DEFAULT_WORKER_TIMEOUT_S
