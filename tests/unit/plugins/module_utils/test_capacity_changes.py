"""The operations log in the capacity report (_capacity_changes, and its use in _capacity_model, _capacity_render and
_capacity_charts): time zones, the period, labels, markers, the changes table; the report without an operations log
is the report as before."""

from __future__ import annotations

import html as html_lib
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from ansible_collections.qfieldcloud.ops.plugins.module_utils import (
    _capacity_changes, _capacity_charts, _capacity_model, _capacity_render, _metrics_log, _oplog)

from test_capacity import T0, history  # the metrics rows, formatted as the collector writes them

ZURICH_TZIF = Path("/usr/share/zoneinfo/Europe/Zurich")
needs_tzdata = pytest.mark.skipif(not ZURICH_TZIF.is_file(), reason="no zoneinfo database on this machine")


def rec(time, before=2, after=4, result="changed", action="autoscale", reason="queue depth 12 > 10 for 600 s",
        actor=None, host="node"):
    return {"time": time, "host": host, "action": action, "before": before, "after": after, "reason": reason,
            "actor": actor or {"kind": "awx", "awx_job_id": "4711", "user": "alice"}, "result": result}


# ------------------------------------------------------------------------------------------------------- time zones


@pytest.mark.parametrize("spec, offset_h", [
    (None, 0), ("", 0), ("UTC", 0), ("utc", 0), ("Z", 0), ("Etc/UTC", 0),
    ("+01:00", 1), ("-05:30", -5.5), ("+0200", 2), ("UTC+3", 3), ("-3", -3),
])
def test_timezone_of_names_and_offsets(spec, offset_h):
    tz = _capacity_changes.timezone_of(spec)
    assert tz.utcoffset(datetime(2025, 7, 1)) == timedelta(hours=offset_h)


@pytest.mark.parametrize("spec", ["Mars/Olympus", "+25:00", "+01:75", "../../etc/passwd", "not a zone"])
def test_timezone_of_refuses_what_it_does_not_know(spec):
    with pytest.raises(ValueError):
        _capacity_changes.timezone_of(spec)


@needs_tzdata
def test_local_time_follows_daylight_saving_time():
    zurich = _capacity_changes.timezone_of("Europe/Zurich")
    assert _capacity_changes.local_time("2025-12-15T09:05:00Z", zurich) == datetime(2025, 12, 15, 10, 5)   # CET
    assert _capacity_changes.local_time("2025-07-15T09:05:00Z", zurich) == datetime(2025, 7, 15, 11, 5)    # CEST
    # the hour the clocks go back: two UTC times, the same local time, as the collector writes it
    assert _capacity_changes.local_time("2025-10-26T00:30:00Z", zurich) == datetime(2025, 10, 26, 2, 30)
    assert _capacity_changes.local_time("2025-10-26T01:30:00Z", zurich) == datetime(2025, 10, 26, 2, 30)


@needs_tzdata
def test_a_hosts_localtime_file_is_its_zone():
    tz = _capacity_changes.timezone_from_tzif(ZURICH_TZIF.read_bytes())
    assert _capacity_changes.local_time("2025-07-15T09:05:00Z", tz) == datetime(2025, 7, 15, 11, 5)
    assert _capacity_changes.timezone_from_tzif(b"") is timezone.utc
    with pytest.raises(ValueError):
        _capacity_changes.timezone_from_tzif(b"# not a zone file\n")


# --------------------------------------------------------------------------------------------------- texts, labels


@pytest.mark.parametrize("before, after, result, label, text", [
    (2, 4, "changed", "2->4", "2 -> 4"),
    (4, 3, "changed", "4->3", "4 -> 3"),
    (2, 6, "rolled_back", "2->6 rolled back", "2 -> 6"),
    (2, 6, "failed", "2->6 failed", "2 -> 6"),
    (None, {"stale": 3, "orphaned_queued": 1}, "changed", "job_cleanup", "orphaned_queued=1, stale=3"),
    ({"stale": 3}, {"stale": 0}, "changed", "job_cleanup", "stale=3 -> stale=0"),
    (True, 4, "changed", "job_cleanup", "True -> 4"),           # a bool is no worker count
])
def test_labels_and_before_after(before, after, result, label, text):
    change = {"before": before, "after": after, "result": result,
              "action": "job_cleanup" if not isinstance(before, int) or isinstance(before, bool) else "scale"}
    assert _capacity_changes.label(change) == label
    assert _capacity_changes.span(before, after) == text


