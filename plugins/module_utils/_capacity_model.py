# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Capacity report, the model: time windows of the collector's queue metrics log (parsed by _metrics_log), per-host
and fleet figures, and _policy's decision on them. _capacity_render turns the model into Markdown and HTML.

Pure functions, no I/O and no clock: a report depends only on the rows it is given, so the same log gives the same
bytes (the module's idempotence rests on that).

The log has one row every 5 minutes and no header; the columns are ``COLUMNS``. Timestamps are the host's local time
(``date '+%Y-%m-%d %H:%M:%S'``) and are compared as written.

Two figures cannot be read off the rows directly:

* Jobs and success rate. ``finished_last_hour`` and ``failed_last_hour`` are sliding one-hour counts sampled every
  5 minutes, so a job appears in about 12 consecutive rows and summing every row counts it 12 times. Walking back from
  the newest row, rows at least an hour apart (``JITTER_S`` of slack for cron and collection time) are kept: their
  hours do not overlap, so each job is counted once and the sums are real job counts. The success rate over the
  window is finished / (finished + failed) of those sums, i.e. weighted by jobs, not a mean of hourly rates.
  ``hours_covered`` says how many hours were sampled: an hour without a successful row (database down, collector
  stopped) is missing from the counts. The oldest sampled hour may reach up to an hour before the window.
* Duration percentiles. ``duration_p50_s`` and ``duration_p95_s`` describe the finished jobs of a longer sliding window
  (24 h in the collector, qfc_queue_facts' default). Percentiles cannot be summed or averaged exactly, so rows one
  duration window apart are kept the same way (each job counted once), each is modelled as a log-normal distribution
  through its p50 and p95, weighted by the jobs finished in its period (from the hourly counts), and the p95 (and
  p50) of that mixture is solved numerically. The result always lies between the smallest and the largest period
  p95 (a property of any mixture); the largest is returned as ``p95_max_s``, an upper bound. When the window is no
  longer than the duration window, the figure is the newest row's own p95, which may include jobs older than the
  window.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from datetime import tzinfo

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _capacity_changes, _metrics_log, _policy


HOUR_S = 3600
DEFAULT_DURATION_WINDOW_S = 86400   # the collector's duration columns: the last 24 h, as qfc_queue_facts' default
JITTER_S = 60                       # rows "an hour apart" may be this much closer (cron start, collection time)
DEFAULT_INTERVAL_S = 300            # the collector's cron period
Z95 = 1.6448536269514722            # standard normal quantile of 0.95


# ---------------------------------------------------------------------------------------------------------- windows


@overload
def parse_timestamp(value: None) -> None:
    ...


@overload
def parse_timestamp(value: datetime | str) -> datetime:
    ...


def parse_timestamp(value: datetime | str | None) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    return datetime.strptime(value, _metrics_log.TIMESTAMP_FORMAT)


def window(rows: Sequence[dict[str, Any]], since: datetime | str | None = None, until: datetime | str | None = None,
           last_s: float | None = None) -> list[dict[str, Any]]:
    """Rows with ``since <= ts <= until`` (either bound optional; datetimes or strings in the log's format).

    With ``last_s``, the window is the last ``last_s`` seconds up to ``until`` (default: the newest row), the start
    excluded: ``last_s=3600`` on 5-minute rows keeps 12 of them."""
    first, last = parse_timestamp(since), parse_timestamp(until)
    if last_s is not None:
        if last is None:
            if not rows:
                return []
            last = max(r["ts"] for r in rows)
        start = last - timedelta(seconds=last_s)
        return [r for r in rows if start < r["ts"] <= last]
    return [r for r in rows if (first is None or r["ts"] >= first) and (last is None or r["ts"] <= last)]


def fmt_ts(value: datetime | None) -> str | None:
    return None if value is None else value.strftime(_metrics_log.TIMESTAMP_FORMAT)


# ---------------------------------------------------------------------------------------------------------- figures


def _values(rows: Iterable[dict[str, Any]], column: str) -> list[Any]:
    return [r[column] for r in rows if r["status"] == "ok" and r[column] is not None]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def spaced(rows: Sequence[dict[str, Any]], spacing_s: float,
           known: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Walk back from the newest row for which ``known(row)`` is true, keeping rows at least ``spacing_s`` (less
    ``JITTER_S``) apart: their sliding windows of ``spacing_s`` do not overlap. Newest first."""
    picked: list[dict[str, Any]] = []
    limit: datetime | None = None
    for row in reversed(rows):
        if row["status"] != "ok" or not known(row):
            continue
        if limit is None or row["ts"] <= limit:
            picked.append(row)
            limit = row["ts"] - timedelta(seconds=spacing_s - JITTER_S)
    return picked


def hourly_samples(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return spaced(rows, HOUR_S, lambda r: r["finished_last_hour"] is not None and r["failed_last_hour"] is not None)


def duration_periods(rows: Sequence[dict[str, Any]], hourly: Sequence[dict[str, Any]],
                     duration_window_s: float = DEFAULT_DURATION_WINDOW_S) -> list[tuple[float, float | None, float]]:
    """(weight, p50, p95) for rows one duration window apart; the weight is the jobs finished in that period,
    from the hourly samples."""
    periods: list[tuple[float, float | None, float]] = []
    for row in spaced(rows, duration_window_s, lambda r: r["duration_p95_s"] is not None):
        start = row["ts"] - timedelta(seconds=duration_window_s)
        weight = sum(h["finished_last_hour"] for h in hourly if start < h["ts"] <= row["ts"])
        periods.append((weight, row["duration_p50_s"], row["duration_p95_s"]))
    return periods


def _cdf(x: float, p50: float | None, p95: float) -> float:
    """CDF at x of the log-normal distribution through (p50, p95); a point mass at p95 when that is degenerate."""
    if p50 is None or p50 <= 0 or p95 <= p50:
        return 1.0 if x >= p95 else 0.0
    if x <= 0:
        return 0.0
    mu = math.log(p50)
    sigma = (math.log(p95) - mu) / Z95
    return 0.5 * (1.0 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2.0))))


def mixture_quantile(periods: Iterable[tuple[float, float | None, float | None]], q: float) -> float | None:
    """The q-quantile of the weighted mixture of per-period log-normal fits, by bisection. ``periods`` holds
    (weight, p50, p95); equal weights when they sum to zero. Returns None without periods."""
    kept = [(w, p50, p95) for w, p50, p95 in periods if p95 is not None]
    if not kept:
        return None
    if sum(w for w, _p50, _p95 in kept) <= 0:
        kept = [(1, p50, p95) for _w, p50, p95 in kept]
    kept = [p for p in kept if p[0] > 0]
    total = float(sum(p[0] for p in kept))

    def own_quantile(p50: float | None, p95: float) -> float:
        return p95 if q >= 0.95 or p50 is None or p50 > p95 else p50

    # Every part has its own q-quantile in [lo, hi], so the mixture's is there too.
    lo = min(own_quantile(p50, p95) for _w, p50, p95 in kept)
    hi = max(own_quantile(p50, p95) for _w, p50, p95 in kept)
    if hi - lo < 1e-9:
        return hi
    for _step in range(80):
        mid = (lo + hi) / 2.0
        if sum(w * _cdf(mid, p50, p95) for w, p50, p95 in kept) / total >= q:
            hi = mid
        else:
            lo = mid
    return hi


def intervals(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [(b["ts"] - a["ts"]).total_seconds() for a, b in zip(rows, rows[1:])]


def figures(host_rows: Sequence[Sequence[dict[str, Any]]],
            duration_window_s: float = DEFAULT_DURATION_WINDOW_S) -> dict[str, Any]:
    """Figures over the rows of one host (``[rows]``) or of the fleet (one list of rows per host, each sorted).

    Queue depth, backlog and worker averages are per host and sample; for the fleet, depth stays a per-server
    average (the matrix's thresholds are per server) while the worker counts are summed over the hosts."""
    rows = [r for one in host_rows for r in one]
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    depth = [(r["queue_depth"], r["ts"]) for r in ok if r["queue_depth"] is not None]
    peak = max(depth, key=lambda d: (d[0], d[1])) if depth else None
    hourly = [hourly_samples(one) for one in host_rows]
    finished = sum(h["finished_last_hour"] for one in hourly for h in one)
    failed = sum(h["failed_last_hour"] for one in hourly for h in one)
    periods = [p for one, picks in zip(host_rows, hourly) for p in duration_periods(one, picks, duration_window_s)]
    p95s = [p[2] for p in periods]
    success = round(finished / float(finished + failed), 4) if finished + failed else None
    avg_depth = _round(mean([d[0] for d in depth]))

    def per_host_sum(column: str, reduce_: Callable[[list[Any]], Any]) -> float | None:
        values = [reduce_(_values(one, column)) for one in host_rows if _values(one, column)]
        return _round(sum(values)) if values else None

    used = capacity = 0
    for r in ok:
        cap = r["workers_running"] if r["workers_running"] is not None else r["workers_configured"]
        if r["workers_busy"] is not None and cap:
            used += min(r["workers_busy"], cap)
            capacity += cap
    gaps = [max(intervals(one)) for one in host_rows if len(one) > 1]
    last_error = max(errors, key=lambda r: r["ts"]) if errors else None
    busy = _values(rows, "workers_busy")
    return {
        "samples": len(rows),
        "ok_samples": len(ok),
        "error_samples": len(errors),
        "availability": round(len(ok) / float(len(rows)), 4) if rows else None,
        "first": fmt_ts(min(r["ts"] for r in rows)) if rows else None,
        "last": fmt_ts(max(r["ts"] for r in rows)) if rows else None,
        "largest_gap_s": int(max(gaps)) if gaps else None,
        "queue_depth": {
            "avg": avg_depth,
            "peak": peak[0] if peak else None,
            "peak_at": fmt_ts(peak[1]) if peak else None,
        },
        "useful_backlog": {
            "avg": _round(mean(_values(rows, "useful_backlog"))),
            "peak": max(_values(rows, "useful_backlog"), default=None),
        },
        "workers": {
            "configured": per_host_sum("workers_configured", lambda v: v[-1]),
            "running_avg": per_host_sum("workers_running", mean),
            "busy_avg": per_host_sum("workers_busy", mean),
            "busy_peak": max(busy, default=None) if len(host_rows) == 1 else None,
            "utilisation": round(used / float(capacity), 4) if capacity else None,
        },
        "jobs": {"finished": finished, "failed": failed, "success_rate": success,
                 "hours_covered": sum(len(one) for one in hourly)},
        "duration": {
            "p50_s": _round(mixture_quantile(periods, 0.5), 1),
            "p95_s": _round(mixture_quantile(periods, 0.95), 1),
            "p95_max_s": _round(max(p95s), 1) if p95s else None,
            "periods": len(periods),
        },
        "stuck": {kind: max(_values(rows, "stuck_" + kind), default=None)
                  for kind in ("stale", "orphaned_queued", "old_pending")},
        "last_error": {"at": fmt_ts(last_error["ts"]), "message": last_error["error"]} if last_error else None,
        "decision": _policy.decide(avg_depth, success),
    }


def build(logs: Mapping[str, dict[str, Any] | None], window_s: float | None = None,
          title: str = "QFieldCloud capacity report",
          duration_window_s: float = DEFAULT_DURATION_WINDOW_S, until: datetime | str | None = None,
          operations: Mapping[str, Any] | None = None, timezones: Mapping[str, tzinfo] | None = None) -> dict[str, Any]:
    """The report's model. ``logs`` maps a host to ``parse()``'s result, or to None when it has no log.

    The window ends at ``until``, by default the newest row of any host (never the clock, so that the same logs
    give the same report), and spans ``window_s`` seconds (None: every row).

    ``operations`` (optional) maps a host to its operations log as ``_oplog.read`` gives it, ``(records, skipped)``,
    or to None; ``timezones`` maps a host to its ``tzinfo`` (default UTC). With it, each host gets ``changes`` (see
    _capacity_changes) and the model ``changes`` (every host's, oldest first); without it the model is as before."""
    newest = [p["rows"][-1]["ts"] for p in logs.values() if p and p["rows"]]
    until = parse_timestamp(until) or (max(newest) if newest else None)
    hosts: list[dict[str, Any]] = []
    names = set(logs) | set(operations or {})
    for name in sorted(names):
        parsed = logs.get(name)
        rows: list[dict[str, Any]] = []
        if parsed and until is not None:
            rows = window(parsed["rows"], until=until, last_s=window_s) if window_s else \
                window(parsed["rows"], until=until)
        hosts.append({
            "name": name,
            "log": None if parsed is None else {k: parsed[k] for k in ("lines", "blank", "garbled", "first_garbled")},
            "rows_total": len(parsed["rows"]) if parsed else 0,
            "newest": fmt_ts(parsed["rows"][-1]["ts"]) if parsed and parsed["rows"] else None,
            "rows": rows,
            "figures": figures([rows], duration_window_s),
        })
        if operations is not None:
            hosts[-1].update(_host_changes(name, operations.get(name), (timezones or {}).get(name), until, window_s))
    model = {
        "title": title,
        "window_s": window_s,
        "until": fmt_ts(until),
        "duration_window_s": duration_window_s,
        "hosts": hosts,
        "fleet": figures([h["rows"] for h in hosts if h["rows"]], duration_window_s),
    }
    if operations is not None:
        model["changes"] = sorted((c for h in hosts for c in h["changes"]), key=lambda c: (c["at"], c["host"]))
    return model


def _host_changes(name: str, oplog: tuple[list[dict[str, Any]], int] | None, tz: tzinfo | None, until: datetime | None,
                  window_s: float | None) -> dict[str, Any]:
    """A host's changes inside the report's period: ``(since, until]`` in its local time; none without a period."""
    records, skipped = oplog if oplog is not None else ([], 0)
    if until is None:
        picked: list[dict[str, Any]] = []
        bad, outside = 0, len(records)
    else:
        since = until - timedelta(seconds=window_s) if window_s else None
        picked, bad, outside = _capacity_changes.changes(records, tz, since, until, host=name)
    return {"changes": picked, "operations": {"log": oplog is not None, "records": len(records),
                                              "skipped": skipped + bad, "outside": outside}}


def result(model: Mapping[str, Any]) -> dict[str, Any]:
    """What the module returns: the figures, without the rows (and the changes, when the model has them)."""
    out = {
        "window_s": model["window_s"],
        "until": model["until"],
        "hosts": {h["name"]: dict(h["figures"], log=_log_state(h), rows_in_window=len(h["rows"]),
                                  garbled_lines=h["log"]["garbled"] if h["log"] else 0)
                  for h in model["hosts"]},
        "fleet": model["fleet"],
    }
    if "changes" in model:
        out["changes"] = [_capacity_changes.public(c, fmt_ts) for c in model["changes"]]
        for host in model["hosts"]:
            out["hosts"][host["name"]]["operations"] = dict(host["operations"], in_period=len(host["changes"]))
    return out


def _log_state(host: Mapping[str, Any]) -> str:
    if host["log"] is None:
        return "missing"
    if not host["rows_total"]:
        return "empty"
    return "ok" if host["rows"] else "outside_window"
