"""qfc_scale under faults and bad input: real Docker Engine, real Compose v2, real Ansible runs.

Hung engines are real unix sockets: one that accepts and never answers, and a byte-for-byte proxy in front of the
real engine that holds one kind of request (``POST /containers/create``) unanswered. Full disks are real tmpfs
mounts, bind mounts real ``mount --bind`` (root is needed; the tests skip with the reason otherwise), and the SDK /
CLI split a real ``unshare`` mount namespace.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.qfieldcloud.ops.plugins.module_utils._compose import KILL_GRACE, PIPE_GRACE

from tests.support.ansible_run import (
    BIN, DIGITS_SECRET, ROOT, SPECIAL_SECRET, SPECIAL_SECRET_ENV, Result, ansible_env, assert_no_secrets)
from tests.support.stacks import FIXTURE, instantiate, make_stack

REAL_SOCKET = "/var/run/docker.sock"


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ansible_cmd(module_args, verbose=False):
    cmd = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable,
           "-m", "qfieldcloud.ops.qfc_scale", "-a", json.dumps(module_args)]
    return cmd + (["-vvv"] if verbose else [])


def parse(proc):
    match = re.search(r"^localhost \| [A-Z!]+ => ", proc.stdout, re.M)
    data = (json.JSONDecoder().raw_decode(proc.stdout, match.end())[0] if match
            else {"failed": True, "msg": "no result line"})
    return Result(proc, data)


def run(module_args, env=None, prefix=(), verbose=False, timeout=600):
    """One real ad-hoc Ansible run of qfc_scale with extra environment for the module; returns (result, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(list(prefix) + ansible_cmd(module_args, verbose), cwd=ROOT, env=ansible_env(env),
                          capture_output=True, text=True, timeout=timeout, check=False)
    return parse(proc), time.monotonic() - started


def scale_args(stack, replicas, **more):
    return dict({"project_src": str(stack.path), "replicas": replicas}, **more)


def wait_for(predicate, timeout=60, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def needs_mount(path):
    """Skip with the reason when this process may not mount (not root, no CAP_SYS_ADMIN)."""
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(path)], capture_output=True,
                           text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("mount is not permitted here (%s); the test needs root with CAP_SYS_ADMIN" % probe.stderr.strip())
    subprocess.run(["umount", str(path)], check=True)


# -- engines that hang ------------------------------------------------------------------------------------------
class EngineSocket:
    """A unix socket served by a thread. ``hang=None``: accept and never answer (a hung engine). ``hang=regex``:
    forward byte for byte to the real engine, except that a connection whose client sends a request line matching
    ``hang`` is held open and never answered from then on (the engine hangs on that call)."""

    def __init__(self, path, hang=None):
        self.path = str(path)
        self.hang = re.compile(hang.encode()) if hang else None
        self.held = 0
        self.sockets = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _addr = self.server.accept()
            except OSError:
                return
            self.sockets.append(conn)
            if self.hang is None:
                self.held += 1
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(REAL_SOCKET)
            self.sockets.append(upstream)
            threading.Thread(target=self.pump, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, conn, False), daemon=True).start()

    def pump(self, src, dst, from_client):
        hung = False
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if not hung:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if from_client and not hung and self.hang.search(data):
                hung = True
                self.held += 1
            if not hung:
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self):
        for sock in [self.server] + self.sockets:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def engine_socket(tmp_path):
    made = []

    def factory(name="engine.sock", hang=None):
        made.append(EngineSocket(tmp_path / name, hang))
        return made[-1]

    yield factory
    for item in made:
        item.close()


CREATE = r"POST /v[0-9.]+/containers/create"


