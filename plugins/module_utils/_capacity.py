# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Capacity report from the collector's queue metrics log: parsing, time windows, per-host and fleet figures, the
seed's capacity decision matrix, and Markdown and self-contained HTML (inline CSS, inline SVG charts) renderings.

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

import html
import math
from datetime import datetime, timedelta

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _queue

COLUMNS = ("timestamp", "queue_depth", "pending", "queued", "started", "useful_backlog", "workers_configured",
           "workers_running", "workers_busy", "finished_last_hour", "failed_last_hour", "success_rate",
           "duration_p50_s", "duration_p95_s", "stuck_stale", "stuck_orphaned_queued", "stuck_old_pending", "status",
           "error", "worker_timeout_source")
# Rows written before worker_timeout_source was added end at error; they parse with worker_timeout_source None.
TIMEOUT_SOURCES = ("option", "env", "constance", "default")
NUMERIC_COLUMNS = COLUMNS[1:17]
FLOAT_COLUMNS = ("success_rate", "duration_p50_s", "duration_p95_s")
STATUS_INDEX = 17
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
HOUR_S = 3600
DEFAULT_DURATION_WINDOW_S = 86400   # the collector's duration columns: the last 24 h, as qfc_queue_facts' default
JITTER_S = 60                       # rows "an hour apart" may be this much closer (cron start, collection time)
DEFAULT_INTERVAL_S = 300            # the collector's cron period
Z95 = 1.6448536269514722            # standard normal quantile of 0.95
DEPTH_BANDS = (5, 10)               # the decision matrix's queue depth bands
SUCCESS_BANDS = (0.80, 0.90)        # and success rate bands

ACTION_SUMMARY = {
    "stop": "configuration is sufficient",
    "consider": "consider database indexes or caching",
    "investigate": "root-cause analysis needed",
    "monitor": "keep collecting",
}


# ---------------------------------------------------------------------------------------------------------- parsing

def _number(raw, column):
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


def parse_line(line):
    """One row of the log -> dict with ``ts`` (datetime), every numeric column (None when empty), ``status`` and
    ``error``. Raises ValueError when the line is not a row of the collector's format."""
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
    row = {"ts": stamp, "status": status, "error": fields[STATUS_INDEX + 1].strip() if len(fields) > 18 else "",
           "worker_timeout_source": source}
    for column, raw in zip(NUMERIC_COLUMNS, fields[1:STATUS_INDEX]):
        # Error rows carry no figures by contract; whatever is there is not trusted.
        row[column] = _number(raw, column) if status == "ok" else None
    return row


