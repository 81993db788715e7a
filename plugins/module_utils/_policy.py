# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The decision policy, in one place: the alert thresholds and rules, the seed's capacity decision matrix (on a
snapshot for qfc_queue_facts and the collector, on a window's averages for the capacity report) and the recommended
worker count. Pure functions on the queue facts; no database, no Engine (the capacity report imports this on the
controller without psycopg2)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Callable, Iterable, Mapping

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _replicas

# The seed write-up's thresholds, overridable per call (qfc_queue_facts' thresholds, the role's
# qfc_monitoring_thresholds).
DEFAULT_THRESHOLDS = {
    "queue_depth_warning": 10,          # queue depth > 10: possible saturation
    "failed_ratio_critical": 0.30,      # failed > 30% of the last hour's finished + failed: systemic issue
    "idle_grace_s": 60,                 # a worker may be idle this long while an eligible job waits (poll interval)
    "pending_after_s": 86400,           # pending longer than this is reported as stuck (not failed: upstream runs it)
}
# The decision matrix: queue depth below DEPTH_BANDS[0], between them, or above DEPTH_BANDS[1]; success rate
# compared with SUCCESS_BANDS (strictly: exactly 80% is neither above nor below 80%).
DEPTH_BANDS = (5, 10)
SUCCESS_BANDS = (0.80, 0.90)
# The per-core guideline of the recommended worker count (defined in _replicas, with the count it gives).
DEFAULT_MAX_REPLICAS_PER_CORE = _replicas.DEFAULT_MAX_REPLICAS_PER_CORE

ACTION_SUMMARY = {
    "stop": "configuration is sufficient",
    "consider": "consider database indexes or caching",
    "investigate": "root-cause analysis needed",
    "monitor": "keep collecting",
}


def _pct(ratio: float) -> str:
    return "%g%%" % (100 * ratio)


LOW, HIGH = DEPTH_BANDS
FAIR, GOOD = SUCCESS_BANDS
# The matrix's rows as the snapshot decision words them (qfc_queue_facts' decision.reason).
SNAPSHOT_REASONS = {
    "stop": "%s (queue < %d, success > %s)" % (ACTION_SUMMARY["stop"], LOW, _pct(GOOD)),
    "consider": "queue %d-%d with success > %s: %s" % (LOW, HIGH, _pct(FAIR), ACTION_SUMMARY["consider"]),
    "investigate": "queue > %d or success < %s: %s" % (HIGH, _pct(FAIR), ACTION_SUMMARY["investigate"]),
    "monitor": "not enough data in the last hour: %s" % ACTION_SUMMARY["monitor"],
}


