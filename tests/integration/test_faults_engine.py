"""The standard-library Engine client against Engine sockets that misbehave: real unix sockets in tmp_path, served by
a thread (tests/support/engine_sockets.py), that answer garbage (an sshd's banner), a 200 that is not a container
list, or a valid answer drip-fed one byte at a time. Direct calls of _engine, and real module runs: qfc_queue_facts
against a real database (the socket through a ``unix://`` DOCKER_HOST), qfc_job_cleanup's orphaned_queued (its socket
is /var/run/docker.sock: the fake one is bind-mounted over it in a private mount namespace, so only that run sees it).

The promise: every Engine request has one deadline for its whole answer (connect, send, status, headers, body), and
what is not a container list is reported as such: ``running: null`` with a warning for the queue modules, a clean
failure with nothing changed for orphaned_queued."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from tests.support.ansible_run import BIN, ROOT, Result, ansible_env, run_module, with_test_oplog

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine
from tests.support import datagen
from tests.support.engine_sockets import GARBAGE, EngineSocket, Stopwatch, container, http_head, http_reply

FACTS = "qfieldcloud.ops.qfc_queue_facts"
CLEANUP = "qfieldcloud.ops.qfc_job_cleanup"
NOT_A_LIST = http_reply({"message": "page not found"})
# A valid, complete answer (a list of one worker of project qfc) and the same answer's body only, after its headers.
WORKER_LIST = json.dumps([container(project="qfc", number=1)]).encode()
DRIP = 0.5  # seconds between two bytes


def drip_socket(tmp_path, name="drip.sock", body=b"[]", fast=0):
    """A valid HTTP answer drip-fed one byte every DRIP s (``fast``: that many bytes at once first)."""
    return EngineSocket(tmp_path / name, http_head(len(body)) + body, drip=DRIP, fast=fast)


# -- direct calls ---------------------------------------------------------------------------------------------------
def test_a_garbage_socket_is_no_engine_and_no_crash(tmp_path):
    with EngineSocket(tmp_path / "ssh.sock", GARBAGE) as sock, Stopwatch() as took:
        filters = dict(_engine.label_filters("qfc", "worker_wrapper"), status=["running"])
        assert _engine.count_running_stdlib("qfc", "worker_wrapper", timeout=2.0, socket_path=sock.path) is None
        assert _engine.running_job_ids_stdlib(timeout=2.0, socket_path=sock.path) is None
        with pytest.raises(_engine.BadAnswer, match=r"not an HTTP answer \(BadStatusLine: .*SSH-2.0-OpenSSH"):
            _engine.list_containers_checked(filters, 2.0, sock.path)
        with pytest.raises(_engine.BadAnswer):
            _engine.running_job_ids_checked(timeout=2.0, socket_path=sock.path)
        client = _engine.StdlibClient(sock.path, timeout=2.0)
        for call in (client.ping, lambda: client.containers(all=True), lambda: client.inspect_container("x")):
            with pytest.raises(_engine.EngineError, match="on unix://%s: not an HTTP answer" % re.escape(sock.path)):
                call()
        with pytest.raises(OSError):  # what qfc_scale catches: the preflight fails "cannot reach the Docker Engine"
            _engine.ping(client)
    assert took.s < 2.0  # answered at once: no deadline was waited for


def test_an_answer_that_is_not_a_container_list_is_not_counted(tmp_path):
    with EngineSocket(tmp_path / "notlist.sock", NOT_A_LIST, hold=False) as sock:
        assert _engine.count_running_stdlib("qfc", "worker_wrapper", timeout=2.0, socket_path=sock.path) is None
        assert _engine.running_job_ids_stdlib(timeout=2.0, socket_path=sock.path) is None  # was AttributeError
        with pytest.raises(_engine.BadAnswer, match='not a list of containers: {"message": "page not found"}'):
            _engine.running_job_ids_checked(timeout=2.0, socket_path=sock.path)
        client = _engine.StdlibClient(sock.path, timeout=2.0)
        with pytest.raises(_engine.BadAnswer, match="not a list of containers"):
            client.containers(all=True)
        with pytest.raises(_engine.BadAnswer, match="not a container's inspect data"):
            client.inspect_container("x")  # an object, but no container (no Id)
    with EngineSocket(tmp_path / "list.sock", http_reply([{"Id": "a"}]), hold=False) as sock:
        client = _engine.StdlibClient(sock.path, timeout=2.0)
        with pytest.raises(_engine.BadAnswer, match="not a container's inspect data"):
            client.inspect_container("a")  # the settle wait: a list where an object belongs
        with pytest.raises(_engine.BadAnswer):
            _engine.snapshot(client, "qfc", "worker_wrapper")  # never a crash inside qfc_scale's settle wait


def test_an_answer_too_large_to_be_a_listing_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_engine, "MAX_ANSWER_BYTES", 1000)
    with EngineSocket(tmp_path / "big.sock", http_reply(b"[" + b" " * 5000 + b"]"), hold=False) as sock:
        with pytest.raises(_engine.BadAnswer, match="an answer of more than 1000 bytes"):
            _engine.list_containers_checked({}, 2.0, sock.path)


@pytest.mark.parametrize("phase, fast", [("status line and headers", 0), ("body", len(http_head(len(WORKER_LIST))))])
def test_a_drip_fed_answer_ends_at_the_deadline(tmp_path, phase, fast):
    """Every byte comes well within the socket timeout; the whole answer would take minutes."""
    with drip_socket(tmp_path, body=WORKER_LIST, fast=fast) as sock:
        measured = {}
        for limit, name, call in [
            (2.0, "count_running_stdlib", lambda: _engine.count_running_stdlib("qfc", "worker_wrapper", timeout=2.0,
                                                                               socket_path=sock.path)),
            (1.0, "running_job_ids_stdlib", lambda: _engine.running_job_ids_stdlib(timeout=1.0,
                                                                                   socket_path=sock.path)),
        ]:
            with Stopwatch() as took:
                assert call() is None
            measured[name] = (limit, took.s)
            assert limit - 0.05 <= took.s < limit + 0.5, (name, took.s)
        client = _engine.StdlibClient(sock.path, timeout=1.5)  # qfc_scale's client: ping and the settle wait
        for name, call in [("StdlibClient.ping", client.ping),
                           ("StdlibClient.containers", lambda: client.containers(all=True))]:
            with Stopwatch() as took, pytest.raises(_engine.NoAnswer, match="no answer within 1.5s"):
                call()
            measured[name] = (1.5, took.s)
            assert 1.45 <= took.s < 2.0, (name, took.s)
        assert sock.sent < len(sock.reply)  # not one whole answer was sent
    print("drip-fed %s, one byte per %ss: %s" % (phase, DRIP, ", ".join(
        "%s limit %.1fs took %.2fs" % (name, limit, took) for name, (limit, took) in measured.items())))


# -- qfc_queue_facts: real module runs against a real database --------------------------------------------------------
@pytest.fixture
def facts_project(qfcdb, tmp_path, monkeypatch):
    """A project directory (.env of the test database, a Compose file) and ``run(sock)``: qfc_queue_facts with
    DOCKER_HOST=unix://<sock> -> (result, seconds)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(qfcdb.env_text() + "COMPOSE_PROJECT_NAME=qfc\n")
    (project / "docker-compose.yml").write_text("services:\n  worker_wrapper:\n    image: qfc-test/busybox:1\n")
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)

    def run(sock):
        monkeypatch.setenv("DOCKER_HOST", "unix://%s" % sock.path)  # run_module's environment is os.environ's
        with Stopwatch() as took:
            result = run_module({"project_src": str(project)}, module=FACTS, timeout=120)
        return result, took.s

    return run


