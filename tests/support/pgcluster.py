"""Throwaway PostgreSQL cluster for tests and benchmarks.

Each cluster lives in a fresh temporary directory, listens on 127.0.0.1 only and is destroyed on stop(), so tests
can exercise the queue modules against a real server without touching any installed one.

    with PgCluster() as pg:
        conn = pg.connect()

CLI (for demos): `python tests/support/pgcluster.py --port 55432` prints a JSON line of connection parameters and
keeps the cluster up until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import atexit
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

SERVER_USER = "postgres"  # the server refuses to run as root; this is the Debian package's system user

# Recorded `pg_dump --schema-only` of upstream QFieldCloud's own `manage.py migrate` (see the README there).
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "qfieldcloud-schema"
SCHEMA_VERSIONS = ("v25.26", "v26.20", "v26.23", "v26.25")
NEWEST = SCHEMA_VERSIONS[-1]
# v26.21 moved the project model into the `project` app (table project_project); the README has the details.
PROJECT_TABLE = {"v25.26": "core_project", "v26.20": "core_project", "v26.23": "project_project",
                 "v26.25": "project_project"}


def check_version(version: str) -> str:
    if version not in PROJECT_TABLE:
        raise ValueError("unknown QFieldCloud schema version %r (known: %s)" % (version, ", ".join(SCHEMA_VERSIONS)))
    return version


def project_table(version: str) -> str:
    """The project table of a recorded schema version."""
    return PROJECT_TABLE[check_version(version)]


def template_name(version: str) -> str:
    """The template database that PgCluster.schema_template() makes for ``version``."""
    return "qfc_template_%s" % check_version(version).replace(".", "_")


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin, else the directory of pg_ctl on PATH."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(Path(d, "pg_ctl"), os.X_OK)]
    versioned = [d for d in dirs if re.fullmatch(r"\d+(\.\d+)?", d.parent.name)]
    if versioned:
        return max(versioned, key=lambda d: tuple(int(p) for p in d.parent.name.split(".")))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).resolve().parent
    raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin or on PATH")


def free_port() -> int:
    """A loopback port that is free now; another process could still take it before the server binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """A private PostgreSQL server with one login role and one database, shaped like QFieldCloud's."""

    host = "127.0.0.1"
    user = "qfieldcloud_db_admin"
    password = "qfc-test-pw-5d2b8e"
    dbname = "qfieldcloud_db"
    superuser = "postgres"

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bindir = find_bindir()
        self.directory: Path | None = None
        self.templates: dict[str, str] = {}  # schema version -> template database, loaded on first use

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def params(self) -> dict:
        """Keyword arguments for psycopg2.connect() as the application role, over TCP with a password."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                "dbname": self.dbname}

    def connect(self, **overrides):
        """A new psycopg2 connection; overrides (e.g. dbname=...) replace entries of params."""
        return psycopg2.connect(**{**self.params, **overrides})

    def _run(self, *args: str, check: bool = True) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        # cwd: the server user may not be allowed into the caller's working directory (e.g. /root).
        proc = subprocess.run(cmd, cwd=self.directory, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            detail = "%s%s\n%s" % (proc.stdout, proc.stderr, tail)
            raise RuntimeError("%s failed (rc=%s): %s" % (args[0], proc.returncode, detail))

    def start(self) -> PgCluster:
        """initdb, configure, start with pg_ctl -w, then create the role and its database."""
        self.directory = Path(tempfile.mkdtemp(prefix="qfc-pg-"))
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                account = pwd.getpwnam(SERVER_USER)
                os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._run("initdb", "-D", str(self.datadir), "-U", self.superuser, "--encoding=UTF8", "--locale=C",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
            # Appending/truncating keeps the files' owner (the server user) even when we run as root.
            with open(self.datadir / "pg_hba.conf", "w") as hba:
                hba.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
            with open(self.datadir / "postgresql.conf", "a") as conf:
                conf.write(
                    "\nlisten_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                    "password_encryption = 'scram-sha-256'\n"
                    "# Throwaway data: durability is worth nothing here, load speed is.\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_wal_size = '4GB'\n"
                    % (self.port, self.datadir))
            self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.directory / "server.log"), "-w", "-t", "60",
                      "start")
            self._create_role_and_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _create_role_and_database(self) -> None:
        conn = psycopg2.connect(host=str(self.datadir), port=self.port, user=self.superuser, dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD %s").format(sql.Identifier(self.user)),
                            [self.password])
                create = sql.SQL("CREATE DATABASE {} OWNER {}")
                cur.execute(create.format(sql.Identifier(self.dbname), sql.Identifier(self.user)))
        finally:
            conn.close()

    def superuser_connect(self, dbname: str = "postgres"):
        """A connection as the superuser over the server's Unix socket (trust)."""
        return psycopg2.connect(host=str(self.datadir), port=self.port, user=self.superuser, dbname=dbname)

    def psql_file(self, path: Path, dbname: str) -> None:
        """Run an SQL file with psql as the superuser, stopping at the first error. The file goes in on stdin, so
        the server user needs no access to it."""
        cmd = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.datadir),
               "-p", str(self.port), "-U", self.superuser, "-d", dbname, "-f", "-"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        with open(path, "rb") as stdin:
            proc = subprocess.run(cmd, cwd=self.directory, stdin=stdin, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("psql -f %s failed (rc=%s): %s" % (path, proc.returncode,
                                                                  proc.stderr.decode(errors="replace")[-3000:]))

    def load_schema(self, dbname: str | None = None, version: str = NEWEST) -> None:
        """Load the recorded QFieldCloud schema ``version`` into an existing, empty database (default: the
        cluster's own).

        The dump is loaded as the superuser (it creates the postgis and btree_gist extensions), then every table,
        view, sequence and function it made is handed to the application role, as on a real server where Django
        migrated as that role.
        """
        dbname = dbname or self.dbname
        self.psql_file(SCHEMA_DIR / ("%s.sql" % check_version(version)), dbname)
        conn = self.superuser_connect(dbname)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(_HAND_OVER, {"owner": self.user})
                for (stmt,) in cur.fetchall():
                    cur.execute(stmt)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM (ANALYZE)")
        finally:
            conn.close()

    def schema_template(self, version: str = NEWEST) -> str:
        """The template database (template_name(version)) holding the recorded schema ``version``, loaded once per
        cluster; copying it is about ten times faster than loading the dump again."""
        if version in self.templates:
            return self.templates[version]
        name = template_name(version)
        conn = self.superuser_connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                create = sql.SQL("CREATE DATABASE {} OWNER {}")
                cur.execute(create.format(sql.Identifier(name), sql.Identifier(self.user)))
        finally:
            conn.close()
        self.load_schema(name, version)
        conn = self.superuser_connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
        finally:
            conn.close()
        self.templates[version] = name
        return name

    def create_database(self, name: str, version: str = NEWEST) -> None:
        """A new database ``name`` with the recorded QFieldCloud schema ``version``, owned by the application role
        and created by it (CREATEDB), the way QFieldCloud's own database is."""
        template = self.schema_template(version)
        conn = self.connect(dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                             sql.Identifier(template)))
        finally:
            conn.close()

    def stop(self) -> None:
        """Immediate shutdown and removal of the directory; safe to call twice or after a failed start."""
        atexit.unregister(self.stop)
        if self.directory is None:
            return
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            server = Path("/proc", *pidfile.read_text().split()[:1])  # "/proc" itself if the file is still empty
            # Not checked: after an interrupted initdb the pid file belongs to a bootstrap backend that pg_ctl
            # refuses to stop; that one exits by itself once initdb is gone.
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)
            # pg_ctl started the postmaster detached, so init reaps it; wait for that so that a check for leftover
            # processes right after stop() does not see a zombie.
            deadline = time.monotonic() + 10
            while server.name != "proc" and server.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


