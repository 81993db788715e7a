"""qfc_scale against a real Docker Engine and Compose v2, through real Ansible runs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import threading

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _engine
from ansible_collections.qfieldcloud.ops.plugins.module_utils._replicas import DEFAULT_MAX_REPLICAS_PER_CORE
from tests.support.ansible_run import assert_no_secrets, run_module
from tests.support.stacks import make_stack
from tests.support.tcp_proxy import tcp_to_unix

REAL_SOCKET = _engine.DOCKER_SOCKET


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scale(stack, replicas, **kwargs):
    args = {"project_src": str(stack.path), "replicas": replicas}
    args.update(kwargs.pop("args", {}))
    return run_module(args, **kwargs)


def test_scale_up_sets_env_backs_up_and_verifies(stack):
    assert len(stack.running()) == 2
    result = scale(stack, 4)
    assert not result.failed, result
    assert result["changed"] is True
    assert (result["previous_replicas"], result["previous_running"], result["running"]) == (2, 2, 4)
    assert result["rollback_replicas"] == 2  # what a failed health gate after this task restores
    assert stack.env_value() == "4"
    assert len(stack.running()) == 4
    assert [c["number"] for c in result["containers"]] == [1, 2, 3, 4]
    assert all(c["state"] == "running" for c in result["containers"])
    backup = result["backup_file"]
    assert os.path.exists(backup) and "QFIELDCLOUD_WORKER_REPLICAS=2\n" in open(backup).read()


def test_scale_down_keeps_lowest_numbers(stack):
    assert not scale(stack, 4).failed
    result = scale(stack, 1)
    assert not result.failed, result
    assert result["changed"] and result["running"] == 1
    assert stack.running() == ["%s-worker_wrapper-1" % stack.project]
    assert stack.env_value() == "1"


def test_second_run_is_a_noop(stack):
    assert scale(stack, 3)["changed"]
    before = sha(stack.env_file), stack.env_file.stat().st_mtime_ns, stack.backups()
    ids = sorted(c.id for c in stack.containers())
    result = scale(stack, 3)
    assert not result.failed, result
    assert result["changed"] is False
    assert "backup_file" not in result.data
    assert (sha(stack.env_file), stack.env_file.stat().st_mtime_ns, stack.backups()) == before
    assert sorted(c.id for c in stack.containers()) == ids


def test_reconciles_a_container_removed_by_hand(stack):
    victim = stack.containers()[0]
    victim.remove(force=True)
    assert len(stack.running()) == 1
    env_before = sha(stack.env_file)
    result = scale(stack, 2)
    assert not result.failed, result
    assert result["changed"] is True
    assert result["previous_running"] == 1 and result["running"] == 2
    assert sha(stack.env_file) == env_before and stack.backups() == []
    assert len(stack.running()) == 2


def test_reconciles_a_manual_compose_scale(stack):
    stack.compose("up", "-d", "--scale", "worker_wrapper=3", "worker_wrapper")
    assert len(stack.running()) == 3
    result = scale(stack, 2)
    assert result["changed"] and result["running"] == 2 and len(stack.running()) == 2


def test_check_mode_predicts_then_run_then_idempotent(stack):
    env_before = sha(stack.env_file)
    ids_before = sorted(c.id for c in stack.containers())
    check1 = scale(stack, 3, check=True)
    assert not check1.failed, check1
    assert check1["changed"] is True and check1["running"] == 3 and check1["previous_running"] == 2
    assert sha(stack.env_file) == env_before and stack.backups() == []
    assert sorted(c.id for c in stack.containers()) == ids_before
    run1 = scale(stack, 3)
    assert run1["changed"] is True and len(stack.running()) == 3
    check2 = scale(stack, 3, check=True)
    assert check2["changed"] is False
    run2 = scale(stack, 3)
    assert run2["changed"] is False


def test_check_mode_predicts_a_reconcile(stack):
    stack.containers()[0].stop(timeout=1)
    result = scale(stack, 2, check=True)
    assert result["changed"] is True
    assert len(stack.running()) == 1


def test_diff_shows_the_line_and_never_a_secret(stack):
    result = scale(stack, 3, diff=True, verbose=True)
    assert not result.failed, result
    assert "-QFIELDCLOUD_WORKER_REPLICAS=2" in result.output
    assert "+QFIELDCLOUD_WORKER_REPLICAS=3" in result.output
    assert_no_secrets(result.output)


def test_secret_in_a_malformed_line_is_not_echoed(stack):
    original = stack.env_text()
    stack.env_file.write_text(original + 'DJANGO_SUPERUSER_PASSWORD="3shJDd2r7Twwkehb-demo\n')
    before = sha(stack.env_file)
    result = scale(stack, 3, diff=True, verbose=True)
    assert result.failed
    assert "unterminated double quote" in result["msg"] and "DJANGO_SUPERUSER_PASSWORD" in result["msg"]
    assert_no_secrets(result.output)
    assert sha(stack.env_file) == before


def test_flags_under_secret_looking_keys_do_not_mask_the_output(stack):
    # A real QFieldCloud flag: its value "1" is no secret, and masking it would mangle every "1" in the result.
    stack.set_env("QFIELDCLOUD_PASSWORD_LOGIN_IS_ENABLED", "1")
    result = scale(stack, 1, diff=True)
    assert not result.failed, result
    assert result["replicas"] == 1 and result["running"] == 1
    assert "+QFIELDCLOUD_WORKER_REPLICAS=1" in result.output
    assert_no_secrets(result.output)


def test_deploy_replicas_conflict_fails_and_leaves_env_untouched(stack):
    (stack.path / "docker-compose.override.scale.yml").write_text(
        "services:\n  worker_wrapper:\n    deploy:\n      replicas: 3\n")
    stack.set_env("COMPOSE_FILE", "docker-compose.yml:docker-compose.override.prod.yml:"
                  "docker-compose.override.standalone.yml:docker-compose.override.scale.yml")
    before = sha(stack.env_file)
    result = scale(stack, 4)
    assert result.failed
    assert "deploy.replicas" in result["msg"]
    assert "docker-compose.override.scale.yml" in result["msg"]
    assert "can't set distinct values" in result["stderr"]
    assert result["rc"] != 0 and "config" in result["cmd"]
    assert sha(stack.env_file) == before and stack.backups() == []
    assert_no_secrets(result.output)


def test_container_name_on_the_service_is_refused(stack):
    (stack.path / "docker-compose.override.prod.yml").write_text(
        "services:\n  worker_wrapper:\n    container_name: qfc-worker\n")
    before = sha(stack.env_file)
    result = scale(stack, 1)
    assert result.failed and "container_name" in result["msg"]
    assert "docker-compose.override.prod.yml" in result["msg"]
    assert sha(stack.env_file) == before


def test_scale_not_following_the_variable_is_refused(stack):
    compose = (stack.path / "docker-compose.yml").read_text()
    (stack.path / "docker-compose.yml").write_text(compose.replace("scale: ${QFIELDCLOUD_WORKER_REPLICAS}", "scale: 2"))
    before = sha(stack.env_file)
    result = scale(stack, 3)
    assert result.failed and "does not take its scale from ${QFIELDCLOUD_WORKER_REPLICAS}" in result["msg"]
    assert sha(stack.env_file) == before


def test_missing_service_is_refused(stack):
    before = sha(stack.env_file)
    result = scale(stack, 2, args={"service": "worker"})
    assert result.failed and "Service worker is not defined" in result["msg"]
    assert sha(stack.env_file) == before


def test_missing_project_and_missing_env(tmp_path):
    result = run_module({"project_src": str(tmp_path / "nope"), "replicas": 2})
    assert result.failed and "is not a directory" in result["msg"]
    result = run_module({"project_src": str(tmp_path), "replicas": 2})
    assert result.failed and ".env does not exist" in result["msg"]


def test_non_integer_and_negative_replicas(stack):
    before = sha(stack.env_file)
    result = scale(stack, "four")
    assert result.failed and result["msg"] == "replicas must be an integer or 'auto', got 'four'. Nothing was changed."
    result = scale(stack, -1)
    assert result.failed and "replicas must be 0 or more" in result["msg"]
    result = scale(stack, True)  # YAML's `yes`
    assert result.failed and "boolean" in result["msg"]
    assert sha(stack.env_file) == before


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    """A project that is never started (nothing runs; check mode and refusals need no workers)."""
    created = make_stack(tmp_path_factory.mktemp("idle"), start=False)
    yield created
    created.down()


# replicas is checked once, in the module: every refusal says why and that nothing was changed
@pytest.mark.parametrize("replicas, message", [
    ("four", "replicas must be an integer or 'auto', got 'four'. Nothing was changed."),
    (True, "replicas must be an integer or 'auto', got the boolean True. Nothing was changed."),
    (False, "replicas must be an integer or 'auto', got the boolean False. Nothing was changed."),
    ("yes", "replicas must be an integer or 'auto', got 'yes'. Nothing was changed."),
    (2.5, "replicas must be an integer or 'auto', got 2.5. Nothing was changed."),
    ("2.5", "replicas must be an integer or 'auto', got '2.5'. Nothing was changed."),
    ("", "replicas must be an integer or 'auto', got ''. Nothing was changed."),
    (-1, "replicas must be 0 or more, got -1. Nothing was changed."),
    ("-3", "replicas must be 0 or more, got -3. Nothing was changed."),
    (101, "replicas=101 is above the hard ceiling of 100 workers per host, which force=true does not lift. Spread "
          "the workers over more servers. Nothing was changed."),
    ("1000", "replicas=1000 is above the hard ceiling of 100 workers per host, which force=true does not lift. "
             "Spread the workers over more servers. Nothing was changed."),
], ids=repr)
def test_bad_replicas_are_refused_by_the_module(idle, replicas, message):
    before = sha(idle.env_file)
    result = scale(idle, replicas, args={"force": True})  # force lifts the core guard, never the hard ceiling
    assert result.failed and result["msg"] == message
    assert result["changed"] is False and sha(idle.env_file) == before and idle.backups() == []


@pytest.mark.parametrize("replicas", [3, "3", " 3 ", 3.0, "auto", "AUTO", " Auto "], ids=repr)
def test_replicas_accepts_whole_numbers_digit_strings_and_auto(idle, replicas):
    result = scale(idle, replicas, args={"auto_max": 3, "max_replicas_per_core": 100.0}, check=True)
    assert not result.failed, result
    assert result["replicas"] == 3 and result["changed"] is True and idle.env_value() == "2"


def test_result_reports_the_guard_and_the_rollback_target(stack):
    cores = os.cpu_count() or 1
    result = scale(stack, 1, check=True)
    assert not result.failed, result
    assert (result["cpu_count"], result["max_replicas_per_core"]) == (cores, DEFAULT_MAX_REPLICAS_PER_CORE)
    assert result["core_limit"] == min(int(cores * DEFAULT_MAX_REPLICAS_PER_CORE), 100)
    assert result["rollback_replicas"] == 2  # the previous .env value
    custom = scale(stack, 1, args={"max_replicas_per_core": 1.5}, check=True)
    assert (custom["max_replicas_per_core"], custom["core_limit"]) == (1.5, int(cores * 1.5))
    # apply=false: nothing running is asked, the previous .env value is the target
    env_only = scale(stack, 1, args={"apply": False}, check=True)
    assert env_only["previous_running"] is None and env_only["rollback_replicas"] == 2


def test_rollback_target_without_a_previous_value_is_the_running_count(stack):
    stack.env_file.write_text(stack.env_text().replace("REPLICAS=2\n", "REPLICAS=x\n"))
    result = scale(stack, 3, check=True)
    assert not result.failed, result
    assert (result["previous_replicas"], result["previous_running"], result["rollback_replicas"]) == (None, 2, 2)
    stack.env_file.write_text(stack.env_text().replace("QFIELDCLOUD_WORKER_REPLICAS=x\n", ""))
    env_only = scale(stack, 3, args={"apply": False}, check=True)
    assert env_only["rollback_replicas"] is None  # neither a value in .env nor a running count


def test_auto_sizes_by_cores_capped(stack):
    cores = os.cpu_count() or 1
    result = scale(stack, "auto", args={"auto_max": 3})
    assert not result.failed, result
    expected = min(int(cores * DEFAULT_MAX_REPLICAS_PER_CORE), 3)
    assert (result["replicas"], result["cpu_count"]) == (expected, cores)
    assert stack.env_value() == str(expected) and len(stack.running()) == expected
    again = scale(stack, "auto", args={"auto_max": 3})
    assert not again.failed and again["changed"] is False
    # the guideline itself: one worker per core with a cap far away
    per_core = scale(stack, "auto", args={"max_replicas_per_core": 1.0, "auto_max": 64}, check=True)
    assert per_core["replicas"] == cores


def test_core_count_guard_and_force(stack):
    limit = int((os.cpu_count() or 1) * DEFAULT_MAX_REPLICAS_PER_CORE)
    before = sha(stack.env_file)
    result = scale(stack, limit + 1)
    assert result.failed
    assert "core-count guard" in result["msg"] and "at most %d workers" % limit in result["msg"]
    assert sha(stack.env_file) == before
    forced = scale(stack, limit + 1, args={"force": True})
    assert not forced.failed, forced
    assert forced["running"] == limit + 1 == len(stack.running())


def test_more_than_ten_workers_warns(stack):
    result = scale(stack, 11, args={"force": True, "apply": False})
    assert not result.failed, result
    # The module returns warnings; Ansible's callback prints them as [WARNING] lines.
    assert "multi-server layout" in result.output
    assert stack.env_value() == "11"
    assert len(stack.running()) == 2  # apply=false: only .env changed


def test_crash_looping_workers_are_rolled_back(stack):
    stack.set_env("QFC_SIM_CRASH", "1")  # new containers crash on start; running ones are not recreated
    env_before = sha(stack.env_file)
    ids_before = sorted(c.id for c in stack.containers())
    result = scale(stack, 4, args={"wait_timeout": 6})
    assert result.failed
    assert result["rolled_back"] is True
    assert "Rolled back" in result["msg"] and "QFIELDCLOUD_WORKER_REPLICAS=2" in result["msg"]
    # the crashing workers are caught restarting, exited, or running too briefly, with their restart counts
    assert "restarts:" in result["msg"]
    assert sha(stack.env_file) == env_before
    assert sorted(c.id for c in stack.containers() if c.status == "running") == ids_before
    assert result["running"] == 2
    assert len(stack.backups()) == 1  # the backup of the attempt stays for audit


def test_crash_without_rollback_keeps_the_new_value(stack):
    stack.set_env("QFC_SIM_CRASH", "1")
    result = scale(stack, 3, args={"wait_timeout": 4, "rollback": False})
    assert result.failed and result["rolled_back"] is False
    assert "rollback=false" in result["msg"]
    assert stack.env_value() == "3"


def test_two_concurrent_runs_are_serialised(stack):
    results = {}

    def worker(n):
        results[n] = scale(stack, n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not results[3].failed and not results[4].failed, results
    final = int(stack.env_value())
    first = 7 - final
    assert len(stack.running()) == final
    backups = sorted(int(_value_in(b.read_text())) for b in stack.backups())
    # The later run read .env after the earlier one wrote it: no update was lost.
    assert backups == sorted([2, first])
    assert results[final]["previous_replicas"] == first


def _value_in(text):
    return re.findall(r"^QFIELDCLOUD_WORKER_REPLICAS=(\d+)$", text, re.M)[-1]


def test_other_services_keep_their_containers(stack):
    others = {}
    for service in ("app", "ofelia", "memcached", "db"):
        (container,) = stack.containers(service)
        others[service] = (container.id, container.attrs["State"]["StartedAt"])
    assert scale(stack, 4)["changed"]
    assert scale(stack, 1)["changed"]
    for service, before in others.items():
        (container,) = stack.containers(service)
        container.reload()
        assert (container.id, container.attrs["State"]["StartedAt"]) == before, service


def test_scale_down_waits_for_the_grace_period(stack):
    # The simulated worker needs 11 s to finish its job after SIGTERM: longer than Docker's default 10 s stop
    # timeout, shorter than worker_wrapper's stop_grace_period (15m). A kill would leave no marker.
    stack.set_env("QFC_SIM_SHUTDOWN_S", "11")
    stack.up()  # recreates the workers with the new setting
    victim = [c for c in stack.containers() if c.name.endswith("-2")][0]
    result = scale(stack, 1)
    assert not result.failed, result
    assert (stack.out / ("graceful-%s" % victim.id[:12])).exists()


def test_env_file_bytes_mode_and_owner_are_kept(stack):
    text = stack.env_text().replace("QFIELDCLOUD_WORKER_REPLICAS=2",
                                    'export QFIELDCLOUD_WORKER_REPLICAS="2"  # workers')
    stack.env_file.write_bytes(text.replace("\n", "\r\n").encode())
    os.chmod(stack.env_file, 0o640)
    os.chown(stack.env_file, 65534, 65534)
    result = scale(stack, 3)
    assert not result.failed, result
    expected = text.replace('"2"  # workers', '"3"  # workers').replace("\n", "\r\n").encode()
    assert stack.env_file.read_bytes() == expected
    st = stack.env_file.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    assert len(stack.running()) == 3


def test_diff_with_a_latin1_comment(stack):
    raw = stack.env_file.read_bytes().replace(b"QFIELDCLOUD_WORKER_REPLICAS=2\n",
                                              b"QFIELDCLOUD_WORKER_REPLICAS=2 # Arbeiter f\xfcr Jobs\n")
    stack.env_file.write_bytes(raw)
    result = scale(stack, 3, diff=True)
    assert not result.failed, result
    assert stack.env_file.read_bytes() == raw.replace(b"REPLICAS=2 #", b"REPLICAS=3 #")  # the byte is kept


def test_duplicate_keys_edit_the_last_and_warn(stack):
    stack.env_file.write_text("QFIELDCLOUD_WORKER_REPLICAS=9\n" + stack.env_text())
    result = scale(stack, 3)
    assert not result.failed, result
    assert "QFIELDCLOUD_WORKER_REPLICAS is set 2 times" in result.output
    text = stack.env_text()
    assert text.startswith("QFIELDCLOUD_WORKER_REPLICAS=9\n") and text.count("QFIELDCLOUD_WORKER_REPLICAS=3\n") == 1


def test_absent_variable_is_appended(stack):
    stack.env_file.write_text(stack.env_text().replace("QFIELDCLOUD_WORKER_REPLICAS=2\n", ""))
    result = scale(stack, 2)
    assert not result.failed, result
    assert result["previous_replicas"] is None
    assert result["rollback_replicas"] == 2  # no value in .env: the count that was running
    assert stack.env_text().endswith("QFIELDCLOUD_WORKER_REPLICAS=2\n")


def test_no_compose_v2_is_a_clear_error(stack, tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho \"docker: 'compose' is not a docker command.\" >&2\nexit 1\n")
    fake.chmod(0o755)
    before = sha(stack.env_file)
    result = scale(stack, 3, args={"docker_cli": str(fake)})
    assert result.failed and "Compose v2 is not available" in result["msg"]
    assert result["rc"] == 1 and "not a docker command" in result["stderr"]
    assert sha(stack.env_file) == before


@pytest.fixture
def bare_python(tmp_path):
    """A Python with the standard library only: no Docker SDK (nor requests)."""
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    assert subprocess.run([python, "-c", "import docker"], check=False, capture_output=True).returncode != 0
    return python


@contextlib.contextmanager
def docker_host(value):
    env = dict(os.environ)
    os.environ["DOCKER_HOST"] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(env)


def test_a_local_engine_needs_no_docker_sdk(stack, bare_python):
    # the unix socket is served by the standard library: scaling, verification and the no-op run need no SDK
    result = scale(stack, 3, python=bare_python)
    assert not result.failed, result
    assert result["changed"] and result["running"] == 3 and len(stack.running()) == 3
    assert not scale(stack, 3, python=bare_python)["changed"]


def test_missing_docker_sdk_is_reported_for_a_tcp_engine(stack, bare_python):
    # the real engine on a loopback port: Compose reaches it over tcp, and the module would need the SDK
    with tcp_to_unix(REAL_SOCKET) as url, docker_host(url):
        before = sha(stack.env_file)
        result = scale(stack, 3, python=bare_python)
    assert result.failed and "Failed to import the required Python library (docker)" in result["msg"]
    assert "not a local unix socket" in result["msg"] and "Nothing was changed" in result["msg"]
    assert sha(stack.env_file) == before and stack.backups() == [] and len(stack.running()) == 2


def test_a_tcp_engine_is_verified_through_the_docker_sdk(stack):
    with tcp_to_unix(REAL_SOCKET) as url, docker_host(url):
        result = scale(stack, 3)
    assert not result.failed, result
    assert result["changed"] and result["running"] == 3 and len(stack.running()) == 3


def test_unreachable_engine_fails_without_touching_env(stack):
    before = sha(stack.env_file)
    env = dict(os.environ)
    os.environ["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    try:
        result = scale(stack, 3)
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert result.failed and "Cannot connect to the Docker daemon" in result["msg"] and result["rc"] != 0
    assert sha(stack.env_file) == before


def test_the_stdlib_engine_client_counts_what_qfc_scale_verified(stack):
    # the collector and the queue modules count workers with the stdlib client; it must agree with the SDK
    result = scale(stack, 3)
    assert not result.failed, result
    assert _engine.count_running_stdlib(stack.project, "worker_wrapper") == 3 == result["running"]
    stack.compose("run", "-d", "--no-deps", "worker_wrapper")  # a one-off container does not count
    stack.containers()[0].stop(timeout=1)
    assert _engine.count_running_stdlib(stack.project, "worker_wrapper") == 2
    assert _engine.count_running_stdlib(stack.project, "app") == 1
    assert _engine.count_running_stdlib("no-such-project", "worker_wrapper") == 0
    assert isinstance(_engine.running_job_ids_stdlib(), set)
