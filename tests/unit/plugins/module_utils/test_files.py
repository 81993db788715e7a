"""Atomic replacement through symlinks, and what cannot be replaced atomically (decided before any change)."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _files
from ansible_collections.qfieldcloud.ops.plugins.module_utils._files import (
    FileWriteError, LockTimeout, ProjectLock, check_replaceable, mount_points, remove_stale_temporaries,
    replace_problem, write_atomically)


def test_a_plain_file_is_replaceable():
    assert replace_problem("/p/.env", "/p/.env", 1, False) is None


def test_hard_links_are_refused_with_the_reason():
    problem = replace_problem("/p/.env", "/p/.env", 3, False)
    assert "3 hard links" in problem and "other 2" in problem and "Nothing was changed" in problem


def test_a_bind_mount_is_refused_with_the_reason():
    # what a rename over a mount point would meet: EBUSY
    problem = replace_problem("/p/.env", "/srv/env", 1, True)
    assert "(a symlink to /srv/env) is a bind mount" in problem and "EBUSY" in problem


def test_mount_points_decode_escapes(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("36 35 98:0 / / rw,noatime master:1 - ext3 /dev/root rw\n"
                    "40 36 98:0 /src/env /opt/q\\040f/.env rw - ext4 /dev/sda1 rw\n")
    assert mount_points(str(info)) == {"/", "/opt/q f/.env"}


def test_write_through_a_symlink_keeps_the_link_and_the_mode(tmp_path):
    target = tmp_path / "conf" / "env"
    target.parent.mkdir()
    target.write_bytes(b"A=1\n")
    os.chmod(target, 0o640)
    link = tmp_path / ".env"
    link.symlink_to("conf/env")
    assert write_atomically(str(link), b"A=2\n") == str(target)
    assert link.is_symlink() and target.read_bytes() == b"A=2\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["env"]


def test_a_failed_rename_leaves_the_target_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / ".env"
    target.write_bytes(b"A=1\n")

    def busy(_src, _dst):
        raise OSError(errno.EBUSY, "Device or resource busy")
    monkeypatch.setattr(_files.os, "rename", busy)
    with pytest.raises(OSError) as caught:
        write_atomically(str(target), b"A=2\n")
    assert caught.value.errno == errno.EBUSY
    assert target.read_bytes() == b"A=1\n" and [p.name for p in tmp_path.iterdir()] == [".env"]


def test_check_replaceable_on_real_files(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    assert check_replaceable(str(env)) == str(env)
    os.link(env, tmp_path / "other")
    with pytest.raises(FileWriteError, match="2 hard links"):
        check_replaceable(str(env))


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    stale = tmp_path / "..env.k2j_9xq1.tmp"  # mkstemp(prefix=".<name>.")
    stale.write_text("A=2\n")
    other = tmp_path / ".env.bak.tmp"
    other.write_text("mine\n")
    assert remove_stale_temporaries(str(env)) == [str(stale)]
    assert not stale.exists() and other.exists() and env.exists()


def test_write_without_a_module_creates_a_file_with_the_given_mode(tmp_path):
    # what the cron collector and the capacity report need: no AnsibleModule, a file that may not exist yet
    path = tmp_path / "queue.prom"
    assert write_atomically(str(path), "qfc 1\n", mode=0o600) == str(path)
    assert path.read_text() == "qfc 1\n" and path.stat().st_mode & 0o777 == 0o600
    write_atomically(str(path), "qfc 2\n")  # no mode: the existing one is kept
    assert path.read_text() == "qfc 2\n" and path.stat().st_mode & 0o777 == 0o600
    write_atomically(str(path), "qfc 3\n", mode=0o644)  # a given mode wins over the existing one
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.prom"]


def test_a_new_file_without_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomically(str(tmp_path / "report.md"), b"# r\n")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o640


def test_str_data_is_written_as_utf8_and_the_temporary_file_goes_to_tmpdir(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made = []
    real = _files.tempfile.mkstemp

    def spy(**kwargs):
        made.append(kwargs["dir"])
        return real(**kwargs)
    monkeypatch.setattr(_files.tempfile, "mkstemp", spy)
    write_atomically(str(tmp_path / "out.txt"), "Été\n", tmpdir=str(scratch))
    assert made == [str(scratch)] and (tmp_path / "out.txt").read_bytes() == "Été\n".encode()
    assert list(scratch.iterdir()) == []


class _SELinuxModule:
    def __init__(self):
        self.calls = []

    def selinux_enabled(self):
        return True

    def selinux_context(self, path):
        return ["system_u", "object_r", "etc_t", "s0"]

    def set_context_if_different(self, path, context, changed):
        self.calls.append((os.path.basename(path).startswith("..env."), context))
        return changed


def test_a_module_gives_the_temporary_file_the_targets_selinux_context(tmp_path):
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    module = _SELinuxModule()
    write_atomically(str(env), b"A=2\n", module=module)
    assert module.calls == [(True, ["system_u", "object_r", "etc_t", "s0"])] and env.read_text() == "A=2\n"


def test_project_lock_serialises_and_times_out(tmp_path):
    with ProjectLock(str(tmp_path), 0):
        fd = os.open(str(tmp_path), os.O_RDONLY)
        try:  # held: another flock on the directory is refused
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        started = time.time()
        with pytest.raises(LockTimeout) as caught:
            with ProjectLock(str(tmp_path), 0.3):
                pass
        assert time.time() - started >= 0.3
        assert caught.value.msg == ("Another run holds the lock on %s for more than 0.3s. Nothing was changed."
                                    % tmp_path)
    with ProjectLock(str(tmp_path), 0):  # released on exit
        pass
    assert sorted(tmp_path.iterdir()) == []  # nothing left behind


def test_project_lock_waits_for_the_holder(tmp_path):
    holder = ProjectLock(str(tmp_path), 0)
    holder.__enter__()
    timer = threading.Timer(0.3, holder.__exit__, (None, None, None))
    timer.start()
    started = time.time()
    with ProjectLock(str(tmp_path), 10):
        waited = time.time() - started
    timer.join()
    assert 0.2 <= waited < 5


def test_a_writer_that_may_not_give_the_file_away_keeps_it_only_when_asked_to_try(tmp_path, monkeypatch):
    """A non-root cron job replacing a root-owned file gets EPERM from chown: it fails by default (qfc_scale must
    not silently change .env's owner) and writes the file as its own with keep_owner="try" (the collector)."""
    target = tmp_path / "state.json"
    target.write_text("old")
    real_stat = os.stat

    def stat_owned_by_someone_else(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        if str(path) == str(target):
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid + 4242,
                                   st.st_gid + 4242, st.st_size, st.st_atime, st.st_mtime, st.st_ctime))
        return st

    def refuse(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_files.os, "stat", stat_owned_by_someone_else)
    monkeypatch.setattr(_files.os, "chown", refuse)
    with pytest.raises(PermissionError):
        _files.write_atomically(str(target), "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    _files.write_atomically(str(target), "new", keep_owner="try")
    assert target.read_text() == "new"