def parse(lines):
    """Parse a log (text or an iterable of lines). Blank and garbled lines are skipped and counted; the rows are
    sorted by time (a clock step or a concatenated log may leave them out of order)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    rows, blank, garbled, first_garbled, count = [], 0, 0, None, 0
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


def parse_timestamp(value):
    return value if isinstance(value, datetime) or value is None else datetime.strptime(value, TIMESTAMP_FORMAT)


def window(rows, since=None, until=None, last_s=None):
    """Rows with ``since <= ts <= until`` (either bound optional; datetimes or strings in the log's format).

    With ``last_s``, the window is the last ``last_s`` seconds up to ``until`` (default: the newest row), the start
    excluded: ``last_s=3600`` on 5-minute rows keeps 12 of them."""
    since, until = parse_timestamp(since), parse_timestamp(until)
    if last_s is not None:
        if until is None:
            if not rows:
                return []
            until = max(r["ts"] for r in rows)
        start = until - timedelta(seconds=last_s)
        return [r for r in rows if start < r["ts"] <= until]
    return [r for r in rows if (since is None or r["ts"] >= since) and (until is None or r["ts"] <= until)]


def fmt_ts(value):
    return None if value is None else value.strftime(TIMESTAMP_FORMAT)


# ---------------------------------------------------------------------------------------------------------- figures

def _values(rows, column):
    return [r[column] for r in rows if r["status"] == "ok" and r[column] is not None]


def _mean(values):
    return sum(values) / len(values) if values else None


def _round(value, digits=2):
    return None if value is None else round(value, digits)


def spaced(rows, spacing_s, known):
    """Walk back from the newest row for which ``known(row)`` is true, keeping rows at least ``spacing_s`` (less
    ``JITTER_S``) apart: their sliding windows of ``spacing_s`` do not overlap. Newest first."""
    picked, limit = [], None
    for row in reversed(rows):
        if row["status"] != "ok" or not known(row):
            continue
        if limit is None or row["ts"] <= limit:
            picked.append(row)
            limit = row["ts"] - timedelta(seconds=spacing_s - JITTER_S)
    return picked


def hourly_samples(rows):
    return spaced(rows, HOUR_S, lambda r: r["finished_last_hour"] is not None and r["failed_last_hour"] is not None)


def duration_periods(rows, hourly, duration_window_s=DEFAULT_DURATION_WINDOW_S):
    """(weight, p50, p95) for rows one duration window apart; the weight is the jobs finished in that period,
    from the hourly samples."""
    periods = []
    for row in spaced(rows, duration_window_s, lambda r: r["duration_p95_s"] is not None):
        start = row["ts"] - timedelta(seconds=duration_window_s)
        weight = sum(h["finished_last_hour"] for h in hourly if start < h["ts"] <= row["ts"])
        periods.append((weight, row["duration_p50_s"], row["duration_p95_s"]))
    return periods


def _cdf(x, p50, p95):
    """CDF at x of the log-normal distribution through (p50, p95); a point mass at p95 when that is degenerate."""
    if p50 is None or p50 <= 0 or p95 <= p50:
        return 1.0 if x >= p95 else 0.0
    if x <= 0:
        return 0.0
    mu = math.log(p50)
    sigma = (math.log(p95) - mu) / Z95
    return 0.5 * (1.0 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2.0))))


def mixture_quantile(periods, q):
    """The q-quantile of the weighted mixture of per-period log-normal fits, by bisection. ``periods`` holds
    (weight, p50, p95); equal weights when they sum to zero. Returns None without periods."""
    periods = [(w, p50, p95) for w, p50, p95 in periods if p95 is not None]
    if not periods:
        return None
    if sum(w for w, _p50, _p95 in periods) <= 0:
        periods = [(1, p50, p95) for _w, p50, p95 in periods]
    periods = [p for p in periods if p[0] > 0]
    total = float(sum(p[0] for p in periods))

    def own_quantile(p50, p95):
        return p95 if q >= 0.95 or p50 is None or p50 > p95 else p50

    # Every part has its own q-quantile in [lo, hi], so the mixture's is there too.
    lo = min(own_quantile(p50, p95) for _w, p50, p95 in periods)
    hi = max(own_quantile(p50, p95) for _w, p50, p95 in periods)
    if hi - lo < 1e-9:
        return hi
    for _step in range(80):
        mid = (lo + hi) / 2.0
        if sum(w * _cdf(mid, p50, p95) for w, p50, p95 in periods) / total >= q:
            hi = mid
        else:
            lo = mid
    return hi


def decide(avg_depth, success_rate):
    """The seed's capacity decision matrix (``_queue.decision``'s thresholds) on a window's average queue depth and
    success rate: ``action``, ``summary`` (what to do), ``basis`` (the figures) and ``reason`` (both)."""
    if avg_depth is None:
        action, basis = "monitor", "no samples in the window"
    else:
        action = _queue.decision({"queue_depth": avg_depth, "last_hour": {"success_rate": success_rate}})["action"]
        depth = "average queue depth %s" % _fmt_num(avg_depth, 2)
        rate = "success %s" % _fmt_pct(success_rate)
        if action == "stop":
            basis = "%s < 5 and %s > 90%%" % (depth, rate)
        elif action == "consider":
            basis = "%s is 5-10 and %s > 80%%" % (depth, rate)
        elif action == "investigate":
            causes = []
            if avg_depth > DEPTH_BANDS[1]:
                causes.append("%s > 10" % depth)
            if success_rate is not None and success_rate < SUCCESS_BANDS[0]:
                causes.append("%s < 80%%" % rate)
            basis = " and ".join(causes)
        elif success_rate is None:
            basis = "%s, but no job ended in the sampled hours" % depth
        else:
            basis = "%s with %s lies between the matrix's bands" % (depth, rate)
    summary = ACTION_SUMMARY[action]
    return {"action": action, "summary": summary, "basis": basis, "reason": "%s: %s" % (basis, summary)}


def _intervals(rows):
    return [(b["ts"] - a["ts"]).total_seconds() for a, b in zip(rows, rows[1:])]


def figures(host_rows, duration_window_s=DEFAULT_DURATION_WINDOW_S):
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
    avg_depth = _round(_mean([d[0] for d in depth]))

    def per_host_sum(column, reduce_):
        values = [reduce_(_values(one, column)) for one in host_rows if _values(one, column)]
        return _round(sum(values)) if values else None

    used = capacity = 0
    for r in ok:
        cap = r["workers_running"] if r["workers_running"] is not None else r["workers_configured"]
        if r["workers_busy"] is not None and cap:
            used += min(r["workers_busy"], cap)
            capacity += cap
    gaps = [max(_intervals(one)) for one in host_rows if len(one) > 1]
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
            "avg": _round(_mean(_values(rows, "useful_backlog"))),
            "peak": max(_values(rows, "useful_backlog"), default=None),
        },
        "workers": {
            "configured": per_host_sum("workers_configured", lambda v: v[-1]),
            "running_avg": per_host_sum("workers_running", _mean),
            "busy_avg": per_host_sum("workers_busy", _mean),
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
        "decision": decide(avg_depth, success),
    }


def build(logs, window_s=None, title="QFieldCloud capacity report", duration_window_s=DEFAULT_DURATION_WINDOW_S,
          until=None):
    """The report's model. ``logs`` maps a host to ``parse()``'s result, or to None when it has no log.

    The window ends at ``until``, by default the newest row of any host (never the clock, so that the same logs
    give the same report), and spans ``window_s`` seconds (None: every row)."""
    newest = [p["rows"][-1]["ts"] for p in logs.values() if p and p["rows"]]
    until = parse_timestamp(until) or (max(newest) if newest else None)
    hosts = []
    for name in sorted(logs):
        parsed = logs[name]
        rows = []
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
    return {
        "title": title,
        "window_s": window_s,
        "until": fmt_ts(until),
        "duration_window_s": duration_window_s,
        "hosts": hosts,
        "fleet": figures([h["rows"] for h in hosts if h["rows"]], duration_window_s),
    }


def result(model):
    """What the module returns: the figures, without the rows."""
    return {
        "window_s": model["window_s"],
        "until": model["until"],
        "hosts": {h["name"]: dict(h["figures"], log=_log_state(h), rows_in_window=len(h["rows"]),
                                  garbled_lines=h["log"]["garbled"] if h["log"] else 0)
                  for h in model["hosts"]},
        "fleet": model["fleet"],
    }


def _log_state(host):
    if host["log"] is None:
        return "missing"
    if not host["rows_total"]:
        return "empty"
    return "ok" if host["rows"] else "outside_window"


# ------------------------------------------------------------------------------------------------------- formatting

def _fmt_num(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and digits == 0:
        return "%d" % value
    return "%.*f" % (digits, value)


def _fmt_pct(value, digits=1):
    return "-" if value is None else "%.*f%%" % (digits, 100.0 * value)


def _fmt_duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 90:
        return "%.0f s" % seconds
    if seconds < 5400:
        return "%.1f min" % (seconds / 60.0)
    if seconds < 2 * 86400:
        return "%.1f h" % (seconds / 3600.0)
    return "%.1f d" % (seconds / 86400.0)


def _fmt_span(seconds):
    if seconds is None:
        return "all rows"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return "%d %s" % (seconds // size, unit)
    return "%d s" % seconds


def _host_notes(host, until):
    """Sentences about the data itself: missing log, single point, gaps, errors, garbled lines, staleness."""
    f, log, notes = host["figures"], host["log"], []
    if log is None:
        return ["no data: no log was fetched from this host"]
    if not host["rows_total"]:
        notes.append("no data: the log is empty" if not log["garbled"] else "no data: no readable row in the log")
    elif not host["rows"]:
        notes.append("no data in the window: the newest row is from %s" % host["newest"])
    elif f["samples"] == 1:
        notes.append("a single sample (%s): figures are a snapshot, not a trend" % f["first"])
    if host["rows"] and until and f["last"] != until:
        behind = (parse_timestamp(until) - parse_timestamp(f["last"])).total_seconds()
        if behind > 3 * DEFAULT_INTERVAL_S:
            notes.append("the newest sample is %s older than the fleet's newest: is the collector running? "
                         "(hosts in other time zones show this too)" % _fmt_duration(behind))
    if f["error_samples"]:
        notes.append("%d sample(s) could not read the queue (availability %s); last at %s: %s"
                     % (f["error_samples"], _fmt_pct(f["availability"]), f["last_error"]["at"],
                        f["last_error"]["message"] or "no message"))
    if f["largest_gap_s"] and f["largest_gap_s"] > 3 * DEFAULT_INTERVAL_S:
        notes.append("largest gap between samples: %s" % _fmt_duration(f["largest_gap_s"]))
    if log["garbled"]:
        notes.append("%d unreadable line(s) skipped (first: %s)" % (log["garbled"], log["first_garbled"]))
    return notes


def _period(model):
    fleet = model["fleet"]
    if not fleet["samples"]:
        return "no data"
    return "%s to %s (host local time), window %s" % (fleet["first"], fleet["last"], _fmt_span(model["window_s"]))


def _summary_cells(f):
    jobs = f["jobs"]
    return [
        "%d" % f["samples"],
        _fmt_pct(f["availability"]),
        _fmt_num(f["queue_depth"]["avg"], 2),
        _fmt_num(f["queue_depth"]["peak"], 0),
        _fmt_pct(jobs["success_rate"]),
        "%d / %d" % (jobs["finished"], jobs["failed"]),
        _fmt_duration(f["duration"]["p95_s"]),
        _fmt_pct(f["workers"]["utilisation"], 0),
        f["decision"]["action"].upper(),
    ]


SUMMARY_HEADER = ["samples", "availability", "avg depth", "peak depth", "success", "finished / failed",
                  "p95 duration", "worker use", "decision"]

METHODS = [
    "Queue depth is pending + queued jobs, averaged over the samples that could read the queue; error samples "
    "(database unreachable) are left out, where the seed's awk one-liner counts them as 0. For all hosts it is the "
    "average per server, as the decision matrix's thresholds are per server.",
    "Jobs and success rate: each row counts the jobs of its last hour, so rows overlap 12-fold. Rows an hour apart "
    "(walking back from the newest) are summed, which counts each job once; success = finished / (finished + "
    "failed), weighted by jobs. Hours without a readable sample are missing from the counts.",
    "p95 duration: rows carry the p50 and p95 of the last 24 h. Rows a day apart are each modelled as a log-normal "
    "distribution through their p50 and p95, weighted by their jobs, and the p95 of the mix is solved; it lies "
    "between the smallest and the largest daily p95 (the largest is the upper bound shown per host).",
    "Worker use is busy worker-samples over running worker-samples (configured when the running count is unknown), "
    "busy capped at running: the share of worker time spent on a job.",
    "Decision (the seed's matrix on the window): average depth < 5 and success > 90% -> STOP (configuration is "
    "sufficient); depth 5-10 and success > 80% -> CONSIDER database indexes or caching; depth > 10 or success "
    "< 80% -> INVESTIGATE; otherwise MONITOR (keep collecting).",
]


# --------------------------------------------------------------------------------------------------------- markdown

def _md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_row(cells):
    return "| " + " | ".join(_md_cell(c) for c in cells) + " |"


def markdown(model):
    fleet, out = model["fleet"], []
    out.append("# %s" % model["title"])
    out.append("")
    out.append("Period: %s. Hosts: %d." % (_period(model), len(model["hosts"])))
    out.append("")
    decision = fleet["decision"]
    out.append("**Fleet decision: %s**, %s: %s."
               % (decision["action"].upper(), decision["summary"], decision["basis"]))
    out.append("")
    out.append(_md_row(["host"] + SUMMARY_HEADER))
    out.append(_md_row(["---"] * (len(SUMMARY_HEADER) + 1)))
    for host in model["hosts"]:
        out.append(_md_row([host["name"]] + _summary_cells(host["figures"])))
    if len(model["hosts"]) > 1:
        out.append(_md_row(["**all hosts**"] + _summary_cells(fleet)))
    for host in model["hosts"]:
        f = host["figures"]
        out.append("")
        out.append("## %s" % host["name"])
        out.append("")
        out.append("**%s**, %s: %s." % (f["decision"]["action"].upper(), f["decision"]["summary"],
                                        f["decision"]["basis"]))
        out.append("")
        if f["samples"]:
            out.extend(_md_details(f))
        for note in _host_notes(host, model["until"]):
            out.append("- Note: %s." % note)
    out.append("")
    out.append("## How the figures are computed")
    out.append("")
    out.extend("- %s" % m for m in METHODS)
    return "\n".join(out) + "\n"


def _md_details(f):
    w, jobs, d, s = f["workers"], f["jobs"], f["duration"], f["stuck"]
    return [
        "- Samples: %d from %s to %s (%d readable, %d errors)."
        % (f["samples"], f["first"], f["last"], f["ok_samples"], f["error_samples"]),
        "- Queue depth: average %s, peak %s at %s; useful backlog average %s, peak %s."
        % (_fmt_num(f["queue_depth"]["avg"], 2), _fmt_num(f["queue_depth"]["peak"], 0), f["queue_depth"]["peak_at"]
           or "-", _fmt_num(f["useful_backlog"]["avg"], 2), _fmt_num(f["useful_backlog"]["peak"], 0)),
        "- Workers: %s configured (last), %s running and %s busy on average, busy peak %s; worker use %s."
        % (_fmt_num(w["configured"], 0), _fmt_num(w["running_avg"]), _fmt_num(w["busy_avg"]),
           _fmt_num(w["busy_peak"], 0), _fmt_pct(w["utilisation"])),
        "- Jobs: %d finished, %d failed in %d sampled hour(s): success %s."
        % (jobs["finished"], jobs["failed"], jobs["hours_covered"], _fmt_pct(jobs["success_rate"])),
        "- Duration: p50 %s, p95 %s (highest 24 h p95: %s)."
        % (_fmt_duration(d["p50_s"]), _fmt_duration(d["p95_s"]), _fmt_duration(d["p95_max_s"])),
        "- Stuck jobs (peak): %s stale, %s queued never started, %s old pending."
        % (_fmt_num(s["stale"], 0), _fmt_num(s["orphaned_queued"], 0), _fmt_num(s["old_pending"], 0)),
    ]


# ------------------------------------------------------------------------------------------------------- SVG charts

CHART_W, CHART_H = 1040, 210
PAD_L, PAD_R, PAD_T, PAD_B = 52, 18, 12, 28
MAX_POINTS = 520
X_STEPS = (300, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400,
           14 * 86400, 28 * 86400)
COLORS = {"depth": "#2563eb", "busy": "#ea580c", "running": "#0f766e", "configured": "#94a3b8",
          "failure": "#dc2626", "error": "#b91c1c", "grid": "#e5e7eb", "axis": "#6b7280", "band": "#b45309"}


def _nice_ticks(top, integer):
    top = max(top, 1 if integer else 1e-9)
    raw = top / 4.0
    magnitude = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in multiples if raw <= m * magnitude)
    if integer:
        step = max(1, int(round(step)))
    count = int(math.ceil(top / step - 1e-9))
    return [step * i for i in range(count + 1)]


def _x_ticks(start, end):
    span = (end - start).total_seconds()
    step = next((s for s in X_STEPS if span / s <= 7), X_STEPS[-1])
    midnight = start.replace(hour=0, minute=0, second=0)
    offset = math.ceil((start - midnight).total_seconds() / step) * step
    if step < 86400:
        label = "%H:%M" if span <= 86400 and start.date() == end.date() else "%d %b %H:%M"
    else:
        label = "%d %b"
    ticks, tick = [], midnight + timedelta(seconds=offset)
    while tick <= end:
        ticks.append((tick, tick.strftime(label)))
        tick += timedelta(seconds=step)
    return ticks


def _segments(points, gap_s):
    """Split [(ts, value or None)] where a value is unknown or samples are more than gap_s apart."""
    segments, current, previous = [], [], None
    for stamp, value in points:
        if value is None or (previous is not None and (stamp - previous).total_seconds() > gap_s):
            if current:
                segments.append(current)
            current = []
        if value is not None:
            current.append((stamp, value))
        previous = stamp
    if current:
        segments.append(current)
    return segments


def _bucket(points, start, end, count):
    """Down-sample to ``count`` time buckets: (mid time, mean, min, max) or (mid time, None, None, None)."""
    span = max((end - start).total_seconds(), 1.0)
    buckets = [[] for _i in range(count)]
    for stamp, value in points:
        if value is not None:
            index = min(int((stamp - start).total_seconds() / span * count), count - 1)
            buckets[index].append(value)
    out = []
    for i, values in enumerate(buckets):
        mid = start + timedelta(seconds=span * (i + 0.5) / count)
        out.append((mid, _mean(values), min(values), max(values)) if values else (mid, None, None, None))
    return out


class _Frame:
    def __init__(self, start, end, top):
        if start == end:  # a single point: centre it in an hour
            start, end = start - timedelta(minutes=30), end + timedelta(minutes=30)
        self.start, self.end, self.top = start, end, top
        self.span = (end - start).total_seconds()

    def x(self, stamp):
        return PAD_L + (stamp - self.start).total_seconds() / self.span * (CHART_W - PAD_L - PAD_R)

    def y(self, value):
        return PAD_T + (1 - float(value) / self.top) * (CHART_H - PAD_T - PAD_B)


def _pts(frame, segment):
    return " ".join("%.1f,%.1f" % (frame.x(t), frame.y(v)) for t, v in segment)


def svg_chart(label, series, start, end, gap_s, integer=True, percent=False, thresholds=(), markers=()):
    """One line chart as inline SVG. ``series``: dicts with ``key`` (a colour), ``points`` [(ts, value or None)],
    and optionally ``area`` (fill below), ``dash``. ``thresholds``: (value, text); ``markers``: timestamps drawn as
    ticks under the plot (error samples)."""
    values = [v for s in series for _t, v in s["points"] if v is not None]
    top = max(values + [t[0] for t in thresholds] + [0]) * 1.08
    ticks = _nice_ticks(min(top, 100.0) if percent else top, integer and not percent)
    frame = _Frame(start, end, ticks[-1])
    out = ['<svg viewBox="0 0 %d %d" width="100%%" role="img" aria-label="%s" class="chart">'
           % (CHART_W, CHART_H, html.escape(label)), "<title>%s</title>" % html.escape(label)]
    bottom, right = CHART_H - PAD_B, CHART_W - PAD_R
    for value in ticks:
        y = frame.y(value)
        text = ("%g%%" % value) if percent else ("%g" % value)
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (PAD_L, right, y, y, COLORS["grid"]))
        out.append('<text x="%d" y="%.1f" class="yt">%s</text>' % (PAD_L - 6, y + 4, text))
    for stamp, text in _x_ticks(frame.start, frame.end):
        x = frame.x(stamp)
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s"/>' % (x, x, PAD_T, bottom, COLORS["grid"]))
        out.append('<text x="%.1f" y="%d" class="xt">%s</text>' % (x, CHART_H - 8, html.escape(text)))
    for value, text in thresholds:
        y = frame.y(value)
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="5 4"/>'
                   % (PAD_L, right, y, y, COLORS["band"]))
        out.append('<text x="%d" y="%.1f" class="th">%s</text>' % (right - 4, y - 4, html.escape(text)))
    dense = max(len(s["points"]) for s in series) > MAX_POINTS
    for s in series:
        color = COLORS[s["key"]]
        dash = ' stroke-dasharray="%s"' % s["dash"] if s.get("dash") else ""
        if dense:
            buckets = _bucket(s["points"], frame.start, frame.end, MAX_POINTS)
            bucket_gap = max(gap_s, 2.5 * frame.span / MAX_POINTS)
            if s.get("area"):
                for seg in _segments([(t, (lo, hi) if lo is not None else None) for t, _m, lo, hi in buckets],
                                     bucket_gap):
                    upper = [(t, hi) for t, (lo, hi) in seg]
                    lower = [(t, lo) for t, (lo, hi) in reversed(seg)]
                    out.append('<polygon points="%s %s" fill="%s" fill-opacity="0.16"/>'
                               % (_pts(frame, upper), _pts(frame, lower), color))
            segments = _segments([(t, m) for t, m, _lo, _hi in buckets], bucket_gap)
        else:
            segments = _segments(s["points"], gap_s)
            if s.get("area"):
                for seg in segments:
                    if len(seg) > 1:
                        out.append('<polygon points="%.1f,%d %s %.1f,%d" fill="%s" fill-opacity="0.14"/>'
                                   % (frame.x(seg[0][0]), bottom, _pts(frame, seg), frame.x(seg[-1][0]), bottom,
                                      color))
        for seg in segments:
            if len(seg) == 1:
                out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>'
                           % (frame.x(seg[0][0]), frame.y(seg[0][1]), color))
            else:
                out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="%s" '
                           'stroke-linejoin="round"%s/>' % (_pts(frame, seg), color, s.get("width", "1.8"), dash))
    for stamp in markers:
        x = frame.x(stamp)
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="3" stroke-opacity="0.22"/>'
                   % (x, x, PAD_T, bottom, COLORS["error"]))
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                   % (x, x, bottom - 8, bottom, COLORS["error"]))
    out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s"/>' % (PAD_L, right, bottom, bottom, COLORS["axis"]))
    out.append("</svg>")
    return "\n".join(out)


def _failure_pct(row):
    finished, failed = row["finished_last_hour"], row["failed_last_hour"]
    if finished is not None and failed is not None:
        return 100.0 * failed / (finished + failed) if finished + failed else None
    return None if row["success_rate"] is None else 100.0 * (1 - row["success_rate"])


def charts(host, start, end):
    """The three charts of a host with data: queue depth, workers, failure rate."""
    rows = host["rows"]
    intervals = sorted(_intervals(rows))
    typical = intervals[len(intervals) // 2] if intervals else DEFAULT_INTERVAL_S
    gap_s = max(3 * typical, 3 * DEFAULT_INTERVAL_S)
    errors = [r["ts"] for r in rows if r["status"] == "error"]

    def points(column):
        return [(r["ts"], r[column]) for r in rows]

    name = host["name"]
    depth = [{"key": "depth", "points": points("queue_depth"), "area": True}]
    workers = [{"key": "running", "points": points("workers_running"), "width": "2.2"},
               {"key": "busy", "points": points("workers_busy")},
               {"key": "configured", "points": points("workers_configured"), "dash": "6 5", "width": "1.4"}]
    failure = [{"key": "failure", "points": [(r["ts"], _failure_pct(r) if r["status"] == "ok" else None)
                                             for r in rows]}]
    return [
        ("Queue depth (pending + queued)", [("depth", "queue depth"), ("error", "collector error")],
         svg_chart("%s: queue depth" % name, depth, start, end, gap_s, thresholds=((5, "5"), (10, "10")),
                   markers=errors)),
        ("Workers", [("running", "running"), ("busy", "busy"), ("configured", "configured")],
         svg_chart("%s: workers" % name, workers, start, end, gap_s)),
        ("Failed share of the jobs that ended in the last hour", [("failure", "failed %")],
         svg_chart("%s: failure rate" % name, failure, start, end, gap_s, integer=False, percent=True,
                   thresholds=((10, "10% (success 90%)"), (20, "20% (success 80%)")))),
    ]


# ------------------------------------------------------------------------------------------------------------- HTML

CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#ffffff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:0;display:flex;align-items:center;gap:12px}
.period{color:var(--muted);margin:0 0 20px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:0 0 20px}
.decision{display:flex;gap:14px;align-items:center}
.decision p{margin:0}
.badge{display:inline-block;font-size:12px;font-weight:700;letter-spacing:.06em;padding:3px 10px;border-radius:99px;
color:#fff;white-space:nowrap}
.badge.big{font-size:15px;padding:6px 14px}
.stop{background:#15803d}.consider{background:#b45309}.investigate{background:#b91c1c}.monitor{background:#475569}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:14px 0 4px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:650}
.card .s{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;font-size:14px}
table{table-layout:auto}
th,td{padding:7px 8px;border-bottom:1px solid var(--line);text-align:right}
td{white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{color:var(--muted);font-weight:600;font-size:11px;text-transform:uppercase;letter-spacing:.03em;vertical-align:bottom}
tr.fleet td{font-weight:650;border-top:2px solid var(--line)}
.reason{margin:8px 0 0;color:#374151}
figure{margin:18px 0 0}
figcaption{display:flex;justify-content:space-between;align-items:baseline;font-weight:600;font-size:14px;
margin-bottom:2px}
.legend{font-weight:400;color:var(--muted);font-size:12px}
.legend i{display:inline-block;width:12px;height:3px;vertical-align:middle;margin:0 4px 0 12px;border-radius:2px}
svg.chart{display:block;height:auto;overflow:visible}
svg text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#6b7280}
svg .yt{text-anchor:end}svg .xt{text-anchor:middle}
svg .th{text-anchor:end;fill:#b45309;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
ul.notes{margin:14px 0 0;padding-left:20px;color:#92400e}
.methods li{margin-bottom:6px;color:#374151}
"""


