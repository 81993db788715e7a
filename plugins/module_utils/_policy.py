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


def _pct(ratio):
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


def check_thresholds(overrides):
    """The thresholds in force: the defaults with ``overrides`` (numbers) applied.

    Raises KeyError naming the unknown keys (sorted, comma-separated) and ValueError for values that are not finite,
    non-negative numbers."""
    unknown = sorted(set(overrides) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise KeyError(", ".join(unknown))
    merged = dict(DEFAULT_THRESHOLDS)
    merged.update({k: float(v) for k, v in overrides.items()})  # TypeError/ValueError on garbage
    bad = sorted(k for k, v in merged.items() if not math.isfinite(v) or v < 0)
    if bad:
        raise ValueError("thresholds must be finite and not negative: %s"
                         % ", ".join("%s=%s" % (k, overrides[k]) for k in bad))
    return merged


def alerts(facts, workers, thresholds):
    """The seed's alert rules as a list of {severity, code, message}."""
    out = []
    depth = facts["queue_depth"]
    if depth > thresholds["queue_depth_warning"]:
        out.append(("warning", "queue_depth_high", "queue depth %d is above %d: possible saturation"
                    % (depth, thresholds["queue_depth_warning"])))
    running = workers.get("running")
    idle = None if running is None else max(running - workers["busy"], 0)
    waited = facts["oldest_eligible_age_s"]
    if facts["useful_backlog"] and idle and waited is not None and waited > thresholds["idle_grace_s"]:
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


def matrix(depth, success_rate):
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


def decision(facts):
    """The matrix on the current queue depth and last hour's success rate: {action, reason}."""
    action = matrix(facts["queue_depth"], facts["last_hour"]["success_rate"])
    return {"action": action, "reason": SNAPSHOT_REASONS[action]}


def decide(avg_depth, success_rate):
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


def recommended_replicas(facts, workers, cores, per_core=DEFAULT_MAX_REPLICAS_PER_CORE):
    """Enough workers for the jobs running now plus every project that could start one, never fewer than configured,
    never more than the core-count guideline (:func:`_replicas.core_limit`, at least 1). A single snapshot never
    recommends scaling down."""
    limit = max(_replicas.core_limit(cores, per_core), 1)
    demand = workers["busy"] + facts["eligible_projects"]
    current = workers.get("configured") or workers.get("running") or 1
    return min(max(current, demand), limit)
