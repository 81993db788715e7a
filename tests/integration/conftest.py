"""Harness for integration tests: real Docker Engine, real Compose v2, real PostgreSQL, real Ansible runs.

Module-level tests use pytest-ansible's ``ansible_module`` fixture (one module on localhost, in-process, inventory
tests/support/localhost.yml unless ``--ansible-inventory`` says otherwise)::

    def test_something(ansible_module, qfcdb):
        run = getattr(ansible_module, "qfieldcloud.ops.qfc_job_cleanup")(env_file=str(qfcdb.env_file))
        result = run["localhost"]                    # pytest-ansible's ModuleResult
        assert result.is_successful and result["count"] == 0

``run_module`` (tests/support/ansible_run.py, which says why) stays for check mode, diff, ``-vvv`` output, another
interpreter, a deadline and background runs. Each stack test gets its own copy of the QFieldCloud-shaped compose
project (tests/fixtures/stack) with a unique COMPOSE_PROJECT_NAME, started and torn down around the test
(tests/support/stacks.py); each database test its own database with a recorded schema in one session-wide server.

Other test files import helpers from here (``from conftest import ...``); they live in tests/support/ and are
re-exported below under their old names.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support

import ansible.constants  # noqa: E402
import psycopg2.errors  # noqa: E402
import pytest  # noqa: E402
from psycopg2 import sql  # noqa: E402

from tests.support.ansible_run import (  # noqa: E402  (re-exported: __all__)
    BIN,
    SECRETS,
    Result,
    ansible_env,
    assert_no_secrets,
    custom_stats,
    run_module,
    run_playbook,
    with_test_oplog,
)
from tests.support.collection import export_collections_path  # noqa: E402
from tests.support.pgcluster import NEWEST, SCHEMA_VERSIONS, PgCluster  # noqa: E402
from tests.support.stacks import (  # noqa: E402  (re-exported: __all__)
    FIXTURE,
    FIXTURE_DB,
    WORKER_SIM,
    QfcDb,
    Stack,
    instantiate,
    make_db_stack,
    make_stack,
)

# What other test files import from here (``from conftest import ...``), most of it re-exported from tests/support.
__all__ = [
    "BIN", "FIXTURE", "FIXTURE_DB", "ROOT", "SECRETS", "WORKER_SIM", "QfcDb", "Result", "Stack", "all_versions",
    "ansible_env", "assert_no_secrets", "custom_stats", "instantiate", "make_db_stack", "make_stack", "run_module",
    "run_playbook", "with_test_oplog",
]

export_collections_path()  # read by pytest-ansible when it configures (tests/support/collection.py)
INVENTORY = ROOT / "tests" / "support" / "localhost.yml"


def pytest_configure(config):
    """pytest-ansible runs its fixtures on ``--ansible-inventory``, by default tests/support/localhost.yml."""
    if getattr(config.option, "ansible_inventory", None) in (None, ansible.constants.DEFAULT_HOST_LIST):
        config.option.ansible_inventory = str(INVENTORY)


@pytest.fixture
def run_qfc_module(ansible_module):
    """``run_qfc_module(args, module=FQCN, check=, diff=, verbose=, python=, timeout=)``, run_module's signature: the
    module on localhost in-process through pytest-ansible's ``ansible_module``; through :func:`run_module` (an ad-hoc
    subprocess) only when check, diff, verbose, python or timeout is asked for, which ``ansible_module`` cannot give
    (tests/support/ansible_run.py says why). Either result answers ``["key"]``, ``.get``, ``.is_failed``,
    ``.is_successful`` and ``.is_changed``."""

    def run(module_args, module="qfieldcloud.ops.qfc_scale", check=False, diff=False, verbose=False, python=None,
            timeout=None):
        if check or diff or verbose or python or timeout:
            return run_module(module_args, check=check, diff=diff, verbose=verbose, python=python,
                              timeout=timeout or 600, module=module)
        return getattr(ansible_module, module)(**with_test_oplog(module_args, module))["localhost"]

    return run


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


@pytest.fixture(scope="session")
def pg():
    """One throwaway PostgreSQL server for the session; each test gets its own database in it."""
    with PgCluster() as cluster:
        cluster.schema_template(NEWEST)  # tests/support/fleet.py copies it by name
        yield cluster


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
        drop_database(pg, db.name)


def drop_database(pg, name, attempts=40):
    """DROP DATABASE ... WITH (FORCE). FORCE cannot end an autovacuum worker (a superuser's backend) that the
    application role may not signal; such a worker is done in moments, so wait for it."""
    admin = pg.connect()
    admin.autocommit = True
    try:
        for attempt in range(attempts):
            try:
                with admin.cursor() as cur:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                return
            except psycopg2.errors.InsufficientPrivilege:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.25)
    finally:
        admin.close()


# The version matrix: a test marked @all_versions gets ``qfcdb`` once per recorded QFieldCloud schema; any other
# test gets the newest. Core scenarios run on all versions, the rest on the newest only (time budget).
all_versions = pytest.mark.parametrize("qfcdb", SCHEMA_VERSIONS, indirect=True)


@pytest.fixture
def qfcdb(make_db, request):
    return make_db(getattr(request, "param", NEWEST))


@pytest.fixture
def db_stack(tmp_path, qfcdb):
    created = make_db_stack(tmp_path, qfcdb)
    yield created, qfcdb
    created.down()