# -- 6: symlinked, hard-linked and bind-mounted .env --------------------------------------------------------------
def test_symlinked_env_is_edited_through_the_link(stack, tmp_path):
    conf = tmp_path / "etc-qfieldcloud"
    conf.mkdir()
    target = conf / "env"
    shutil.move(str(stack.env_file), target)
    os.chmod(target, 0o640)
    os.chown(target, 65534, 65534)
    os.symlink(os.path.relpath(target, stack.path), stack.env_file)
    result, _took = run(scale_args(stack, 3))
    assert not result.failed, result
    assert stack.env_file.is_symlink() and os.path.realpath(stack.env_file) == str(target)
    assert stack.env_value() == "3"
    st = target.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 65534, 65534)
    assert len(stack.running()) == 3
    assert [p.name for p in conf.iterdir()] == ["env"]  # no temporary file left beside the target
    (backup,) = stack.backups()
    assert "QFIELDCLOUD_WORKER_REPLICAS=2\n" in backup.read_text() and not backup.is_symlink()


def test_hard_linked_env_is_refused_before_any_change(tmp_path):
    stack = make_stack(tmp_path, start=False)
    other = tmp_path / "env-hardlink"
    os.link(stack.env_file, other)
    before = sha(stack.env_file)
    result, _took = run(scale_args(stack, 3, apply=False))
    assert result.failed
    assert "2 hard links" in result["msg"] and "Nothing was changed" in result["msg"]
    assert sha(stack.env_file) == sha(other) == before and stack.env_file.stat().st_nlink == 2
    assert stack.backups() == []


def test_bind_mounted_env_is_refused_before_any_change(tmp_path):
    stack = make_stack(tmp_path, start=False)
    probe = tmp_path / "probe"
    probe.mkdir()
    needs_mount(probe)
    source = tmp_path / "env-source"
    shutil.copy(stack.env_file, source)
    subprocess.run(["mount", "--bind", str(source), str(stack.env_file)], check=True)
    try:
        before = sha(source)
        result, _took = run(scale_args(stack, 3, apply=False))
        assert result.failed
        assert "is a bind mount" in result["msg"] and "Nothing was changed" in result["msg"]
        assert sha(source) == before and stack.backups() == []
    finally:
        subprocess.run(["umount", str(stack.env_file)], check=True)


