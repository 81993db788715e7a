"""Harness for integration tests: real Docker Engine, real Compose v2, real Ansible runs.

Each test gets its own copy of the QFieldCloud-shaped compose project (tests/fixtures/stack) with a unique
COMPOSE_PROJECT_NAME, started with `docker compose up -d` and torn down afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest
from psycopg2 import sql

from tests.support.pgcluster import NEWEST, SCHEMA_VERSIONS, PgCluster, project_table
from tests.support.project import copy_project

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support
FIXTURE = ROOT / "tests" / "fixtures" / "stack"
BIN = Path(sys.executable).parent
SECRETS = ("3shJDd2r7Twwkehb-demo", "demo-s3cret-key-9f1c2e7a4b", "demo-storage-secret-77ad")


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "PATH": "%s:%s" % (BIN, env.get("PATH", "")),
    })
    env.update(extra or {})
    return env


class Result:
    def __init__(self, proc, data):
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.data = data

    @property
    def failed(self):
        return bool(self.data.get("failed")) or self.rc != 0

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def __repr__(self):
        return "Result(rc=%s, data=%s)\n%s" % (self.rc, self.data, self.output[-3000:])


def run_module(module_args, check=False, diff=False, verbose=False, python=None, timeout=600,
               module="qfieldcloud.ops.qfc_scale"):
    """One real ad-hoc Ansible run of a module on localhost (arguments as JSON); returns its parsed result."""
    cmd = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % (python or sys.executable),
           "-m", module, "-a", json.dumps(module_args)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbose:
        cmd.append("-vvv")
    proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    match = re.search(r"^localhost \| [A-Z!]+ => ", proc.stdout, re.M)
    if match:
        data, _end = json.JSONDecoder().raw_decode(proc.stdout, match.end())
    else:
        data = {"failed": True, "msg": "no result line"}
    return Result(proc, data)


def run_playbook(playbook, inventory, extra_vars=None, check=False, diff=False, timeout=900):
    cmd = [str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    return subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


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


@pytest.fixture
def stack(tmp_path):
    created = make_stack(tmp_path)
    yield created
    created.down()


@pytest.fixture
def stack_factory(tmp_path):
    made = []

    def factory(name="s", **kwargs):
        base = tmp_path / name
        base.mkdir()
        created = make_stack(base, **kwargs)
        made.append(created)
        return created

    yield factory
    for created in made:
        created.down()


def assert_no_secrets(text, *more):
    for secret in SECRETS + more:
        assert secret not in text, "a secret from .env leaked into the output"


@pytest.fixture(scope="session")
def pg():
    """One throwaway PostgreSQL server for the session; each test gets its own database in it."""
    with PgCluster() as cluster:
        cluster.schema_template(NEWEST)  # tests/support/fleet.py copies it by name
        yield cluster


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


@pytest.fixture
def make_db(pg, tmp_path):
    made = []

    def factory(version=NEWEST):
        """A database with the recorded schema of QFieldCloud ``version`` (one of SCHEMA_VERSIONS)."""
        name = "qfct_%s" % uuid.uuid4().hex[:10]
        pg.create_database(name, version)
        env_file = tmp_path / ("%s.env" % name)
        db = QfcDb(pg, name, version, env_file)
        env_file.write_text(db.env_text())
        made.append(db)
        return db

    yield factory
    for db in made:
        db.conn.close()
        admin = pg.connect()
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))
        admin.close()


# The version matrix: a test marked @all_versions gets ``qfcdb`` once per recorded QFieldCloud schema; any other
# test gets the newest. Core scenarios run on all versions, the rest on the newest only (time budget).
all_versions = pytest.mark.parametrize("qfcdb", SCHEMA_VERSIONS, indirect=True)


@pytest.fixture
def qfcdb(make_db, request):
    return make_db(getattr(request, "param", NEWEST))


FIXTURE_DB = ROOT / "tests" / "fixtures" / "stack-db"
WORKER_SIM = ROOT / "tests" / "fixtures" / "worker_sim"


def make_db_stack(tmp_path, db, replicas=2, job_s=1.0, start=True):
    """The DB-backed stack: worker_wrapper runs the simulator against ``db`` over loopback (host networking)."""
    settings = {"QFIELDCLOUD_WORKER_REPLICAS": replicas, "POSTGRES_PASSWORD": db.pg.password,
                "POSTGRES_PORT": db.pg.port, "POSTGRES_DB": db.name, "POSTGRES_USER": db.pg.user,
                "QFC_SIM_DIR": WORKER_SIM, "QFC_SIM_JOB_S": job_s, "QFC_SIM_POLL_S": "0.2",
                "POSTGRES_SSLMODE": "disable"}
    return instantiate(FIXTURE_DB, tmp_path / "qfieldcloud-db", "qfcw", settings, start=start)


@pytest.fixture
def db_stack(tmp_path, qfcdb):
    created = make_db_stack(tmp_path, qfcdb)
    yield created, qfcdb
    created.down()
