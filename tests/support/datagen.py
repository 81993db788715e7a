"""Realistic QFieldCloud job data for tests (precise single rows) and benchmarks (a year of history).

The bulk path is generated server-side (INSERT ... SELECT generate_series), so nothing large crosses the socket and
a million core_job rows load in well under a minute. Every function commits: the module under test uses its own
session and must see the rows. Ids are returned as strings, which psycopg2 passes back without register_uuid().
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Sequence

from psycopg2 import sql
from psycopg2.extras import Json

PROJECT_TABLES = ("project_project", "core_project")  # v26.21+ and earlier (tests/fixtures/qfieldcloud-schema)

# Values for the NOT NULL columns Django fills from the model (the database has no defaults). Upstream's model
# defaults where it has them (qfieldcloud/core/models.py, project/models.py); a column the recorded schema marks NOT
# NULL and this map lacks makes the insert fail loudly rather than guess.
USER_COLUMNS = {"password": "'!'", "is_superuser": "false", "first_name": "''", "last_name": "''",
                "is_staff": "false", "type": "1"}  # "!": Django's unusable password; type 1 = PERSON
PROJECT_COLUMNS = {
    "description": "''", "overwrite_conflicts": "true", "repackaging_cache_expire": "interval '60 minutes'",
    "file_storage_bytes": "0", "packaging_offliner": "'pythonmini'", "has_restricted_projectfiles": "false",
    "file_storage": "'default'", "attachments_file_storage": "'default'", "is_featured": "false",
    "is_attachment_download_on_demand": "false",
    "legacy_thumbnail_uri": "''",  # v25.26 only
    "are_attachments_versioned": "true",  # v26.20+
    "project_type": "'regular'",  # v26.21+ (project_project)
}
# Set by the INSERT itself.
_PROJECT_SET = {"id", "name", "owner_id", "is_public", "created_at", "updated_at", "locked_at"}


def check_project_table(project_table: str) -> str:
    """Table names are pasted into SQL, so only the two real ones are accepted."""
    if project_table not in PROJECT_TABLES:
        raise ValueError("project_table must be one of %s, not %r" % (PROJECT_TABLES, project_table))
    return project_table


def _required_columns(cur, table: str, given: set[str]) -> list[str]:
    """The table's NOT NULL columns without a database default that ``given`` does not set."""
    cur.execute("""
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = %s AND is_nullable = 'NO' AND column_default IS NULL
          AND is_identity = 'NO'
        ORDER BY ordinal_position""", [table])
    return [name for (name,) in cur.fetchall() if name not in given]


def _fill(table: str, columns: list[str], values: dict) -> list[str]:
    missing = [c for c in columns if c not in values]
    if missing:
        raise ValueError("%s: no value for NOT NULL column(s) %s" % (table, ", ".join(missing)))
    return [values[c] for c in columns]


STATUSES = ("pending", "queued", "started", "finished", "stopped", "failed")
TYPES = ("package", "delta_apply", "process_projectfile", "create_project")
# Multi-table inheritance: create_project jobs are plain Job rows (facts §3).
SUBCLASS_TABLES = {"package": "core_packagejob", "process_projectfile": "core_processprojectfilejob",
                   "delta_apply": "core_applyjob"}
# kind -> (statuses to cycle through, created_ago_s, started_ago_s); see facts §4.3 for why each one is stuck.
STUCK_KINDS = {
    # Swept by upstream's SetTerminatedWorkersToFinalStatusJob once the worker timeout has passed.
    "stale": (("started", "queued"), 2 * 3600 + 30, 2 * 3600),
    # A wrapper died between dequeue and run(): started_at stays NULL, so upstream never sweeps it.
    "orphaned_queued": (("queued",), 2 * 3600, None),
    # Upstream never expires pending jobs.
    "old_pending": (("pending",), 3 * 86400, None),
}


