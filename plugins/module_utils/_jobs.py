# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""QFieldCloud's job table: statuses, schema detection, the one definition of "stuck" that both the queue facts and
the cleanup use, and the cleanup's statements (run by _cleanup.py). SQL on the job tables lives here."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Iterable, Mapping

STATUSES = ("pending", "queued", "started", "finished", "stopped", "failed")
LIVE_STATUSES = ("pending", "queued", "started")
BUSY_STATUSES = ("queued", "started")  # a worker has taken the job: the stale rule's statuses, mode=age's default
DEFAULT_WORKER_TIMEOUT_S = 600
STALE_MARGIN_S = 10  # upstream's SetTerminatedWorkersToFinalStatusJob: started_at < now() - (timeout + 10 s)

# Upstream's cron writes exactly this feedback and output (qfieldcloud/core/cron.py).
TERMINATED_FEEDBACK = {"error_stack": "", "error": "Job unexpectedly terminated.", "error_origin": "worker_wrapper",
                       "container_exit_code": -2}
TERMINATED_OUTPUT = "Job unexpectedly terminated."

# Stuck kinds, as SQL conditions on core_job with named parameters. Facts count them; cleanup fails them.
STUCK_SQL = {
    "stale": "status IN (%s) AND started_at < now() - make_interval(secs => %%(stale_after_s)s)"
             % ", ".join("'%s'" % status for status in BUSY_STATUSES),
    # Upstream never sweeps these (started_at IS NULL never matches `started_at < ...`) and they block their project.
    # created_at and updated_at are both old: the job has not been touched for the whole threshold.
    "orphaned_queued": "status = 'queued' AND started_at IS NULL"
                       " AND created_at < now() - make_interval(secs => %(orphan_after_s)s)"
                       " AND updated_at < now() - make_interval(secs => %(orphan_after_s)s)",
    "old_pending": "status = 'pending' AND created_at < now() - make_interval(secs => %(pending_after_s)s)",
}

# The cleanup (qfc_job_cleanup, module_utils/_cleanup.py): select the candidates by a STUCK_SQL or AGE_SQL condition,
# then per batch lock them again under the same condition, lock a delta_apply job's delta rows, fail them.
# mode=age: created and, if started, started before the threshold (a job created long ago that a worker took a minute
# ago is running, not stuck).
AGE_SQL = ("status = ANY(%(statuses)s) AND created_at < now() - make_interval(secs => %(older_than_s)s)"
           " AND (started_at IS NULL OR started_at < now() - make_interval(secs => %(older_than_s)s))")

CLEANUP_SELECT_SQL = ("SELECT id::text, project_id::text, type, status, created_at FROM core_job WHERE %s"
                      " ORDER BY created_at")

CLEANUP_LOCK_SQL = "SELECT id::text FROM core_job WHERE id = ANY(%%(ids)s::uuid[]) AND (%s) FOR UPDATE SKIP LOCKED"

# The delta_apply jobs of a batch whose core_applyjobdelta or core_delta rows another session holds: every related
# row this batch can lock is locked now (SKIP LOCKED: no waiting); a job with any row left over keeps its status.
CLEANUP_LOCK_DELTAS_SQL = """
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
CLEANUP_DELTAS_SQL = """
UPDATE core_delta d SET last_status = 'error', last_feedback = NULL, last_modified_pk = NULL,
       last_apply_attempt_at = j.started_at, last_apply_attempt_by_id = j.created_by_id
  FROM core_applyjobdelta ajd JOIN core_job j ON j.id = ajd.apply_job_id
 WHERE ajd.delta_id = d.id AND j.id = ANY(%(ids)s::uuid[]) AND j.type = 'delta_apply';
UPDATE core_applyjobdelta ajd SET status = 'error', feedback = NULL, modified_pk = NULL
  FROM core_job j WHERE j.id = ajd.apply_job_id AND j.id = ANY(%(ids)s::uuid[]) AND j.type = 'delta_apply';
"""

CLEANUP_FAIL_SQL = """
UPDATE core_job SET status = 'failed', finished_at = now(), output = %(output)s,
       feedback = %(feedback)s::jsonb || jsonb_build_object('qfc_cleanup', jsonb_build_object(
           'previous_status', status, 'previous_started_at', started_at, 'previous_feedback', feedback,
           'mode', %(mode)s, 'reason', %(reason)s, 'at', now()))
 WHERE id = ANY(%(ids)s::uuid[]) RETURNING id::text
