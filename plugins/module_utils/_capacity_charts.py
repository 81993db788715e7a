# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Capacity report, the charts: inline SVG line charts of a host's queue depth, workers and failure rate, for
_capacity_render's HTML page. Pure functions of the model's rows; no clock."""

from __future__ import annotations

import html
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime
    from typing import TypeVar

    V = TypeVar("V")  # a point's value: a number, or a (low, high) band

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _policy
from ansible_collections.qfieldcloud.ops.plugins.module_utils._capacity_model import DEFAULT_INTERVAL_S, intervals, mean

CHART_W, CHART_H = 1040, 210
PAD_L, PAD_R, PAD_T, PAD_B = 52, 18, 12, 28
MAX_POINTS = 520
X_STEPS = (300, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400,
           14 * 86400, 28 * 86400)
COLORS = {"depth": "#2563eb", "busy": "#ea580c", "running": "#0f766e", "configured": "#94a3b8",
          "failure": "#dc2626", "error": "#b91c1c", "grid": "#e5e7eb", "axis": "#6b7280", "band": "#b45309",
          "changed": "#7c3aed", "rolled_back": "#a16207", "failed": "#be123c"}
# A change that did not apply cleanly is dashed as well as coloured, so it stays distinct in greyscale prints.
CHANGE_DASH = {"changed": "", "rolled_back": "5 3", "failed": "2 3"}
LABEL_ROWS = 3
CHAR_W = 6.2  # 11 px system-ui, roughly: enough to keep labels from overlapping


def _nice_ticks(top: float, integer: bool) -> list[float]:
    top = max(top, 1 if integer else 1e-9)
    raw = top / 4.0
    magnitude = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in multiples if raw <= m * magnitude)
    if integer:
        step = max(1, int(round(step)))
    count = int(math.ceil(top / step - 1e-9))
    return [step * i for i in range(count + 1)]


def _x_ticks(start: datetime, end: datetime) -> list[tuple[datetime, str]]:
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


def _segments(points: Iterable[tuple[datetime, V | None]], gap_s: float) -> list[list[tuple[datetime, V]]]:
    """Split [(ts, value or None)] where a value is unknown or samples are more than gap_s apart."""
    segments: list[list[tuple[datetime, V]]] = []
    current: list[tuple[datetime, V]] = []
    previous: datetime | None = None
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


def _bucket(points: list[tuple[datetime, float | None]], start: datetime, end: datetime,
            count: int) -> list[tuple[datetime, float | None, float | None, float | None]]:
    """Down-sample to ``count`` time buckets: (mid time, mean, min, max) or (mid time, None, None, None)."""
    span = max((end - start).total_seconds(), 1.0)
    buckets: list[list[float]] = [[] for _i in range(count)]
    for stamp, value in points:
        if value is not None:
            index = min(int((stamp - start).total_seconds() / span * count), count - 1)
            buckets[index].append(value)
    out: list[tuple[datetime, float | None, float | None, float | None]] = []
    for i, values in enumerate(buckets):
        mid = start + timedelta(seconds=span * (i + 0.5) / count)
        out.append((mid, mean(values), min(values), max(values)) if values else (mid, None, None, None))
    return out


class _Frame:
    def __init__(self, start: datetime, end: datetime, top: float) -> None:
        if start == end:  # a single point: centre it in an hour
            start, end = start - timedelta(minutes=30), end + timedelta(minutes=30)
        self.start, self.end, self.top = start, end, top
        self.span = (end - start).total_seconds()

    def bounds(self) -> tuple[datetime, datetime]:
        return self.start, self.end

    def x(self, stamp: datetime) -> float:
        return PAD_L + (stamp - self.start).total_seconds() / self.span * (CHART_W - PAD_L - PAD_R)

    def y(self, value: float) -> float:
        return PAD_T + (1 - float(value) / self.top) * (CHART_H - PAD_T - PAD_B)


def _pts(frame: _Frame, segment: Iterable[tuple[datetime, float]]) -> str:
    return " ".join("%.1f,%.1f" % (frame.x(t), frame.y(v)) for t, v in segment)


def change_style(result: str) -> tuple[str, str]:
    """(colour key, dash) of a change's marker: ``changed``, ``rolled_back``, or ``failed`` for anything else."""
    key = result if result in ("changed", "rolled_back") else "failed"
    return key, CHANGE_DASH[key]