def make_users(conn, n: int) -> list[int]:
    """n active users (persons) named user<id>."""
    with conn, conn.cursor() as cur:
        extra = _required_columns(cur, "core_user", {"id", "username", "email", "date_joined", "is_active"})
        cur.execute(sql.SQL("""
            INSERT INTO core_user (id, username, email, date_joined, is_active{extra})
            SELECT id, 'user' || id, 'user' || id || '@example.com', now() - random() * interval '3 years', true{values}
            FROM (SELECT nextval(pg_get_serial_sequence('core_user', 'id')) AS id FROM generate_series(1, %s)) AS s
            RETURNING id""").format(
            extra=sql.SQL("").join(sql.SQL(", ") + sql.Identifier(c) for c in extra),
            values=sql.SQL("".join(", " + v for v in _fill("core_user", extra, USER_COLUMNS)))), [n])
        return sorted(row[0] for row in cur.fetchall())


def make_projects(conn, project_table: str, n: int, owner_id: int | Sequence[int], locked: int = 0) -> list[str]:
    """n projects; the first `locked` ones have locked_at set. owner_id may be a list, used round-robin."""
    owners = [owner_id] if isinstance(owner_id, int) else list(owner_id)
    ids = [str(uuid.uuid4()) for _i in range(n)]
    table = check_project_table(project_table)
    with conn, conn.cursor() as cur:
        extra = _required_columns(cur, table, _PROJECT_SET)
        # The project name is the full id: unique per owner (project_owner_name_uniq) whatever the ids.
        query = sql.SQL("""
            INSERT INTO {table} (id, name, owner_id, is_public, created_at, updated_at, locked_at{extra})
            SELECT id, 'project-' || id::text, (%(owners)s::int[])[1 + mod(i - 1, %(n_owners)s)], false,
                   created, created, CASE WHEN i <= %(locked)s THEN now() END{values}
            FROM (SELECT id, i, now() - random() * interval '2 years' AS created
                  FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS p(id, i) OFFSET 0) AS p""").format(
            table=sql.Identifier(table), extra=sql.SQL("").join(sql.SQL(", ") + sql.Identifier(c) for c in extra),
            values=sql.SQL("".join(", " + v for v in _fill(table, extra, PROJECT_COLUMNS))))
        cur.execute(query, {"ids": ids, "owners": owners, "n_owners": len(owners), "locked": locked})
    return ids


def _ago(seconds: float | None) -> str | None:
    return None if seconds is None else "%s seconds" % seconds


def _insert_job(cur, project_id, user_id, status, type, created_ago_s, started_ago_s, finished_ago_s, feedback,
                output, container_id) -> str:
    if status not in STATUSES or type not in TYPES:
        raise ValueError("unknown job status %r or type %r" % (status, type))
    if container_id is None:
        ran = started_ago_s is not None and status in ("started", "finished", "failed")
        container_id = secrets.token_hex(32) if ran else ""
    job_id = str(uuid.uuid4())
    ages = [a for a in (created_ago_s, started_ago_s, finished_ago_s) if a is not None]
    cur.execute("""
        INSERT INTO core_job (id, project_id, type, status, output, feedback, triggered_by_id, created_by_id,
                              created_at, updated_at, started_at, finished_at, docker_started_at, docker_finished_at,
                              container_id)
        VALUES (%(id)s, %(project)s, %(type)s, %(status)s, %(output)s, %(feedback)s, %(user)s, %(user)s,
                now() - %(created)s::interval, now() - %(updated)s::interval, now() - %(started)s::interval,
                now() - %(finished)s::interval, now() - %(docker_started)s::interval,
                now() - %(docker_finished)s::interval, %(container)s)""",
                {"id": job_id, "project": project_id, "type": type, "status": status, "output": output,
                 "feedback": None if feedback is None else Json(feedback), "user": user_id,
                 "created": _ago(created_ago_s), "updated": _ago(min(ages)), "started": _ago(started_ago_s),
                 "finished": _ago(finished_ago_s), "docker_started": _ago(started_ago_s if container_id else None),
                 "docker_finished": _ago(finished_ago_s if container_id else None), "container": container_id})
    if type == "delta_apply":
        cur.execute("INSERT INTO core_applyjob (job_ptr_id, overwrite_conflicts) VALUES (%s, false)", [job_id])
    elif type in SUBCLASS_TABLES:
        cur.execute('INSERT INTO "%s" (job_ptr_id) VALUES (%%s)' % SUBCLASS_TABLES[type], [job_id])
    return job_id


