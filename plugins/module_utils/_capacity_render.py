# Copyright (c) qfieldcloud.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Capacity report, the renderings of _capacity_model's model: Markdown, and a self-contained HTML page (inline CSS,
inline SVG charts from _capacity_charts). Pure functions: the same model gives the same bytes (the module's
idempotence rests on that)."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: never imported on the managed node
    from collections.abc import Iterable, Mapping

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _capacity_changes, _policy
from ansible_collections.qfieldcloud.ops.plugins.module_utils._capacity_charts import COLORS, change_style, charts
from ansible_collections.qfieldcloud.ops.plugins.module_utils._capacity_model import DEFAULT_INTERVAL_S, parse_timestamp


# ------------------------------------------------------------------------------------------------------- formatting


def _fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer() and digits == 0:
        return "%d" % value
    return "%.*f" % (digits, value)


def _fmt_pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else "%.*f%%" % (digits, 100.0 * value)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return "%.0f s" % seconds
    if seconds < 5400:
        return "%.1f min" % (seconds / 60.0)
    if seconds < 2 * 86400:
        return "%.1f h" % (seconds / 3600.0)
    return "%.1f d" % (seconds / 86400.0)


def _fmt_span(seconds: float | None) -> str:
    if seconds is None:
        return "all rows"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return "%d %s" % (seconds // size, unit)
    return "%d s" % seconds


def _host_notes(host: Mapping[str, Any], until: str | None) -> list[str]:
    """Sentences about the data itself: missing log, single point, gaps, errors, garbled lines, staleness."""
    f, log, notes = host["figures"], host["log"], []
    if log is None:
        return ["no data: no log was fetched from this host"] + _oplog_notes(host)
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
    return notes + _oplog_notes(host)


def _oplog_notes(host: Mapping[str, Any]) -> list[str]:
    ops = host.get("operations")
    if ops and ops["skipped"]:
        return ["%d unreadable record(s) in the operations log skipped" % ops["skipped"]]
    return []


def _period(model: Mapping[str, Any]) -> str:
    fleet = model["fleet"]
    if not fleet["samples"]:
        return "no data"
    return "%s to %s (host local time), window %s" % (fleet["first"], fleet["last"], _fmt_span(model["window_s"]))


def _summary_cells(f: Mapping[str, Any]) -> list[str]:
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
    "Decision (the seed's matrix on the window): average depth < %d and success > %g%% -> STOP (%s); depth %d-%d "
    "and success > %g%% -> CONSIDER %s; depth > %d or success < %g%% -> INVESTIGATE; otherwise MONITOR (%s)."
    % (_policy.LOW, 100 * _policy.GOOD, _policy.ACTION_SUMMARY["stop"], _policy.LOW, _policy.HIGH,
       100 * _policy.FAIR, _policy.ACTION_SUMMARY["consider"][len("consider "):], _policy.HIGH, 100 * _policy.FAIR,
       _policy.ACTION_SUMMARY["monitor"]),
]


CHANGES_METHOD = (
    "Changes come from each host's operations log, whose times are UTC; each is converted to the host's own time "
    "zone (its /etc/localtime, fetched beside the metrics log, or qfc_timezone), the zone the metrics log is written "
    "in, and shown when it falls in the report's period. Markers: a solid line for a change, dashed for one rolled "
    "back or failed; the label is the worker count before->after.")
CHANGES_HEADER = ["time (host local)", "host", "action", "before -> after", "result", "actor", "reason"]
CHANGES_CSS = """
#changes th,#changes td{text-align:left}
tr.rolled_back td.result{color:#a16207;font-weight:650}tr.failed td.result{color:#be123c;font-weight:650}
td.reason{white-space:normal;text-align:left;min-width:220px}
p.none{margin:0;color:var(--muted)}
"""


def _methods(model: Mapping[str, Any]) -> list[str]:
    return METHODS + ([CHANGES_METHOD] if "changes" in model else [])


def _change_cells(change: Mapping[str, Any]) -> list[str]:
    return [change["at"].strftime("%Y-%m-%d %H:%M:%S"), change["host"], change["action"],
            _capacity_changes.span(change["before"], change["after"]), change["result"].replace("_", " "),
            change["actor"], change["reason"] or "-"]


# --------------------------------------------------------------------------------------------------------- markdown


def _md_changes(model: Mapping[str, Any]) -> list[str]:
    out = ["", "## Changes in this period", ""]
    if not model["changes"]:
        return out + ["No change recorded in the operations logs in this period."]
    out.append(_md_row(CHANGES_HEADER))
    out.append(_md_row(["---"] * len(CHANGES_HEADER)))
    out.extend(_md_row(_change_cells(c)) for c in model["changes"])
    return out


