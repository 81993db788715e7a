"""The verification decision and Engine timestamp parsing, as pure functions."""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine
from ansible_collections.qfieldcloud.ops.plugins.module_utils._engine import (
    VerifyError, evaluate, parse_docker_time, summarize, wait_for_replicas)


@pytest.fixture
def sdk():
    """The Docker SDK, imported on demand by the code under test; loaded first so ``_engine.docker`` and
    ``_engine.DockerException`` are the SDK's own."""
    assert _engine.load_sdk()
    return _engine


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


def test_engine_client_follows_the_cli_context(sdk, monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    dead = tmp_path / "dead.sock"
    calls = []

    class FakeAPIClient:  # the SDK negotiates the version with the engine in its constructor
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(_engine.docker, "APIClient", FakeAPIClient)
    context = {"name": "moved", "host": "unix://%s" % dead, "skip_tls_verify": False, "tls_path": None}
    _engine.engine_client(context, timeout=7)
    assert calls == [{"base_url": "unix://%s" % dead, "version": "auto", "timeout": 7, "tls": False}]


def test_engine_client_prefers_docker_host(sdk, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    seen = []
    monkeypatch.setattr(_engine.docker, "from_env", lambda **kw: seen.append(kw) or type("C", (), {"api": "api"})())
    assert _engine.engine_client({"name": "other", "host": "unix:///x"}, timeout=5) == "api"
    assert seen == [{"version": "auto", "timeout": 5}]


def test_context_tls(sdk, tmp_path):
    for name in ("ca", "cert", "key"):
        (tmp_path / (name + ".pem")).write_text("x")
    tls = _engine.context_tls({"tls_path": str(tmp_path), "skip_tls_verify": False})
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert tls.ca_cert == str(tmp_path / "ca.pem") and tls.verify is True
    assert _engine.context_tls({"tls_path": None, "skip_tls_verify": True}).verify is False


def test_an_unreachable_engine_fails_within_the_timeout(sdk, tmp_path):
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)  # accepts (the kernel does) and never answers
    started = time.monotonic()
    with pytest.raises(_engine.DockerException):
        _engine.engine_client({"name": "hung", "host": "unix://%s" % path}, timeout=1)
    assert time.monotonic() - started < 5
    server.close()


# -- the standard-library client, against a real unix socket served by a tiny HTTP server ---------------------------
class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """``GET /containers/json`` over a unix socket, filtering ``containers`` by ``label`` and ``status`` as the
    engine does. ``status_code``/``body`` override the answer; every request's filters are kept in ``seen``."""

    daemon_threads = True

    def __init__(self, path, containers):
        self.containers = containers
        self.seen = []
        self.status_code = 200
        self.body = None
        super().__init__(str(path), EngineHandler)


class EngineHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (http.server's naming)
        url = urlsplit(self.path)
        filters = json.loads(parse_qs(url.query).get("filters", ["{}"])[0])
        self.server.seen.append((url.path, filters))
        found = [c for c in self.server.containers if matches(c, filters)]
        body = self.server.body if self.server.body is not None else json.dumps(found).encode()
        self.send_response(self.server.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


def matches(container, filters):
    labels = container.get("Labels") or {}
    for wanted in filters.get("label", []):
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return not filters.get("status") or container["State"] in filters["status"]


def worker(project, number, state="running", oneoff="False", service="worker_wrapper"):
    return {"Id": "%s%d" % (project, number), "State": state,
            "Labels": {"com.docker.compose.project": project, "com.docker.compose.service": service,
                       "com.docker.compose.oneoff": oneoff, "com.docker.compose.container-number": str(number)}}


@pytest.fixture
def fake_engine(tmp_path):
    servers = []

    def start(containers):
        server = FakeEngine(tmp_path / "docker.sock", containers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_list_containers_stdlib_sends_the_filters_as_json(fake_engine, tmp_path):
    engine = fake_engine([worker("qfc", 1), worker("other", 1)])
    filters = {"label": ["com.docker.compose.project=qfc"], "status": ["running"]}
    found = _engine.list_containers_stdlib(filters, 2, socket_path=str(tmp_path / "docker.sock"))
    assert [c["Id"] for c in found] == ["qfc1"]
    assert engine.seen == [("/containers/json", filters)]


def test_count_running_stdlib_counts_the_services_own_running_containers(fake_engine, tmp_path):
    engine = fake_engine([worker("qfc", 1), worker("qfc", 2), worker("qfc", 3, state="exited"),
                          worker("qfc", 4, oneoff="True"), worker("qfc", 1, service="app"), worker("qfc2", 1)])
    sock = str(tmp_path / "docker.sock")
    assert _engine.count_running_stdlib("qfc", "worker_wrapper", socket_path=sock) == 2
    assert engine.seen[-1][1] == dict(_engine.label_filters("qfc", "worker_wrapper"), status=["running"])
    assert _engine.count_running_stdlib("nothing", "worker_wrapper", socket_path=sock) == 0


def test_running_job_ids_stdlib(fake_engine, tmp_path):
    job = {"State": "running", "Labels": {"job_id": "7d1c"}}
    done = {"State": "exited", "Labels": {"job_id": "0aa0"}}
    engine = fake_engine([job, done, worker("qfc", 1)])
    assert _engine.running_job_ids_stdlib(socket_path=str(tmp_path / "docker.sock")) == {"7d1c"}
    assert engine.seen[-1][1] == {"label": ["job_id"], "status": ["running"]}


def test_stdlib_client_says_none_when_the_engine_cannot_answer(fake_engine, tmp_path):
    sock = str(tmp_path / "docker.sock")
    assert _engine.count_running_stdlib("qfc", "w", socket_path=str(tmp_path / "absent.sock")) is None
    engine = fake_engine([worker("qfc", 1)])
    assert _engine.list_containers_stdlib({}, 0, socket_path=sock) is None  # no time left: not even asked
    assert engine.seen == []
    engine.status_code, engine.body = 500, b'{"message": "boom"}'
    assert _engine.count_running_stdlib("qfc", "worker_wrapper", socket_path=sock) is None
    engine.status_code, engine.body = 200, b"not json"
    assert _engine.running_job_ids_stdlib(socket_path=sock) is None


def test_stdlib_client_gives_up_on_a_hung_engine_within_its_timeout(tmp_path):
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)  # accepts (the kernel does) and never answers
    try:
        started = time.monotonic()
        assert _engine.count_running_stdlib("qfc", "worker_wrapper", timeout=0.5, socket_path=str(path)) is None
        assert 0.4 < time.monotonic() - started < 3
    finally:
        server.close()


@pytest.mark.parametrize("environ, env, configured, expected", [
    ({"COMPOSE_PROJECT_NAME": "fromenv"}, {"COMPOSE_PROJECT_NAME": "fromdotenv"}, "named", "fromenv"),
    ({}, {"COMPOSE_PROJECT_NAME": "fromdotenv"}, "named", "fromdotenv"),
    ({}, {}, "named", "named"),
    ({}, {}, None, "rel-qfct"),
    ({"COMPOSE_PROJECT_NAME": ""}, {"COMPOSE_PROJECT_NAME": ""}, "", "rel-qfct"),
])
def test_project_name_follows_composes_precedence(environ, env, configured, expected):
    assert _engine.project_name(env, "/srv/_Rel-Qfc.Été/", configured, environ=environ) == expected


def test_importing_engine_does_not_import_the_sdk():
    # the collector and the queue modules only use the stdlib client; the SDK costs ~0.4 s to import
    code = ("import sys; from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine; "
            "assert 'docker' not in sys.modules and _engine.sdk_installed() and 'docker' not in sys.modules; "
            "assert _engine.load_sdk() and _engine.DockerException.__module__ == 'docker.errors'")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
