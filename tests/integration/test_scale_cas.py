"""qfc_scale's compare-and-set (``expect_current``, issue 21 defect 10) and qfc_scale_rollout's null and mistyped
options (defect 9), on a real Compose project through real ad-hoc Ansible runs. The race of two real runs (a manual
scale holding the project lock while a scheduled autoscale that decided before it waits) is
tests/integration/test_autoscale.py::test_a_decision_made_before_a_manual_scale_that_held_the_lock_is_not_applied."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.ansible_run import BIN, ROOT, ansible_env, run_module
from tests.support.stacks import make_stack


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project that is never started: a refusal needs no workers, and apply=false changes .env only."""
    created = make_stack(tmp_path_factory.mktemp("cas"), start=False)
    yield created
    created.down()


@pytest.fixture
def recorded(project, tmp_path):
    """(qfc_scale's base arguments, the docker CLI's call log): a docker CLI that logs each call, then runs docker;
    an operations log of the test's own. .env starts at 2."""
    project.set_env("QFIELDCLOUD_WORKER_REPLICAS", 2)
    for backup in project.backups():
        os.unlink(backup)
    log = tmp_path / "docker-calls.log"
    cli = tmp_path / "docker"
    cli.write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (log, shutil.which("docker")))
    cli.chmod(0o755)
    args = {"project_src": str(project.path), "docker_cli": str(cli), "operations_log": str(tmp_path / "ops.jsonl")}
    return args, log


def calls(log):
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("check", [False, True], ids=["run", "check mode"])
def test_expect_current_refuses_a_changed_count_and_changes_nothing(project, recorded, check):
    args, log = recorded
    before = sha(project.env_file)
    result = run_module(dict(args, replicas=4, expect_current=3), check=check, diff=True)
    assert not result.failed, result
    assert result["refused"] is True and result["changed"] is False and result["expect_current"] == 3
    assert result["previous_replicas"] == 2 and result["replicas"] == 4
    assert result["msg"].startswith("Refused - expect_current=3, but %s holds QFIELDCLOUD_WORKER_REPLICAS=2 under "
                                    "the project lock: the configured count changed from 3 to 2" % project.env_file)
    assert "Nothing was changed (no backup, no .env write, no docker compose call)" in result["msg"]
    # no backup, no .env write, no compose (nor any docker) call, no diff, no operations-log record
    assert sha(project.env_file) == before and project.backups() == [] and calls(log) == []
    assert "diff" not in result and result["operation_record"] is None
    assert not os.path.exists(args["operations_log"])


def test_expect_current_that_matches_changes_as_usual(project, recorded):
    args, log = recorded
    predicted = run_module(dict(args, replicas=3, expect_current=2, apply=False), check=True)
    assert not predicted.failed and predicted["changed"] is True and predicted["refused"] is False, predicted
    assert project.env_value() == "2"
    result = run_module(dict(args, replicas=3, expect_current=2, apply=False))
    assert not result.failed and result["changed"] is True and result["refused"] is False, result
    assert project.env_value() == "3" and len(project.backups()) == 1 and calls(log)  # the preflight ran
    assert result["operation_record"]["before"] == 2 and result["operation_record"]["after"] == 3
    again = run_module(dict(args, replicas=3, expect_current=3, apply=False))  # a no-op is compared too, and passes
    assert not again.failed and again["changed"] is False and again["refused"] is False, again
    unset = run_module(dict(args, replicas=4, expect_current=None, apply=False))  # null: no comparison
    assert not unset.failed and unset["changed"] is True and project.env_value() == "4", unset


@pytest.mark.parametrize("value, message", [
    (True, "expect_current must be a number, got True. Nothing was changed."),
    (101, "expect_current must be at least 0 and at most 100, got 101. Nothing was changed."),
    (-1, "expect_current must be at least 0 and at most 100, got -1. Nothing was changed."),
    ("two", "argument 'expect_current' is of type"),
    (2.5, "argument 'expect_current' is of type"),
], ids=repr)
def test_bad_expect_current_is_refused_before_any_change(project, recorded, value, message):
    args, log = recorded
    before = sha(project.env_file)
    result = run_module(dict(args, replicas=3, expect_current=value))
    assert result.failed and message in result["msg"], result
    assert sha(project.env_file) == before and project.backups() == [] and calls(log) == []


def test_the_comparison_is_made_under_the_lock(project, recorded):
    """The count read is the one under the lock: a run that waits for the lock while another run changes .env (here
    the test holds the lock as a first run does, and edits .env) is refused when it finally gets it."""
    args, log = recorded
    fd = os.open(project.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen(
            [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
             "-e", "ansible_python_interpreter=%s" % sys.executable, "-m", "qfieldcloud.ops.qfc_scale", "-a",
             json.dumps(dict(args, replicas=4, expect_current=2, lock_timeout=60))],
            cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)  # the module is waiting for the lock
        assert proc.poll() is None
        project.set_env("QFIELDCLOUD_WORKER_REPLICAS", 1)  # what the first run wrote
    finally:
        os.close(fd)
    out, _err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert '"refused": true' in out and "the configured count changed from 2 to 1" in out, out
    assert project.env_value() == "1" and project.backups() == [] and calls(log) == []


@pytest.mark.parametrize("options, named", [
    ({"gate_timeout": None}, "gate_timeout (qfc_health_gate_timeout) is null"),
    ({"poll": None, "background": True}, "poll (qfc_poll) is null"),
    ({"gate_delay": None}, "gate_delay (qfc_health_gate_delay) is null"),
    ({"gate_timeout": True}, "qfc_health_gate_timeout must be a whole number from 1 to 3600, got True"),
    ({"poll": "nan"}, "qfc_poll must be a whole number from 1 to 3600, got nan"),
], ids=repr)
def test_the_rollout_action_refuses_null_and_mistyped_options_by_name(project, recorded, options, named):
    """Issue 21 defect 9: qfc_scale_rollout used directly with gate_timeout: null (or poll: null) failed with
    "float() argument must be a string or a real number, not 'NoneType'" (and poll: null with background: true only
    after qfc_scale had started); now an input error naming the option, before any step runs."""
    args, log = recorded
    before = sha(project.env_file)
    scale = dict(args, replicas=4)
    result = run_module(dict({"scale": scale, "gate": {"project_src": args["project_src"]}}, **options),
                        module="qfieldcloud.ops.qfc_scale_rollout")
    assert result.rc == 0 and "Traceback" not in result.output and "NoneType" not in result.output, result
    outcome = result["outcome"]
    assert outcome["result"] == "failed" and named in outcome["message"], outcome
    assert outcome["message"].endswith("Nothing was changed.")
    assert result["steps"] == ["Check the numbers and names (before anything changes)"]
    assert result["changed"] is False and sha(project.env_file) == before and calls(log) == []
