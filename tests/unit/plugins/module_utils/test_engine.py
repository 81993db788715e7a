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


def test_engine_client_follows_the_cli_context(sdk, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    calls = []

    class FakeAPIClient:  # the SDK negotiates the version with the engine in its constructor
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(_engine.docker, "APIClient", FakeAPIClient)
    context = {"name": "moved", "host": "tcp://127.0.0.1:2375", "skip_tls_verify": False, "tls_path": None}
    _engine.engine_client(context, timeout=7)
    assert calls == [{"base_url": "tcp://127.0.0.1:2375", "version": "auto", "timeout": 7, "tls": False}]


def test_engine_client_prefers_docker_host(sdk, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    seen = []
    monkeypatch.setattr(_engine.docker, "from_env", lambda **kw: seen.append(kw) or type("C", (), {"api": "api"})())
    assert _engine.engine_client({"name": "other", "host": "unix:///x"}, timeout=5) == "api"
    assert seen == [{"version": "auto", "timeout": 5}]


def test_engine_client_uses_the_stdlib_for_a_local_socket(sdk, monkeypatch, tmp_path):
    # a unix socket needs no SDK: no import, no version negotiation (nothing is asked until the first request)
    monkeypatch.setattr(_engine.docker, "APIClient", lambda **kw: pytest.fail("SDK used for a unix socket"))
    monkeypatch.setattr(_engine.docker, "from_env", lambda **kw: pytest.fail("SDK used for a unix socket"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    client = _engine.engine_client({"name": "rootless", "host": "unix://%s/docker.sock" % tmp_path}, timeout=7)
    assert isinstance(client, _engine.StdlibClient)
    assert (client.path, client.timeout, client.conn) == ("%s/docker.sock" % tmp_path, 7, None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")  # DOCKER_HOST wins over the context
    client = _engine.engine_client({"name": "rootless", "host": "tcp://127.0.0.1:2375"}, timeout=3)
    assert isinstance(client, _engine.StdlibClient) and client.path == "/run/user/1000/docker.sock"


@pytest.mark.parametrize("environ, context, expected", [
    ({}, {"host": "unix:///var/run/docker.sock"}, "/var/run/docker.sock"),
    ({}, {"host": "tcp://127.0.0.1:2375"}, None),
    ({}, {"host": "ssh://user@host"}, None),
    ({}, {"host": "npipe:////./pipe/docker_engine"}, None),
    ({}, {"host": "unix://"}, None),
    ({}, None, None),  # neither: the SDK's from_env decides
    ({"DOCKER_HOST": "unix:///srv/d.sock"}, {"host": "tcp://127.0.0.1:2375"}, "/srv/d.sock"),
    ({"DOCKER_HOST": "tcp://127.0.0.1:2376"}, {"host": "unix:///var/run/docker.sock"}, None),
    ({"DOCKER_HOST": "unix:///srv/d.sock", "DOCKER_TLS_VERIFY": "1"}, None, None),  # TLS asked for: the SDK's
    ({"DOCKER_HOST": "unix:///srv/d.sock", "DOCKER_CERT_PATH": "/certs"}, None, None),
    ({"DOCKER_HOST": ""}, {"host": "unix:///run/d.sock"}, "/run/d.sock"),
])
def test_unix_socket_path(environ, context, expected):
    assert _engine.unix_socket_path(context, environ=environ) == expected


def test_context_tls(sdk, tmp_path):
    for name in ("ca", "cert", "key"):
        (tmp_path / (name + ".pem")).write_text("x")
    tls = _engine.context_tls({"tls_path": str(tmp_path), "skip_tls_verify": False})
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert tls.ca_cert == str(tmp_path / "ca.pem") and tls.verify is True
    assert _engine.context_tls({"tls_path": None, "skip_tls_verify": True}).verify is False


@pytest.fixture
def hung_tcp():
    """A loopback TCP port whose connections the kernel accepts and nobody ever answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield "tcp://127.0.0.1:%d" % server.getsockname()[1]
    server.close()


def test_an_unreachable_engine_fails_within_the_timeout(sdk, hung_tcp):
    started = time.monotonic()
    with pytest.raises(_engine.DockerException):
        _engine.engine_client({"name": "hung", "host": hung_tcp}, timeout=1)
    assert time.monotonic() - started < 5


def test_a_hung_local_engine_fails_the_ping_within_the_timeout(tmp_path):
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)  # accepts (the kernel does) and never answers
    try:
        client = _engine.engine_client({"name": "hung", "host": "unix://%s" % path}, timeout=1)
        started = time.monotonic()
        with pytest.raises(OSError) as err:
            _engine.ping(client)
        assert 0.9 < time.monotonic() - started < 5
        assert str(err.value) == "GET /_ping on unix://%s: no answer within 1s" % path
    finally:
        server.close()


def test_a_dead_local_engine_fails_the_ping_at_once(tmp_path):
    dead = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(dead))  # bound, never listening: connections are refused
    try:
        for path in (dead, tmp_path / "absent.sock"):
            started = time.monotonic()
            with pytest.raises(_engine.EngineError) as err:
                _engine.ping(_engine.StdlibClient(str(path), timeout=5))
            assert time.monotonic() - started < 1
            assert str(err.value).startswith("GET /_ping on unix://%s: [Errno" % path)
    finally:
        sock.close()


# -- the standard-library client, against a real unix socket served by a tiny HTTP server ---------------------------
class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The Engine API over a unix socket: ``/_ping``; ``GET /containers/json``, filtering ``containers`` by ``label``
    and ``status`` as the engine does (running ones only without ``all=1``); ``GET /containers/ID/json``, a
    container's ``inspect`` (404 for an unknown id). ``status_code``/``body`` override the answer; every request's
    path and filters are kept in ``seen``. HTTP/1.1 keep-alive; ``drop_idle`` closes each connection after one
    answer without saying so (as an engine closing an idle connection); ``connections`` counts those accepted."""

    daemon_threads = True

    def __init__(self, path, containers):
        self.containers = containers
        self.seen = []
        self.status_code = 200
        self.body = None
        self.drop_idle = False
        self.connections = 0
        super().__init__(str(path), EngineHandler)


class EngineHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.server.connections += 1

    def do_GET(self):  # noqa: N802  (http.server's naming)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        filters = json.loads(query.get("filters", ["{}"])[0])
        self.server.seen.append((url.path, filters))
        status = self.server.status_code
        if url.path == "/_ping":
            body = b"OK"
        elif url.path == "/containers/json":
            found = [c for c in self.server.containers if matches(c, filters)
                     and (query.get("all") == ["1"] or c["State"] == "running")]
            body = json.dumps([{k: v for k, v in c.items() if k != "Inspect"} for c in found]).encode()
        else:
            found = [c for c in self.server.containers if "/containers/%s/json" % c["Id"] == url.path]
            body = json.dumps(found[0]["Inspect"]).encode() if found else b'{"message": "No such container"}'
            status = status if found else 404
        body = self.server.body if self.server.body is not None else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.server.drop_idle

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


def worker(project, number, state="running", oneoff="False", service="worker_wrapper", started=None, restarts=0):
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service,
              "com.docker.compose.oneoff": oneoff, "com.docker.compose.container-number": str(number)}
    cid = "%s%d" % (project, number)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + ".5Z" if started else "0001-01-01T00:00:00Z"
    return {"Id": cid, "State": state, "Labels": labels,
            "Inspect": {"Id": cid + "0" * 52, "Name": "/%s-%s-%d" % (project, service, number),
                        "RestartCount": restarts,
                        "State": {"Status": state, "Restarting": state == "restarting", "StartedAt": started_at},
                        "Config": {"Labels": labels}}}


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


def test_stdlib_client_lists_inspects_and_pings_over_one_connection(fake_engine, tmp_path):
    engine = fake_engine([worker("qfc", 1, started=1000), worker("qfc", 2, state="exited"), worker("other", 1)])
    client = _engine.StdlibClient(str(tmp_path / "docker.sock"), timeout=2)
    assert client.ping() is True
    filters = _engine.label_filters("qfc", "worker_wrapper")
    assert [c["Id"] for c in client.containers(all=True, filters=filters)] == ["qfc1", "qfc2"]
    assert [c["Id"] for c in client.containers(filters=filters)] == ["qfc1"]  # running only, as the engine
    assert client.inspect_container("qfc1")["State"]["StartedAt"] == "1970-01-01T00:16:40.5Z"
    with pytest.raises(_engine.ContainerGone):
        client.inspect_container("gone")
    assert [path for path, _f in engine.seen] == ["/_ping", "/containers/json", "/containers/json",
                                                  "/containers/qfc1/json", "/containers/gone/json"]
    assert engine.seen[1][1] == filters
    assert engine.connections == 1  # keep-alive: one connection for all six requests
    client.close()


def test_stdlib_client_reconnects_once_when_the_engine_closed_an_idle_connection(fake_engine, tmp_path):
    engine = fake_engine([worker("qfc", 1, started=1000)])
    engine.drop_idle = True
    client = _engine.StdlibClient(str(tmp_path / "docker.sock"), timeout=2)
    assert client.ping() and client.ping() and client.inspect_container("qfc1")["Id"].startswith("qfc1")
    assert engine.connections == 3


def test_stdlib_client_errors_say_what_was_asked_where(fake_engine, tmp_path):
    sock = str(tmp_path / "docker.sock")
    engine = fake_engine([worker("qfc", 1)])
    client = _engine.StdlibClient(sock, timeout=2)
    engine.status_code, engine.body = 500, b'{"message": "boom"}'
    assert client.ping() is False  # ping() answers, _engine.ping raises
    with pytest.raises(_engine.DockerException, match="did not answer OK"):
        _engine.ping(client)
    with pytest.raises(_engine.EngineError) as err:
        client.containers(all=True)
    assert str(err.value) == 'GET /containers/json on unix://%s: HTTP 500 {"message": "boom"}' % sock
    engine.status_code, engine.body = 200, b"not json"
    with pytest.raises(OSError, match="not JSON"):  # an OSError: qfc_scale treats it as the engine failing
        client.inspect_container("qfc1")


def test_snapshot_and_wait_through_the_stdlib_client(fake_engine, tmp_path):
    now = time.time()
    engine = fake_engine([worker("qfc", 2, started=now - 60), worker("qfc", 1, started=now - 60, restarts=1),
                          worker("qfc", 3, state="exited", restarts=4), worker("qfc", 5, oneoff="True"),
                          worker("qfc", 1, service="app")])
    client = _engine.engine_client({"name": "default", "host": "unix://%s" % (tmp_path / "docker.sock")}, timeout=2)
    containers = _engine.snapshot(client, "qfc", "worker_wrapper")
    assert [(c["name"], c["number"], c["state"], c["restart_count"]) for c in containers] == [
        ("qfc-worker_wrapper-1", 1, "running", 1), ("qfc-worker_wrapper-2", 2, "running", 0),
        ("qfc-worker_wrapper-3", 3, "exited", 4)]
    assert containers[0]["started_at"] == pytest.approx(int(now - 60) + 0.5)
    with pytest.raises(VerifyError, match="not running: qfc-worker_wrapper-3 exited"):
        wait_for_replicas(client, "qfc", "worker_wrapper", 2, 1, 0.5)
    engine.containers = [c for c in engine.containers if c["State"] == "running"]
    assert len(wait_for_replicas(client, "qfc", "worker_wrapper", 2, 5, 0.5)) == 2
    engine.containers.append(worker("qfc", 3, started=time.time() + 2))  # started just now (the clock rounds down)
    with pytest.raises(VerifyError, match="3 running, 1 of them up for less than 30"):
        wait_for_replicas(client, "qfc", "worker_wrapper", 3, 1, 30)


def test_snapshot_skips_a_container_removed_between_list_and_inspect(fake_engine, tmp_path, monkeypatch):
    engine = fake_engine([worker("qfc", 1, started=1000), worker("qfc", 2, started=1000)])
    client = _engine.StdlibClient(str(tmp_path / "docker.sock"), timeout=2)
    listed = client.containers(all=True, filters=_engine.label_filters("qfc", "worker_wrapper"))
    monkeypatch.setattr(client, "containers", lambda **kw: listed)
    engine.containers.pop()  # the second one is gone by the time it is inspected (a scale-down in progress)
    assert [c["number"] for c in _engine.snapshot(client, "qfc", "worker_wrapper")] == [1]


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
            "assert 'docker' not in sys.modules; "
            "assert _engine.load_sdk() and _engine.DockerException.__module__ == 'docker.errors'")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


@pytest.mark.parametrize("env, expected", [
    ({"QFIELDCLOUD_WORKER_REPLICAS": "3"}, 3), ({"QFIELDCLOUD_WORKER_REPLICAS": " 4 "}, 4),
    ({"QFIELDCLOUD_WORKER_REPLICAS": "auto"}, None), ({"QFIELDCLOUD_WORKER_REPLICAS": "-1"}, None), ({}, None)])
def test_worker_counts_reads_the_configured_count_from_env(env, expected):
    warnings = []
    counts = _engine.worker_counts(env, None, "QFIELDCLOUD_WORKER_REPLICAS", "worker_wrapper", warnings.append, False)
    assert counts == {"configured": expected, "running": None} and warnings == []  # no project_src: not asked


def test_worker_counts_counts_the_running_workers_of_the_project(fake_engine, tmp_path):
    fake_engine([worker("qfc", 1), worker("qfc", 2), worker("qfc", 3, state="exited"), worker("other", 1)])
    warnings = []
    counts = _engine.worker_counts({"COMPOSE_PROJECT_NAME": "qfc", "QFIELDCLOUD_WORKER_REPLICAS": "3"}, "/srv/x",
                                   "QFIELDCLOUD_WORKER_REPLICAS", "worker_wrapper", warnings.append, True,
                                   socket_path=str(tmp_path / "docker.sock"))
    assert counts == {"configured": 3, "running": 2} and warnings == []


def test_worker_counts_degrade_with_a_warning(tmp_path):
    warnings = []
    env = {"QFIELDCLOUD_WORKER_REPLICAS": "2"}
    assert _engine.worker_counts(env, "/srv/x", "QFIELDCLOUD_WORKER_REPLICAS", "worker_wrapper", warnings.append,
                                 False) == {"configured": 2, "running": None}
    assert warnings == ["Running workers unknown: no Compose file in /srv/x"]
    dead = str(tmp_path / "none.sock")
    assert _engine.worker_counts(env, "/srv/x", "QFIELDCLOUD_WORKER_REPLICAS", "worker_wrapper", warnings.append,
                                 True, timeout=0.5, socket_path=dead) == {"configured": 2, "running": None}
    assert warnings[1] == "Running workers unknown: the Docker Engine at %s did not answer within 0.5s" % dead


def test_worker_counts_follow_a_unix_docker_host(fake_engine, tmp_path):
    # a rootless engine: DOCKER_HOST names its socket, and the count is asked there
    fake_engine([worker("qfc", 1), worker("qfc", 2)])
    warnings = []
    environ = {"DOCKER_HOST": "unix://%s" % (tmp_path / "docker.sock")}
    counts = _engine.worker_counts({"COMPOSE_PROJECT_NAME": "qfc"}, "/srv/x", "QFIELDCLOUD_WORKER_REPLICAS",
                                   "worker_wrapper", warnings.append, True, environ=environ)
    assert counts == {"configured": None, "running": 2} and warnings == []


def test_worker_counts_do_not_ask_another_engine_for_a_tcp_docker_host():
    warnings = []
    counts = _engine.worker_counts({}, "/srv/x", "QFIELDCLOUD_WORKER_REPLICAS", "worker_wrapper", warnings.append,
                                   True, environ={"DOCKER_HOST": "tcp://10.0.0.5:2376"})
    assert counts == {"configured": None, "running": None}
    assert warnings == ["Running workers unknown: DOCKER_HOST=tcp://10.0.0.5:2376 is not a local unix socket, and the "
                        "queue modules count workers over one"]