def test_queue_facts_reports_running_null_with_a_warning_for_a_garbage_engine(facts_project, tmp_path):
    with EngineSocket(tmp_path / "ssh.sock", GARBAGE) as sock:
        result, _took = facts_project(sock)
    assert not result.failed, result  # was "Module failed: SSH-2.0-OpenSSH..."
    assert result["ansible_facts"]["qfc_queue"]["workers"] == {"configured": 2, "running": None, "busy": 0}
    assert "Running workers unknown: the Docker Engine at %s gave no usable answer" % sock.path in result.output
    assert "BadStatusLine" in result.output
    with EngineSocket(tmp_path / "notlist.sock", NOT_A_LIST, hold=False) as sock:
        result, _took = facts_project(sock)
    assert not result.failed, result
    assert result["ansible_facts"]["qfc_queue"]["workers"]["running"] is None  # was 1: the error object counted
    assert "not a list of containers" in result.output
    with EngineSocket(tmp_path / "ok.sock", http_reply(WORKER_LIST), hold=False) as sock:
        result, _took = facts_project(sock)
    assert result["ansible_facts"]["qfc_queue"]["workers"]["running"] == 1  # the same socket, a real answer: counted


def test_queue_facts_keeps_its_engine_limit_against_a_drip_fed_engine(facts_project, tmp_path):
    with EngineSocket(tmp_path / "at_once.sock", http_reply(WORKER_LIST), hold=False) as sock:
        baseline, base_s = facts_project(sock)  # the same run with an Engine that answers at once
    assert baseline["ansible_facts"]["qfc_queue"]["workers"]["running"] == 1, baseline
    with drip_socket(tmp_path, body=WORKER_LIST) as sock:
        result, took = facts_project(sock)
    limit = _engine.WORKER_COUNT_TIMEOUT_S
    print("qfc_queue_facts, Engine drip-fed one byte per %ss: limit %.1fs, run %.1fs, the same run with an answer "
          "at once %.1fs: %.1fs spent on the Engine" % (DRIP, limit, took, base_s, took - base_s))
    assert not result.failed, result
    assert result["ansible_facts"]["qfc_queue"]["workers"]["running"] is None
    assert "did not answer within %ss" % limit in result.output  # it waited for the limit, then gave up
    assert limit <= took < base_s + limit + 3.0  # the Ansible runs' own time varies by a second or two under load


