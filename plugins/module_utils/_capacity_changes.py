# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Capacity report, the changes: the operations log's records (read with _oplog) placed on the metrics log's time
line, for the markers on the charts and the "Changes in this period" table.

Time zones: the metrics log's timestamps are the host's local time, written without an offset (``date`` in the
collector's cron job), while the operations log's are UTC (``2026-12-02T23:59:01Z``). Each record's UTC time is
converted to the host's time zone (a ``tzinfo``: the host's own ``/etc/localtime``, which the playbook fetches, an
IANA name, or a fixed offset) and then compared with the rows as written. Converting this way round is exact, DST
included; a local time that occurs twice (the hour the clocks go back) is shown as local time, like the rows.

Pure functions apart from ``timezone_of`` (which may read the zoneinfo database); no clock.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterable, Mapping
    from datetime import datetime

try:
    import zoneinfo  # Python 3.9+
except ImportError:  # pragma: no cover - hosts older than 3.9 run no report
    zoneinfo = None  # type: ignore[assignment]  # module_utils need 3.9+, so this fallback is never taken

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _oplog

OFFSET_RE = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$")
UTC_NAMES = ("", "utc", "z", "gmt", "etc/utc", "etc/gmt", "universal", "zulu")
LABEL_MAX = 24


def timezone_of(spec: object) -> tzinfo:
    """A ``tzinfo`` from ``UTC``, a fixed offset (``+01:00``, ``-0530``, ``UTC+2``) or an IANA name
    (``Europe/Zurich``, through the controller's zoneinfo database). None or "" is UTC. Raises ValueError."""
    text = "" if spec is None else str(spec).strip()
    if text.lower() in UTC_NAMES:
        return timezone.utc
    match = OFFSET_RE.match(text)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ValueError("not a UTC offset: %r" % text)
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if sign == "-" else delta)
    if zoneinfo is None:
        raise ValueError("time zone names need Python 3.9's zoneinfo; give an offset such as +01:00 instead of %r"
                         % text)
    try:
        return zoneinfo.ZoneInfo(text)
    except (ValueError, OSError, LookupError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError("unknown time zone %r (%s)" % (text, exc.__class__.__name__)) from None


def timezone_from_tzif(data: bytes | None, key: str | None = None) -> tzinfo:
    """A ``tzinfo`` from the bytes of a TZif file (a host's ``/etc/localtime``). An empty file is UTC, as glibc
    takes a missing one. Raises ValueError on anything that is not TZif."""
    if not data:
        return timezone.utc
    if zoneinfo is None or not data.startswith(b"TZif"):
        raise ValueError("not a TZif time zone file")
    try:
        return zoneinfo.ZoneInfo.from_file(io.BytesIO(data), key=key)
    except (ValueError, OSError) as exc:
        raise ValueError("not a readable TZif time zone file (%s)" % exc) from None


def local_time(text: Any, tz: tzinfo | None) -> datetime:
    """A record's UTC ``time`` as the naive local time of ``tz`` (None: UTC), comparable with the metrics rows.
    Raises ValueError on a time that does not parse."""
    return _oplog.parse_time(text).astimezone(tz or timezone.utc).replace(tzinfo=None)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def span(before: Any, after: Any) -> str:
    """``2 -> 4`` for worker counts; other values (a cleanup's counts) as ``key=value`` lists."""
    def text(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, dict):
            return ", ".join("%s=%s" % (k, value[k]) for k in sorted(value)) or "-"
        return str(value)
    if before is None and after is not None and not _count(after):
        return text(after)
    return "%s -> %s" % (text(before), text(after))


def label(change: Mapping[str, Any]) -> str:
    """The marker's short label: ``2->4``, the action otherwise; with the result when it is not ``changed``."""
    before, after = change["before"], change["after"]
    short = "%d->%d" % (before, after) if _count(before) and _count(after) else change["action"]
    if change["result"] != "changed":
        short += " " + change["result"].replace("_", " ")
    return short[:LABEL_MAX]


def actor_text(actor: Any) -> str:
    """``AWX job 123 (alice)``, ``alice``, ``schedule (root)``; ``-`` when unknown."""
    if not isinstance(actor, dict):
        return "-"
    user = actor.get("user") or "-"
    if actor.get("awx_job_id"):
        return "AWX job %s (%s)" % (actor["awx_job_id"], user)
    if actor.get("kind") and actor["kind"] not in ("controller",):
        return "%s (%s)" % (actor["kind"], user)
    return user


def changes(records: Iterable[Mapping[str, Any]], tz: tzinfo | None = None, since: datetime | None = None,
            until: datetime | None = None, host: str | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """``(changes, skipped, outside)``: the records inside the report's period as change dicts, oldest first;
    ``skipped`` counts records without a readable time or action, ``outside`` those before ``since`` (excluded) or
    after ``until`` (included), both host-local naive datetimes (None: open). ``host`` names the report's host."""
    picked: list[dict[str, Any]] = []
    skipped = outside = 0
    for index, record in enumerate(records):
        try:
            at = local_time(record.get("time"), tz)
        except (ValueError, TypeError, OverflowError):
            skipped += 1
            continue
        action = record.get("action")
        if not isinstance(action, str) or not action:
            skipped += 1
            continue
        if (since is not None and at <= since) or (until is not None and at > until):
            outside += 1
            continue
        result = str(record.get("result") or "unknown")  # anything but "changed" is drawn as not applied cleanly
        change = {
            "at": at,
            "time": record.get("time"),
            "host": host if host is not None else record.get("host"),
            "action": action,
            "before": record.get("before"),
            "after": record.get("after"),
            "result": result,
            "actor": actor_text(record.get("actor")),
            "reason": str(record.get("reason") or ""),
            "order": index,
        }
        change["label"] = label(change)
        picked.append(change)
    picked.sort(key=lambda c: (c["at"], c["order"]))
    return picked, skipped, outside


def public(change: Mapping[str, Any], fmt: Callable[[datetime], str | None]) -> dict[str, Any]:
    """A change as the module returns it (``fmt`` formats the local time)."""
    return {"local_time": fmt(change["at"]), "time": change["time"], "host": change["host"],
            "action": change["action"], "before": change["before"], "after": change["after"],
            "result": change["result"], "actor": change["actor"], "reason": change["reason"]}
