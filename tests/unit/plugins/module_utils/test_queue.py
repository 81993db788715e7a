"""Pure parts of the queue modules: durations, statuses, connection resolution, the shaping of the facts (alerts,
decision and recommendation: test_policy.py)."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _jobs, _postgres, _queue

from tests.support.queue_answer import raw


@pytest.mark.parametrize("text, seconds", [
    ("24h", 86400), ("2d", 172800), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("600", 600), (600, 600),
    ("1d 2h", 93600), ("2D", 172800),
])
def test_parse_duration(text, seconds):
    assert _jobs.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "abc", "-5", "1w", "h", "0", 0, -3, "24 hours", True])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        _jobs.parse_duration(bad)


def test_durations_and_worker_timeout_have_a_ceiling():
    assert _jobs.parse_duration("36500d") == 36500 * 86400
    with pytest.raises(ValueError, match="at most 36500d"):
        _jobs.parse_duration("36501d")
    with pytest.raises(ValueError, match="at most 36500d"):
        _jobs.parse_duration(10 ** 15)
    assert _jobs.check_worker_timeout(600) == 600
    for bad in (0, -1, 10 ** 12, True):
        with pytest.raises(ValueError, match="worker_timeout_s must be positive and at most"):
            _jobs.check_worker_timeout(bad)


def test_format_duration():
    assert [_jobs.format_duration(s) for s in (86400, 7200, 600, 610)] == ["1d", "2h", "10m", "610s"]


def test_check_statuses():
    _jobs.check_statuses(["pending", "queued"])
    with pytest.raises(ValueError, match="unknown job status 'running'"):
        _jobs.check_statuses(["queued", "running"])


def test_worker_timeout_from_env_on_v26_24_and_later():
    resolve = _jobs.resolve_worker_timeout
    assert resolve(None, {}, "env") == (600, "default")
    assert resolve(None, {"QFIELDCLOUD_WORKER_TIMEOUT_S": "900"}, "env") == (900, "env")
    assert resolve(None, {"QFIELDCLOUD_WORKER_TIMEOUT_S": "x"}, "env") == (600, "default")
    assert resolve(None, {"QFIELDCLOUD_WORKER_TIMEOUT_S": "900"}, "env", 1800) == (900, "env")  # a stale row
    assert resolve(30, {"QFIELDCLOUD_WORKER_TIMEOUT_S": "900"}, "env") == (30, "option")


@pytest.mark.parametrize("host, service", [
    ("db", True), ("postgres", True), ("127.0.0.1", False), ("::1", False), ("localhost", False),
    ("db.example.org", False), ("/var/run/postgresql", False), (None, False),
])
def test_is_compose_service_name(host, service):
    assert _postgres.is_compose_service_name(host, resolves=lambda name: False) is service


def test_a_resolvable_dotless_host_is_an_external_server():
    assert _postgres.is_compose_service_name("pgprod", resolves=lambda name: True) is False


def test_explicit_login_host_keeps_the_env_port():
    params = _postgres.connection_params({"login_host": "10.0.0.5", "connect_timeout": 3}, ENV)
    assert (params["host"], params["port"]) == ("10.0.0.5", 5432)


ENV = {"POSTGRES_USER": "qfieldcloud_db_admin", "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "qfieldcloud_db",
       "POSTGRES_HOST": "db", "POSTGRES_PORT": "5432", "HOST_POSTGRES_PORT": "5433", "POSTGRES_SSLMODE": "disable"}


def test_connection_params_from_env_use_the_published_port():
    params = _postgres.connection_params({"connect_timeout": 10}, ENV)
    assert (params["host"], params["port"], params["user"], params["dbname"], params["sslmode"]) == \
        ("127.0.0.1", 5433, "qfieldcloud_db_admin", "qfieldcloud_db", "disable")


def test_connection_params_explicit_options_win():
    params = _postgres.connection_params({"login_host": "10.0.0.5", "login_port": 6432, "login_user": "ro",
                                          "login_password": "x", "login_db": "other", "connect_timeout": 3}, ENV)
    assert (params["host"], params["port"], params["user"], params["password"], params["dbname"]) == \
        ("10.0.0.5", 6432, "ro", "x", "other")
    assert "pw" not in _postgres.describe(params)


def test_shape():
    facts = _queue.shape(raw(), 86400)
    assert facts["by_status"]["stopped"] == 0 and facts["queue_depth"] == 4
    assert facts["last_hour"] == {"finished": 19, "failed": 1, "success_rate": 0.95}
    assert facts["duration"]["avg_s"] == 10.0 and facts["stuck"] == {"stale": 0, "orphaned_queued": 0,
                                                                     "old_pending": 0}
    assert _queue.shape(raw(last_hour_finished=0, last_hour_failed=0), 60)["last_hour"]["success_rate"] is None