def _insert_deltas(cur, job_id, project_id, user_id, n, created_ago_s) -> list[str]:
    """n deltas of one uploaded deltafile from one QField client, all attached to the apply job."""
    ids = [str(uuid.uuid4()) for _i in range(n)]
    cur.execute("""
        INSERT INTO core_delta (id, deltafile_id, client_id, project_id, content, last_status, created_at, updated_at,
                                created_by_id)
        SELECT d.id, %(deltafile)s, %(client)s, %(project)s,
               jsonb_build_object('uuid', d.id, 'clientId', %(client)s, 'localLayerId', 'points_0b5c6bd8',
                                  'sourceLayerId', 'points_0b5c6bd8', 'localPk', d.i::text, 'sourcePk', d.i::text,
                                  'method', 'patch', 'old', jsonb_build_object('attributes', jsonb_build_object(
                                      'name', 'tree ' || d.i)),
                                  'new', jsonb_build_object('attributes', jsonb_build_object(
                                      'name', 'tree ' || d.i || ' (checked)'))),
               'pending', now() - %(created)s::interval, now() - %(created)s::interval, %(user)s
        FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS d(id, i)""",
                {"ids": ids, "deltafile": str(uuid.uuid4()), "client": str(uuid.uuid4()), "project": project_id,
                 "created": _ago(created_ago_s), "user": user_id})
    cur.execute("""
        INSERT INTO core_applyjobdelta (apply_job_id, delta_id, status)
        SELECT %s, d, 'pending' FROM unnest(%s::uuid[]) AS d""", [job_id, ids])
    return ids


def add_job(conn, project_id: str, user_id: int, status: str = "pending", type: str = "package",
            created_ago_s: float = 0, started_ago_s: float | None = None, finished_ago_s: float | None = None,
            feedback: dict | None = None, output: str | None = None, container_id: str | None = None) -> str:
    """One job with its subclass row, timed relative to now(). container_id=None invents one if the job ran."""
    with conn, conn.cursor() as cur:
        return _insert_job(cur, project_id, user_id, status, type, created_ago_s, started_ago_s, finished_ago_s,
                           feedback, output, container_id)


def add_delta_apply_job(conn, project_id: str, user_id: int, n_deltas: int = 2, status: str = "pending",
                        created_ago_s: float = 0, started_ago_s: float | None = None,
                        finished_ago_s: float | None = None) -> tuple[str, list[str]]:
    """A delta_apply job with n pending deltas, as apply_deltas() leaves them (facts §4.4)."""
    with conn, conn.cursor() as cur:
        job_id = _insert_job(cur, project_id, user_id, status, "delta_apply", created_ago_s, started_ago_s,
                             finished_ago_s, None, None, None)
        return job_id, _insert_deltas(cur, job_id, project_id, user_id, n_deltas, created_ago_s)


def add_stuck(conn, project_table: str, n: int, kind: str, type: str = "package") -> list[str]:
    """n stuck jobs of one STUCK_KINDS kind, each on a fresh project so none blocks another."""
    statuses, created_ago_s, started_ago_s = STUCK_KINDS[kind]
    user_id = make_users(conn, 1)[0]
    project_ids = make_projects(conn, project_table, n, user_id)
    ids = []
    with conn, conn.cursor() as cur:
        for i, project_id in enumerate(project_ids):
            job_id = _insert_job(cur, project_id, user_id, statuses[i % len(statuses)], type, created_ago_s,
                                 started_ago_s, None, None, None, None)
            if type == "delta_apply":
                _insert_deltas(cur, job_id, project_id, user_id, 2, created_ago_s)
            ids.append(job_id)
    return ids