def _change_markers(frame: _Frame, changes: Iterable[Mapping[str, Any]], bottom: float, right: float) -> list[str]:
    """A vertical line per change inside the frame, with its label in the first of ``LABEL_ROWS`` rows where it
    does not overlap the previous label (left of the line near the right edge); no room: the line's tooltip only."""
    out: list[str] = []
    row_end = [float("-inf")] * LABEL_ROWS
    for change in changes:
        if not frame.start <= change["at"] <= frame.end:
            continue
        x = frame.x(change["at"])
        key, dash = change_style(change["result"])
        color, text = COLORS[key], change["label"]
        width = CHAR_W * len(text)
        left = x + 3 if x + 3 + width <= right else x - 3 - width
        tip = "%s %s %s (%s)%s" % (change["at"].strftime("%Y-%m-%d %H:%M:%S"), change["action"], text,
                                   change["result"], ": " + change["reason"] if change["reason"] else "")
        out.append('<g class="change"><title>%s</title>' % html.escape(tip))
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="1.6"%s/>'
                   % (x, x, PAD_T, bottom, color, ' stroke-dasharray="%s"' % dash if dash else ""))
        row = next((i for i in range(LABEL_ROWS) if left > row_end[i] + 4), None)
        if row is not None:
            row_end[row] = left + width
            style = "fill:%s;font-weight:600;text-anchor:start;paint-order:stroke;stroke:#fff;stroke-width:3px" % color
            out.append('<text x="%.1f" y="%d" style="%s">%s</text>'
                       % (left, PAD_T + 10 + 12 * row, style, html.escape(text)))
        out.append("</g>")
    return out


def svg_chart(label: str, series: Sequence[Mapping[str, Any]], start: datetime, end: datetime, gap_s: float,
              integer: bool = True, percent: bool = False, thresholds: Sequence[tuple[float, str]] = (),
              markers: Iterable[datetime] = (), changes: Iterable[Mapping[str, Any]] = ()) -> str:
    """One line chart as inline SVG. ``series``: dicts with ``key`` (a colour), ``points`` [(ts, value or None)],
    and optionally ``area`` (fill below), ``dash``. ``thresholds``: (value, text); ``markers``: timestamps drawn as
    ticks under the plot (error samples); ``changes``: the operations log's changes (_capacity_changes), drawn as
    labelled vertical lines."""
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
                for band in _segments([(t, (lo, hi) if lo is not None and hi is not None else None)  # both or neither
                                       for t, _m, lo, hi in buckets], bucket_gap):
                    upper = [(t, hi) for t, (lo, hi) in band]
                    lower = [(t, lo) for t, (lo, hi) in reversed(band)]
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
    out.extend(_change_markers(frame, changes, bottom, right))
    out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s"/>' % (PAD_L, right, bottom, bottom, COLORS["axis"]))
    out.append("</svg>")
    return "\n".join(out)


def _failure_pct(row: Mapping[str, Any]) -> float | None:
    finished, failed = row["finished_last_hour"], row["failed_last_hour"]
    if finished is not None and failed is not None:
        return 100.0 * failed / (finished + failed) if finished + failed else None
    return None if row["success_rate"] is None else 100.0 * (1 - row["success_rate"])


def change_legend(changes: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> list[tuple[str, str]]:
    """Legend items for the kinds of change drawn between start and end (none without changes)."""
    kinds = {change_style(c["result"])[0] for c in changes if start <= c["at"] <= end}
    return [(k, {"changed": "change", "rolled_back": "rolled back", "failed": "failed change"}[k])
            for k in ("changed", "rolled_back", "failed") if k in kinds]


def charts(host: Mapping[str, Any], start: datetime, end: datetime) -> list[tuple[str, list[tuple[str, str]], str]]:
    """The three charts of a host with data: queue depth, workers, failure rate; with the host's ``changes``
    (when the model has them) as markers on each."""
    rows = host["rows"]
    spacing = sorted(intervals(rows))
    typical = spacing[len(spacing) // 2] if spacing else DEFAULT_INTERVAL_S
    gap_s = max(3 * typical, 3 * DEFAULT_INTERVAL_S)
    errors = [r["ts"] for r in rows if r["status"] == "error"]

    def points(column: str) -> list[tuple[datetime, Any]]:
        return [(r["ts"], r[column]) for r in rows]

    name = host["name"]
    changes = host.get("changes") or ()
    extra = change_legend(changes, *_Frame(start, end, 1).bounds()) if changes else []
    depth = [{"key": "depth", "points": points("queue_depth"), "area": True}]
    workers = [{"key": "running", "points": points("workers_running"), "width": "2.2"},
               {"key": "busy", "points": points("workers_busy")},
               {"key": "configured", "points": points("workers_configured"), "dash": "6 5", "width": "1.4"}]
    failure = [{"key": "failure", "points": [(r["ts"], _failure_pct(r) if r["status"] == "ok" else None)
                                             for r in rows]}]
    return [
        ("Queue depth (pending + queued)", [("depth", "queue depth"), ("error", "collector error")] + extra,
         svg_chart("%s: queue depth" % name, depth, start, end, gap_s,
                   thresholds=[(b, "%d" % b) for b in _policy.DEPTH_BANDS], markers=errors, changes=changes)),
        ("Workers", [("running", "running"), ("busy", "busy"), ("configured", "configured")] + extra,
         svg_chart("%s: workers" % name, workers, start, end, gap_s, changes=changes)),
        ("Failed share of the jobs that ended in the last hour", [("failure", "failed %")] + extra,
         svg_chart("%s: failure rate" % name, failure, start, end, gap_s, integer=False, percent=True,
                   thresholds=[(100 - pct, "%g%% (success %g%%)" % (100 - pct, pct)) for pct in
                               sorted(round(100 * b) for b in _policy.SUCCESS_BANDS)[::-1]], changes=changes)),
    ]