# -- qfc_job_cleanup orphaned_queued: its socket is /var/run/docker.sock ----------------------------------------------
REAL_SOCKET = os.path.realpath(_engine.DOCKER_SOCKET)
JOB_ROWS = "SELECT id, status, output, feedback::text, started_at, finished_at FROM core_job ORDER BY id"


def cleanup_behind(sock, db, **args):
    """qfc_job_cleanup as an ad-hoc run whose /var/run/docker.sock is ``sock`` (bind-mounted over it in a private
    mount namespace: the real socket stays untouched for everyone else) -> (result, seconds)."""
    script = f"mount --bind {sock.path} {REAL_SOCKET} && exec \"$@\""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("cannot bind-mount in a private mount namespace: %s" % probe.stderr.strip())
    module_args = with_test_oplog(dict({"env_file": str(db.env_file), "mode": "orphaned_queued"}, **args), CLEANUP)
    cmd = ["unshare", "-m", "sh", "-c", script, "sh", str(BIN / "ansible"), "localhost", "-i", "localhost,",
           "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, "-m", CLEANUP,
           "-a", json.dumps(module_args)]
    with Stopwatch() as took:
        proc = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=120,
                              check=False)
    match = re.search(r"^localhost \| [A-Z!]+ => ", proc.stdout, re.M)
    data = (json.JSONDecoder().raw_decode(proc.stdout, match.end())[0] if match
            else {"failed": True, "msg": "no result line"})
    return Result(proc, data), took.s


def orphans(db):
    (user,) = datagen.make_users(db.conn, 1)
    projects = datagen.make_projects(db.conn, db.project_table, 2, user)
    return [datagen.add_job(db.conn, p, user, "queued", created_ago_s=7200) for p in projects]


@pytest.mark.parametrize("reply, says", [(GARBAGE, "not an HTTP answer (BadStatusLine"),
                                         (NOT_A_LIST, "not a list of containers")], ids=["garbage", "not_a_list"])
def test_orphaned_queued_fails_cleanly_when_the_engine_answers_garbage(qfcdb, tmp_path, reply, says):
    orphans(qfcdb)
    before = qfcdb.all(JOB_ROWS)
    with EngineSocket(tmp_path / "fake.sock", reply, hold=reply is GARBAGE) as sock:
        result, _took = cleanup_behind(sock, qfcdb)
        assert sock.connections >= 1  # the run asked the fake engine, not the real one
    assert result.failed, result
    assert "Traceback" not in result.output and "MODULE FAILURE" not in result.output, result
    msg = result["msg"]
    assert "the Docker Engine gave no usable answer" in msg and says in msg, msg
    assert "Nothing was changed" in msg and "check_containers=false" in msg, msg
    assert result["changed"] is False and result["count"] == 0 and result.get("operation_record") is None
    assert qfcdb.all(JOB_ROWS) == before  # every row as it was


def test_orphaned_queued_against_a_drip_fed_engine_warns_at_its_deadline(qfcdb, tmp_path):
    """An engine that cannot answer within 5 s: the documented warning, no job is skipped (within 5 s, not the
    minutes the answer would take)."""
    jobs = orphans(qfcdb)
    with drip_socket(tmp_path, body=json.dumps([container(job_id=jobs[0])]).encode()) as sock:
        result, took = cleanup_behind(sock, qfcdb, check_containers=True)
    with EngineSocket(tmp_path / "at_once.sock", http_reply([]), hold=False) as sock:
        _noop, base_s = cleanup_behind(sock, qfcdb)  # the same run, nothing left to do, an Engine answering at once
    print("qfc_job_cleanup orphaned_queued, Engine drip-fed one byte per %ss: limit 5.0s, run %.1fs, the same run "
          "with an answer at once %.1fs" % (DRIP, took, base_s))
    assert not result.failed, result
    assert "Docker Engine not reachable at unix://%s within 5.0s" % _engine.DOCKER_SOCKET in result.output
    assert sorted(j["id"] for j in result["jobs"]) == sorted(jobs)
    assert 5.0 <= took < base_s + 5.0 + 3.0