# One row per job; the inner OFFSET 0 keeps each random() evaluated once per row. Shape of the history:
# - finished_at uniform over `days`; queue wait exponential (mean 3 s, 2% behind a backlog with mean 2 min);
# - run time exponential by type (package 40 s, delta_apply 8 s, process_projectfile 25 s, create_project 15 s);
# - 3% failed: timeouts (600 s), docker SIGKILL 137, cron-swept "unexpectedly terminated", plain container errors;
# - projects and users Zipf-like (r^2), so a few projects carry most jobs, as on a real server;
# - rows are written in time order, so the heap is physically ordered like an append-mostly table (the planner's
#   created_at correlation is ~1, as in production); subclass ids are inserted sorted only because that is faster.
BULK_SQL = """
WITH new_jobs AS (
    INSERT INTO core_job (id, project_id, type, status, output, feedback, triggered_by_id, created_by_id, created_at,
                          updated_at, started_at, finished_at, docker_started_at, docker_finished_at, container_id)
    SELECT gen_random_uuid(), project_id, type, status, output, feedback, user_id, user_id,
           finished_at - run - wait, finished_at, finished_at - run, finished_at,
           finished_at - run * 0.95, finished_at - run * 0.05, md5(random()::text) || md5(random()::text)
    FROM (
        SELECT project_id, user_id, type, finished_at, wait, run,
               CASE WHEN failed THEN 'failed' ELSE 'finished' END AS status,
               CASE WHEN NOT failed THEN format('%%s job finished in %%s (exit code 0)', type, run)
                    WHEN error = 'TIMEOUT' THEN 'Timeout error! The job failed to finish within 600 seconds!'
                    WHEN error = 'TERMINATED' THEN 'Job unexpectedly terminated.'
                    WHEN error = 'DOCKER_ENGINE_SIGKILL' THEN 'Killed'
                    ELSE 'Traceback (most recent call last):' || chr(10) || '  File "/usr/src/app/qfc_worker/'
                         || 'utils.py", line 512, in run_workflow' || chr(10)
                         || 'qfc_worker.exceptions.InvalidFileExtensionException: Project file has no .qgs extension'
               END AS output,
               CASE WHEN NOT failed THEN NULL
                    WHEN error = 'TERMINATED' THEN jsonb_build_object(
                        'error_stack', '', 'error', 'Job unexpectedly terminated.', 'error_origin', 'worker_wrapper',
                        'container_exit_code', -2)
                    ELSE jsonb_build_object(
                        'error_type', error, 'error_origin', 'container',
                        'error', CASE error WHEN 'TIMEOUT' THEN 'Timeout error!'
                                            WHEN 'DOCKER_ENGINE_SIGKILL' THEN 'Killed by the docker engine (OOM?)'
                                            ELSE 'Project file has no .qgs extension' END,
                        'container_exit_code', CASE error WHEN 'TIMEOUT' THEN -1
                                                          WHEN 'DOCKER_ENGINE_SIGKILL' THEN 137 ELSE 1 END)
               END AS feedback
        FROM (
            SELECT project_id, user_id, type, failed, error, finished_at,
                   make_interval(secs => CASE WHEN r_backlog < 0.02 THEN 120 ELSE 3 END * -ln(1 - r_wait)) AS wait,
                   make_interval(secs => round((CASE WHEN error = 'TIMEOUT' THEN 600
                                                     WHEN error = 'TERMINATED' THEN 610 + 180 * r_run
                                                     ELSE 2 + -ln(1 - r_run) * CASE type WHEN 'package' THEN 40
                                                         WHEN 'delta_apply' THEN 8 WHEN 'process_projectfile' THEN 25
                                                         ELSE 15 END END)::numeric, 3)) AS run
            FROM (
                SELECT (%(projects)s::uuid[])[1 + floor(%(n_projects)s * random() ^ 2)::int] AS project_id,
                       (%(users)s::int[])[1 + floor(%(n_users)s * random() ^ 2)::int] AS user_id,
                       CASE WHEN r_type < 0.50 THEN 'package' WHEN r_type < 0.80 THEN 'delta_apply'
                            WHEN r_type < 0.98 THEN 'process_projectfile' ELSE 'create_project' END AS type,
                       r_status < %(failed_rate)s AS failed,
                       CASE WHEN r_status >= %(failed_rate)s THEN NULL
                            WHEN r_error < 0.2 THEN 'TIMEOUT' WHEN r_error < 0.3 THEN 'DOCKER_ENGINE_SIGKILL'
                            WHEN r_error < 0.4 THEN 'TERMINATED' ELSE 'CONTAINER_ERROR' END AS error,
                       now() - %(days)s * random() * interval '1 day' AS finished_at,
                       r_backlog, r_wait, r_run
                FROM (SELECT random() AS r_type, random() AS r_status, random() AS r_error, random() AS r_backlog,
                             random() AS r_wait, random() AS r_run
                      FROM generate_series(1, %(jobs)s) OFFSET 0) AS draws
                ORDER BY finished_at OFFSET 0
            ) AS picked
        ) AS timed
    ) AS shaped
    RETURNING id, type
), package AS (
    INSERT INTO core_packagejob (job_ptr_id) SELECT id FROM new_jobs WHERE type = 'package' ORDER BY id
), processprojectfile AS (
    INSERT INTO core_processprojectfilejob (job_ptr_id)
    SELECT id FROM new_jobs WHERE type = 'process_projectfile' ORDER BY id
)
INSERT INTO core_applyjob (job_ptr_id, overwrite_conflicts) SELECT id, false FROM new_jobs WHERE type = 'delta_apply'
    ORDER BY id
"""


