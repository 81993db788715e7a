"""The verification decision and Engine timestamp parsing, as pure functions."""

from __future__ import annotations

import socket
import time

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine
from ansible_collections.qfieldcloud.ops.plugins.module_utils._engine import (
    VerifyError, evaluate, parse_docker_time, summarize, wait_for_replicas)


def c(name, state="running", started=0.0, restarts=0):
    return {"name": name, "state": state, "started_at": started, "restart_count": restarts, "number": 1, "id": name}


def test_parse_docker_time():
    assert parse_docker_time("2026-11-29T18:16:17.5Z") == pytest.approx(1795976177.5)
    assert parse_docker_time("2026-11-29T18:16:17.003583243Z") == pytest.approx(1795976177.003583)
    assert parse_docker_time("0001-01-01T00:00:00Z") is None


def test_summarize_marks_restarting():
    data = {"Id": "abcdef0123456789", "Name": "/p-worker_wrapper-2", "RestartCount": 3,
            "State": {"Status": "running", "Restarting": True, "StartedAt": "2026-11-29T18:16:17Z"},
            "Config": {"Labels": {"com.docker.compose.container-number": "2"}}}
    s = summarize(data)
    assert (s["id"], s["name"], s["number"], s["state"], s["restart_count"]) == \
        ("abcdef012345", "p-worker_wrapper-2", 2, "restarting", 3)


def test_evaluate_ok_when_all_settled():
    ok, reason, _pause = evaluate([c("a"), c("b")], 2, 1.5, now=10.0)
    assert ok and reason == "2 running"


def test_evaluate_waits_for_young_containers():
    ok, reason, pause = evaluate([c("a"), c("b", started=9.5, restarts=3)], 2, 1.5, now=10.0)
    assert not ok and "1 of them up for less than 1.5s (b restarts: 3)" in reason and pause == pytest.approx(1.0)


def test_evaluate_reports_restarting_and_wrong_counts():
    ok, reason, _pause = evaluate([c("a"), c("b", state="restarting", restarts=4)], 2, 1.5, now=10.0)
    assert not ok and "b restarting (restarts: 4)" in reason
    ok, reason, _pause = evaluate([c("a")], 2, 1.5, now=10.0)
    assert not ok and reason == "1 running"
    ok, _reason, _pause = evaluate([], 0, 1.5, now=10.0)
    assert ok


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_wait_for_replicas_times_out_with_the_reason(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_engine, "snapshot", lambda *a: [c("w1", state="restarting", restarts=2)])
    with pytest.raises(VerifyError) as err:
        wait_for_replicas(None, "p", "worker_wrapper", 1, 5, 1.5, clock=clock, sleep=clock.sleep)
    assert "w1 restarting" in err.value.msg and clock.t >= 104.8


def test_engine_client_follows_the_cli_context(monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    dead = tmp_path / "dead.sock"
    calls = []

    class FakeAPIClient:  # the SDK negotiates the version with the engine in its constructor
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(_engine.docker, "APIClient", FakeAPIClient)
    _engine.engine_client({"name": "moved", "host": "unix://%s" % dead, "skip_tls_verify": False,
                            "tls_path": None}, timeout=7)
    assert calls == [{"base_url": "unix://%s" % dead, "version": "auto", "timeout": 7, "tls": False}]


def test_engine_client_prefers_docker_host(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    seen = []
    monkeypatch.setattr(_engine.docker, "from_env", lambda **kw: seen.append(kw) or type("C", (), {"api": "api"})())
    assert _engine.engine_client({"name": "other", "host": "unix:///x"}, timeout=5) == "api"
    assert seen == [{"version": "auto", "timeout": 5}]


def test_context_tls(tmp_path):
    for name in ("ca", "cert", "key"):
        (tmp_path / (name + ".pem")).write_text("x")
    tls = _engine.context_tls({"tls_path": str(tmp_path), "skip_tls_verify": False})
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert tls.ca_cert == str(tmp_path / "ca.pem") and tls.verify is True
    assert _engine.context_tls({"tls_path": None, "skip_tls_verify": True}).verify is False


def test_an_unreachable_engine_fails_within_the_timeout(tmp_path):
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)  # accepts (the kernel does) and never answers
    started = time.monotonic()
    with pytest.raises(_engine.DockerException):
        _engine.engine_client({"name": "hung", "host": "unix://%s" % path}, timeout=1)
    assert time.monotonic() - started < 5
    server.close()
