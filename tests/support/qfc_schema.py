"""QFieldCloud's job-related tables as Django's migrations leave them on PostgreSQL.

Source of truth: shared/research/qfieldcloud-facts.md, section 3. Only the tables and columns that the job queue
touches are created, but those match upstream: same names, types, nullability and Django's own single-column indexes
(including the varchar_pattern_ops "_like" twins Django adds for indexed varchar columns). The model declares no
composite index, and benchmarks must see that, so none is added here.

Deviations from a migrated database, on purpose:
- status/container_id/last_status have DB defaults (Django keeps defaults in Python) so tests may insert raw rows;
- foreign keys that Django cascades in the ORM (job -> project, subclass -> job, delta -> project, ...) cascade
  in the database, so a test can delete a project with plain SQL like the admin would.
"""

from __future__ import annotations

import hashlib

PROJECT_TABLES = ("project_project", "core_project")  # v26.21+ and earlier (facts §3, "Project table renamed")
MAX_NAME_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1, which Django honours when naming indexes


def django_name(table: str, column: str, suffix: str = "") -> str:
    """Index/constraint name the way Django's schema editor builds it (_create_index_name, names_digest)."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in (table, column):
        digest.update(part.encode())
    hash_suffix = digest.hexdigest()[:8] + suffix
    name = "%s_%s_%s" % (table, column, hash_suffix)
    if len(name) <= MAX_NAME_LENGTH:
        return name
    hash_suffix = hash_suffix[:MAX_NAME_LENGTH // 3]
    other = (MAX_NAME_LENGTH - len(hash_suffix)) // 2 - 1
    return "%s_%s_%s" % (table[:other], column[:other], hash_suffix)


def check_project_table(project_table: str) -> str:
    """Table names are pasted into SQL, so only the two real ones are accepted."""
    if project_table not in PROJECT_TABLES:
        raise ValueError("project_table must be one of %s, not %r" % (PROJECT_TABLES, project_table))
    return project_table


def _index(table: str, column: str, like: bool = False) -> list[str]:
    """Django's db_index: a btree index, plus a varchar_pattern_ops one for varchar columns (LIKE lookups)."""
    stmts = ['CREATE INDEX "%s" ON "%s" ("%s")' % (django_name(table, column), table, column)]
    if like:
        stmts.append('CREATE INDEX "%s" ON "%s" ("%s" varchar_pattern_ops)'
                     % (django_name(table, column, "_like"), table, column))
    return stmts


def _fk(table: str, column: str, to_table: str, to_column: str = "id", cascade: bool = False,
        index: bool = True) -> list[str]:
    """Django's ForeignKey: a DEFERRABLE INITIALLY DEFERRED constraint plus an index (unless the column is the PK)."""
    name = django_name(table, column, "_fk_%s_%s" % (to_table, to_column))
    stmts = ['ALTER TABLE "%s" ADD CONSTRAINT "%s" FOREIGN KEY ("%s") REFERENCES "%s" ("%s")%s '
             "DEFERRABLE INITIALLY DEFERRED"
             % (table, name, column, to_table, to_column, " ON DELETE CASCADE" if cascade else "")]
    return stmts + (_index(table, column) if index else [])


def schema_statements(project_table: str = "project_project") -> list[str]:
    """The DDL, in dependency order."""
    project = check_project_table(project_table)
    stmts = [
        """CREATE TABLE "core_user" (
            "id" serial NOT NULL PRIMARY KEY,
            "username" varchar(150) NOT NULL UNIQUE,
            "email" varchar(254) NOT NULL,
            "date_joined" timestamp with time zone NOT NULL,
            "is_active" boolean NOT NULL)""",
        *_index("core_user", "username", like=True)[1:],  # UNIQUE already made the btree one
        """CREATE TABLE "%s" (
            "id" uuid NOT NULL PRIMARY KEY,
            "name" varchar(255) NOT NULL,
            "owner_id" integer NOT NULL,
            "is_public" boolean NOT NULL,
            "created_at" timestamp with time zone NOT NULL,
            "updated_at" timestamp with time zone NOT NULL,
            "locked_at" timestamp with time zone NULL)""" % project,
        *_fk(project, "owner_id", "core_user"),
        """CREATE TABLE "core_job" (
            "id" uuid NOT NULL PRIMARY KEY,
            "project_id" uuid NOT NULL,
            "type" varchar(32) NOT NULL,
            "status" varchar(32) NOT NULL DEFAULT 'pending',
            "output" text NULL,
            "feedback" jsonb NULL,
            "triggered_by_id" integer NOT NULL,
            "created_by_id" integer NOT NULL,
            "created_at" timestamp with time zone NOT NULL,
            "updated_at" timestamp with time zone NOT NULL,
            "started_at" timestamp with time zone NULL,
            "finished_at" timestamp with time zone NULL,
            "docker_started_at" timestamp with time zone NULL,
            "docker_finished_at" timestamp with time zone NULL,
            "container_id" varchar(64) NOT NULL DEFAULT '')""",
        *_fk("core_job", "project_id", project, cascade=True),
        *_fk("core_job", "triggered_by_id", "core_user"),
        *_fk("core_job", "created_by_id", "core_user"),
        *_index("core_job", "status", like=True),
        *_index("core_job", "created_at"),
        *_index("core_job", "updated_at"),
        *_index("core_job", "container_id", like=True),
    ]
    for table, extra in (("core_packagejob", ""), ("core_processprojectfilejob", ""),
                         ("core_applyjob", ',\n            "overwrite_conflicts" boolean NOT NULL')):
        stmts.append('CREATE TABLE "%s" (\n            "job_ptr_id" uuid NOT NULL PRIMARY KEY%s)' % (table, extra))
        stmts += _fk(table, "job_ptr_id", "core_job", cascade=True, index=False)
    stmts += [
        """CREATE TABLE "core_delta" (
            "id" uuid NOT NULL PRIMARY KEY,
            "deltafile_id" uuid NOT NULL,
            "client_id" uuid NOT NULL,
            "project_id" uuid NOT NULL,
            "content" jsonb NOT NULL,
            "last_status" varchar(32) NOT NULL DEFAULT 'pending',
            "last_feedback" jsonb NULL,
            "last_modified_pk" text NULL,
            "last_apply_attempt_at" timestamp with time zone NULL,
            "last_apply_attempt_by_id" integer NULL,
            "created_at" timestamp with time zone NOT NULL,
            "updated_at" timestamp with time zone NOT NULL,
            "created_by_id" integer NOT NULL)""",
        *_fk("core_delta", "project_id", project, cascade=True),
        *_fk("core_delta", "last_apply_attempt_by_id", "core_user"),
        *_fk("core_delta", "created_by_id", "core_user"),
        """CREATE TABLE "core_applyjobdelta" (
            "id" serial NOT NULL PRIMARY KEY,
            "apply_job_id" uuid NOT NULL,
            "delta_id" uuid NOT NULL,
            "status" varchar(32) NOT NULL DEFAULT 'pending',
            "feedback" jsonb NULL,
            "modified_pk" text NULL)""",
        *_fk("core_applyjobdelta", "apply_job_id", "core_applyjob", "job_ptr_id", cascade=True),
        *_fk("core_applyjobdelta", "delta_id", "core_delta", cascade=True),
    ]
    return stmts


def create_schema(conn, project_table: str = "project_project") -> None:
    """Create the tables in the connection's database and commit, so other sessions see them."""
    with conn, conn.cursor() as cur:
        for stmt in schema_statements(project_table):
            cur.execute(stmt)
