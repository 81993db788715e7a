"""The queue metrics log's format (_metrics_log): what the collector writes is what the capacity report reads."""

from __future__ import annotations

from datetime import datetime

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log, _queue

STAMP = datetime(2026, 12, 2, 17, 5, 3)


def facts(**over):
    answer = {"by_status": {"pending": 5, "queued": 2, "started": 3, "finished": 40, "failed": 7},
              "oldest_pending_age_s": 42.0, "useful_backlog": 4, "eligible_projects": 4, "oldest_eligible_age_s": 9.0,
              "busy_projects": 5, "locked_projects_waiting": 1, "stuck_stale": 1, "stuck_orphaned_queued": 2,
              "stuck_old_pending": 3, "last_hour_finished": 17, "last_hour_failed": 3, "duration_count": 20,
              "duration_avg_s": 10.04, "duration_p50_s": 9.25, "duration_p95_s": 30.5}
    answer.update(over)
    return dict(_queue.shape(answer, 86400), worker_timeout_s=900, worker_timeout_source="constance")


def test_an_ok_row_round_trips_every_column():
    shaped = facts()
    line = _metrics_log.format_row(STAMP, shaped, {"configured": 6, "running": 5, "busy": 4})
    assert line.endswith("\n") and line.count(",") == len(_metrics_log.COLUMNS) - 1
    assert line.startswith("2026-12-02 17:05:03,7,")  # the seed's timestamp,queue_depth
    row = _metrics_log.parse_line(line)
    assert row == {"ts": STAMP, "queue_depth": 7, "pending": 5, "queued": 2, "started": 3, "useful_backlog": 4,
                   "workers_configured": 6, "workers_running": 5, "workers_busy": 4, "finished_last_hour": 17,
                   "failed_last_hour": 3, "success_rate": 0.85, "duration_p50_s": 9.2, "duration_p95_s": 30.5,
                   "stuck_stale": 1, "stuck_orphaned_queued": 2, "stuck_old_pending": 3, "status": "ok", "error": "",
                   "worker_timeout_source": "constance"}


def test_unknown_figures_are_empty_and_come_back_as_none():
    shaped = facts(last_hour_finished=0, last_hour_failed=0, duration_p50_s=None, duration_p95_s=None)
    workers = {"configured": None, "running": None, "busy": 0}
    row = _metrics_log.parse_line(_metrics_log.format_row(STAMP, shaped, workers))
    assert (row["success_rate"], row["duration_p50_s"], row["workers_configured"], row["workers_running"]) == (
        None, None, None, None)
    assert row["workers_busy"] == 0 and row["status"] == "ok"


def test_an_error_row_round_trips_its_message():
    line = _metrics_log.format_row("2026-12-02 17:05:03", error="could not connect, host db\nport 5432")
    assert line == "2026-12-02 17:05:03" + "," * 16 + ",error,could not connect; host db port 5432,\n"
    row = _metrics_log.parse_line(line)
    assert (row["status"], row["error"], row["worker_timeout_source"]) == (
        "error", "could not connect; host db port 5432", None)
    assert all(row[c] is None for c in _metrics_log.NUMERIC_COLUMNS)


@pytest.mark.parametrize("value, text", [(None, ""), (0, "0"), (3, "3"), (0.9, "0.9"), (1.0, "1"), (0.98765, "0.9877"),
                                         (12.5, "12.5"), ("env", "env")])
def test_values_as_written(value, text):
    assert _metrics_log.fmt(value) == text