# Text from the logs (an operations-log reason, an error row, a host name) is data, never markup: CommonMark passes
# raw HTML through and makes links of brackets, so ``<`` and ``&`` become entities and brackets, backslashes and
# pipes are escaped. Renders as the original text; a newline would end the table row or the list item.
_MD_ESCAPES = {"\\": "\\\\", "&": "&amp;", "<": "&lt;", "[": "\\[", "]": "\\]", "|": "\\|", "\n": " ", "\r": " "}
_MD_SPECIAL_RE = re.compile(r"[\\&<\[\]|\r\n]")


def _md_text(text: object) -> str:
    return _MD_SPECIAL_RE.sub(lambda m: _MD_ESCAPES[m.group(0)], str(text))


def _md_row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(_md_text(c) for c in cells) + " |"


def markdown(model: Mapping[str, Any]) -> str:
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
    if "changes" in model:
        out.extend(_md_changes(model))
    for host in model["hosts"]:
        f = host["figures"]
        out.append("")
        out.append("## %s" % _md_text(host["name"]))
        out.append("")
        out.append("**%s**, %s: %s." % (f["decision"]["action"].upper(), f["decision"]["summary"],
                                        f["decision"]["basis"]))
        out.append("")
        if f["samples"]:
            out.extend(_md_details(f))
        for note in _host_notes(host, model["until"]):
            out.append("- Note: %s." % _md_text(note))
    out.append("")
    out.append("## How the figures are computed")
    out.append("")
    out.extend("- %s" % m for m in _methods(model))
    return "\n".join(out) + "\n"


def _md_details(f: Mapping[str, Any]) -> list[str]:
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


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _badge(action: str, big: bool = False) -> str:
    return '<span class="badge %s%s">%s</span>' % (action, " big" if big else "", action.upper())


def _card(key: str, value: str, sub: str = "") -> str:
    return ('<div class="card"><div class="k">%s</div><div class="v">%s</div><div class="s">%s</div></div>'
            % (html.escape(key), html.escape(value), html.escape(sub)))


def _cards(f: Mapping[str, Any], fleet: bool = False) -> str:
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


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return '<span class="legend">%s</span>' % "".join(
        '<i style="background:%s"></i>%s' % (COLORS[key], html.escape(text)) for key, text in items)


def html_page(model: Mapping[str, Any]) -> str:
    fleet, e = model["fleet"], html.escape
    decision = fleet["decision"]
    out = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>%s</title>" % e(model["title"]),
           "<style>%s</style>" % (CSS + CHANGES_CSS if "changes" in model else CSS), "</head>", "<body>", "<main>",
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
    if "changes" in model:
        out.append(_html_changes(model))
    with_rows = [h["rows"] for h in model["hosts"] if h["rows"]]
    start = min(r[0]["ts"] for r in with_rows) if with_rows else None
    end = max(r[-1]["ts"] for r in with_rows) if with_rows else None
    for index, host in enumerate(model["hosts"]):
        f = host["figures"]
        out.append('<section class="panel" id="host-%d">' % index)
        out.append("<h2>%s %s</h2>" % (e(host["name"]), _badge(f["decision"]["action"])))
        out.append('<p class="reason"><strong>%s.</strong> %s.</p>'
                   % (e(_capital(f["decision"]["summary"])), e(_capital(f["decision"]["basis"]))))
        if host["rows"] and start is not None and end is not None:  # a host with rows: start and end are set
            out.append(_cards(f))
            for caption, legend, svg in charts(host, start, end):
                out.append("<figure><figcaption>%s%s</figcaption>%s</figure>" % (e(caption), _legend(legend), svg))
        notes = _host_notes(host, model["until"])
        if notes:
            out.append('<ul class="notes">%s</ul>' % "".join("<li>%s.</li>" % e(_capital(n)) for n in notes))
        out.append("</section>")
    out.append('<section class="panel methods"><h2>How the figures are computed</h2><ul>%s</ul></section>'
               % "".join("<li>%s</li>" % e(m) for m in _methods(model)))
    out.extend(["</main>", "</body>", "</html>"])
    return "\n".join(out) + "\n"


def _html_changes(model: Mapping[str, Any]) -> str:
    e = html.escape
    out = ['<section class="panel" id="changes"><h2>Changes in this period</h2>']
    if not model["changes"]:
        out.append('<p class="none">No change recorded in the operations logs in this period.</p></section>')
        return "\n".join(out)
    out.append("<table><thead><tr>%s</tr></thead><tbody>" % "".join("<th>%s</th>" % e(h) for h in CHANGES_HEADER))
    for change in model["changes"]:
        cells = [e(c) for c in _change_cells(change)]
        out.append('<tr class="%s"><td title="%s UTC">%s</td><td>%s</td><td>%s</td><td>%s</td><td class="result">%s'
                   '</td><td>%s</td><td class="reason">%s</td></tr>'
                   % (e(change_style(change["result"])[0]), e(str(change["time"])), *cells))
    out.append("</tbody></table></section>")
    return "\n".join(out)