@pytest.mark.parametrize("actor, text", [
    ({"kind": "awx", "awx_job_id": "4711", "user": "alice"}, "AWX job 4711 (alice)"),
    ({"kind": "controller", "user": "bob"}, "bob"),
    ({"kind": "schedule", "user": "root"}, "schedule (root)"),
    ({}, "-"),
    ("alice", "-"),
])
def test_actor_text(actor, text):
    assert _capacity_changes.actor_text(actor) == text


# ------------------------------------------------------------------------------------------------------- the period


def test_changes_inside_the_period_only_start_excluded_end_included():
    since, until = datetime(2025, 12, 12, 0, 0), datetime(2025, 12, 13, 0, 0)
    records = [rec("2025-12-11T23:59:59Z"), rec("2025-12-12T00:00:00Z"), rec("2025-12-12T00:00:01Z", 4, 5),
               rec("2025-12-13T00:00:00Z", 5, 6), rec("2025-12-13T00:00:01Z"), {"time": "yesterday"},
               rec("2025-12-12T06:00:00Z", action="")]
    picked, skipped, outside = _capacity_changes.changes(records, None, since, until, host="qfc1")
    assert [c["label"] for c in picked] == ["4->5", "5->6"]
    assert (skipped, outside) == (2, 3)
    assert {c["host"] for c in picked} == {"qfc1"}


def test_changes_are_ordered_by_time_then_by_line():
    records = [rec("2025-12-12T02:00:00Z", 3, 4), rec("2025-12-12T01:00:00Z", 2, 3), rec("2025-12-12T02:00:00Z", 4, 5)]
    picked, _skipped, _outside = _capacity_changes.changes(records)
    assert [c["label"] for c in picked] == ["2->3", "3->4", "4->5"]


# ------------------------------------------------------------------------------------------- model, table, markers

DAY = history(12 * 24, queue_depth=lambda i: i % 9)          # 2025-12-12 00:00:03 .. 23:55:03, host local time


def model(operations, timezones=None, window_s=7 * 86400, logs=None):
    logs = logs if logs is not None else {"qfc1": _metrics_log.parse(DAY)}
    return _capacity_model.build(logs, window_s, operations=operations, timezones=timezones)


@needs_tzdata
def test_a_change_in_a_non_utc_zone_lands_at_its_local_time():
    # 09:05 UTC is 10:05 in Zurich in December: inside the day; 23:30 UTC is 00:30 the next day there: after it.
    records = [rec("2025-12-12T09:05:00Z"), rec("2025-12-12T23:30:00Z", 4, 3)]
    zurich = _capacity_changes.timezone_of("Europe/Zurich")
    m = model({"qfc1": (records, 0)}, {"qfc1": zurich})
    assert [(c["at"], c["label"]) for c in m["changes"]] == [(datetime(2025, 12, 12, 10, 5), "2->4")]
    assert m["hosts"][0]["operations"] == {"log": True, "records": 2, "skipped": 0, "outside": 1}
    # the same records read as UTC: both inside (23:30 < 23:55:03)
    assert len(model({"qfc1": (records, 0)})["changes"]) == 2
    md = _capacity_render.markdown(m)
    assert "| 2025-12-12 10:05:00 | qfc1 | autoscale | 2 -> 4 | changed | AWX job 4711 (alice) | queue depth 12 > 10 " \
           "for 600 s |" in md


