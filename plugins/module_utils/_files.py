# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Replace a small file atomically, through a symlink, keeping the target's mode, owner and SELinux context.

The file is written beside its target and renamed over it, so a reader (Compose) sees the old or the new bytes,
never a mix. What a rename cannot do safely is refused before any change (:func:`replace_problem`): a file with
other hard links (the rename would split them: the other names keep the old bytes) and a bind-mounted file (a
mount point cannot be renamed over: EBUSY).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile

TMP_SUFFIX = ".tmp"


class FileWriteError(OSError):
    """A write that did not happen; ``msg`` says why and that the file is unchanged."""

    def __init__(self, msg, err=None):
        super().__init__(err or errno.EIO, msg)
        self.msg = msg


def mount_points(mountinfo="/proc/self/mountinfo"):
    """The mount points of this process's mount namespace (octal escapes such as ``\\040`` decoded)."""
    points = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                fields = line.split(" ")
                if len(fields) > 4:
                    points.add(_unescape(fields[4]))
    except OSError:
        pass
    return points


def _unescape(field):
    return field.encode("latin-1", errors="surrogateescape").decode("unicode_escape").encode(
        "latin-1", errors="surrogateescape").decode("utf-8", errors="surrogateescape") if "\\" in field else field


def replace_problem(path, target, nlink, mounted):
    """Pure decision: why ``path`` (resolving to ``target``) cannot be replaced by an atomic rename, or None.

    ``nlink``: the target's link count; ``mounted``: the target (or the link) is a mount point.
    """
    shown = path if path == target else "%s (a symlink to %s)" % (path, target)
    if mounted:
        return ("%s is a bind mount: the kernel refuses to rename a file over a mount point (EBUSY), and writing it "
                "in place is not atomic, so Compose could read a half-written file. Edit the source of the bind "
                "mount instead, or make the path a symlink to it. Nothing was changed." % shown)
    if nlink > 1:
        return ("%s has %d hard links: an atomic rename would give this name new bytes and leave the other %d "
                "name(s) with the old ones. Replace the extra hard links with symlinks (a symlinked .env is edited "
                "through the link). Nothing was changed." % (shown, nlink, nlink - 1))
    return None


def check_replaceable(path):
    """Raise FileWriteError when ``path`` cannot be replaced atomically (see :func:`replace_problem`)."""
    target = os.path.realpath(path)
    st = os.stat(target)
    points = mount_points()
    problem = replace_problem(path, target, st.st_nlink, target in points or os.path.abspath(path) in points)
    if problem:
        raise FileWriteError(problem)
    return target


def write_atomically(module, path, data):
    """Replace the file ``path`` points to (symlinks followed) by ``data``; the link itself is kept.

    The new bytes are written and fsynced in a temporary file beside the target, which takes the target's mode,
    owner and SELinux context, then renamed over it; the directory is fsynced. On failure the target is untouched
    and the temporary file removed; the OSError (ENOSPC, EBUSY, ...) propagates.
    """
    target = os.path.realpath(path)
    st = os.stat(target)
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(target), suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        if module is not None and module.selinux_enabled():
            module.set_context_if_different(tmp, module.selinux_context(target), False)
        os.rename(tmp, target)
        _fsync_dir(directory)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return target


def remove_stale_temporaries(path):
    """Remove the temporary files a killed writer of ``path`` left beside its target (``.<name>.XXXXXXXX.tmp``,
    each a copy of the file's secrets). Call it only while holding the lock that serialises the writers."""
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    pattern = re.compile(r"^\.%s\.[A-Za-z0-9_]{8}%s$" % (re.escape(name), re.escape(TMP_SUFFIX)))
    removed = []
    for entry in os.listdir(directory):
        if pattern.match(entry):
            try:
                os.unlink(os.path.join(directory, entry))
                removed.append(os.path.join(directory, entry))
            except OSError:
                continue
    return removed


def _fsync_dir(directory):
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
