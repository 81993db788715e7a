"""Parsers of Compose output, tested on output recorded from Compose 2.26.1 (JSON Lines) and the array form."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils._compose import (
    compose_files, effective_scale, find_service_conflicts, first_error_line, parse_context, parse_labels,
    parse_ps_json, parse_version, run_command, run_with_deadline, service_containers, summarize_ps)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("fixture", ["ps-2.26.1-jsonlines.txt", "ps-array-form.json"])
def test_parse_ps_both_forms(fixture):
    containers = parse_ps_json((FIXTURES / fixture).read_text())
    assert [c["Name"] for c in containers][:2] == ["qfieldcloud-app-1", "qfieldcloud-db-1"]
    workers = service_containers(containers, "worker_wrapper")
    assert [c["Name"] for c in workers] == ["qfieldcloud-worker_wrapper-%d" % n for n in (1, 2, 3)]
    assert all(c["State"] == "running" for c in workers)
    assert all(c["Labels"]["com.docker.compose.oneoff"] == "False" for c in workers)
    with_oneoff = service_containers(containers, "worker_wrapper", include_oneoff=True)
    assert "qfieldcloud-oneoff" in [c["Name"] for c in with_oneoff]
    (memcached,) = service_containers(containers, "memcached")
    assert memcached["State"] == "exited"


def test_summarize_ps():
    containers = service_containers(parse_ps_json((FIXTURES / "ps-2.26.1-jsonlines.txt").read_text()), "worker_wrapper")
    summary = summarize_ps(containers[-1])
    assert summary == {"name": "qfieldcloud-worker_wrapper-3", "number": 3, "state": "running",
                       "id": containers[-1]["ID"][:12]}


def test_parse_ps_empty():
    assert parse_ps_json("") == [] and parse_ps_json("\n") == [] and parse_ps_json("[]") == []


def test_labels_with_commas_in_values():
    labels = parse_labels("com.docker.compose.project=qfc,com.docker.compose.project.config_files=/a/x.yml,"
                          "/a/y.yml,com.docker.compose.service=worker_wrapper,ofelia.job-exec.c=python a,b")
    assert labels == {"com.docker.compose.project": "qfc",
                      "com.docker.compose.project.config_files": "/a/x.yml,/a/y.yml",
                      "com.docker.compose.service": "worker_wrapper",
                      "ofelia.job-exec.c": "python a,b"}


@pytest.mark.parametrize("text, version", [
    ("2.26.1-4", (2, 26, 1)), ("v2.29.2-desktop.1", (2, 29, 2)), ("Docker Compose version v2.40.0", (2, 40, 0)),
    ("", None), ("garbage", None),
])
def test_parse_version(text, version):
    assert parse_version(text) == version


def test_effective_scale():
    assert effective_scale({"scale": 4}) == 4
    assert effective_scale({"scale": 4, "deploy": {"replicas": 4}}) == 4
    assert effective_scale({"deploy": {"replicas": 3}}) == 3
    assert effective_scale({}) == 1


def test_conflicts_name_the_file():
    docs = [("/p/docker-compose.yml", {"services": {"worker_wrapper": {"scale": "${R}"}}}),
            ("/p/override.yml", {"services": {"worker_wrapper": {"deploy": {"replicas": 3}}}}),
            ("/p/names.yml", {"services": {"worker_wrapper": {"container_name": "w"},
                                           "app": {"deploy": {"replicas": 2}}}}),
            ("/p/empty.yml", None)]
    problems = find_service_conflicts(docs, "worker_wrapper", "R")
    assert len(problems) == 2
    assert problems[0].startswith("/p/override.yml sets services.worker_wrapper.deploy.replicas")
    assert problems[1].startswith("/p/names.yml sets services.worker_wrapper.container_name")


def test_compose_files(tmp_path):
    env = {"COMPOSE_FILE": "a.yml:b.yml", "COMPOSE_PATH_SEPARATOR": ":"}
    assert compose_files(str(tmp_path), env) == [str(tmp_path / "a.yml"), str(tmp_path / "b.yml")]
    assert compose_files(str(tmp_path), {"COMPOSE_FILE": "a.yml;b.yml", "COMPOSE_PATH_SEPARATOR": ";"})[1] == \
        str(tmp_path / "b.yml")
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    (tmp_path / "docker-compose.override.yml").write_text("services: {}\n")
    assert compose_files(str(tmp_path), {}) == [str(tmp_path / "docker-compose.yml"),
                                                str(tmp_path / "docker-compose.override.yml")]


def test_first_error_line_skips_warnings():
    stderr = ('time="2026-11-29T18:00:00Z" level=warning msg="/p/docker-compose.yml: `version` is obsolete"\n'
              "services.worker_wrapper: can't set distinct values on 'scale' and 'deploy.replicas'\n")
    assert first_error_line(stderr).startswith("services.worker_wrapper: can't set distinct")


def test_run_with_deadline_kills_the_whole_process_group():
    # a shell whose child ignores nothing: both die at the deadline, output printed before it is kept
    started = time.monotonic()
    rc, out, _err, timed_out = run_with_deadline(["sh", "-c", "echo started; sleep 30 & wait"], "/", dict(os.environ),
                                                 timeout=1)
    assert timed_out and rc == -signal.SIGTERM and out == "started\n"
    assert time.monotonic() - started < 5


def test_run_with_deadline_sigkills_what_ignores_sigterm():
    started = time.monotonic()
    rc, _out, _err, timed_out = run_with_deadline(["sh", "-c", "trap '' TERM; sleep 30"], "/", dict(os.environ),
                                                  timeout=1, kill_grace=1)
    assert timed_out and rc == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_run_with_deadline_returns_what_finishes():
    assert run_with_deadline(["sh", "-c", "printf 'x\\377'; echo e >&2; exit 3"], "/", dict(os.environ), 10) == \
        (3, "x\udcff", "e\n", False)


@pytest.fixture
def stray(tmp_path):
    """A shell snippet that starts ``sleep`` in a session of its own (outside the command's process group) holding
    the command's stdout and stderr, like an ssh ControlPersist master; the stray is killed at teardown."""
    pidfile = tmp_path / "stray.pid"
    yield "setsid sh -c 'echo $$ > %s; exec sleep 30' &" % pidfile
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_run_with_deadline_stops_reading_a_pipe_that_a_process_outside_the_group_holds(stray):
    # the group is SIGTERMed at 1 s and SIGKILLed at 2 s; the stray still holds the pipes, so reading stops 1 s later
    started = time.monotonic()
    rc, out, err, timed_out = run_with_deadline(["sh", "-c", "echo started; echo e >&2; %s exec sleep 30" % stray],
                                                "/", dict(os.environ), timeout=1, kill_grace=1, pipe_grace=1)
    took = time.monotonic() - started
    assert timed_out and rc == -signal.SIGTERM and out == "started\n" and err == "e\n"
    assert took < 1 + 1 + 1 + 1.5, took
    outcome = run_command(["sh", "-c", "%s exec sleep 30" % stray], "/", dict(os.environ), timeout=1, kill_grace=1,
                          pipe_grace=1)
    assert outcome.timed_out and outcome.held


def test_a_command_that_exits_while_a_stray_holds_its_pipe_keeps_its_status(stray):
    started = time.monotonic()
    outcome = run_command(["sh", "-c", "echo done; %s exit 3" % stray], "/", dict(os.environ), timeout=30,
                          pipe_grace=1)
    assert tuple(outcome) == (3, "done\n", "", False, True) and outcome.held
    assert time.monotonic() - started < 1 + 1.5


def test_parse_context():
    text = json.dumps([{"Name": "rootless", "Metadata": {}, "Endpoints": {"docker": {
        "Host": "unix:///run/user/1000/docker.sock", "SkipTLSVerify": False}}, "TLSMaterial": {},
        "Storage": {"MetadataPath": "/root/.docker/contexts/meta/x", "TLSPath": "/nonexistent/tls/x"}}])
    assert parse_context(text) == {"name": "rootless", "host": "unix:///run/user/1000/docker.sock",
                                   "skip_tls_verify": False, "tls_path": None}
    default = json.dumps([{"Name": "default", "Endpoints": {"docker": {"Host": "unix:///var/run/docker.sock"}},
                           "Storage": {"MetadataPath": "<IN MEMORY>", "TLSPath": "<IN MEMORY>"}}])
    assert parse_context(default)["tls_path"] is None


def test_parse_context_with_tls_material(tmp_path):
    (tmp_path / "docker").mkdir()
    text = json.dumps([{"Name": "remote", "Endpoints": {"docker": {"Host": "tcp://h:2376", "SkipTLSVerify": True}},
                        "Storage": {"TLSPath": str(tmp_path)}}])
    assert parse_context(text)["tls_path"] == str(tmp_path / "docker")
    assert parse_context(text)["skip_tls_verify"] is True
