"""Compose projects and databases the integration tests run against: a QFieldCloud-shaped stack (tests/fixtures/stack,
or stack-db whose simulated workers dequeue from a test database) in a temporary directory, and a database with a
recorded QFieldCloud schema. tests/integration/conftest.py turns them into fixtures."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import docker

from tests.support.pgcluster import project_table
from tests.support.project import copy_project

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "stack"
FIXTURE_DB = ROOT / "tests" / "fixtures" / "stack-db"
WORKER_SIM = ROOT / "tests" / "fixtures" / "worker_sim"


class Stack:
    """A running QFieldCloud-shaped compose project in a temporary directory."""

    def __init__(self, path, project):
        self.path = path
        self.project = project
        self.env_file = path / ".env"
        self.out = path / "out"
        self.client = docker.from_env(version="auto")

    def compose(self, *args, check=True, env=None):
        return subprocess.run(["docker", "compose", *args], cwd=self.path, capture_output=True, text=True,
                              check=check, env=dict(os.environ, **(env or {})))

    def env_text(self):
        return self.env_file.read_text()

    def env_value(self, key="QFIELDCLOUD_WORKER_REPLICAS"):
        values = re.findall(r"^(?:export\s+)?%s=(.*)$" % key, self.env_text(), re.M)
        return values[-1].strip().strip("'\"") if values else None

    def set_env(self, key, value):
        text = self.env_text()
        if re.search(r"^%s=" % key, text, re.M):
            text = re.sub(r"^%s=.*$" % key, "%s=%s" % (key, value), text, flags=re.M)
        else:
            text += "%s=%s\n" % (key, value)
        self.env_file.write_text(text)

    def containers(self, service="worker_wrapper", all=True):
        return self.client.containers.list(all=all, filters={"label": [
            "com.docker.compose.project=%s" % self.project,
            "com.docker.compose.service=%s" % service,
            "com.docker.compose.oneoff=False"]})

    def running(self, service="worker_wrapper"):
        return sorted(c.name for c in self.containers(service) if c.status == "running")

    def backups(self):
        return sorted(self.path.glob(".env.*~"))

    def up(self):
        self.compose("up", "-d")

    def down(self):
        self.compose("down", "--remove-orphans", "--timeout", "1", check=False)
        for container in self.client.containers.list(all=True, filters={
                "label": "com.docker.compose.project=%s" % self.project}):
            container.remove(force=True)


def instantiate(fixture, path, prefix, settings, extra_env=None, start=True):
    """Copy a compose fixture to ``path`` with a unique project name; .env is its env.example with ``settings``
    replacing existing keys and ``extra_env`` appended. Started with ``docker compose up -d`` unless start=False."""
    project = "%s%s" % (prefix, uuid.uuid4().hex[:8])
    copy_project(fixture, path, dict(settings, COMPOSE_PROJECT_NAME=project), extra_env)
    stack = Stack(path, project)
    if start:
        stack.up()
    return stack


def make_stack(tmp_path, replicas=2, start=True, extra_env=None):
    path = tmp_path / "qfieldcloud"  # the workers' marker files land in path/out (the engine creates it)
    return instantiate(FIXTURE, path, "qfct", {"QFIELDCLOUD_WORKER_REPLICAS": replicas},
                       dict({"QFC_SIM_OUT": path / "out"}, **(extra_env or {})), start)


def make_db_stack(tmp_path, db, replicas=2, job_s=1.0, start=True):
    """The DB-backed stack: worker_wrapper runs the simulator against ``db`` over loopback (host networking)."""
    settings = {"QFIELDCLOUD_WORKER_REPLICAS": replicas, "POSTGRES_PASSWORD": db.pg.password,
                "POSTGRES_PORT": db.pg.port, "POSTGRES_DB": db.name, "POSTGRES_USER": db.pg.user,
                "QFC_SIM_DIR": WORKER_SIM, "QFC_SIM_JOB_S": job_s, "QFC_SIM_POLL_S": "0.2",
                "POSTGRES_SSLMODE": "disable"}
    return instantiate(FIXTURE_DB, tmp_path / "qfieldcloud-db", "qfcw", settings, start=start)


class QfcDb:
    """A fresh database with a recorded QFieldCloud schema (tests/fixtures/qfieldcloud-schema) and a .env that
    points at it."""

    def __init__(self, pg, name, version, env_file):
        self.pg = pg
        self.name = name
        self.version = version
        self.project_table = project_table(version)
        self.env_file = env_file
        self.conn = pg.connect(dbname=name)

    def one(self, query, params=None):
        with self.conn, self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchone()

    def all(self, query, params=None):
        with self.conn, self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def status(self, job_id):
        return self.one("SELECT status FROM core_job WHERE id = %s", [job_id])[0]

    def env_text(self, host="127.0.0.1", port=None, **extra):
        lines = ["POSTGRES_USER=%s" % self.pg.user, "POSTGRES_PASSWORD=%s" % self.pg.password,
                 "POSTGRES_DB=%s" % self.name, "POSTGRES_HOST=%s" % host, "POSTGRES_PORT=%s" % (port or self.pg.port),
                 "POSTGRES_SSLMODE=disable", "QFIELDCLOUD_WORKER_TIMEOUT_S=600", "QFIELDCLOUD_WORKER_REPLICAS=2"]
        lines += ["%s=%s" % kv for kv in extra.items()]
        return "\n".join(lines) + "\n"
