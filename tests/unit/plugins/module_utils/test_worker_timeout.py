"""Where each QFieldCloud release reads the worker timeout: release detection from schema facts, django-constance's
value encodings (decoded without unpickling), and the precedence option > the release's own source > 600."""

from __future__ import annotations

import base64
import json
import pickle

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _jobs


def constance_json(value):
    """What django-constance 4.3.x's DatabaseBackend.set() stores: codecs.dumps(value), json.dumps of
    {"__type__": "default", "__value__": value} for the default types (QFieldCloud v25.26 pins 4.3.2, v26.20 to
    v26.25 pin 4.3.5)."""
    return json.dumps({"__type__": "default", "__value__": value})


# (core_job, project_project, core_project, database, project_qgisproject.area_of_interest, constance_constance)
@pytest.mark.parametrize("row, table, release, home", [
    ((True, False, True, "db", False, True), "core_project", "<= v26.20", "constance"),          # v25.26, v26.20
    ((True, True, False, "db", False, True), "project_project", "v26.21 to v26.24", "constance"),  # v26.23 (v26.24)
    ((True, True, False, "db", True, True), "project_project", ">= v26.25", "env"),               # v26.25
])
def test_release_from_schema_facts(row, table, release, home):
    schema = _jobs.schema_facts(row)
    assert (schema["project_table"], schema["release"], schema["has_constance"]) == (table, release, True)
    assert _jobs.timeout_home(schema["release"]) == home


def test_v26_24_is_told_apart_by_its_compose_file_only():
    upstream_v26_24 = ("services:\n  app:\n    environment:\n"
                       "      QFIELDCLOUD_WORKER_TIMEOUT_S: ${QFIELDCLOUD_WORKER_TIMEOUT_S}\n")
    upstream_v26_23 = "services:\n  app:\n    environment:\n      QFIELDCLOUD_WORKER_REPLICAS: 1\n"
    assert _jobs.compose_passes_timeout(upstream_v26_24) is True
    assert _jobs.compose_passes_timeout("    environment:\n      - QFIELDCLOUD_WORKER_TIMEOUT_S=900\n") is True
    assert _jobs.compose_passes_timeout(upstream_v26_23) is False
    assert _jobs.compose_passes_timeout("#      QFIELDCLOUD_WORKER_TIMEOUT_S: 1\n") is False
    assert _jobs.compose_passes_timeout(None) is None
    assert _jobs.timeout_home("v26.21 to v26.24", True) == "env"
    assert _jobs.timeout_home("v26.21 to v26.24", False) == "constance"
    assert _jobs.timeout_home("<= v26.20", True) == "constance"  # no release before v26.24 reads the env var
    assert _jobs.timeout_home(">= v26.25", False) == "env"


def test_no_qfieldcloud_tables_is_refused():
    with pytest.raises(_jobs.SchemaError, match="has no QFieldCloud job tables"):
        _jobs.schema_facts((False, False, False, "postgres", False, False))


@pytest.mark.parametrize("value", [600, 1, 1800, 86400])
def test_constance_json_as_django_constance_4_writes_it(value):
    assert _jobs.decode_constance_int(constance_json(value)) == value


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("value", [1, 255, 600, 65535, 86400, 2 ** 31 - 1])
def test_pre_4_pickled_int_is_parsed_by_hand(protocol, value):
    # django-constance < 4.0 (picklefield): base64 of a pickle. Parsed by hand; pickle.loads is never called.
    raw = base64.b64encode(pickle.dumps(value, protocol=protocol)).decode()
    assert _jobs.decode_constance_int(raw) == value


def test_no_value_means_the_default():
    assert _jobs.decode_constance_int(None) is None
    assert _jobs.decode_constance_int(constance_json(None)) is None


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("raw, reason", [
    (constance_json("600"), "not an integer"),
    (constance_json(True), "not an integer"),
    (constance_json(1.5), "not an integer"),
    (json.dumps({"__type__": "decimal", "__value__": "600"}), "holds a decimal"),
    (json.dumps(600), "not django-constance's JSON encoding"),
    (json.dumps({"value": 600}), "not django-constance's JSON encoding"),
    (base64.b64encode(pickle.dumps(Evil())).decode(), "neither django-constance's JSON encoding nor a pickled int"),
    (base64.b64encode(pickle.dumps("600")).decode(), "neither"),
    (base64.b64encode(pickle.dumps(True, protocol=0)).decode(), "neither"),
    (base64.b64encode(pickle.dumps(600) + b"extra").decode(), "neither"),
    ("not base64 at all!", "neither"),
])
def test_anything_else_is_refused_without_unpickling(raw, reason, capsys):
    with pytest.raises(ValueError, match=reason):
        _jobs.decode_constance_int(raw)
    assert "pwned" not in capsys.readouterr().out


class Cursor:
    def __init__(self, row):
        self.row = row
        self.executed = []

    def execute(self, query, params=None):
        self.executed.append((query, params))

    def fetchone(self):
        return self.row


def test_constance_row_that_is_not_a_timeout_is_a_clear_error():
    with pytest.raises(_jobs.SchemaError, match="WORKER_TIMEOUT_S cannot be used as the worker .*worker_timeout_s"):
        _jobs.read_constance_timeout(Cursor((constance_json(0),)))
    assert _jobs.read_constance_timeout(Cursor(None)) is None
    cursor = Cursor((constance_json(1800),))
    assert _jobs.read_constance_timeout(cursor) == 1800
    assert cursor.executed == [(_jobs.CONSTANCE_SQL, ["WORKER_TIMEOUT_S"])]


V26_23 = {"project_table": "project_project", "release": "v26.21 to v26.24", "has_constance": True}
V26_25 = {"project_table": "project_project", "release": ">= v26.25", "has_constance": True}
ENV = {"QFIELDCLOUD_WORKER_TIMEOUT_S": "900"}


def test_precedence_per_release():
    row = Cursor((constance_json(1800),))
    assert _jobs.worker_timeout_from_db(row, V26_23, None, ENV) == (1800, "constance", "constance")
    assert _jobs.worker_timeout_from_db(Cursor(None), V26_23, None, ENV) == (600, "default", "constance")
    assert _jobs.worker_timeout_from_db(row, V26_23, 42, ENV) == (42, "option", "constance")
    # v26.25: the row is stale (nothing reads it) and not even queried
    cursor = Cursor((constance_json(1800),))
    assert _jobs.worker_timeout_from_db(cursor, V26_25, None, ENV) == (900, "env", "env")
    assert _jobs.worker_timeout_from_db(cursor, V26_25, None, {}) == (600, "default", "env")
    assert cursor.executed == []
    # v26.24: v26.23's schema, its compose file passes the env var
    compose = "      QFIELDCLOUD_WORKER_TIMEOUT_S: ${QFIELDCLOUD_WORKER_TIMEOUT_S}\n"
    assert _jobs.worker_timeout_from_db(row, V26_23, None, ENV, compose) == (900, "env", "env")
