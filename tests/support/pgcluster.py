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


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a throwaway PostgreSQL cluster until SIGTERM/SIGINT.")
    parser.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    args = parser.parse_args()
    # Blocked from the start, so a stop request that arrives during startup waits until start() has finished instead
    # of interrupting initdb or pg_ctl halfway. The server sets its own signal mask, so it does not inherit this.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    with PgCluster(port=args.port) as cluster:
        print(json.dumps(cluster.params), flush=True)
        signal.sigwait(signals)


if __name__ == "__main__":
    main()