def test_records_older_than_the_window_are_not_shown():
    records = [rec("2025-12-12T10:00:00Z", 2, 3), rec("2025-12-12T22:00:00Z", 3, 4)]
    m = model({"qfc1": (records, 0)}, window_s=6 * 3600)     # the window starts at 17:55:03
    assert [c["label"] for c in m["changes"]] == ["3->4"]
    assert "2 -> 3" not in _capacity_render.markdown(m) and "2-&gt;3" not in _capacity_render.html_page(m)


def test_markers_on_every_chart_distinct_for_rolled_back_and_failed():
    records = [rec("2025-12-12T06:00:00Z", 2, 4), rec("2025-12-12T12:00:00Z", 4, 6, "rolled_back"),
               rec("2025-12-12T18:00:00Z", 4, 8, "failed", action="scale",
                   actor={"kind": "controller", "user": "bob"}, reason="<b>manual</b>")]
    page = _capacity_render.html_page(model({"qfc1": (records, 0)}))
    assert page.count('<g class="change">') == 9                      # three changes on three charts
    for label in ("2-&gt;4", "4-&gt;6 rolled back", "4-&gt;8 failed"):
        assert page.count(">%s</text>" % label) == 3, label
    changed = 'stroke="%s" stroke-width="1.6"/>' % _capacity_charts.COLORS["changed"]
    rolled = 'stroke="%s" stroke-width="1.6" stroke-dasharray="5 3"/>' % _capacity_charts.COLORS["rolled_back"]
    failed = 'stroke="%s" stroke-width="1.6" stroke-dasharray="2 3"/>' % _capacity_charts.COLORS["failed"]
    assert page.count(changed) == page.count(rolled) == page.count(failed) == 3
    assert "<b>manual</b>" not in page and "&lt;b&gt;manual&lt;/b&gt;" in page
    assert "<h2>Changes in this period</h2>" in page and '<tr class="rolled_back">' in page
    for legend in ("change", "rolled back", "failed change"):                       # legend of each chart
        assert page.count("</i>%s<" % legend) == 3, legend


def test_marker_lines_stand_at_the_changes_time():
    start, end = datetime(2025, 12, 12, 0, 0), datetime(2025, 12, 13, 0, 0)
    change = {"at": datetime(2025, 12, 12, 12, 0), "label": "2->4", "result": "changed", "action": "scale",
              "reason": ""}
    svg = _capacity_charts.svg_chart("x", [{"key": "depth", "points": [(start, 1), (end, 2)]}], start, end, 900,
                                     changes=[change])
    middle = _capacity_charts.PAD_L + (_capacity_charts.CHART_W - _capacity_charts.PAD_L - _capacity_charts.PAD_R) / 2
    assert '<line x1="%.1f" x2="%.1f"' % (middle, middle) in svg
    outside = dict(change, at=datetime(2025, 12, 14))
    assert 'class="change"' not in _capacity_charts.svg_chart(
        "x", [{"key": "depth", "points": [(start, 1), (end, 2)]}], start, end, 900, changes=[outside])


def test_close_labels_are_stacked_and_the_rest_keep_their_line():
    records = [rec("2025-12-12T12:%02d:00Z" % minute, 2, 4) for minute in range(0, 10, 2)]
    page = _capacity_render.html_page(model({"qfc1": (records, 0)}))
    workers = page.split("<title>qfc1: workers</title>")[1].split("</svg>")[0]
    assert workers.count('<g class="change">') == 5
    rows = set(re.findall(r'<text x="[0-9.]+" y="(\d+)" style="fill', workers))
    assert len(rows) == _capacity_charts.LABEL_ROWS                     # stacked, then no room: line only
    assert workers.count(">2-&gt;4</text>") == _capacity_charts.LABEL_ROWS


def test_no_change_in_the_period_says_so_and_missing_logs_are_fine():
    m = model({"qfc1": None, "qfc2": ([], 0)}, logs={"qfc1": _metrics_log.parse(DAY), "qfc2": None})
    md, page = _capacity_render.markdown(m), _capacity_render.html_page(m)
    assert "## Changes in this period\n\nNo change recorded in the operations logs in this period." in md
    assert "No change recorded" in page and 'class="change"' not in page
    assert _capacity_model.result(m)["changes"] == []


