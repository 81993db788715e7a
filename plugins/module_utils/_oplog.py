# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The operations log, the one home of its format: one JSON object per line (JSON Lines) for every change that
``qfc_scale``, ``qfc_job_cleanup`` and the autoscaler make on a host.

A record: ``time`` (UTC, ``2026-12-02T23:59:01Z``), ``host``, ``action`` (``scale``, ``autoscale``, ``rollback``,
``job_cleanup``), ``before``, ``after``, ``reason``, ``actor`` (:func:`make_actor`), ``result`` (one of ``RESULTS``)
and, when given, ``details``. Writers append with :func:`append` (one ``write`` under an exclusive ``flock`` on an
``O_APPEND`` descriptor, so concurrent runs never interleave or lose a line; never through a symbolic link, never
into a directory that someone else could write); readers use :func:`read` and :func:`last_recorded_change`, which read
from the end of the file and skip and count every line they cannot parse rather than failing. Standard library only
(the scheduled cleanup runs it without Ansible).
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import math
import os
import re
import socket
import stat
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
    from typing import BinaryIO, NoReturn

DEFAULT_PATH = "/var/log/qfieldcloud/operations.jsonl"
RESULTS = ("changed", "failed", "rolled_back")
ACTIONS = ("scale", "autoscale", "rollback", "job_cleanup")
CHANGE_ACTIONS = ("scale", "autoscale", "rollback")
ACTOR_KINDS = ("awx", "controller", "schedule")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MASK = "********"  # the same mask as _envfile.MASK, repeated so this file needs nothing of the collection
LOCK_TIMEOUT_S = 10.0
OPERATION_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
FILE_MODE = 0o640
DIR_MODE = 0o755
TAIL_CHUNK = 64 * 1024
# The cooldown's read: a record is 300 bytes to a few KiB, so 16 MiB holds tens of thousands of changes, far more than
# any cooldown window (a week at most, _policy.MAX_WINDOW_S) can hold. A change older than this is no recent change.
TAIL_MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 16  # a record nests 4 levels (details -> jobs -> a job); deeper is not ours, and would strain every reader


def argument_spec() -> dict[str, dict[str, Any]]:
    """The options documented by the ``qfieldcloud.ops._oplog`` doc fragment (each module sets ``operation``'s
    default to its own action)."""
    return dict(
        operations_log=dict(type="path", default=DEFAULT_PATH),
        operation=dict(type="str"),
        operation_reason=dict(type="str", default=""),
        operation_actor=dict(type="dict", options=dict(
            awx_job_id=dict(type="str"),
            awx_user_name=dict(type="str"),
            user=dict(type="str"),
        )),
    )


def check_options(params: Mapping[str, Any]) -> None:
    """``operation`` a plain name when given; raises ValueError before the module changes anything."""
    operation = params.get("operation")
    if operation is not None and not OPERATION_RE.match(operation):
        raise ValueError("operation must be a name of letters, digits, '_' or '-' (such as scale, autoscale, "
                         "rollback), got %r." % operation)


def _present(value: object) -> bool:
    return value is not None and str(value).strip() != ""


def local_user() -> str:
    """The user this process runs as, or ``unknown`` (no passwd entry, no LOGNAME in a container)."""
    try:
        return getpass.getuser()
    except Exception:  # getpass raises KeyError/OSError when neither the environment nor passwd name the uid
        return "unknown"


def make_actor(awx_job_id: object = None, awx_user_name: object = None, user: object = None,
               kind: str | None = None) -> dict[str, str]:
    """Who made the change: ``{"kind": "awx", "awx_job_id": "123", "user": "alice"}`` when ``awx_job_id`` is set,
    else ``{"kind": "controller", "user": "bob"}`` (``kind`` overrides it, e.g. ``schedule`` for the host's timer).

    The user falls back from ``awx_user_name`` to ``user`` to the user of this process.
    """
    if kind is not None and kind not in ACTOR_KINDS:
        raise ValueError("actor kind must be one of %s, got %r." % (", ".join(ACTOR_KINDS), kind))
    if _present(awx_job_id):
        actor = {"kind": kind or "awx", "awx_job_id": str(awx_job_id).strip()}
        name = awx_user_name if _present(awx_user_name) else user
    else:
        actor = {"kind": kind or "controller"}
        name = user
    actor["user"] = str(name).strip() if _present(name) else local_user()
    return actor