"""

MAX_DURATION_S = 100 * 365 * 86400  # 100 years: beyond it now() - interval leaves PostgreSQL's timestamp range

DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s?)?\s*$", re.IGNORECASE)


class SchemaError(Exception):
    pass


def parse_duration(value: Any) -> int:
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


def check_worker_timeout(value: Any) -> int:
    """worker_timeout_s: 1 s to MAX_DURATION_S (PostgreSQL's timestamps overflow far beyond)."""
    if isinstance(value, bool) or not 1 <= value <= MAX_DURATION_S:
        raise ValueError("worker_timeout_s must be positive and at most %d, got %s" % (MAX_DURATION_S, value))
    return value


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def check_statuses(statuses: Iterable[str]) -> None:
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise ValueError("unknown job status %s; QFieldCloud's statuses are %s"
                         % (", ".join(repr(s) for s in unknown), ", ".join(STATUSES)))


# Schema markers, read in one round trip. v26.21 moved the project table to project_project. The worker timeout moved
# from django-constance (WORKER_TIMEOUT_S) to the env var QFIELDCLOUD_WORKER_TIMEOUT_S in v26.24, which changed no
# schema and added no migration (its migrations are v26.23's); the first schema change after it is v26.25's
# project_qgisproject.area_of_interest (migration project 0010). So the schema says ">= v26.25" (env) or "<= v26.24";
# v26.24 itself is told apart by its docker-compose.yml, the first to pass QFIELDCLOUD_WORKER_TIMEOUT_S to the Django
# services (see timeout_home()).
SCHEMA_SQL = ("SELECT to_regclass('core_job') IS NOT NULL, to_regclass('project_project') IS NOT NULL,"
              " to_regclass('core_project') IS NOT NULL, current_database(),"
              " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('project_qgisproject')"
              " AND attname = 'area_of_interest' AND NOT attisdropped),"
              " to_regclass('constance_constance') IS NOT NULL")

ENV_TIMEOUT_KEY = "QFIELDCLOUD_WORKER_TIMEOUT_S"
CONSTANCE_TIMEOUT_KEY = "WORKER_TIMEOUT_S"
TIMEOUT_SOURCES = ("option", "env", "constance", "default")
CONSTANCE_SQL = "SELECT value FROM constance_constance WHERE key = %s"
# v26.24+ docker-compose.yml: `QFIELDCLOUD_WORKER_TIMEOUT_S: ${QFIELDCLOUD_WORKER_TIMEOUT_S}` in the Django services.
COMPOSE_TIMEOUT_RE = re.compile(r"^[ \t]+-?[ \t]*[\"']?QFIELDCLOUD_WORKER_TIMEOUT_S[\"']?[ \t]*[:=]", re.M)


def schema_facts(row: Any) -> dict[str, Any]:
    """The schema query's row -> ``project_table``, ``release`` (the range of QFieldCloud releases the schema fits)
    and ``has_constance``. Raises :class:`SchemaError` on a database without QFieldCloud."""
    has_job, has_new, has_old, database, has_area_of_interest, has_constance = row
    if not has_job or not (has_new or has_old):
        raise SchemaError("Database %s has no QFieldCloud job tables (core_job and project_project or core_project). "
                          "Check login_db/POSTGRES_DB, or run QFieldCloud's migrations." % database)
    if not has_new:
        release = "<= v26.20"
    elif has_area_of_interest:
        release = ">= v26.25"
    else:
        release = "v26.21 to v26.24"
    return {"project_table": "project_project" if has_new else "core_project", "release": release,
            "has_constance": bool(has_constance)}


def detect_schema(cursor: Any, prefix: str = "") -> dict[str, Any]:
    """:func:`schema_facts` of the connected database. ``prefix`` is SQL sent in the same round trip (a ``SET``)."""
    cursor.execute(prefix + SCHEMA_SQL)
    return schema_facts(cursor.fetchone())


def detect_project_table(cursor: Any, prefix: str = "") -> str:
    """``project_project`` from v26.21, ``core_project`` before. Fails clearly on a database without QFieldCloud.

    ``prefix`` is SQL sent in the same round trip (a ``SET LOCAL``)."""
    return detect_schema(cursor, prefix)["project_table"]


def compose_passes_timeout(compose_text: str | None) -> bool | None:
    """Whether a docker-compose.yml passes QFIELDCLOUD_WORKER_TIMEOUT_S to its services (upstream's from v26.24);
    None when there is no file to read."""
    if compose_text is None:
        return None
    return bool(COMPOSE_TIMEOUT_RE.search(compose_text))


def read_compose(directory: str | None) -> str | None:
    """The text of ``directory``/docker-compose.yml, or None."""
    if not directory:
        return None
    try:
        with open(os.path.join(directory, "docker-compose.yml"), encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def timeout_home(release: str, compose_passes: bool | None = None) -> str:
    """Where the release reads the worker timeout: ``env`` (v26.24+) or ``constance`` (v26.23 and before).

    The schema of v26.24 is v26.23's; a docker-compose.yml that passes QFIELDCLOUD_WORKER_TIMEOUT_S (``compose_passes``)
    marks v26.24 there. Without one, v26.21 to v26.24 is read as v26.23 (constance)."""
    if release == ">= v26.25":
        return "env"
    if release == "v26.21 to v26.24" and compose_passes:
        return "env"
    return "constance"


def _unpickle_small_int(data: bytes) -> int:
    """The int a pickle of a plain int holds, parsed by hand (nothing is unpickled). ValueError for anything else."""
    pos = 0
    if data[:1] == b"\x80":  # PROTO
        pos = 2
        if data[pos:pos + 1] == b"\x95":  # FRAME + 8-byte length
            pos += 9
    op = data[pos:pos + 1]
    if op == b"K":  # BININT1
        value, pos = data[pos + 1], pos + 2
    elif op == b"M":  # BININT2
        value, pos = int.from_bytes(data[pos + 1:pos + 3], "little"), pos + 3
    elif op == b"J":  # BININT
        value, pos = int.from_bytes(data[pos + 1:pos + 5], "little", signed=True), pos + 5
    elif op in (b"I", b"L"):  # protocol 0: I600\n or L600L\n
        end = data.index(b"\n", pos)
        text = data[pos + 1:end].decode("ascii").rstrip("L")
        if text in ("00", "01"):  # protocol 0's booleans
            raise ValueError("a boolean")
        value, pos = int(text), end + 1
    else:
        raise ValueError("not a pickled integer")
    if data[pos:pos + 1] == b"\x94":  # MEMOIZE (protocol 4+)
        pos += 1
    if data[pos:] != b".":
        raise ValueError("not a pickled integer")
    return value


def decode_constance_int(raw: Any) -> int | None:
    """A django-constance DatabaseBackend value -> int, or None when the row holds no value (the default applies).

    django-constance 4.x (QFieldCloud v25.26 and later pin 4.3.x) stores JSON through its codec:
    ``{"__type__": "default", "__value__": 600}``; its migration 0003_drop_pickle rewrote older rows. Before 4.0 it
    stored base64 of a pickle; a pickled plain int is parsed by hand (nothing is ever unpickled), anything else is
    refused. Raises ValueError with the reason."""
    if raw is None:
        return None
    text = raw.strip()
    value: object
    try:
        data = json.loads(text)
    except ValueError:
        data = None
        try:
            value = _unpickle_small_int(base64.b64decode(text.encode("ascii"), validate=True))
        except (ValueError, IndexError, UnicodeError, binascii.Error) as exc:
            raise ValueError("%r is neither django-constance's JSON encoding nor a pickled integer (%s)"
                             % (text[:60], exc)) from None
    else:
        if not (isinstance(data, dict) and set(data) == {"__type__", "__value__"}):
            raise ValueError("%r is not django-constance's JSON encoding ({\"__type__\": ..., \"__value__\": ...})"
                             % text[:60])
        if data["__type__"] != "default":
            raise ValueError("%r holds a %s, not an integer" % (text[:60], data["__type__"]))
        value = data["__value__"]
        if value is None:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("%r is not an integer" % text[:60])
    return value


def read_constance_timeout(cursor: Any) -> int | None:
    """WORKER_TIMEOUT_S from constance_constance (None: no row or no value). Raises SchemaError when the row cannot be
    read as a number of seconds."""
    cursor.execute(CONSTANCE_SQL, [CONSTANCE_TIMEOUT_KEY])
    row = cursor.fetchone()
    if row is None:
        return None
    try:
        value = decode_constance_int(row[0])
        return None if value is None else check_worker_timeout(value)
    except ValueError as exc:
        raise SchemaError("constance_constance's %s cannot be used as the worker timeout: %s. Fix it in the Django "
                          "admin (Constance, Worker) or pass worker_timeout_s."
                          % (CONSTANCE_TIMEOUT_KEY, exc)) from None


def resolve_worker_timeout(option: int | None, env: Mapping[str, str], home: str,
                           constance_value: int | None = None) -> tuple[int, str]:
    """(seconds, source): the option wins; then where the release reads it: the .env variable (``env``, v26.24+) or
    the constance row (``constance``, v26.23 and before); else upstream's default, 600."""
    if option is not None:
        return option, "option"
    if home == "env":
        value = env.get(ENV_TIMEOUT_KEY)
        if value and value.strip().isdigit() and int(value) >= 1:
            return int(value), "env"
    elif constance_value is not None:
        return constance_value, "constance"
    return DEFAULT_WORKER_TIMEOUT_S, "default"


def worker_timeout_from_db(cursor: Any, schema: Mapping[str, Any], option: int | None, env: Mapping[str, str],
                           compose_text: str | None = None) -> tuple[int, str, str]:
    """Resolve the worker timeout on an open connection: (seconds, source, home)."""
    home = timeout_home(schema["release"], compose_passes_timeout(compose_text))
    constance = None
    if option is None and home == "constance" and schema["has_constance"]:
        constance = read_constance_timeout(cursor)
    seconds, source = resolve_worker_timeout(option, env, home, constance)
    return seconds, source, home


def check_locked_at(cursor: Any, project_table: str) -> None:
    """The queue facts need ``locked_at`` (QFieldCloud v25.26+; ``is_locked`` before) to tell which pending jobs a
    worker could take."""
    cursor.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
                   " AND table_name = %s AND column_name = 'locked_at'", [project_table])
    if not cursor.fetchone()[0]:
        raise SchemaError("%s has no locked_at column: QFieldCloud before v25.26 (Project.is_locked) is not supported "
                          "by the queue facts. qfc_job_cleanup does not need it." % project_table)
