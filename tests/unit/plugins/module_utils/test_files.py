"""Atomic replacement through symlinks, and what cannot be replaced atomically (decided before any change)."""

from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _files
from ansible_collections.qfieldcloud.ops.plugins.module_utils._files import (
    FileWriteError, check_replaceable, mount_points, remove_stale_temporaries, replace_problem, write_atomically)


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
    assert write_atomically(None, str(link), b"A=2\n") == str(target)
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
        write_atomically(None, str(target), b"A=2\n")
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
