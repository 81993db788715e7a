"""Capacity report from the queue metrics log: parsing (_metrics_log), windows and figures (_capacity_model), the
decision matrix on a window (_policy.decide), Markdown and HTML (_capacity_render, _capacity_charts)."""

from __future__ import annotations

import importlib.util
import json
import random
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import (
    _capacity_charts, _capacity_model, _capacity_render, _metrics_log, _policy)

T0 = datetime(2025, 12, 12, 0, 0, 3)
FMT = "%Y-%m-%d %H:%M:%S"
OK_DEFAULTS = {"queue_depth": 1, "pending": 1, "queued": 0, "started": 1, "useful_backlog": 0,
               "workers_configured": 4, "workers_running": 4, "workers_busy": 1, "finished_last_hour": 20,
               "failed_last_hour": 0, "success_rate": 1.0, "duration_p50_s": 30.0, "duration_p95_s": 90.0,
               "stuck_stale": 0, "stuck_orphaned_queued": 0, "stuck_old_pending": 0}


def _load_collector():
    """The monitoring role's collector script, so the fixture rows are formatted by the code that writes the log."""
    path = Path(__file__).resolve().parents[4] / "roles" / "monitoring" / "files" / "qfc_queue_collector.py"
    spec = importlib.util.spec_from_file_location("qfc_queue_collector", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fmt = _metrics_log.fmt  # what the collector writes with: empty for None, floats without trailing zeros


def ok_row(stamp, **values):
    row = dict(OK_DEFAULTS, **values)
    if "success_rate" not in values:
        total = row["finished_last_hour"] + row["failed_last_hour"]
        row["success_rate"] = round(row["finished_last_hour"] / total, 4) if total else None
    return ",".join([stamp.strftime(FMT)] + [fmt(row[c]) for c in _metrics_log.NUMERIC_COLUMNS] + ["ok", ""])


def error_row(stamp, message="connection to server at 127.0.0.1; port 5433 failed: Connection refused"):
    return stamp.strftime(FMT) + "," * 16 + ",error," + message


def history(n, start=T0, interval_s=300, **values):
    """n ok rows, 5 minutes apart; a value may be a function of the row's index."""
    lines = []
    for i in range(n):
        row = {k: v(i) if callable(v) else v for k, v in values.items()}
        lines.append(ok_row(start + timedelta(seconds=i * interval_s), **row))
    return "\n".join(lines) + "\n"


def model_of(*texts, window_s=7 * 86400, **named):
    logs = {"qfc%d" % (i + 1): _metrics_log.parse(t) if t is not None else None for i, t in enumerate(texts)}
    logs.update({k: _metrics_log.parse(v) if v is not None else None for k, v in named.items()})
    return _capacity_model.build(logs, window_s)


def one(text, window_s=7 * 86400):
    return model_of(text, window_s=window_s)["hosts"][0]["figures"]


# ---------------------------------------------------------------------------------------------------------- parsing

def test_columns_match_the_collector_contract():
    assert len(_metrics_log.COLUMNS) == 20
    assert _metrics_log.COLUMNS[1] == "queue_depth"  # the seed's awk one-liners read $2
    assert _metrics_log.COLUMNS[5] == "useful_backlog"  # position kept when its meaning was fixed
    assert _metrics_log.COLUMNS[17:] == ("status", "error", "worker_timeout_source")
    assert _metrics_log.STATUS_INDEX == 17 and _metrics_log.NUMERIC_COLUMNS == _metrics_log.COLUMNS[1:17]
    # The collector keeps no column list of its own: it writes its rows with _metrics_log (the rows a real run writes
    # are parsed back in tests/integration/test_monitoring.py).
    collector = _load_collector()
    assert not hasattr(collector, "COLUMNS") and collector._metrics_log is _metrics_log


@pytest.mark.parametrize("source", ["option", "env", "constance", "default"])
def test_rows_with_the_timeout_source_column(source):
    collector = _load_collector()
    facts = {"by_status": {"pending": 3, "queued": 1, "started": 1}, "queue_depth": 4, "useful_backlog": 2,
             "last_hour": {"finished": 9, "failed": 1, "success_rate": 0.9}, "duration": {"p50_s": 3.0, "p95_s": 9.5},
             "stuck": {"stale": 0, "orphaned_queued": 0, "old_pending": 0}, "worker_timeout_source": source}
    line = collector._metrics_log.format_row(T0.strftime(FMT), facts, {"configured": 2, "running": 2, "busy": 1})
    assert line.count(",") == len(_metrics_log.COLUMNS) - 1
    row = _metrics_log.parse_line(line)
    assert (row["status"], row["error"], row["worker_timeout_source"]) == ("ok", "", source)
    assert (row["useful_backlog"], row["success_rate"]) == (2, 0.9)
    error = _metrics_log.parse_line(collector._metrics_log.format_row(T0.strftime(FMT),
                                                                      error="could not connect, host db"))
    assert (error["status"], error["error"], error["worker_timeout_source"]) == (
        "error", "could not connect; host db", None)


def test_rows_written_before_the_timeout_source_column_still_parse():
    row = _metrics_log.parse_line(ok_row(T0, useful_backlog=3))
    assert (row["status"], row["useful_backlog"], row["worker_timeout_source"]) == ("ok", 3, None)
    old_error = _metrics_log.parse_line(error_row(T0, "could not connect, host db, port 5432"))
    assert (old_error["error"], old_error["worker_timeout_source"]) == ("could not connect, host db, port 5432", None)


def test_parse_an_ok_row():
    row = _metrics_log.parse_line(ok_row(T0, queue_depth=7, workers_running=None, success_rate=0.9756,
                                         finished_last_hour=40, failed_last_hour=1))
    assert row["ts"] == T0 and row["status"] == "ok" and row["error"] == ""
    assert row["queue_depth"] == 7 and isinstance(row["queue_depth"], int)
    assert row["workers_running"] is None
    assert row["success_rate"] == 0.9756 and row["duration_p95_s"] == 90.0


def test_parse_an_error_row():
    row = _metrics_log.parse_line(error_row(T0))
    assert row["status"] == "error"
    assert row["error"].startswith("connection to server")
    assert all(row[c] is None for c in _metrics_log.NUMERIC_COLUMNS)


def test_error_message_with_commas_left_in_is_kept_whole():
    row = _metrics_log.parse_line(T0.strftime(FMT) + "," * 16 + ",error,could not connect, host db, port 5432")
    assert row["error"] == "could not connect, host db, port 5432"


def test_error_row_figures_are_not_trusted():
    line = T0.strftime(FMT) + ",99" + "," * 15 + ",error,boom"
    assert _metrics_log.parse_line(line)["queue_depth"] is None


def test_crlf_and_a_missing_error_column_are_accepted():
    line = ok_row(T0)
    assert _metrics_log.parse_line(line + "\r\n")["status"] == "ok"
    assert _metrics_log.parse_line(line.rsplit(",", 1)[0])["error"] == ""


@pytest.mark.parametrize("line", [
    "timestamp,queue_depth,pending,queued,started,useful_backlog,workers_configured,workers_running,workers_busy,"
    "finished_last_hour,failed_last_hour,success_rate,duration_p50_s,duration_p95_s,stuck_stale,"
    "stuck_orphaned_queued,stuck_old_pending,status,error",                   # a header someone added
    "2025-12-12 00:00:03,4",                                                  # the seed's two-column format
    "2025-12-12 00:00:03,1,1,0,1,0,4,4,1,20,0,1,30,90,0,0",                  # cut off mid-row
    "2025-12-12 00:00:03,1,1,0,1,0,4,4,1,20,0,1,30,90,0,0,0,o",              # cut off in the status
    "12/12/2025 00:00,1,1,0,1,0,4,4,1,20,0,1,30,90,0,0,0,ok,",               # another timestamp format
    "2025-12-12 00:00:03,x,1,0,1,0,4,4,1,20,0,1,30,90,0,0,0,ok,",            # not a number
    "2025-12-12 00:00:03,-1,1,0,1,0,4,4,1,20,0,1,30,90,0,0,0,ok,",           # negative count
    "2025-12-12 00:00:03,1.5,1,0,1,0,4,4,1,20,0,1,30,90,0,0,0,ok,",          # fractional count
    "2025-12-12 00:00:03,1,1,0,1,0,4,4,1,20,0,1.2,30,90,0,0,0,ok,",          # success rate above 1
    "2025-12-12 00:00:03,nan,1,0,1,0,4,4,1,20,0,1,30,90,0,0,0,ok,",          # not finite
    "\x00\x00\x00\x00",                                                      # a crash left zeros
])
def test_garbled_lines_are_rejected(line):
    with pytest.raises(ValueError):
        _metrics_log.parse_line(line)


def test_parse_skips_and_counts_blank_and_garbled_lines():
    text = "\n".join([ok_row(T0), "", "   ", "garbage", ok_row(T0 + timedelta(minutes=5)), "2025-12-12 00:10:03,3",
                      error_row(T0 + timedelta(minutes=10))]) + "\n"
    parsed = _metrics_log.parse(text)
    assert len(parsed["rows"]) == 3
    assert (parsed["lines"], parsed["blank"], parsed["garbled"]) == (7, 2, 2)
    assert parsed["first_garbled"].startswith("line 4: ")


def test_parse_sorts_rows_by_time():
    text = "\n".join([ok_row(T0 + timedelta(minutes=10), queue_depth=3), ok_row(T0, queue_depth=1),
                      ok_row(T0 + timedelta(minutes=5), queue_depth=2)])
    assert [r["queue_depth"] for r in _metrics_log.parse(text)["rows"]] == [1, 2, 3]


def test_parse_accepts_lines_from_a_file_object(tmp_path):
    path = tmp_path / "queue_metrics.log"
    path.write_text(history(3))
    with open(path) as handle:
        assert len(_metrics_log.parse(handle)["rows"]) == 3


# ----------------------------------------------------------------------------------------------------------- window

def test_window_last_seconds_excludes_the_start():
    rows = _metrics_log.parse(history(48))["rows"]
    assert len(_capacity_model.window(rows, last_s=3600)) == 12
    assert _capacity_model.window(rows, last_s=3600)[-1] is rows[-1]
    assert len(_capacity_model.window(rows, last_s=86400)) == 48


def test_window_since_until_inclusive_with_strings_or_datetimes():
    rows = _metrics_log.parse(history(12))["rows"]
    picked = _capacity_model.window(rows, since="2025-12-12 00:10:03", until=T0 + timedelta(minutes=20))
    assert [r["ts"].minute for r in picked] == [10, 15, 20]
    assert len(_capacity_model.window(rows, since=T0 + timedelta(minutes=50))) == 2
    assert len(_capacity_model.window(rows, until=T0)) == 1
    assert _capacity_model.window([], last_s=60) == []


def test_report_window_ends_at_the_newest_row_of_the_fleet():
    old = history(12 * 24 * 3)                                          # three days
    recent = history(12, start=T0 + timedelta(days=3, hours=-1))         # the last hour of those days
    model = model_of(old, recent, window_s=86400)
    assert model["until"] == "2025-12-14 23:55:03"
    assert [h["figures"]["samples"] for h in model["hosts"]] == [288, 12]


def test_host_with_only_older_rows_has_no_data_in_the_window():
    model = model_of(history(3), history(3, start=T0 + timedelta(days=10)), window_s=86400)
    first = model["hosts"][0]
    assert first["rows"] == [] and first["newest"] == "2025-12-12 00:10:03"
    assert _capacity_model.result(model)["hosts"]["qfc1"]["log"] == "outside_window"
    assert "no data in the window: the newest row is from 2025-12-12 00:10:03" in _capacity_render.markdown(model)


# ---------------------------------------------------------------------------------------------- empty and one row

def test_empty_log():
    model = model_of("")
    f = model["fleet"]
    assert f["samples"] == 0 and f["availability"] is None and f["queue_depth"]["avg"] is None
    assert f["jobs"] == {"finished": 0, "failed": 0, "success_rate": None, "hours_covered": 0}
    assert f["decision"]["action"] == "monitor"
    md, page = _capacity_render.markdown(model), _capacity_render.html_page(model)
    assert "Period: no data." in md and "no data: the log is empty" in md
    assert page.count("<svg") == 0 and "No data: the log is empty" in page
    assert _capacity_model.result(model)["hosts"]["qfc1"]["log"] == "empty"


def test_no_log_at_all():
    model = model_of(None)
    assert _capacity_model.result(model)["hosts"]["qfc1"]["log"] == "missing"
    assert "no data: no log was fetched from this host" in _capacity_render.markdown(model)
    assert _capacity_model.build({}, 3600)["fleet"]["samples"] == 0


def test_one_row_log():
    model = model_of(ok_row(T0, queue_depth=3, finished_last_hour=19, failed_last_hour=1))
    f = model["fleet"]
    assert f["samples"] == 1 and f["first"] == f["last"] == "2025-12-12 00:00:03"
    assert f["queue_depth"] == {"avg": 3.0, "peak": 3, "peak_at": "2025-12-12 00:00:03"}
    assert f["jobs"] == {"finished": 19, "failed": 1, "success_rate": 0.95, "hours_covered": 1}
    assert f["duration"]["p95_s"] == 90.0 and f["largest_gap_s"] is None
    assert f["decision"]["action"] == "stop"
    assert "a single sample (2025-12-12 00:00:03)" in _capacity_render.markdown(model)
    page = _capacity_render.html_page(model)
    assert page.count("<svg") == 3
    assert "<circle" in page and "<polyline" not in page  # a single point is drawn as a dot


def test_only_error_rows():
    text = "\n".join(error_row(T0 + timedelta(minutes=5 * i)) for i in range(4))
    f = one(text)
    assert (f["samples"], f["ok_samples"], f["error_samples"], f["availability"]) == (4, 0, 4, 0.0)
    assert f["queue_depth"]["avg"] is None and f["decision"]["action"] == "monitor"
    assert f["last_error"] == {"at": "2025-12-12 00:15:03",
                               "message": "connection to server at 127.0.0.1; port 5433 failed: Connection refused"}
    assert _capacity_render.html_page(model_of(text)).count("<svg") == 3


# ---------------------------------------------------------------------------------------------------------- figures

def test_error_rows_count_against_availability_not_the_averages():
    lines = history(8, queue_depth=lambda i: 4).splitlines()
    lines[3] = error_row(T0 + timedelta(minutes=15))
    f = one("\n".join(lines))
    assert (f["ok_samples"], f["error_samples"], f["availability"]) == (7, 1, 0.875)
    assert f["queue_depth"]["avg"] == 4.0  # the awk one-liner would say 3.5, counting the empty $2 as 0
    assert f["last_error"]["at"] == "2025-12-12 00:15:03"


def test_depth_average_and_peak():
    f = one(history(10, queue_depth=lambda i: i))
    assert f["queue_depth"] == {"avg": 4.5, "peak": 9, "peak_at": "2025-12-12 00:45:03"}


def simulate_jobs(hours, seed=7, fail_p=0.1, jitter_s=20):
    """A job stream and the rows a collector would write about it every 5 minutes (with cron jitter)."""
    rnd = random.Random(seed)
    ends = sorted((T0 + timedelta(seconds=rnd.uniform(-3600, hours * 3600)), rnd.random() >= fail_p)
                  for _i in range(hours * 40))
    lines = []
    for i in range(hours * 12):
        stamp = T0 + timedelta(seconds=i * 300 + rnd.uniform(0, jitter_s))
        last_hour = [ok for end, ok in ends if stamp - timedelta(hours=1) < end <= stamp]
        lines.append(ok_row(stamp.replace(microsecond=0), finished_last_hour=sum(last_hour),
                            failed_last_hour=len(last_hour) - sum(last_hour)))
    return ends, "\n".join(lines)


def test_jobs_are_counted_once_from_rows_an_hour_apart():
    ends, text = simulate_jobs(48)
    rows = _metrics_log.parse(text)["rows"]
    f = one(text)
    picks = _capacity_model.hourly_samples(rows)
    assert len(picks) == f["jobs"]["hours_covered"] == 48
    covered = [ok for end, ok in ends if picks[-1]["ts"] - timedelta(hours=1) < end <= picks[0]["ts"]]
    # The overlap allowed for jitter (at most JITTER_S per hour) may count a job twice; here it is exact or close.
    assert abs(f["jobs"]["finished"] - sum(covered)) <= 3
    assert abs(f["jobs"]["failed"] - (len(covered) - sum(covered))) <= 3
    naive = sum(r["finished_last_hour"] + r["failed_last_hour"] for r in rows)
    assert naive > 10 * len(covered)  # why the rows cannot simply be summed
    assert f["jobs"]["success_rate"] == pytest.approx(sum(covered) / len(covered), abs=0.005)


def test_an_hour_without_a_readable_row_is_not_covered():
    lines = history(36, finished_last_hour=10).splitlines()          # three hours
    for i in range(12, 24):                                           # the middle hour: database down
        lines[i] = error_row(T0 + timedelta(minutes=5 * i))
    f = one("\n".join(lines))
    assert f["jobs"]["hours_covered"] == 2 and f["jobs"]["finished"] == 20


def test_success_rate_is_weighted_by_jobs_not_by_hours():
    # Hour 1: 1 job, failed. Hour 2: 99 jobs, all finished. Mean of hourly rates: 50%; by jobs: 99%.
    lines = [ok_row(T0, finished_last_hour=0, failed_last_hour=1),
             ok_row(T0 + timedelta(hours=1), finished_last_hour=99, failed_last_hour=0)]
    assert one("\n".join(lines))["jobs"]["success_rate"] == 0.99


def test_mixture_quantile_of_one_period_is_its_own():
    assert _capacity_model.mixture_quantile([(10, 30.0, 90.0)], 0.95) == pytest.approx(90.0, rel=1e-6)
    assert _capacity_model.mixture_quantile([(10, 30.0, 90.0)], 0.5) == pytest.approx(30.0, rel=1e-6)
    assert _capacity_model.mixture_quantile([], 0.95) is None


def test_mixture_quantile_lies_between_the_periods_and_follows_the_weights():
    light_slow = _capacity_model.mixture_quantile([(100, 30.0, 90.0), (1, 60.0, 300.0)], 0.95)
    heavy_slow = _capacity_model.mixture_quantile([(1, 30.0, 90.0), (100, 60.0, 300.0)], 0.95)
    assert 90.0 <= light_slow < heavy_slow <= 300.0
    assert light_slow < 120 and heavy_slow > 280
    assert _capacity_model.mixture_quantile([(5, 30.0, 90.0), (5, 30.0, 90.0)], 0.95) == pytest.approx(90.0, rel=1e-6)
    # zero weights everywhere: equal weights; degenerate fits (p50 missing or = p95) are point masses
    assert 90.0 <= _capacity_model.mixture_quantile([(0, 30.0, 90.0), (0, None, 120.0)], 0.95) <= 120.0
    assert _capacity_model.mixture_quantile([(1, 50.0, 50.0)], 0.95) == 50.0


def test_p95_over_a_week_uses_rows_a_day_apart():
    # Durations change after three days; rows carry the 24 h figures, as the collector writes them.
    text = history(12 * 24 * 7, duration_p50_s=lambda i: 30.0 if i < 12 * 24 * 3 else 60.0,
                   duration_p95_s=lambda i: 90.0 if i < 12 * 24 * 3 else 240.0)
    d = one(text)["duration"]
    assert d["periods"] == 7 and d["p95_max_s"] == 240.0
    assert 90.0 < d["p95_s"] < 240.0
    single_day = one(text, window_s=86400)["duration"]
    assert single_day["periods"] == 1 and single_day["p95_s"] == 240.0


def test_worker_use_caps_busy_at_running_and_falls_back_to_configured():
    text = "\n".join([ok_row(T0, workers_running=4, workers_busy=2),
                      ok_row(T0 + timedelta(minutes=5), workers_running=2, workers_busy=5),   # busy capped at 2
                      ok_row(T0 + timedelta(minutes=10), workers_running=None, workers_configured=4,
                             workers_busy=1),
                      ok_row(T0 + timedelta(minutes=15), workers_running=0, workers_busy=0)])
    w = one(text)["workers"]
    assert w["utilisation"] == round(5 / 10.0, 4)
    assert w["busy_peak"] == 5 and w["running_avg"] == 2.0 and w["configured"] == 4


def test_fleet_figures():
    model = model_of(history(12, queue_depth=2, workers_running=2, workers_configured=2),
                     history(12, queue_depth=8, workers_running=4, workers_configured=4), "")
    f = model["fleet"]
    assert f["samples"] == 24 and f["queue_depth"]["avg"] == 5.0 and f["queue_depth"]["peak"] == 8
    assert f["workers"]["configured"] == 6 and f["workers"]["running_avg"] == 6.0 and f["workers"]["busy_peak"] is None
    assert f["jobs"]["finished"] == 40 and f["jobs"]["hours_covered"] == 2
    decisions = [h["figures"]["decision"]["action"] for h in model["hosts"]] + [f["decision"]["action"]]
    assert decisions == ["stop", "consider", "monitor", "consider"]


def test_gaps_and_stale_hosts_are_noted():
    lines = history(24).splitlines()
    del lines[5:15]                                                     # 55 minutes without a row
    model = model_of("\n".join(lines), history(48))
    assert model["hosts"][0]["figures"]["largest_gap_s"] == 55 * 60
    md = _capacity_render.markdown(model)
    assert "largest gap between samples: 55 s" not in md and "largest gap between samples: 55.0 min" in md
    assert "the newest sample is 2.0 h older than the fleet's newest" in md


# --------------------------------------------------------------------------------------------------------- decision

@pytest.mark.parametrize("depth, rate, action, reason", [
    (2.0, 0.95, "stop", "average queue depth 2.00 < 5 and success 95.0% > 90%: configuration is sufficient"),
    (4.99, 0.9001, "stop", "average queue depth 4.99 < 5 and success 90.0% > 90%: configuration is sufficient"),
    (5.0, 0.95, "consider",
     "average queue depth 5.00 is 5-10 and success 95.0% > 80%: consider database indexes or caching"),
    (7.5, 0.85, "consider",
     "average queue depth 7.50 is 5-10 and success 85.0% > 80%: consider database indexes or caching"),
    (10.0, 0.81, "consider",
     "average queue depth 10.00 is 5-10 and success 81.0% > 80%: consider database indexes or caching"),
    (10.01, 0.99, "investigate", "average queue depth 10.01 > 10: root-cause analysis needed"),
    (2.0, 0.79, "investigate", "success 79.0% < 80%: root-cause analysis needed"),
    (7.0, 0.5, "investigate", "success 50.0% < 80%: root-cause analysis needed"),
    # depth fine but success between 80% and 90%
    (2.0, 0.85, "monitor",
     "average queue depth 2.00 with success 85.0% lies between the matrix's bands: keep collecting"),
    # success exactly 80%: neither > 80% nor < 80%
    (7.0, 0.80, "monitor",
     "average queue depth 7.00 with success 80.0% lies between the matrix's bands: keep collecting"),
    # no job ended
    (3.0, None, "monitor", "average queue depth 3.00, but no job ended in the sampled hours: keep collecting"),
    (None, None, "monitor", "no samples in the window: keep collecting"),     # no data
])
def test_decision_matrix(depth, rate, action, reason):
    decision = _policy.decide(depth, rate)
    assert (decision["action"], decision["reason"]) == (action, reason)
    assert reason.startswith(decision["basis"] + ": ") and reason.endswith(": " + decision["summary"])


def test_decision_reasons_name_the_figures():
    assert _policy.decide(12.345, 0.5)["basis"] == "average queue depth 12.35 > 10 and success 50.0% < 80%"
    assert _policy.decide(None, None)["basis"] == "no samples in the window"


@pytest.mark.parametrize("values, action", [
    ({"queue_depth": 1, "finished_last_hour": 99, "failed_last_hour": 1}, "stop"),
    ({"queue_depth": 7, "finished_last_hour": 85, "failed_last_hour": 15}, "consider"),
    ({"queue_depth": 14, "finished_last_hour": 99, "failed_last_hour": 1}, "investigate"),
    ({"queue_depth": 1, "finished_last_hour": 60, "failed_last_hour": 40}, "investigate"),
    ({"queue_depth": 1, "finished_last_hour": 85, "failed_last_hour": 15}, "monitor"),
    ({"queue_depth": 1, "finished_last_hour": 0, "failed_last_hour": 0}, "monitor"),
])
def test_decision_on_generated_histories(values, action):
    assert one(history(12 * 24, **values))["decision"]["action"] == action


# ------------------------------------------------------------------------------------------------------- rendering

def week(seed=3):
    rnd = random.Random(seed)
    return history(12 * 24 * 7, queue_depth=lambda i: rnd.randint(0, 6), workers_busy=lambda i: rnd.randint(0, 4),
                   finished_last_hour=lambda i: rnd.randint(10, 30), failed_last_hour=lambda i: rnd.randint(0, 2))


def test_html_has_one_svg_per_chart_and_no_external_resources():
    lines = week().splitlines()
    lines[100] = error_row(datetime.strptime(lines[100][:19], FMT))
    model = model_of("\n".join(lines), week(4), "", None)
    page = _capacity_render.html_page(model)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") == page.count("</svg>") == 6      # three charts for each host with data
    assert page.count("<figure>") == 6
    for needle in ("http:", "https:", "//", "<script", "<link", "<img", "url(", "@import", "src="):
        assert needle not in page.replace("</", "<"), needle
    assert "<style>" in page


def test_long_histories_are_down_sampled():
    page = _capacity_render.html_page(model_of(history(12 * 24 * 30, queue_depth=lambda i: i % 7), window_s=None))
    for points in re.findall(r'<polyline points="([^"]*)"', page):
        assert len(points.split()) <= _capacity_charts.MAX_POINTS
    assert len(page) < 400_000


def test_output_is_deterministic_and_embeds_no_clock_time():
    text = week()
    first, second = model_of(text), model_of(text)
    assert _capacity_render.markdown(first) == _capacity_render.markdown(second)
    assert _capacity_render.html_page(first) == _capacity_render.html_page(second)
    today = datetime.now().strftime("%Y-%m-%d")
    assert today not in _capacity_render.markdown(first) + _capacity_render.html_page(first)


def test_markdown_summary_table_and_escaping():
    model = model_of(week(), **{"odd|host": ""})
    md = _capacity_render.markdown(model)
    assert md.startswith("# QFieldCloud capacity report\n")
    assert "| odd\\|host | 0 |" in md
    assert "| **all hosts** |" in md
    assert "## How the figures are computed" in md
    header = [line for line in md.splitlines() if line.startswith("| host |")][0]
    assert header.count("|") == len(_capacity_render.SUMMARY_HEADER) + 2


def test_html_escapes_host_names_and_messages():
    model = model_of(error_row(T0, "<b>bad</b>"), **{"<host>": history(2)})
    page = _capacity_render.html_page(model)
    assert "<b>bad</b>" not in page and "&lt;b&gt;bad&lt;/b&gt;" in page
    assert "<host>" not in page and "&lt;host&gt;" in page


def test_result_has_no_rows_and_is_json_serialisable():
    data = _capacity_model.result(model_of(week(), ""))
    assert set(data["hosts"]) == {"qfc1", "qfc2"}
    assert data["hosts"]["qfc1"]["rows_in_window"] == 2016 and data["hosts"]["qfc2"]["log"] == "empty"
    json.dumps(data)