# -- 7: the restore of a rollback fails on a full disk -----------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    needs_mount(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory):
    """Fill the filesystem of ``directory`` until ENOSPC."""
    try:
        with open(os.path.join(directory, "filler"), "wb", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc


def test_restore_failing_on_a_full_disk_keeps_both_errors(tmp_path, tmpfs, engine_socket):
    out = tmp_path / "out"
    stack = instantiate(FIXTURE, tmpfs / "qfieldcloud", "qfct", {"QFIELDCLOUD_WORKER_REPLICAS": 2},
                        {"QFC_SIM_OUT": out})
    try:
        proxy = engine_socket("hang-create.sock", hang=CREATE)
        filled = threading.Event()

        def fill_after_the_write():
            if wait_for(lambda: stack.env_value() == "3", timeout=120):
                fill(tmpfs)
                filled.set()

        watcher = threading.Thread(target=fill_after_the_write)
        watcher.start()
        result, took = run(scale_args(stack, 3, command_timeout=10), env={"DOCKER_HOST": "unix://%s" % proxy.path})
        watcher.join()
        assert filled.is_set() and proxy.held >= 1
        assert result.failed and result["rolled_back"] is False
        # the first failure, with its command
        assert "did not finish within its deadline of 10s" in result["msg"]
        assert " up " in result["cmd"] and "rc" in result.data and "stderr" in result.data
        # the second one
        assert "restoring .env failed" in result["rollback_error"] and "No space left" in result["rollback_error"]
        assert "Rollback failed: restoring .env failed" in result["msg"]
        # the state now
        assert result["env_value"] == "3" == stack.env_value()
        assert result["running"] == 2 == len(stack.running())
        assert ".env written (QFIELDCLOUD_WORKER_REPLICAS=3)" in result["msg"]
        print("measured: %.1fs for the Ansible run; %s" % (took, result["msg"][:160]))
        assert took < 10 + 5 + 30  # compose killed at 10 s; the rest is Ansible and the rollback's ps
        assert_no_secrets(result.output)
    finally:
        stack.down()


# -- 8: the Engine API client cannot reach the engine the CLI reaches ------------------------------------------------
@pytest.fixture
def docker_config(tmp_path):
    """A private DOCKER_CONFIG (the shared ~/.docker is not touched) with a context ``qfct`` on the real engine."""
    config = tmp_path / "docker-config"
    config.mkdir()

    def create(name, host):
        subprocess.run(["docker", "context", "create", name, "--docker", "host=%s" % host], check=True,
                       capture_output=True, env=dict(os.environ, DOCKER_CONFIG=str(config)))
    create("qfct", "unix://%s" % REAL_SOCKET)
    return config, create


def test_sdk_unreachable_while_the_cli_works_fails_before_any_write(stack, tmp_path, docker_config):
    config, _create = docker_config
    cli = tmp_path / "docker-with-context"  # the real docker CLI, told to use a context (the SDK knows no flags)
    cli.write_text("#!/bin/sh\nexec docker --context qfct \"$@\"\n")
    cli.chmod(0o755)
    before = sha(stack.env_file)
    result, took = run(scale_args(stack, 3, docker_cli=str(cli)),
                       env={"DOCKER_HOST": "unix://%s" % (tmp_path / "nobody.sock"), "DOCKER_CONFIG": str(config)})
    assert result.failed, result
    assert "(a unix socket connection) cannot reach the Docker Engine at DOCKER_HOST=unix://" in result["msg"]
    assert "nothing was changed" in result["msg"]
    assert sha(stack.env_file) == before and stack.backups() == []
    assert len(stack.running()) == 2
    assert took < 30


def test_sdk_follows_the_cli_context_when_docker_host_is_unset(stack, tmp_path, docker_config):
    """In a private mount namespace the default socket is dead; the CLI's context points at the engine."""
    config, create = docker_config
    real = tmp_path / "real.sock"
    real.touch()
    dead = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(dead))  # bound, never listening: connections are refused
    create("qfct-moved", "unix://%s" % real)
    # The CLI the module runs picks the context (docker_cli, as for a rootless or remote engine); the SDK sees no
    # flag. (docker SDK 7.2 would follow ~/.docker/config.json's currentContext by itself, older ones do not.)
    cli = tmp_path / "docker-moved"
    cli.write_text("#!/bin/sh\nexec docker --context qfct-moved \"$@\"\n")
    cli.chmod(0o755)
    script = ("mount --bind {sock} {real} && mount --bind {dead} {sock} && exec \"$@\""
              .format(sock=os.path.realpath(REAL_SOCKET), real=real, dead=dead))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("cannot bind-mount in a private mount namespace: %s" % probe.stderr.strip())
    env = {"DOCKER_CONFIG": str(config)}
    ansible = ansible_env(env)
    ansible.pop("DOCKER_HOST", None)
    started = time.monotonic()
    cmd = ["unshare", "-m", "sh", "-c", script, "sh"] + ansible_cmd(scale_args(stack, 3, docker_cli=str(cli)))
    proc = subprocess.run(cmd, cwd=ROOT, env=ansible, capture_output=True, text=True, timeout=600, check=False)
    result = parse(proc)
    sock.close()
    assert not result.failed, result
    assert result["running"] == 3 == len(stack.running()) and stack.env_value() == "3"
    assert time.monotonic() - started < 120


# -- the Engine hangs ---------------------------------------------------------------------------------------------
def test_hung_engine_fails_the_preflight_within_its_deadline(stack, engine_socket):
    hung = engine_socket("hung.sock")
    before = sha(stack.env_file)
    result, took = run(scale_args(stack, 3, command_timeout=10), env={"DOCKER_HOST": "unix://%s" % hung.path})
    assert result.failed, result
    assert "did not finish within its deadline of 10s" in result["msg"] and "Nothing was changed" in result["msg"]
    assert result["cmd"] and "rc" in result.data
    assert sha(stack.env_file) == before and stack.backups() == []
    assert hung.held >= 1
    print("measured: %.1fs for the Ansible run; %s" % (took, result["msg"][:160]))
    assert took < 10 + 5 + 10, took  # the deadline + the kill grace + Ansible's own start (measured ~14 s)


