# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Files the collection writes: atomic replacement and the project lock. Standard library only, so the cron
collector (no Ansible on its path at run time) uses it as the modules do.

API:

- ``write_atomically(path, data, mode=None, tmpdir=None, module=None)`` -> the path written (symlinks resolved).
  Replaces the file ``path`` points to by ``data`` (bytes, or str written as UTF-8): written and fsynced in a
  temporary file, renamed over the target, directory fsynced. A reader sees the old or the new bytes, never a mix.
  A symlink is followed and kept. An existing target keeps its owner and, unless ``mode`` is given, its mode; a new
  file gets ``mode`` or 0o666 minus the umask. ``tmpdir``: where the temporary file is made (default: beside the
  target; it must be on the target's file system). ``module``: an AnsibleModule, only to give the temporary file
  the target's SELinux context. On failure the target is untouched, the temporary file removed and the OSError
  (ENOSPC, EBUSY, ...) propagates. No AnsibleModule is needed.
- ``check_replaceable(path)``: raise :class:`FileWriteError` before any change when a rename cannot replace the
  file safely (:func:`replace_problem`): a file with other hard links (the other names would keep the old bytes)
  or a bind-mounted file (a mount point cannot be renamed over: EBUSY).
- ``remove_stale_temporaries(path)``: the temporary files a killed writer left (call it under the lock).
- ``prune_backups(path, keep)`` -> (removed, failures): keep the ``keep`` newest backups of ``path`` made by
  ``AnsibleModule.backup_local`` (``<name>.<pid>.<YYYY-mm-dd@HH:MM:SS>~``); ``remove_partial_backups(path, pid)``:
  remove what a failed backup by process ``pid`` left.
- ``ProjectLock(directory, timeout)``: a context manager holding an exclusive ``flock`` on a directory (for
  qfc_scale, the one holding ``.env``); waits up to ``timeout`` seconds, then raises :class:`LockTimeout`. Nothing
  is left on disk, and a killed holder releases it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterator
    from typing import Literal

    from ansible.module_utils.basic import AnsibleModule

TMP_SUFFIX = ".tmp"
BACKUP_RE = r"^%s\.\d+\.(\d{4}-\d\d-\d\d@\d\d:\d\d:\d\d)~$"  # AnsibleModule.backup_local's names


class FileWriteError(OSError):
    """A write that did not happen; ``msg`` says why and that the file is unchanged."""

    def __init__(self, msg: str, err: int | None = None) -> None:
        super().__init__(err or errno.EIO, msg)
        self.msg = msg


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """The mount points of this process's mount namespace (octal escapes such as ``\\040`` decoded)."""
    points: set[str] = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                fields = line.split(" ")
                if len(fields) > 4:
                    points.add(_unescape(fields[4]))
    except OSError:
        pass
    return points


def _unescape(field: str) -> str:
    return field.encode("latin-1", errors="surrogateescape").decode("unicode_escape").encode(
        "latin-1", errors="surrogateescape").decode("utf-8", errors="surrogateescape") if "\\" in field else field


def replace_problem(path: str, target: str, nlink: int, mounted: bool) -> str | None:
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


def check_replaceable(path: str) -> str:
    """Raise FileWriteError when ``path`` cannot be replaced atomically (see :func:`replace_problem`)."""
    target = os.path.realpath(path)
    st = os.stat(target)
    points = mount_points()
    problem = replace_problem(path, target, st.st_nlink, target in points or os.path.abspath(path) in points)
    if problem:
        raise FileWriteError(problem)
    return target


def write_atomically(path: str, data: str | bytes, mode: int | None = None, tmpdir: str | None = None,
                     module: AnsibleModule | None = None, keep_owner: bool | Literal["try"] = True) -> str:
    """Replace the file ``path`` points to (symlinks followed) by ``data``; the link itself is kept.

    ``data``: bytes, or str (written as UTF-8). The new bytes are written and fsynced in a temporary file (in
    ``tmpdir``, default beside the target), which takes the target's owner, its mode (or ``mode`` when given; a new
    file: ``mode`` or 0o666 minus the umask) and, with ``module`` (an AnsibleModule), its SELinux context; it is then
    renamed over the target and the directory fsynced. On failure the target is untouched and the temporary file
    removed; the OSError (ENOSPC, EBUSY, ...) propagates. Returns the target's path.

    ``keep_owner="try"``: a writer that may not give the file away (a non-root cron job replacing a file an earlier
    root run left) writes it as its own, as ``mv`` would, instead of failing with EPERM.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(dir=tmpdir or directory, prefix=".%s." % os.path.basename(target), suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_owner and st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                if keep_owner != "try":
                    raise
        if mode is None:
            mode = st.st_mode & 0o7777 if st is not None else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        if st is not None and module is not None and module.selinux_enabled():
            module.set_context_if_different(tmp, module.selinux_context(target), False)
        os.rename(tmp, target)
        _fsync_dir(directory)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(path: str) -> list[str]:
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


def _backups(path: str, pid: int | None = None) -> Iterator[tuple[str, str]]:
    """(stamp, path) of the backups of ``path`` beside it (only those of process ``pid`` when given)."""
    directory, base = os.path.split(path)
    source = BACKUP_RE if pid is None else BACKUP_RE.replace(r"\d+", str(int(pid)), 1)
    pattern = re.compile(source % re.escape(base))
    for name in os.listdir(directory):
        match = pattern.match(name)
        if match:
            yield match.group(1), os.path.join(directory, name)


def remove_partial_backups(path: str, pid: int) -> None:
    """A failed copy leaves a truncated backup named after the process that made it; remove it."""
    for _stamp, backup in _backups(path, pid):
        try:
            os.unlink(backup)
        except OSError:
            pass


def prune_backups(path: str, keep: int) -> tuple[list[str], list[tuple[str, OSError]]]:
    """Keep the ``keep`` newest backups of ``path`` (each holds every secret); older ones are removed.

    Returns (removed paths, [(path, OSError)] that could not be removed)."""
    found: list[tuple[str, int, str]] = []
    for stamp, backup in _backups(path):
        try:
            found.append((stamp, os.lstat(backup).st_ctime_ns, backup))
        except OSError:
            continue
    removed: list[str] = []
    failures: list[tuple[str, OSError]] = []
    for _stamp, _ctime, backup in sorted(found, reverse=True)[keep:]:
        try:
            os.unlink(backup)
            removed.append(backup)
        except OSError as exc:
            failures.append((backup, exc))
    return removed, failures


def _fsync_dir(directory: str) -> None:
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


class LockTimeout(Exception):
    """The lock stayed taken for ``timeout`` seconds; ``msg`` says so (and that nothing was changed)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.msg = "Another run holds the lock on %s for more than %ss. Nothing was changed." % (path, timeout)
        super().__init__(self.msg)


class ProjectLock:
    """An exclusive flock on a directory (the one holding .env): one writer per project at a time, nothing left
    behind, released by the kernel when its holder dies. ``with ProjectLock(directory, timeout):`` waits up to
    ``timeout`` seconds (polling every 0.1 s), then raises :class:`LockTimeout`."""

    def __init__(self, path: str, timeout: float, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = path
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.fd: int | None = None

    def __enter__(self) -> ProjectLock:
        self.fd = os.open(self.path, os.O_RDONLY)
        deadline = self.clock() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(self.fd)
                    raise
                if self.clock() >= deadline:
                    os.close(self.fd)
                    raise LockTimeout(self.path, self.timeout) from exc
                self.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
