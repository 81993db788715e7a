# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The operations log, the one home of its format: one JSON object per line (JSON Lines) for every change that
``qfc_scale``, ``qfc_job_cleanup`` and the autoscaler make on a host.

A record: ``time`` (UTC, ``2026-12-02T23:59:01Z``), ``host``, ``action`` (``scale``, ``autoscale``, ``rollback``,
``job_cleanup``), ``before``, ``after``, ``reason``, ``actor`` (:func:`make_actor`), ``result`` (one of ``RESULTS``)
and, when given, ``details``. Writers append with :func:`append` (one ``write`` under an exclusive ``flock`` on an
``O_APPEND`` descriptor, so concurrent runs never interleave or lose a line); readers use :func:`read`, which skips
and counts lines it cannot parse rather than failing. Standard library only (the scheduled cleanup runs it without
Ansible).
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import re
import socket
import stat
import time
from collections import deque
from datetime import datetime, timezone

DEFAULT_PATH = "/var/log/qfieldcloud/operations.jsonl"
RESULTS = ("changed", "failed", "rolled_back")
ACTIONS = ("scale", "autoscale", "rollback", "job_cleanup")
CHANGE_ACTIONS = ("scale", "autoscale", "rollback")
ACTOR_KINDS = ("awx", "controller", "schedule")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MASK = "********"  # the same mask as _envfile.MASK, repeated so this file needs nothing of the collection
LOCK_TIMEOUT_S = 10.0
OPERATION_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
FILE_MODE = 0o640
DIR_MODE = 0o755


def argument_spec():
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


def check_options(params):
    """``operation`` a plain name when given; raises ValueError before the module changes anything."""
    operation = params.get("operation")
    if operation is not None and not OPERATION_RE.match(operation):
        raise ValueError("operation must be a name of letters, digits, '_' or '-' (such as scale, autoscale, "
                         "rollback), got %r." % operation)


def _present(value):
    return value is not None and str(value).strip() != ""


def local_user():
    """The user this process runs as, or ``unknown`` (no passwd entry, no LOGNAME in a container)."""
    try:
        return getpass.getuser()
    except Exception:  # getpass raises KeyError/OSError when neither the environment nor passwd name the uid
        return "unknown"


def make_actor(awx_job_id=None, awx_user_name=None, user=None, kind=None):
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


def format_time(moment):
    """``moment`` (aware, or naive meaning UTC) as the log writes it, to the second."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text):
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
    return moment.astimezone(timezone.utc)


def make_record(action, before, after, reason, result, actor, host=None, now=None, details=None):
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


def _mask(value, secrets):
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


def to_line(record, secrets=()):
    """The record as one JSON line (keys sorted, ASCII, ending in a newline), each secret in any string masked."""
    # Longest first: a secret that contains a shorter one is masked whole, not left in pieces around the mask.
    ordered = sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)
    line = json.dumps(_mask(record, ordered), sort_keys=True, allow_nan=False)
    return line + "\n"


def _lock(fd, timeout):
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


def append(path, record, secrets=(), lock_timeout=LOCK_TIMEOUT_S):
    """Append ``record`` to the log at ``path`` as one line.

    Creates missing parent directories (0755) and the file (0640). One ``os.write`` on an ``O_APPEND`` descriptor
    under an exclusive ``flock`` (given up after ``lock_timeout`` s), so concurrent writers never interleave; a short
    write (full disk) is cut back so no half line is left. Raises OSError (ValueError for a record JSON cannot hold).
    """
    data = to_line(record, secrets).encode("utf-8")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
    # O_NONBLOCK: a FIFO at the path must fail the check below, not hang the open.
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    except FileExistsError:
        fd = os.open(path, flags)
        created = False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "the operations log is not a regular file: %s" % path)
        if created:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; the mode is the contract
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


def _cut(fd, size):
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # the reader skips a torn line; the write's own error is the one to report


def parse_line(line):
    """The record on ``line``, or None for a blank line. Raises ValueError on anything but a JSON object."""
    text = line.strip()
    if not text:
        return None
    record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


def read(path, host=None, limit=None):
    """``(records oldest first, number of malformed lines skipped)``; only ``host``'s when given; the last
    ``limit`` when given. A missing file is ``([], 0)``; other OSErrors are raised."""
    if limit is not None and limit < 0:
        raise ValueError("limit must be 0 or more, got %r." % (limit,))
    records = deque(maxlen=limit)
    bad = 0
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], 0
    with handle:
        for line in handle:
            try:
                record = parse_line(line)
            except ValueError:
                bad += 1
                continue
            if record is None:
                continue
            if host is not None and record.get("host") != host:
                continue
            records.append(record)
    return list(records), bad


def last_change(records, actions=CHANGE_ACTIONS):
    """The newest record of ``actions`` whose result is ``changed`` or ``rolled_back`` (a rollback touched the
    workers too), or None. Newest by ``time``; records whose time does not parse are ignored; on equal times the
    later line wins."""
    best = None
    best_time = None
    for record in records:
        if record.get("action") not in actions or record.get("result") not in ("changed", "rolled_back"):
            continue
        try:
            moment = parse_time(record.get("time"))
        except ValueError:
            continue
        if best_time is None or moment >= best_time:
            best, best_time = record, moment
    return best


def record_change(params, default_action, before, after, reason, result, secrets=(), details=None, host=None,
                  warn=None, actor_kind=None):
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