# Ownership of what the dump created goes to the application role; extension members (spatial_ref_sys, the postgis
# functions) stay with the superuser. Sequences of identity columns follow their table.
_HAND_OVER = """
SELECT format('ALTER %%s %%s OWNER TO %%I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                             WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
              c.oid::regclass, %(owner)s)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype IN ('e', 'a', 'i'))
UNION ALL
SELECT format('ALTER FUNCTION %%s OWNER TO %%I', p.oid::regprocedure, %(owner)s)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a throwaway PostgreSQL cluster until SIGTERM/SIGINT.")
    parser.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    parser.add_argument("--schema", default=NEWEST, choices=[*SCHEMA_VERSIONS, "none"],
                        help="recorded QFieldCloud schema to load into the database and to keep as template "
                             "database template_name(VERSION) (default: %(default)s)")
    args = parser.parse_args()
    # Blocked from the start, so a stop request that arrives during startup waits until start() has finished instead
    # of interrupting initdb or pg_ctl halfway. The server sets its own signal mask, so it does not inherit this.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    with PgCluster(port=args.port) as cluster:
        if args.schema != "none":
            cluster.load_schema(version=args.schema)
            cluster.schema_template(args.schema)
        print(json.dumps(cluster.params), flush=True)
        signal.sigwait(signals)


if __name__ == "__main__":
    main()