def test_compose_up_hung_is_killed_at_its_deadline_and_rolled_back(stack, engine_socket):
    proxy = engine_socket("hang-create.sock", hang=CREATE)
    result, took = run(scale_args(stack, 3, command_timeout=10), env={"DOCKER_HOST": "unix://%s" % proxy.path})
    assert result.failed and proxy.held >= 1
    assert "docker compose up did not finish within its deadline of 10s" in result["msg"]
    assert " up " in result["cmd"] and "--scale worker_wrapper=3" in result["cmd"]
    assert result["rolled_back"] is True
    assert "Rolled back: .env restored (QFIELDCLOUD_WORKER_REPLICAS=2)" in result["msg"]
    assert stack.env_value() == "2" and result["env_value"] == "2"
    assert result["running"] == 2 == len(stack.running())
    print("measured: %.1fs for the Ansible run; %s" % (took, result["msg"][:160]))
    assert took < 10 + 5 + 30, took


def fake_docker(tmp_path, scale_up, pattern='*" up "*"worker_wrapper=3 "*'):
    """A docker CLI on PATH that runs the real one (``$REAL``), except for the calls whose arguments match the shell
    ``pattern`` (default: the scale-up to 3), which run the shell code ``scale_up`` first. Returns the environment
    for :func:`run`."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "docker").write_text('#!/bin/sh\nREAL=%s\ncase " $* " in\n  %s)\n%s\n    ;;\nesac\nexec "$REAL" "$@"\n'
                                 % (shutil.which("docker"), pattern, scale_up))
    (fake / "docker").chmod(0o755)
    return {"PATH": "%s:%s:%s" % (fake, BIN, os.environ["PATH"])}


def test_compose_up_whose_pipe_a_process_outside_its_group_holds_still_meets_its_deadline(stack, tmp_path):
    """Issue 21, defect 4: killing the process group does not close a pipe that a process outside the group holds
    (an ssh ControlPersist master behind an ssh:// DOCKER_HOST; here ``setsid sleep``, for 60 s: before the fix the
    run waited for it). Reading stops PIPE_GRACE after the SIGKILL; the failure keeps cmd/rc/stderr with what was
    read, says why, and the rollback runs as for any hung ``up``."""
    pidfile = tmp_path / "stray.pid"
    env = fake_docker(tmp_path, "    echo 'fake docker: compose up started; a helper outside the process group holds "
                                "this pipe' >&2\n    setsid sh -c 'echo $$ > %s; exec sleep 60' &\n    exec sleep 600"
                      % pidfile)
    try:
        result, took = run(scale_args(stack, 3, command_timeout=10), env=env)
        assert pidfile.exists()  # the stray really ran
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert result.failed, result
    assert "docker compose up did not finish within its deadline of 10s" in result["msg"]
    assert "a process outside its process group" in result["msg"] and "ssh ControlPersist" in result["msg"]
    assert "Changed so far: backup" in result["msg"]
    assert "Rolled back: .env restored (QFIELDCLOUD_WORKER_REPLICAS=2)" in result["msg"]
    assert " up " in result["cmd"] and "--scale worker_wrapper=3" in result["cmd"] and result["rc"] == -signal.SIGTERM
    assert "a helper outside the process group holds this pipe" in result["stderr"]
    assert result["rolled_back"] is True and stack.env_value() == "2" and result["env_value"] == "2"
    assert result["running"] == 2 == len(stack.running())
    up_took = float(re.search(r"deadline of 10s \(took ([0-9.]+)s", result["msg"]).group(1))
    print("measured: compose up %.1fs (command_timeout 10, kill grace %s, pipe grace %s), the Ansible run %.1fs"
          % (up_took, KILL_GRACE, PIPE_GRACE, took))
    assert up_took < 10 + KILL_GRACE + PIPE_GRACE + 1, up_took
    assert took < 10 + KILL_GRACE + PIPE_GRACE + 20, took  # + Ansible's start, the preflight and the rollback


def test_a_compose_call_that_exits_while_a_process_it_started_holds_its_pipe_returns_at_once(stack, tmp_path):
    """The real trigger of defect 4: behind an ssh:// DOCKER_HOST the CLI starts an ssh ControlPersist master that
    outlives it, in a session of its own, holding stderr. Here every ``docker compose ps`` does so (the real ps then
    answers): the call returns PIPE_GRACE after it exited, with its own status and a warning, and the scale
    succeeds. Before, every such call waited for the stray (30 s)."""
    pids = tmp_path / "strays.pid"
    env = fake_docker(tmp_path, "    setsid sh -c 'echo $$ >> %s; exec sleep 30' &" % pids, pattern='*" ps "*')
    try:
        result, took = run(scale_args(stack, 3), env=env)
    finally:
        for pid in pids.read_text().split() if pids.exists() else ():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not result.failed, result
    assert result["replicas"] == 3 == result["running"] == len(stack.running())
    assert "[WARNING]: docker compose ps exited (rc=0), but a process it left behind" in result.output
    print("measured: the Ansible run %.1fs with %d held ps call(s)" % (took, len(pids.read_text().split())))
    assert took < 25, took


def test_digit_only_and_special_secrets_are_masked_in_a_failed_up_and_its_record(stack, tmp_path):
    """Issue 21, defect 5: a digit-only password and one with $, #, quotes and spaces, echoed by a failing
    ``docker compose up`` after the .env write: masked in msg, stderr (at -vvv) and the operations log's record."""
    stack.env_file.write_text(stack.env_text() + "GEODB_PASSWORD=%s\nMINIO_ROOT_PASSWORD=%s\n"
                              % (DIGITS_SECRET, SPECIAL_SECRET_ENV))
    env = fake_docker(tmp_path, "    cat >&2 <<'EOF'\nError response from daemon: bad env GEODB_PASSWORD=%s and "
                                "MINIO_ROOT_PASSWORD=%s\nEOF\n    exit 1" % (DIGITS_SECRET, SPECIAL_SECRET))
    log = tmp_path / "operations.jsonl"
    result, _took = run(scale_args(stack, 3, operations_log=str(log)), env=env, verbose=True)
    assert result.failed and result["rolled_back"] is True, result
    assert "docker compose up failed: Error response from daemon: bad env" in result["msg"]
    assert "GEODB_PASSWORD=********" in result["stderr"] and "MINIO_ROOT_PASSWORD=********" in result["stderr"]
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["result"] == "rolled_back" and "Error response from daemon" in record["details"]["error"]
    for text in (result.output, log.read_text()):
        assert_no_secrets(text, "p$ss #w", "rd x-7731")
    assert stack.env_value() == "2"