def test_unreadable_records_are_noted_per_host():
    m = model({"qfc1": ([rec("2025-12-12T06:00:00Z"), {"time": "garbage"}], 2)})
    assert "- Note: 3 unreadable record(s) in the operations log skipped." in _capacity_render.markdown(m)
    assert _capacity_model.result(m)["hosts"]["qfc1"]["operations"]["skipped"] == 3


def test_the_result_lists_the_changes_with_both_times():
    m = model({"qfc1": ([rec("2025-12-12T06:00:00Z", actor={"kind": "controller", "user": "bob"})], 0)},
              {"qfc1": _capacity_changes.timezone_of("+01:00")})
    data = _capacity_model.result(m)
    assert data["changes"] == [{"local_time": "2025-12-12 07:00:00", "time": "2025-12-12T06:00:00Z", "host": "qfc1",
                                "action": "autoscale", "before": 2, "after": 4, "result": "changed", "actor": "bob",
                                "reason": "queue depth 12 > 10 for 600 s"}]
    assert data["hosts"]["qfc1"]["operations"]["in_period"] == 1


def test_without_an_operations_log_the_report_is_as_before():
    logs = {"qfc1": _metrics_log.parse(DAY)}
    before = _capacity_model.build(logs, 7 * 86400)
    assert "changes" not in before and "changes" not in _capacity_model.result(before)
    md, page = _capacity_render.markdown(before), _capacity_render.html_page(before)
    for text in ("Changes in this period", 'class="change"', "operations log", "tr.rolled_back"):
        assert text not in md and text not in page, text
    with_empty = _capacity_model.build(logs, 7 * 86400, operations={})
    assert _capacity_render.html_page(with_empty) != page       # asked for: the (empty) table is there


def test_records_written_by_the_oplog_are_read_back_into_the_report(tmp_path):
    path = tmp_path / "operations.jsonl"
    actor = _oplog.make_actor("17", "carol")
    for when, before, after in ((T0 + timedelta(hours=3), 1, 2), (T0 + timedelta(hours=5), 2, 1)):
        _oplog.append(str(path), _oplog.make_record("autoscale", before, after, "load", "changed", actor, "h",
                                                    now=when.replace(tzinfo=timezone.utc)))
    m = model({"qfc1": _oplog.read(str(path))})
    assert [c["label"] for c in m["changes"]] == ["1->2", "2->1"]
    assert {c["actor"] for c in m["changes"]} == {"AWX job 17 (carol)"}


HOSTILE = ["<img src=x onerror=alert(1)>", "[click](javascript:alert(1))", "![x](http://evil.example/x.png)",
           "<script>alert(1)</script>", "a\\|b", "&lt;b&gt; stays text", "x\r\ny"]


@pytest.mark.parametrize("reason", HOSTILE)
def test_markdown_shows_hostile_operations_log_text_as_text(reason):
    # issue 21, defect 8: the Markdown report passed raw HTML from an operations-log reason through; rendered by a
    # CommonMark renderer, no tag, link or image may come out of it, and the visible text is the reason itself
    records = [rec("2025-12-12T09:05:00Z", reason=reason, actor={"kind": "controller", "user": reason},
                   host=reason)]
    md = _capacity_render.markdown(model({"qfc1": (records, 0)}, logs={"qfc1": _metrics_log.parse(DAY),
                                                                       reason: _metrics_log.parse(DAY)}))
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<img" not in rendered and "<script" not in rendered and "<a " not in rendered
    row = [line for line in md.splitlines() if line.startswith("| 2025-12-12 ")][0]
    assert row.count(" | ") == len(_capacity_render.CHANGES_HEADER) - 1          # one row, no cell split off
    visible = re.sub(r"<[^>]+>", "", rendered)
    assert html_lib.unescape(visible).count(reason.replace("\r\n", "  ")) >= 2   # reason and actor, as written