def check_thresholds(overrides: Mapping[str, Any]) -> dict[str, float]:
    """The thresholds in force: the defaults with ``overrides`` (numbers) applied.

    Raises KeyError naming the unknown keys (sorted, comma-separated) and ValueError for values that are not finite,
    non-negative numbers."""
    unknown = sorted(set(overrides) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise KeyError(", ".join(unknown))
    merged: dict[str, float] = dict(DEFAULT_THRESHOLDS)
    merged.update({k: float(v) for k, v in overrides.items()})  # TypeError/ValueError on garbage
    bad = sorted(k for k, v in merged.items() if not math.isfinite(v) or v < 0)
    if bad:
        raise ValueError("thresholds must be finite and not negative: %s"
                         % ", ".join("%s=%s" % (k, overrides[k]) for k in bad))
    return merged


def alerts(facts: Mapping[str, Any], workers: Mapping[str, Any],
           thresholds: Mapping[str, float]) -> list[dict[str, str]]:
    """The seed's alert rules as a list of {severity, code, message}."""
    out = []
    depth = facts["queue_depth"]
    if depth > thresholds["queue_depth_warning"]:
        out.append(("warning", "queue_depth_high", "queue depth %d is above %d: possible saturation"
                    % (depth, thresholds["queue_depth_warning"])))
    running = workers.get("running")
    idle = None if running is None else max(running - workers["busy"], 0)
    waited = facts["oldest_eligible_age_s"]
    if (facts["useful_backlog"] and idle and running is not None and waited is not None
            and waited > thresholds["idle_grace_s"]):
        out.append(("error", "workers_idle_with_jobs_waiting",
                    "%d of %d workers idle while %d job(s) could start now (oldest waiting %ds): jobs are not being "
                    "processed"
                    % (idle, running, facts["useful_backlog"], waited)))
    last = facts["last_hour"]
    total = last["finished"] + last["failed"]
    if total and last["failed"] / total > thresholds["failed_ratio_critical"]:
        out.append(("critical", "failure_rate_high", "%d of %d jobs failed in the last hour (%.0f%%, limit %.0f%%)"
                    % (last["failed"], total, 100.0 * last["failed"] / total,
                       100.0 * thresholds["failed_ratio_critical"])))
    stuck = facts["stuck"]
    for kind, label in (("stale", "queued/started past the worker timeout (upstream's cron should fail them)"),
                        ("orphaned_queued", "queued but never started (upstream never sweeps them; they block "
                                            "their project)"),
                        ("old_pending", "pending for more than %s s" % thresholds["pending_after_s"])):
        if stuck[kind]:
            out.append(("warning", "stuck_" + kind, "%d jobs %s" % (stuck[kind], label)))
    configured = workers.get("configured")
    if running is not None and configured is not None and running < configured:
        out.append(("error", "workers_missing", "%d of %d configured workers are running" % (running, configured)))
    return [{"severity": s, "code": c, "message": m} for s, c, m in out]


def matrix(depth: float | None, success_rate: float | None) -> str:
    """The seed's capacity decision matrix: ``stop``, ``consider``, ``investigate`` or ``monitor`` for a queue depth
    (a snapshot or an average) and a success rate (0..1, None when no job ended)."""
    rate = success_rate
    if depth is None:
        return "monitor"
    if rate is not None and depth < LOW and rate > GOOD:
        return "stop"
    if rate is not None and LOW <= depth <= HIGH and rate > FAIR:
        return "consider"
    if depth > HIGH or (rate is not None and rate < FAIR):
        return "investigate"
    return "monitor"


def decision(facts: Mapping[str, Any]) -> dict[str, str]:
    """The matrix on the current queue depth and last hour's success rate: {action, reason}."""
    action = matrix(facts["queue_depth"], facts["last_hour"]["success_rate"])
    return {"action": action, "reason": SNAPSHOT_REASONS[action]}


def decide(avg_depth: float | None, success_rate: float | None) -> dict[str, str]:
    """The matrix on a window's average queue depth and success rate (the capacity report): ``action``,
    ``summary`` (what to do), ``basis`` (the figures against the bands) and ``reason`` (both)."""
    action = matrix(avg_depth, success_rate)
    if avg_depth is None:
        basis = "no samples in the window"
    else:
        depth = "average queue depth %s" % ("%d" % avg_depth if isinstance(avg_depth, int) else "%.2f" % avg_depth)
        rate = "success %s" % ("-" if success_rate is None else "%.1f%%" % (100.0 * success_rate))
        if action == "stop":
            basis = "%s < %d and %s > %s" % (depth, LOW, rate, _pct(GOOD))
        elif action == "consider":
            basis = "%s is %d-%d and %s > %s" % (depth, LOW, HIGH, rate, _pct(FAIR))
        elif action == "investigate":
            causes = []
            if avg_depth > HIGH:
                causes.append("%s > %d" % (depth, HIGH))
            if success_rate is not None and success_rate < FAIR:
                causes.append("%s < %s" % (rate, _pct(FAIR)))
            basis = " and ".join(causes)
        elif success_rate is None:
            basis = "%s, but no job ended in the sampled hours" % depth
        else:
            basis = "%s with %s lies between the matrix's bands" % (depth, rate)
    summary = ACTION_SUMMARY[action]
    return {"action": action, "summary": summary, "basis": basis, "reason": "%s: %s" % (basis, summary)}


def recommended_replicas(facts: Mapping[str, Any], workers: Mapping[str, Any], cores: int | None,
                         per_core: float = DEFAULT_MAX_REPLICAS_PER_CORE) -> int:
    """Enough workers for the jobs running now plus every project that could start one, never fewer than configured,
    never more than the core-count guideline (:func:`_replicas.core_limit`, at least 1). A single snapshot never
    recommends scaling down."""
    limit = max(_replicas.core_limit(cores, per_core), 1)
    demand = workers["busy"] + facts["eligible_projects"]
    current = workers.get("configured") or workers.get("running") or 1
    return min(max(current, demand), limit)


# ---------------------------------------------------------------------------------------------------------------
# Autoscaling: one decision from the queue now, the collector's recorded history and the last change.

AUTOSCALE_DEFAULTS = {"min_replicas": 1, "max_replicas": 100, "up_after_s": 600, "down_after_s": 1800,
                      "cooldown_s": 900, "max_step_up": None, "max_step_down": 1}  # max_step_up None = double
# While this critical alert is raised nothing changes: more workers would fail more jobs, fewer would hide them.
CRITICAL_ALERTS = ("failure_rate_high",)
# Alerts that explain why jobs wait better than a lack of workers does: adding workers would not start them.
WAIT_ALERTS = ("stuck_stale", "stuck_orphaned_queued", "workers_idle_with_jobs_waiting")
# The collector's schedule (cron */5) when the history has too few samples to show its own interval.
DEFAULT_SAMPLE_INTERVAL_S = 300
# Consecutive samples further apart than this many intervals: a collector run is missing (a gap). One missed run
# leaves 2 intervals; 1.5 still lets a run start late by half an interval (cron, a slow database).
GAP_FACTOR = 1.5
MAX_WINDOW_S = 7 * 86400  # up_after, down_after, cooldown: a week at most (the log rotates weekly)


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("%s must be a whole number, got %r." % (name, value))
    if not low <= value <= high:
        raise ValueError("%s must be %d to %d, got %d." % (name, low, high, value))
    return value


def check_bounds(bounds: Mapping[str, Any] | None) -> dict[str, Any]:
    """``bounds`` merged over :data:`AUTOSCALE_DEFAULTS` (a None value keeps the default; ``max_step_up`` None
    means double), checked. Raises ValueError naming the bound: unknown keys, non-integers, negatives, min > max,
    counts above the hard ceiling."""
    bounds = dict(bounds or {})
    unknown = sorted(set(bounds) - set(AUTOSCALE_DEFAULTS))
    if unknown:
        raise ValueError("unknown autoscale bounds: %s (known: %s)." % (", ".join(unknown),
                                                                        ", ".join(sorted(AUTOSCALE_DEFAULTS))))
    merged: dict[str, Any] = dict(AUTOSCALE_DEFAULTS)
    merged.update({k: v for k, v in bounds.items() if v is not None})
    _whole("min_replicas", merged["min_replicas"], 0, _replicas.MAX_REPLICAS)
    _whole("max_replicas", merged["max_replicas"], 1, _replicas.MAX_REPLICAS)
    if merged["min_replicas"] > merged["max_replicas"]:
        raise ValueError("min_replicas (%d) is above max_replicas (%d)."
                         % (merged["min_replicas"], merged["max_replicas"]))
    for name in ("up_after_s", "down_after_s", "cooldown_s"):
        _replicas.check_number(name, merged[name], 0, MAX_WINDOW_S, unit=" s")
    if merged["max_step_up"] is not None:
        _whole("max_step_up", merged["max_step_up"], 1, _replicas.MAX_REPLICAS)
    _whole("max_step_down", merged["max_step_down"], 1, _replicas.MAX_REPLICAS)
    return merged


def record_time(record: Mapping[str, Any]) -> datetime:
    """An operations log record's ``time`` (``2026-12-02T23:59:01Z``, or a datetime) as an aware UTC datetime.
    Raises ValueError."""
    value = record.get("time")
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value or "").strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)  # ValueError on garbage; Python 3.9 does not read "Z"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _samples(history: Iterable[dict[str, Any]], now: datetime) -> tuple[list[tuple[float, dict[str, Any]]], int]:
    """The history's rows as (age in seconds, row), newest first, and the number of rows stamped after ``now``.

    The collector stamps rows with the host's local time, without a zone: each is read in ``now``'s zone."""
    rows = history.get("rows", []) if isinstance(history, dict) else (history or [])
    out, future = [], 0
    for row in rows:
        stamp = row["ts"]
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=now.tzinfo)
        age = (now - stamp).total_seconds()
        if age < 0:
            future += 1  # a clock step: not evidence of anything yet
            continue
        out.append((age, row))
    out.sort(key=lambda item: item[0])
    return out, future