def _capital(text):
    return text[:1].upper() + text[1:]


def _badge(action, big=False):
    return '<span class="badge %s%s">%s</span>' % (action, " big" if big else "", action.upper())


def _card(key, value, sub=""):
    return ('<div class="card"><div class="k">%s</div><div class="v">%s</div><div class="s">%s</div></div>'
            % (html.escape(key), html.escape(value), html.escape(sub)))


def _cards(f, fleet=False):
    jobs, w, d = f["jobs"], f["workers"], f["duration"]
    return "".join([
        '<div class="cards">',
        _card("avg queue depth", _fmt_num(f["queue_depth"]["avg"], 2),
              "peak %s%s" % (_fmt_num(f["queue_depth"]["peak"], 0),
                             "" if fleet or not f["queue_depth"]["peak_at"] else " at " + f["queue_depth"]["peak_at"])),
        _card("success rate", _fmt_pct(jobs["success_rate"]),
              "%d finished, %d failed" % (jobs["finished"], jobs["failed"])),
        _card("p95 duration", _fmt_duration(d["p95_s"]),
              "p50 %s, highest 24 h p95 %s" % (_fmt_duration(d["p50_s"]), _fmt_duration(d["p95_max_s"]))),
        _card("worker use", _fmt_pct(w["utilisation"], 0),
              "%s busy of %s running%s" % (_fmt_num(w["busy_avg"]), _fmt_num(w["running_avg"]),
                                           " (total)" if fleet else " (avg)")),
        _card("availability", _fmt_pct(f["availability"]),
              "%d samples, %d errors" % (f["samples"], f["error_samples"])),
        "</div>",
    ])