# -- 12, 13, 15: bad numbers and names ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory):
    """A project that is never started: the inputs are refused before anything runs (taken down anyway, so a
    regression that does start workers leaves nothing behind)."""
    created = make_stack(tmp_path_factory.mktemp("idle"), start=False)
    yield created
    created.down()


BIG = 10 ** 12


@pytest.mark.parametrize("args, expected", [
    ({"max_replicas_per_core": "inf"}, "max_replicas_per_core must be a finite number"),
    ({"max_replicas_per_core": "nan"}, "max_replicas_per_core must be a finite number"),
    ({"max_replicas_per_core": -1}, "max_replicas_per_core must be greater than 0"),
    ({"max_replicas_per_core": 0}, "max_replicas_per_core must be greater than 0"),
    ({"max_replicas_per_core": 1e300}, "max_replicas_per_core must be greater than 0 and at most 100"),
    ({"settle_time": "nan"}, "settle_time must be a finite number"),
    ({"settle_time": "inf"}, "settle_time must be a finite number"),
    ({"settle_time": -1}, "settle_time must be at least 0"),
    ({"settle_time": 1e9}, "at most 3600"),
    ({"wait_timeout": 0}, "wait_timeout must be at least 1"),
    ({"wait_timeout": -5}, "wait_timeout must be at least 1"),
    ({"wait_timeout": BIG}, "wait_timeout must be at least 1 s and at most 86400 s"),
    ({"wait_timeout": 1, "settle_time": 1}, "wait_timeout (1s) must be longer than settle_time"),
    ({"lock_timeout": -1}, "lock_timeout must be at least 0"),
    ({"lock_timeout": BIG}, "at most 86400"),
    ({"command_timeout": 0}, "command_timeout must be at least 10"),
    ({"command_timeout": BIG}, "at most 86400"),
    ({"auto_max": 0}, "auto_max must be at least 1"),
    ({"auto_max": BIG}, "auto_max must be at least 1 and at most 100"),
    ({"backup_keep": 0}, "backup_keep must be at least 1"),
    ({"backup_keep": -1}, "backup_keep must be at least 1"),
    ({"backup_keep": BIG}, "at most 1000"),
    ({"replicas": "nan"}, "replicas must be an integer or 'auto'"),
    ({"replicas": "inf"}, "replicas must be an integer or 'auto'"),
    ({"replicas": 101, "force": True}, "hard ceiling of 100 workers per host, which force=true does not lift"),
    ({"replicas": 9223372036854775807, "force": True}, "hard ceiling of 100"),
    ({"replicas": -1, "force": True}, "replicas must be 0 or more"),
    ({"env_var": "QFC_X\nPOSTGRES_PASSWORD"}, "env_var must be a .env variable name"),
    ({"env_var": "QFC_X=1"}, "env_var must be a .env variable name"),
    ({"env_var": "QFC X"}, "env_var must be a .env variable name"),
    ({"env_var": ""}, "env_var must be a .env variable name"),
    ({"service": "worker_wrapper\nx"}, "service must be a Compose service name"),
    ({"service": "worker=x"}, "service must be a Compose service name"),
    ({"service": "-worker"}, "service must be a Compose service name"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_bad_input_is_refused_before_any_change(idle_stack, args, expected):
    before = sha(idle_stack.env_file)
    module_args = dict({"replicas": 2}, **args)
    result, _took = run(scale_args(idle_stack, module_args.pop("replicas"), **module_args))
    assert result.failed
    assert expected in result["msg"], result["msg"]
    assert "Nothing was changed" in result["msg"]
    assert "Traceback" not in result.output
    assert sha(idle_stack.env_file) == before and idle_stack.backups() == []
    assert "POSTGRES_PASSWORD=1" not in idle_stack.env_text()


# -- secrets in Compose's own error messages -----------------------------------------------------------------------
def test_url_passwords_short_and_escaped_secrets_are_masked_in_compose_errors(stack):
    secrets = {
        "DATABASE_URL": "postgres://qfc:Pw9x@db:5432/qfc",  # a URL under a key that does not look secret
        "DJANGO_SUPERUSER_PASSWORD": '"s3\\"k\\\\\u00e9-x"',  # Compose prints it Go-escaped: s3\"k\\\xc3\xa9-x
        "SECRET_KEY": "k3y!z",  # shorter than 6 characters
        "S3_ENDPOINT": "https://AKIAQFCT:wJalr5ecret@s3.example.com/bucket?X-Amz-Signature=f00dfeed",
        "GEODB_PASSWORD": "83920147",  # digits only (issue 21, defect 5: never masked)
        "MINIO_ROOT_PASSWORD": '"p\\$ss #w\\"o\'rd x"',  # $, #, both quotes, spaces: p$ss #w"o'rd x
    }
    stack.env_file.write_text(stack.env_text() + "".join("%s=%s\n" % kv for kv in secrets.items()))
    (stack.path / "docker-compose.override.prod.yml").write_text(
        "services:\n  app:\n    mem_limit: ${DATABASE_URL}\n    stop_grace_period: ${DJANGO_SUPERUSER_PASSWORD}\n"
        "  ofelia:\n    mem_limit: ${SECRET_KEY}\n    stop_grace_period: ${GEODB_PASSWORD}\n"
        "  memcached:\n    mem_limit: ${S3_ENDPOINT}\n    stop_grace_period: ${MINIO_ROOT_PASSWORD}\n")
    direct = stack.compose("config", check=False)
    # Compose really echoes them, escaped where it quotes with Go
    assert "Pw9x" in direct.stderr and "k3y!z" in direct.stderr and "wJalr5ecret" in direct.stderr
    assert 's3\\"k\\\\\\xc3\\xa9-x' in direct.stderr
    assert 'duration "83920147"' in direct.stderr and 'duration "p$ss #w\\"o\'rd x"' in direct.stderr
    result, _took = run(scale_args(stack, 3), verbose=True)
    assert result.failed and "does not load" in result["msg"]
    assert "invalid size" in result["stderr"] and "********" in result["stderr"]
    for leaked in ("Pw9x", "k3y!z", "wJalr5ecret", "f00dfeed", "83920147", "p$ss #w"):
        assert leaked not in result.output, leaked
    for text in (result["stderr"], result["msg"]):  # decoded: Compose's Go escaping as it printed it
        assert 's3\\"k' not in text and 's3"k' not in text and "\\xc3\\xa9-x" not in text
    assert_no_secrets(result.output)


# -- edits by another tool ---------------------------------------------------------------------------------------
def test_an_edit_made_during_the_run_is_not_overwritten_by_the_rollback(stack):
    stack.set_env("QFC_SIM_CRASH", "1")  # new workers crash: the scale-up is rolled back after wait_timeout

    def rotate_a_secret():
        if wait_for(lambda: stack.env_value() == "4", timeout=120):
            with open(stack.env_file, "a") as handle:
                handle.write("QFC_ROTATED_BY_ANOTHER_TOOL=yes\n")

    watcher = threading.Thread(target=rotate_a_secret)
    watcher.start()
    result, _took = run(scale_args(stack, 4, wait_timeout=8))
    watcher.join()
    assert result.failed and result["rolled_back"] is False
    assert "changed by something else after this run wrote it" in result["rollback_error"]
    assert "QFC_ROTATED_BY_ANOTHER_TOOL=yes" in stack.env_text() and stack.env_value() == "4"
    assert result["env_value"] == "4"
    assert "expected 4 running worker_wrapper" in result["msg"]


# -- backups -----------------------------------------------------------------------------------------------------
def test_backup_keep_removes_the_oldest_backups(tmp_path):
    stack = make_stack(tmp_path, start=False)
    old = []
    for day in range(1, 13):
        path = stack.path / (".env.%d.2026-01-%02d@00:00:00~" % (100 + day, day))
        path.write_text("old\n")
        old.append(path)
    unrelated = stack.path / ".env.bak"
    unrelated.write_text("mine\n")
    result, _took = run(scale_args(stack, 3, apply=False, backup_keep=3))
    assert not result.failed, result
    kept = stack.backups()
    # the new backup and the two newest old ones, by the timestamp in the name
    assert set(kept) == {Path(result["backup_file"]), old[-2], old[-1]}
    assert sorted(result["backups_removed"]) == [str(p) for p in old[:10]]
    assert unrelated.exists()
    # the default keeps 10
    for replicas in (4, 5):
        assert not run(scale_args(stack, replicas, apply=False))[0].failed
    assert len(stack.backups()) == 5


# -- concurrency and kill -9 ---------------------------------------------------------------------------------------
def test_a_second_run_waits_for_the_lock_then_fails_clearly(tmp_path):
    stack = make_stack(tmp_path, start=False)
    before = sha(stack.env_file)
    fd = os.open(stack.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a first run holds for its whole duration
    try:
        result, took = run(scale_args(stack, 3, apply=False, lock_timeout=3))
    finally:
        os.close(fd)
    assert result.failed and "Another run holds the lock" in result["msg"] and "lock_timeout=3s" in result["msg"]
    assert "Nothing was changed" in result["msg"]
    assert sha(stack.env_file) == before and stack.backups() == []
    assert 3 <= took < 3 + 10
    after, _took = run(scale_args(stack, 3, apply=False))
    assert not after.failed and stack.env_value() == "3"


def start_module(module_args, env=None):
    return subprocess.Popen(ansible_cmd(module_args), cwd=ROOT, env=ansible_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc/%s/stat" % entry).read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_9_the_module(proc):
    """kill -9 of ansible and the module (Ansible's worker runs it in a session of its own, so a process-group kill
    of ansible would miss it); the docker CLI the module started is left running, as after a real kill -9."""
    ours = [p for p in descendants(proc.pid) if b"docker" not in cmdline(p)]
    assert any(b"AnsiballZ_qfc_scale" in cmdline(p) for p in ours)
    for pid in [proc.pid] + ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def test_kill_9_after_the_env_write_then_a_rerun_reconciles(stack):
    proc = start_module(scale_args(stack, 4))
    assert wait_for(lambda: stack.env_value() == "4", timeout=120)
    kill_9_the_module(proc)
    assert stack.env_value() == "4" and len(stack.backups()) == 1
    assert not list(stack.path.glob("*.tmp"))
    stale = stack.path / "..env.k2j_9xq1.tmp"  # what a kill between the temporary write and the rename leaves
    stale.write_text(stack.env_text())
    rerun, _took = run(scale_args(stack, 4))
    assert not rerun.failed, rerun
    assert not stale.exists() and "a temporary copy of .env left by a run that was killed" in rerun.output
    assert rerun["running"] == 4 == len(stack.running())
    again, _took = run(scale_args(stack, 4))
    assert not again.failed and again["changed"] is False


def test_kill_9_during_a_hung_compose_up_then_a_rerun_reconciles(stack, engine_socket):
    proxy = engine_socket("hang-create.sock", hang=CREATE)
    proc = start_module(scale_args(stack, 3), env={"DOCKER_HOST": "unix://%s" % proxy.path})
    assert wait_for(lambda: proxy.held >= 1, timeout=120)  # compose up waits on the engine
    start_time = time.monotonic()
    compose = [p for p in descendants(proc.pid) if b"compose" in cmdline(p) and b" up " in cmdline(p)]
    kill_9_the_module(proc)
    assert compose and all(cmdline(p) for p in compose)  # docker compose up outlives the module, still hung
    assert stack.env_value() == "3" and len(stack.running()) == 2
    rerun, _took = run(scale_args(stack, 3))  # the lock died with the module; the real engine answers
    assert not rerun.failed, rerun
    assert rerun["changed"] is True and rerun["running"] == 3 == len(stack.running())
    assert time.monotonic() - start_time < 60  # the rerun did not wait for the orphan


def test_a_full_disk_before_the_write_changes_nothing(tmp_path, tmpfs):
    stack = instantiate(FIXTURE, tmpfs / "qfieldcloud", "qfct", {"QFIELDCLOUD_WORKER_REPLICAS": 2},
                        {"QFC_SIM_OUT": tmp_path / "out"}, start=False)
    before = sha(stack.env_file)
    fill(tmpfs)
    for backup in (True, False):
        result, _took = run(scale_args(stack, 3, apply=False, backup=backup))
        assert result.failed
        assert ("Backing up" if backup else "Writing") in result["msg"] and "No space left" in result["msg"]
        assert "Nothing was changed" in result["msg"] or ".env is unchanged" in result["msg"]
        assert sha(stack.env_file) == before
        assert not list(stack.path.glob("*.tmp")) and stack.backups() == []  # no truncated copy either
