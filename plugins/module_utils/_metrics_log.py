# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The queue metrics log (CSV), the one home of its format: the collector writes rows with :func:`format_row`, the
capacity report reads them with :func:`parse_line` / :func:`parse`.

One row per collector run, no header. The columns are ``COLUMNS``; the first two are the seed write-up's
``timestamp,queue_depth``, so its awk one-liners keep working. Timestamps are the host's local time in
``TIMESTAMP_FORMAT``. A failed run writes ``status=error``, its message (commas replaced) and no figures. Rows written
before ``worker_timeout_source`` existed end at ``error`` and still parse. Standard library only (the collector runs
it without Ansible).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Iterable, Mapping

COLUMNS = ("timestamp", "queue_depth", "pending", "queued", "started", "useful_backlog", "workers_configured",
           "workers_running", "workers_busy", "finished_last_hour", "failed_last_hour", "success_rate",
           "duration_p50_s", "duration_p95_s", "stuck_stale", "stuck_orphaned_queued", "stuck_old_pending", "status",
           "error", "worker_timeout_source")
NUMERIC_COLUMNS = COLUMNS[1:17]
FLOAT_COLUMNS = ("success_rate", "duration_p50_s", "duration_p95_s")
STATUS_INDEX = COLUMNS.index("status")
TIMEOUT_SOURCES = ("option", "env", "constance", "default")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

# Where each figure comes from: the queue facts (qfc_queue_facts' structure) or the worker counts.
_FROM_FACTS = {
    "queue_depth": ("queue_depth",), "pending": ("by_status", "pending"), "queued": ("by_status", "queued"),
    "started": ("by_status", "started"), "useful_backlog": ("useful_backlog",),
    "finished_last_hour": ("last_hour", "finished"), "failed_last_hour": ("last_hour", "failed"),
    "success_rate": ("last_hour", "success_rate"), "duration_p50_s": ("duration", "p50_s"),
    "duration_p95_s": ("duration", "p95_s"), "stuck_stale": ("stuck", "stale"),
    "stuck_orphaned_queued": ("stuck", "orphaned_queued"), "stuck_old_pending": ("stuck", "old_pending"),
    "worker_timeout_source": ("worker_timeout_source",),
}
_FROM_WORKERS = {"workers_configured": "configured", "workers_running": "running", "workers_busy": "busy"}


def fmt(value: Any) -> str:
    """A value as written: empty for None, floats with at most 4 decimals and no trailing zeros."""
    if value is None:
        return ""
    if isinstance(value, float):
        return ("%.4f" % value).rstrip("0").rstrip(".")
    return str(value)


def _dig(facts: Any, path: Iterable[str]) -> Any:
    for key in path:
        facts = facts[key]
    return facts


def format_row(stamp: datetime | str, facts: Mapping[str, Any] | None = None,
               workers: Mapping[str, Any] | None = None, error: str | None = None) -> str:
    """One line of the log (with its newline). ``stamp``: a datetime or a string in ``TIMESTAMP_FORMAT``.

    With ``facts`` (the queue facts) and ``workers`` ({configured, running, busy}) an ``ok`` row; without, an
    ``error`` row carrying ``error`` (commas become semicolons, newlines spaces: one row, one message field)."""
    if isinstance(stamp, datetime):
        stamp = stamp.strftime(TIMESTAMP_FORMAT)
    values: dict[str, Any] = dict.fromkeys(COLUMNS, None)
    values["timestamp"] = stamp
    if facts is None:
        values.update(status="error", error=(error or "").replace(",", ";").replace("\n", " "))
    else:  # an ok row has both
        if workers is None:
            raise ValueError("format_row: facts without workers")
        values.update({column: _dig(facts, path) for column, path in _FROM_FACTS.items()})
        values.update({column: workers[key] for column, key in _FROM_WORKERS.items()})
        values.update(status="ok", error="")
    return ",".join(fmt(values[c]) for c in COLUMNS) + "\n"


def _number(raw: str, column: str) -> float | None:
    text = raw.strip()
    if not text:
        return None
    value = float(text)  # ValueError on garbage
    if not math.isfinite(value) or value < 0:
        raise ValueError("%s is %r" % (column, text))
    if column == "success_rate":
        if value > 1:
            raise ValueError("success_rate %r is above 1" % text)
        return value
    if column in FLOAT_COLUMNS:
        return value
    if not value.is_integer():
        raise ValueError("%s %r is not a whole number" % (column, text))
    return int(value)


def parse_line(line: str) -> dict[str, Any]:
    """One row of the log -> dict with ``ts`` (datetime), every numeric column (None when empty), ``status``,
    ``error`` and ``worker_timeout_source`` (None when empty or absent). Raises ValueError when the line is not a row
    of this format."""
    fields = line.rstrip("\r\n").split(",")
    if len(fields) <= STATUS_INDEX:
        raise ValueError("%d columns, expected %d" % (len(fields), len(COLUMNS)))
    source = None
    if len(fields) > STATUS_INDEX + 2 and fields[-1].strip() in TIMEOUT_SOURCES + ("",):
        source = fields.pop().strip() or None  # the last column, absent from older rows
    if len(fields) > STATUS_INDEX + 2:  # an error message whose commas were not replaced
        fields = fields[:STATUS_INDEX + 1] + [",".join(fields[STATUS_INDEX + 1:])]
    try:
        stamp = datetime.strptime(fields[0].strip(), TIMESTAMP_FORMAT)
    except ValueError:
        raise ValueError("timestamp %r is not %s" % (fields[0][:40], TIMESTAMP_FORMAT)) from None
    status = fields[STATUS_INDEX].strip()
    if status not in ("ok", "error"):
        raise ValueError("status %r is neither ok nor error" % status[:40])
    row = {"ts": stamp, "status": status,
           "error": fields[STATUS_INDEX + 1].strip() if len(fields) > STATUS_INDEX + 1 else "",
           "worker_timeout_source": source}
    for column, raw in zip(NUMERIC_COLUMNS, fields[1:STATUS_INDEX]):
        # Error rows carry no figures by contract; whatever is there is not trusted.
        row[column] = _number(raw, column) if status == "ok" else None
    return row


def parse(lines: str | Iterable[str]) -> dict[str, Any]:
    """Parse a log (text or an iterable of lines). Blank and garbled lines are skipped and counted; the rows are
    sorted by time (a clock step or a concatenated log may leave them out of order)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    rows: list[dict[str, Any]] = []
    first_garbled: str | None = None
    blank = garbled = count = 0
    for count, line in enumerate(lines, 1):
        if not line.strip():
            blank += 1
            continue
        try:
            rows.append(parse_line(line))
        except ValueError as exc:
            garbled += 1
            if first_garbled is None:
                first_garbled = "line %d: %s" % (count, exc)
    rows.sort(key=lambda r: r["ts"])
    return {"rows": rows, "lines": count, "blank": blank, "garbled": garbled, "first_garbled": first_garbled}