def _legend(items):
    return '<span class="legend">%s</span>' % "".join(
        '<i style="background:%s"></i>%s' % (COLORS[key], html.escape(text)) for key, text in items)


def html_page(model):
    fleet, e = model["fleet"], html.escape
    decision = fleet["decision"]
    out = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>%s</title>" % e(model["title"]), "<style>%s</style>" % CSS, "</head>", "<body>", "<main>",
           "<h1>%s</h1>" % e(model["title"]),
           '<p class="period">%s &middot; %d host(s)</p>' % (e(_period(model)), len(model["hosts"])),
           '<section class="panel">',
           '<div class="decision">%s<p><strong>Fleet: %s.</strong> %s.</p></div>'
           % (_badge(decision["action"], True), e(decision["summary"]), e(_capital(decision["basis"])))]
    if fleet["samples"]:
        out.append(_cards(fleet, fleet=len(model["hosts"]) > 1))
    out.append("</section>")
    out.append('<section class="panel"><table><thead><tr><th>host</th>%s</tr></thead><tbody>'
               % "".join("<th>%s</th>" % e(h) for h in SUMMARY_HEADER))
    for index, host in enumerate(model["hosts"]):
        cells = _summary_cells(host["figures"])
        out.append('<tr><td><a href="#host-%d">%s</a></td>%s<td>%s</td></tr>'
                   % (index, e(host["name"]), "".join("<td>%s</td>" % e(c) for c in cells[:-1]),
                      _badge(host["figures"]["decision"]["action"])))
    if len(model["hosts"]) > 1:
        cells = _summary_cells(fleet)
        out.append('<tr class="fleet"><td>all hosts</td>%s<td>%s</td></tr>'
                   % ("".join("<td>%s</td>" % e(c) for c in cells[:-1]), _badge(decision["action"])))
    out.append("</tbody></table></section>")
    with_rows = [h["rows"] for h in model["hosts"] if h["rows"]]
    start = min(r[0]["ts"] for r in with_rows) if with_rows else None
    end = max(r[-1]["ts"] for r in with_rows) if with_rows else None
    for index, host in enumerate(model["hosts"]):
        f = host["figures"]
        out.append('<section class="panel" id="host-%d">' % index)
        out.append("<h2>%s %s</h2>" % (e(host["name"]), _badge(f["decision"]["action"])))
        out.append('<p class="reason"><strong>%s.</strong> %s.</p>'
                   % (e(_capital(f["decision"]["summary"])), e(_capital(f["decision"]["basis"]))))
        if host["rows"]:
            out.append(_cards(f))
            for caption, legend, svg in charts(host, start, end):
                out.append("<figure><figcaption>%s%s</figcaption>%s</figure>" % (e(caption), _legend(legend), svg))
        notes = _host_notes(host, model["until"])
        if notes:
            out.append('<ul class="notes">%s</ul>' % "".join("<li>%s.</li>" % e(_capital(n)) for n in notes))
        out.append("</section>")
    out.append('<section class="panel methods"><h2>How the figures are computed</h2><ul>%s</ul></section>'
               % "".join("<li>%s</li>" % e(m) for m in METHODS))
    out.extend(["</main>", "</body>", "</html>"])
    return "\n".join(out) + "\n"
