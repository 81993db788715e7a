"""module_utils/_cleanup.py without a database: the Engine question and the plan's SQL homes."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _cleanup, _engine, _jobs
from tests.support.argspecs import argument_spec


def test_running_job_ids_asks_the_engine_through_engine_py():
    calls = []

    def lookup(timeout, socket_path):
        calls.append((timeout, socket_path))
        return {"job-1", "job-2"}

    warnings = []
    assert _cleanup.running_job_ids(warnings.append, lookup=lookup) == {"job-1", "job-2"}
    assert calls == [(_cleanup.ENGINE_TIMEOUT_S, _engine.DOCKER_SOCKET)] and warnings == []


def test_an_engine_that_cannot_be_asked_gives_a_warning_and_skips_no_job(tmp_path):
    warnings = []
    missing = str(tmp_path / "docker.sock")
    assert _cleanup.running_job_ids(warnings.append, socket_path=missing) == set()
    assert warnings == ["Docker Engine not reachable at unix://%s within 5.0s: queued jobs are not checked for "
                        "running containers." % missing]


def test_a_hung_engine_ends_at_the_deadline_with_the_warning(tmp_path, monkeypatch):
    path = str(tmp_path / "hung.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)  # accepts (the kernel's backlog) and never answers
    monkeypatch.setattr(_cleanup, "ENGINE_TIMEOUT_S", 0.3)
    warnings = []
    timer = threading.Timer(10, server.close)
    timer.start()
    try:
        assert _cleanup.running_job_ids(warnings.append, socket_path=path) == set()
    finally:
        timer.cancel()
        server.close()
    assert len(warnings) == 1 and "not reachable" in warnings[0]


def test_busy_statuses_decide_the_stale_rule_and_the_age_default():
    assert _jobs.BUSY_STATUSES == ("queued", "started")
    assert _jobs.STUCK_SQL["stale"].startswith("status IN ('queued', 'started') AND started_at < now()")
    assert argument_spec("qfc_job_cleanup")["statuses"]["default"] == list(_jobs.BUSY_STATUSES)


@pytest.mark.parametrize("mode, where", [("age", _jobs.AGE_SQL)])
def test_the_plan_takes_its_sql_from_jobs_py(mode, where):
    params = {"mode": mode, "worker_timeout_s": None, "batch_size": 500, "lock_timeout": 1000,
              "statement_timeout": 5000, "max_jobs_listed": 100, "older_than": "24h",
              "statuses": ["queued", "started"], "allow_pending": False}
    plan = _cleanup.Plan(params, {})
    assert plan.where is where and plan.params == {"statuses": ["queued", "started"], "older_than_s": 86400}


def test_the_module_holds_no_sql():
    text = (Path(_cleanup.__file__).resolve().parents[2] / "plugins" / "modules" / "qfc_job_cleanup.py").read_text()
    code = text[text.rindex('\n"""\n'):]  # after DOCUMENTATION, EXAMPLES and RETURN
    assert not re.search(r"\b(SELECT|UPDATE|INSERT|DELETE|SET \w+ =)\b", code)