def _drop_keys_and_indexes(cur, tables: Sequence[str]) -> list[str]:
    """Drop the tables' foreign keys and plain indexes; return the DDL that recreates them as they were.

    Checking deferred foreign keys and maintaining nine indexes row by row more than doubles the load time (90 s
    instead of 40 s for a million jobs); building and validating them once afterwards leaves the same catalog.
    """
    cur.execute("""
        SELECT format('ALTER TABLE %%s DROP CONSTRAINT %%I', conrelid::regclass, conname),
               format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', conrelid::regclass, conname, pg_get_constraintdef(oid))
        FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%(tables)s::regclass[])
        UNION ALL
        SELECT format('DROP INDEX %%s', indexrelid::regclass), pg_get_indexdef(indexrelid)
        FROM pg_index
        WHERE indrelid = ANY(%(tables)s::regclass[])
          AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = indexrelid)
        """, {"tables": list(tables)})
    rows = cur.fetchall()
    for drop, _create in rows:
        cur.execute(drop)
    return [create for _drop, create in rows]


def bulk_history(conn, project_table: str, jobs: int = 1_000_000, projects: int = 2000, users: int = 200,
                 days: int = 365, seed: int = 1, failed_rate: float = 0.03, pending: int = 10, queued: int = 2,
                 started: int = 2) -> dict:
    """A server's job history plus a live queue near now(), then VACUUM ANALYZE; returns core_job counts.

    Live jobs: queued/started ones sit on distinct projects (the dequeue guarantees one active job per project);
    pending ones go on the first `pending` projects, so some wait behind an active job and some are free to run.
    """
    user_ids = make_users(conn, users)
    project_ids = make_projects(conn, project_table, projects, user_ids)
    with conn, conn.cursor() as cur:
        restore = _drop_keys_and_indexes(cur, ["core_job", *SUBCLASS_TABLES.values()])
        cur.execute("SELECT setseed(%s)", [random.Random(seed).uniform(-1, 1)])
        cur.execute(BULK_SQL, {"projects": project_ids, "n_projects": projects, "users": user_ids,
                               "n_users": users, "jobs": jobs, "days": days, "failed_rate": failed_rate})
        for stmt in restore:
            cur.execute(stmt)
        for i in range(queued + started):
            status = "queued" if i < queued else "started"
            _insert_job(cur, project_ids[i], user_ids[i % users], status, TYPES[i % 3], 40 + 10 * i,
                        None if status == "queued" else 30 + 10 * i, None, None, None, None)
        for i in range(pending):
            _insert_job(cur, project_ids[i % projects], user_ids[i % users], "pending", TYPES[i % 3], 5 + 3 * i,
                        None, None, None, None, None)
    autocommit = conn.autocommit
    conn.autocommit = True  # VACUUM cannot run in a transaction
    try:
        with conn.cursor() as cur:
            # Not just ANALYZE: the visibility map and hint bits then look like a server where autovacuum has run,
            # and autovacuum will not start on its own in the middle of a benchmark.
            cur.execute("VACUUM (ANALYZE)")
            cur.execute("SELECT status, count(*) FROM core_job GROUP BY status")
            counts = dict.fromkeys(STATUSES, 0)
            counts.update(cur.fetchall())
    finally:
        conn.autocommit = autocommit
    return {"users": users, "projects": projects, "jobs": sum(counts.values()), **counts}