def format_time(moment: datetime) -> str:
    """``moment`` (aware, or naive meaning UTC) as the log writes it, to the second."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: object) -> datetime:
    """A record's ``time`` as an aware UTC datetime. Accepts ``Z`` or an offset, fractions; naive means UTC.

    Raises ValueError on anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("not a time: %r" % (text,))
    cleaned = text.strip()
    if cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.fromisoformat(cleaned)  # Python 3.9's fromisoformat does not know "Z", hence the swap
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("time out of range: %r" % text[:40]) from None


def make_record(action: str, before: Any, after: Any, reason: str | None, result: str, actor: Mapping[str, Any],
                host: str | None = None, now: datetime | None = None,
                details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One record (a dict, see the module docstring). Raises ValueError on an unknown ``result`` or an empty
    ``action``."""
    if result not in RESULTS:
        raise ValueError("result must be one of %s, got %r." % (", ".join(RESULTS), result))
    if not isinstance(action, str) or not action.strip():
        raise ValueError("action must be a non-empty string, got %r." % (action,))
    if not isinstance(actor, dict):
        raise ValueError("actor must be a dict (make_actor), got %r." % (actor,))
    record = {
        "time": format_time(now if now is not None else datetime.now(timezone.utc)),
        "host": host or socket.gethostname(),
        "action": action.strip(),
        "before": before,
        "after": after,
        "reason": "" if reason is None else str(reason),
        "actor": dict(actor),
        "result": result,
    }
    if details is not None:
        record["details"] = details
    return record


def _mask(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_mask(str(k), secrets): _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v, secrets) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _mask(str(value), secrets)  # datetimes, paths: written as text, so masked as text


def to_line(record: Mapping[str, Any], secrets: Iterable[object] = ()) -> str:
    """The record as one JSON line (keys sorted, ASCII, ending in a newline), each secret in any string masked."""
    # Longest first: a secret that contains a shorter one is masked whole, not left in pieces around the mask.
    ordered = sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)
    line = json.dumps(_mask(record, ordered), sort_keys=True, allow_nan=False)
    return line + "\n"


def _lock(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise OSError(errno.ETIMEDOUT, "another writer held the operations log's lock for %.0f s" % timeout)
        time.sleep(0.01)


def append(path: str, record: Mapping[str, Any], secrets: Iterable[object] = (),
           lock_timeout: float = LOCK_TIMEOUT_S) -> None:
    """Append ``record`` to the log at ``path`` as one line.

    Creates missing parent directories (0755) and the file (0640). One ``os.write`` on an ``O_APPEND`` descriptor
    under an exclusive ``flock`` (given up after ``lock_timeout`` s), so concurrent writers never interleave; a short
    write (full disk) is cut back so no half line is left. The log is an audit trail, so the append refuses (OSError)
    a path that is a symbolic link (also a dangling one: nothing is created through it), anything but a regular file
    with one link, and a directory that a user other than root, this process's user or the file's owner could
    write (such a user could replace the file or forge records). Raises OSError (ValueError for a record JSON cannot
    hold).
    """
    data = to_line(record, secrets).encode("utf-8")
    parent, name = os.path.split(path)
    if parent:
        os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
    # The file is opened relative to the directory checked, so a directory swapped after the check is not used.
    dir_fd = os.open(parent or ".", getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = _open_log(name, dir_fd, path)
    finally:
        os.close(dir_fd)
    try:
        _lock(fd, lock_timeout)
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
        except OSError:
            _cut(fd, size)
            raise
        if written != len(data):
            _cut(fd, size)
            raise OSError(errno.ENOSPC, "only %d of %d bytes written to %s" % (written, len(data), path))
    finally:
        os.close(fd)  # also releases the lock


def _open_log(name: str, dir_fd: int, path: str) -> int:
    """The log's descriptor, opened for appending in ``dir_fd``: created (0640) when missing, never through a link."""
    # O_NONBLOCK: a FIFO at the path must fail the check below, not hang the open. O_NOFOLLOW: a link at the path
    # fails with ELOOP; O_CREAT | O_EXCL does not follow one either, so a dangling link cannot make the file.
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    directory = os.fstat(dir_fd)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        _refuse_open_directory(directory, None, path)
        fd = _create(name, flags, dir_fd, path)
        created = True
    except OSError as exc:
        raise _link_error(exc, path) from None
    else:
        created = False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "the operations log is not a regular file: %s" % path)
        if info.st_nlink != 1:
            raise OSError(errno.EMLINK, "the operations log %s has %d hard links; it is only written when it has "
                          "one" % (path, info.st_nlink))
        if created:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; the mode is the contract
        else:
            _refuse_open_directory(directory, info.st_uid, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create(name: str, flags: int, dir_fd: int, path: str) -> int:
    try:
        return os.open(name, flags | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=dir_fd)
    except FileExistsError:
        # Created since the first open, or a dangling link: open what is there now, never following a link.
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            raise _link_error(exc, path) from None


def _link_error(exc: OSError, path: str) -> OSError:
    if exc.errno == errno.ELOOP:
        return OSError(errno.ELOOP, "the operations log %s is a symbolic link; it is never written through one "
                       "(point operations_log at the file itself)" % path)
    return exc


def _refuse_open_directory(directory: os.stat_result, owner: int | None, path: str) -> None:
    """OSError when the log's directory can be written by a user other than root, this process's user or
    ``owner`` (the file's): that user could replace the file and forge or delete records (the cooldown reads them)."""
    trusted = {0, os.geteuid()} | ({owner} if owner is not None else set())
    mode = directory.st_mode
    if directory.st_uid not in trusted:
        why = "is owned by uid %d" % directory.st_uid
    elif mode & stat.S_IWGRP and directory.st_gid not in (0, os.getegid()):
        why = "is writable by group gid %d" % directory.st_gid
    elif mode & stat.S_IWOTH:
        why = "is writable by every user"
    else:
        return
    raise OSError(errno.EPERM, "the operations log's directory %s %s, who could replace or forge its records; it is "
                  "only written in a directory that only root or the log's owner can write"
                  % (os.path.dirname(os.path.abspath(path)), why))


def _cut(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the reader skips a torn line; the write's own error is the one to report


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """The record on ``line`` (bytes or text), or None for a blank line.

    Raises ValueError for every other line a file can hold: bytes that are not UTF-8, anything but a JSON object,
    NaN, Infinity or a number beyond a float's range, nesting deeper than ``MAX_DEPTH``. Lone surrogates (``\\ud800``)
    become U+FFFD, so a record read can always be printed and returned as JSON.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8")  # UnicodeDecodeError is a ValueError; the writers write ASCII
    text = line.strip()
    if not text:
        return None
    if not text.startswith("{"):
        raise ValueError("not a JSON object")
    try:
        record = _DECODER.decode(text)
    except RecursionError:  # json's parser recurses per level: 100,000 "[" must not end the reader
        raise ValueError("nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    # The walk costs more than the parse: only for a line that could nest too deeply or hold a lone surrogate.
    if text.count("{") + text.count("[") >= MAX_DEPTH or _SURROGATE_ESCAPE_RE.search(text):
        record = _clean(record, 1)
    return record


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError("%s is not a JSON number" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: json would make it inf, which no JSON output can hold
        raise ValueError("number out of range: %s" % text[:40])
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        raise ValueError("nested deeper than %d levels" % MAX_DEPTH)
    if isinstance(value, dict):
        return {_text(k): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


def _text(value: str) -> str:
    if value.isascii():
        return value
    return _SURROGATE_RE.sub("\ufffd", value)  # a lone \udXXX escape: no UTF-8 output could hold it


def _open_regular(path: str) -> BinaryIO | None:
    """The file at ``path`` opened for binary reading, None when missing; OSError when it is not a regular file (a
    FIFO would block the read, a directory has no lines)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "%s is not a regular file" % path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def lines_from_end(handle: BinaryIO, max_bytes: int | None = None, chunk: int = TAIL_CHUNK) -> Iterator[bytes]:
    """The lines (bytes, without their newline) of the binary file ``handle``, newest first, read backwards in
    ``chunk`` bytes and at most ``max_bytes`` from the end (None: the whole file). A line that the cap cuts is left
    out; the file's last line counts without a newline. Memory: a chunk and the longest line."""
    end = handle.seek(0, os.SEEK_END)
    floor = 0 if max_bytes is None else max(end - max_bytes, 0)
    pos, partial = end, []  # partial: the pieces of the line being assembled, rightmost first
    while pos > floor:
        step = min(chunk, pos - floor)
        pos -= step
        handle.seek(pos)
        block = handle.read(step)
        if b"\n" not in block:
            partial.append(block)
            continue
        lines = block.split(b"\n")
        partial.append(lines[-1])
        yield b"".join(reversed(partial))
        yield from reversed(lines[1:-1])
        partial = [lines[0]]
    if floor == 0:
        yield b"".join(reversed(partial))  # the file's first line, whole


def _records_from_end(handle: BinaryIO, max_bytes: int | None, bad: list[int]) -> Iterator[dict[str, Any]]:
    """The records of ``handle``, newest first; ``bad`` (a one-item list) counts the lines skipped."""
    for line in lines_from_end(handle, max_bytes):
        try:
            record = parse_line(line)
        except ValueError:
            bad[0] += 1
            continue
        if record is not None:
            yield record


def read(path: str, host: str | None = None, limit: int | None = None,
         max_bytes: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """``(records oldest first, number of malformed lines skipped)``; only ``host``'s when given; the last
    ``limit`` when given; from at most the last ``max_bytes`` of the file when given.

    The file is read from its end, back only as far as ``limit`` and ``max_bytes`` need, and the lines skipped are
    counted in that part. A missing file is ``([], 0)``; one that is not a regular file, and other OSErrors, are
    raised.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be 0 or more, got %r." % (limit,))
    handle = _open_regular(path)
    if handle is None or limit == 0:
        if handle is not None:
            handle.close()
        return [], 0
    records, bad = [], [0]
    with handle:
        for record in _records_from_end(handle, max_bytes, bad):
            if host is not None and record.get("host") != host:
                continue
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    records.reverse()
    return records, bad[0]


def _change_time(record: Mapping[str, Any], actions: Container[str]) -> datetime | None:
    """The record's time when it is a change of ``actions`` that touched the workers, else None."""
    if record.get("action") not in actions or record.get("result") not in ("changed", "rolled_back"):
        return None
    try:
        return parse_time(record.get("time"))
    except ValueError:
        return None


def last_change(records: Iterable[dict[str, Any]], actions: Container[str] = CHANGE_ACTIONS) -> dict[str, Any] | None:
    """The newest record of ``actions`` whose result is ``changed`` or ``rolled_back`` (a rollback touched the
    workers too), or None. Newest by ``time``; records whose time does not parse are ignored; on equal times the
    later line wins."""
    best = None
    best_time = None
    for record in records:
        moment = _change_time(record, actions)
        if moment is not None and (best_time is None or moment >= best_time):
            best, best_time = record, moment
    return best


def last_recorded_change(path: str, warn: Callable[[str], object] | None = None, max_bytes: int = TAIL_MAX_BYTES,
                         actions: Container[str] = CHANGE_ACTIONS) -> dict[str, Any] | None:
    """The newest change (:func:`last_change`) in the last ``max_bytes`` of the log, else in its last rotation
    (``path.1``, kept uncompressed by the monitoring role's ``delaycompress``: just after the rotation the last change
    sits there, and the cooldown must still see it).

    Only the end of each file is read (``TAIL_MAX_BYTES``, tens of thousands of records, far more than any cooldown
    window holds): a change older than that is no recent change. ``warn`` gets the count of lines skipped. OSError
    when a file exists but cannot be read or is not a regular file.
    """
    for candidate in (path, path + ".1"):
        handle = _open_regular(candidate)
        if handle is None:
            continue
        best, best_time, bad = None, None, [0]
        with handle:
            for record in _records_from_end(handle, max_bytes, bad):
                moment = _change_time(record, actions)
                if moment is not None and (best_time is None or moment > best_time):  # newest first: ties go to
                    best, best_time = record, moment                                     # the later line
        if bad[0] and warn is not None:
            warn("%d unreadable line(s) in the operations log %s were skipped" % (bad[0], candidate))
        if best is not None:
            return best
    return None


def record_change(params: Mapping[str, Any], default_action: str, before: Any, after: Any, reason: str | None,
                  result: str, secrets: Iterable[object] = (), details: Mapping[str, Any] | None = None,
                  host: str | None = None, warn: Callable[[str], object] | None = None,
                  actor_kind: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Append one record for a module run, from the options of ``argument_spec()`` in ``params``.

    Returns ``(record as written, None)``, ``(None, None)`` when ``operations_log`` is empty (logging off), or
    ``(None, error)`` when the log cannot be written: the change stands, so the caller reports, never fails.
    ``warn`` (``module.warn``) is called with the error; ``actor_kind`` overrides the actor's kind (``schedule``).
    """
    path = params.get("operations_log")
    if not path:
        return None, None
    actor = dict(params.get("operation_actor") or {})
    record = make_record(params.get("operation") or default_action, before, after,
                         params.get("operation_reason") or reason, result,
                         make_actor(actor.get("awx_job_id"), actor.get("awx_user_name"), actor.get("user"), actor_kind),
                         host=host, details=details)
    try:
        line = to_line(record, secrets)
        append(path, record, secrets)
    except (OSError, ValueError) as exc:
        error = "The operations log %s was not written (%s); the %s itself stands." % (path, exc, record["action"])
        if warn is not None:
            warn(error)
        return None, error
    return json.loads(line), None