def _interval(samples: list[tuple[float, dict[str, Any]]]) -> float:
    """The collector's interval as the history shows it: the median of the newest intervals."""
    steps = sorted(b[0] - a[0] for a, b in zip(samples[:25], samples[1:25]) if b[0] > a[0])
    return steps[(len(steps) - 1) // 2] if steps else DEFAULT_SAMPLE_INTERVAL_S  # the lower median


def _run(samples: list[tuple[float, dict[str, Any]]], holds: Callable[[dict[str, Any]], bool],
         max_gap: float) -> tuple[float, list[tuple[float, dict[str, Any]]], str]:
    """How long a condition has held without a break, by the samples (newest first): the age of the oldest sample
    of the unbroken run that reaches to now. A failed collector run (status=error), a missing run (a gap over
    ``max_gap``) or a sample without the condition ends the run. Returns (seconds, rows of the run, what ended
    it)."""
    run: list[tuple[float, dict[str, Any]]] = []
    last_age = 0.0
    ended = "the start of the history"
    for age, row in samples:
        if age - last_age > max_gap:
            ended = "a gap of %ds without samples before -%ds" % (age - last_age, last_age)
            break
        if row.get("status") != "ok":
            ended = "a failed collector run at -%ds" % age
            break
        if not holds(row):
            ended = "the sample at -%ds" % age
            break
        run.append((age, row))
        last_age = age
    return (run[-1][0] if run else 0.0), run, ended


def _row_current(row: dict[str, Any]) -> int | None:
    configured = row.get("workers_configured")
    return configured if configured is not None else row.get("workers_running")


def _backlog_row(row: dict[str, Any]) -> bool:
    return (row.get("useful_backlog") or 0) > 0


def _idle_row(row: dict[str, Any]) -> bool:
    current, busy = _row_current(row), row.get("workers_busy")
    return row.get("useful_backlog") == 0 and current is not None and busy is not None and busy < current


def _window(samples: list[tuple[float, dict[str, Any]]], fresh: bool,
            holds: Callable[[dict[str, Any]], bool], now_holds: bool, required: float, max_gap: float,
            snapshot_age: float | None = None) -> dict[str, Any]:
    """The evidence that a condition held for ``required`` seconds: from the history when it is recent, else from
    the snapshot's own age (``snapshot_age``; None: the snapshot cannot tell). Returns the window's signals."""
    window: dict[str, Any] = {"required_s": required, "source": "history" if fresh else "snapshot",
                              "sustained_s": 0.0, "samples": 0, "ended_by": None, "met": False}
    if not now_holds:
        window.update(ended_by="the current snapshot")
        return window
    if required == 0:
        window.update(source="snapshot", met=True)
        return window
    if fresh:
        sustained, run, ended = _run(samples, holds, max_gap)
        window.update(sustained_s=round(sustained, 1), samples=len(run), ended_by=ended,
                      met=sustained >= required, rows=[row for _age, row in run if _age <= required]
                      + [row for _age, row in run if _age > required][:1])
    elif snapshot_age is not None:
        window.update(sustained_s=snapshot_age, met=snapshot_age >= required, ended_by="no recent history")
    else:
        window.update(ended_by="no recent history")
    return window


def _fmt_s(seconds: float) -> str:
    return "%ds" % round(seconds)


def autoscale(now: datetime, facts: Mapping[str, Any], workers: Mapping[str, Any],
              alerts: Iterable[dict[str, Any]] | None, history: Iterable[dict[str, Any]],
              last_change: Mapping[str, Any] | None, bounds: Mapping[str, Any] | None,
              cores: int | None, per_core: float = DEFAULT_MAX_REPLICAS_PER_CORE) -> dict[str, Any]:
    """One autoscaling decision: ``{action, current, target, reason, alert, signals}``.

    ``action`` is ``up`` or ``down`` (change the worker count to ``target``), ``hold`` (no change) or
    ``investigate`` (no change: an alert says more workers would not help; ``alert`` names it).

    ``now``: an aware datetime, the host's clock in its local zone (``datetime.now().astimezone()``): the history's
    timestamps are the host's local time without a zone and are read in ``now``'s zone (across a daylight saving
    change the samples of the hour before it are off by that hour: at worst one decision waits or acts a run early).
    ``facts``: qfc_queue_facts' ``qfc_queue``; ``workers``: {configured, running, busy}; ``alerts``: :func:`alerts`;
    ``history``: rows of ``_metrics_log.parse`` (or its result); ``last_change``: an operations log record or None;
    ``bounds``: see :func:`check_bounds`; ``cores``: CPU cores of the host (the core guard).

    The rules, in order: a critical alert holds everything (``investigate``); a count outside the bounds moves into
    them; nothing changes within ``cooldown_s`` of the last change; up when jobs that free workers could start now
    (useful_backlog) have waited for ``up_after_s`` (every recorded sample over that time, reaching back that far,
    or without recent history the oldest such job's age), towards busy + backlog, by at most ``max_step_up``
    (None: double); ``investigate`` instead when stuck jobs or idle workers explain the waiting; down when workers
    sat idle (busy below the count, no useful backlog) for ``down_after_s`` by the history (required), by at most
    ``max_step_down``, never below the window's peak of busy workers. Raises ValueError on bad bounds, a naive
    ``now`` or an unknown worker count.
    """
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (the host's local time with its zone), got %r." % (now,))
    b = check_bounds(bounds)
    configured, running, busy = workers.get("configured"), workers.get("running"), workers.get("busy") or 0
    current = configured if configured is not None else running
    if current is None:
        raise ValueError("the worker count is unknown: neither configured (.env) nor running workers could be read.")
    backlog = facts.get("useful_backlog") or 0
    core_limit = max(_replicas.core_limit(cores, per_core), 1)
    ceiling = min(b["max_replicas"], core_limit, _replicas.MAX_REPLICAS)
    floor = min(b["min_replicas"], ceiling)
    if ceiling == core_limit and core_limit < b["max_replicas"]:
        ceiling_words = "the core guard (%s cores x %s = %d)" % (cores, per_core, core_limit)
    else:
        ceiling_words = "max_replicas %d" % b["max_replicas"]
    samples, future = _samples(history, now)
    interval = _interval(samples)
    max_gap = GAP_FACTOR * interval
    fresh = bool(samples) and samples[0][0] <= max_gap
    up_w = _window(samples, fresh, _backlog_row, backlog > 0, b["up_after_s"], max_gap,
                   facts.get("oldest_eligible_age_s"))
    down_w = _window(samples, fresh, _idle_row, backlog == 0 and busy < current, b["down_after_s"], max_gap)
    peak = max([busy] + [r.get("workers_busy") or 0 for r in down_w.pop("rows", [])])
    up_w.pop("rows", None)
    down_w["peak_busy"] = peak
    since = remaining = None
    if last_change is not None:
        since = (now - record_time(last_change)).total_seconds()
        remaining = max(b["cooldown_s"] - max(since, 0), 0) if since >= 0 else b["cooldown_s"]
    codes = {a["code"]: a for a in alerts or []}
    signals = {
        "now": now.isoformat(), "current": current, "configured": configured, "running": running, "busy": busy,
        "useful_backlog": backlog, "eligible_projects": facts.get("eligible_projects"),
        "oldest_eligible_age_s": facts.get("oldest_eligible_age_s"),
        "history": {"samples": len(samples), "future_samples": future, "interval_s": interval, "max_gap_s": max_gap,
                    "recent": fresh, "newest_age_s": round(samples[0][0], 1) if samples else None},
        "backlog_window": up_w, "idle_window": down_w,
        "cooldown": {"cooldown_s": b["cooldown_s"], "since_last_change_s": None if since is None else round(since, 1),
                     "remaining_s": None if remaining is None else round(remaining, 1)},
        "limits": {"min_replicas": b["min_replicas"], "max_replicas": b["max_replicas"], "floor": floor,
                   "ceiling": ceiling, "core_limit": core_limit, "cores": cores, "per_core": per_core,
                   "hard_ceiling": _replicas.MAX_REPLICAS, "max_step_up": b["max_step_up"],
                   "max_step_down": b["max_step_down"]},
        "alerts": sorted(codes),
    }

    def result(action: str, target: int, reason: str, alert: str | None = None) -> dict[str, Any]:
        return {"action": action, "current": current, "target": target, "reason": reason, "alert": alert,
                "signals": signals}

    for code in CRITICAL_ALERTS:
        if code in codes:
            return result("investigate", current, "critical alert %s: %s; no change while jobs fail like this"
                          % (code, codes[code]["message"]), code)
    if current < floor:
        return result("up", floor, "%d workers is below min_replicas %d: moving into the bounds"
                      % (current, floor))
    if current > ceiling:
        return result("down", ceiling, "%d workers is above %s: moving into the bounds" % (current, ceiling_words))
    if remaining and since is not None and last_change is not None:  # both are set with remaining
        rec = last_change
        when = "%s ago" % _fmt_s(since) if since >= 0 else "stamped %s in the future" % _fmt_s(-since)
        return result("hold", current, "the last change (%s %s -> %s, %s) is within the cooldown of %s: no change "
                      "for another %s" % (rec.get("action"), rec.get("before"), rec.get("after"), when,
                                          _fmt_s(b["cooldown_s"]), _fmt_s(remaining)))
    if up_w["met"]:
        for code in WAIT_ALERTS:
            if code in codes:
                return result("investigate", current, "%d job(s) wait, but alert %s explains it better than too "
                              "few workers: %s; no change" % (backlog, code, codes[code]["message"]), code)
        step = b["max_step_up"] if b["max_step_up"] is not None else max(current, 1)
        demand = busy + backlog
        target = min(demand, current + step, ceiling)
        waited = "%d job(s) could start now and have waited %s (up_after %s, from the %s)" % (
            backlog, _fmt_s(up_w["sustained_s"]), _fmt_s(b["up_after_s"]), up_w["source"])
        if target > current:
            caps = []
            if target < demand:
                caps.append("step %d" % step if target == current + step else "ceiling %d, %s" % (ceiling,
                                                                                                  ceiling_words))
            return result("up", target, "%s: %d busy + %d waiting = %d wanted, %d -> %d%s" % (
                waited, busy, backlog, demand, current, target, " (limited by %s)" % caps[0] if caps else ""))
        if current >= ceiling:
            return result("hold", current, "%s, but %d workers is the ceiling (%s)"
                          % (waited, current, ceiling_words))
        return result("hold", current, "%s, but %d busy + %d waiting = %d is no more than the %d workers: more "
                      "workers would start nothing more" % (waited, busy, backlog, demand, current))
    if down_w["met"]:
        target = max(current - b["max_step_down"], peak, floor)
        idle = "workers idle for %s (down_after %s: busy at most %d of %d, no job waiting)" % (
            _fmt_s(down_w["sustained_s"]), _fmt_s(b["down_after_s"]), peak, current)
        if target < current:
            return result("down", target, "%s: %d -> %d" % (idle, current, target))
        return result("hold", current, "%s, but %d workers is the floor (min_replicas %d)" % (idle, current, floor)
                      if current <= floor else "%s, but the peak of %d busy leaves none to remove" % (idle, peak))
    if backlog:
        return result("hold", current, "%d job(s) could start now, waiting %s of the %s up_after (%s)"
                      % (backlog, _fmt_s(up_w["sustained_s"]), _fmt_s(b["up_after_s"]),
                         "history, ended by %s" % up_w["ended_by"] if fresh
                         else "no recent history: the oldest such job's age"))
    if busy >= current:
        return result("hold", current, "all %d workers busy, no job waiting that a free worker could start"
                      % current)
    if not fresh:
        return result("hold", current, "%d of %d workers busy, no job waiting; scaling down needs the collector's "
                      "history over down_after %s and there is no recent history (%d samples)"
                      % (busy, current, _fmt_s(b["down_after_s"]), len(samples)))
    return result("hold", current, "%d of %d workers busy, no job waiting: idle for %s of the %s down_after "
                  "(ended by %s)" % (busy, current, _fmt_s(down_w["sustained_s"]), _fmt_s(b["down_after_s"]),
                                     down_w["ended_by"]))
