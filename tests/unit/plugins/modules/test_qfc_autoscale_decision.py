"""qfc_autoscale_decision's own parts: reading only the end of a large metrics log, refusing what is not a file, and
its argument spec (the bounds' defaults are _policy's)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _metrics_log, _oplog, _policy
from ansible_collections.qfieldcloud.ops.plugins.modules import qfc_autoscale_decision as mod

from tests.support.argspecs import argument_spec

START = datetime(2026, 1, 1, 0, 0, 0)
ERROR_ROW = "error,,,,,,,,,,,,,,,,,status,msg\n"


def write_log(path, rows, step_s=300):
    """``rows`` collector error rows (short, fixed format) every ``step_s`` from START; returns the last stamp."""
    with open(path, "w") as handle:
        for i in range(rows):
            handle.write(_metrics_log.format_row(START + timedelta(seconds=i * step_s), error="db down"))
    return START + timedelta(seconds=(rows - 1) * step_s)


class CountingOpen:
    """Counts the bytes read through the files it opens."""

    def __init__(self):
        self.read = 0

    def __call__(self, *args, **kwargs):
        handle = open(*args, **kwargs)
        real = handle.read

        def read(*a):
            data = real(*a)
            self.read += len(data)
            return data

        handle.read = read
        return handle


def test_a_large_log_is_read_from_its_end_only(tmp_path, monkeypatch):
    path = tmp_path / "queue_metrics.log"
    last = write_log(path, 100_000)  # a year of 5-minute rows, ~7 MB
    size = os.path.getsize(path)
    counter = CountingOpen()
    monkeypatch.setattr(mod, "open", counter, raising=False)
    started = time.monotonic()
    text = mod.read_tail(str(path), last - timedelta(hours=2))
    took = time.monotonic() - started
    parsed = _metrics_log.parse(text)
    stamps = [r["ts"] for r in parsed["rows"]]
    assert parsed["garbled"] == 0 and parsed["blank"] == 0  # the cut first line is dropped, no half row
    assert stamps[-1] == last and stamps[0] <= last - timedelta(hours=2)
    assert len(stamps) < 2000 and counter.read < size / 20, (len(stamps), counter.read, size)
    assert took < 1.0


def test_the_whole_file_when_it_is_all_recent(tmp_path):
    path = tmp_path / "queue_metrics.log"
    last = write_log(path, 50)
    text = mod.read_tail(str(path), last - timedelta(days=30))
    assert text == path.read_text()
    text = mod.read_tail(str(path), last - timedelta(days=30), chunk=100)  # many small chunks, the same
    assert text == path.read_text()


def test_the_read_is_capped(tmp_path):
    path = tmp_path / "queue_metrics.log"
    last = write_log(path, 5000)
    text = mod.read_tail(str(path), last - timedelta(days=365), chunk=1000, max_bytes=10_000)
    parsed = _metrics_log.parse(text)
    assert 0 < len(text) <= 10_000 and parsed["garbled"] == 0
    assert parsed["rows"][-1]["ts"] == last


def test_missing_file_and_what_is_not_a_file(tmp_path):
    assert mod.read_tail(str(tmp_path / "none.log"), START) == ""
    assert mod.regular_file(str(tmp_path / "none.log")) is False
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for call in (lambda: mod.read_tail(str(fifo), START), lambda: mod.regular_file(str(fifo)),
                 lambda: mod.read_tail(str(tmp_path), START)):
        with pytest.raises(OSError, match="is not a regular file"):
            call()


def test_garbage_before_the_rows_is_left_to_the_parser(tmp_path):
    path = tmp_path / "queue_metrics.log"
    last = write_log(path, 20)
    path.write_text("garbage\n\n" + path.read_text() + ERROR_ROW)
    parsed = _metrics_log.parse(mod.read_tail(str(path), last - timedelta(days=1)))
    assert len(parsed["rows"]) == 20 and parsed["garbled"] == 2


def test_the_bounds_options_default_to_the_policy():
    spec = argument_spec("qfc_autoscale_decision")
    d = _policy.AUTOSCALE_DEFAULTS
    assert (spec["min_replicas"]["default"], spec["max_replicas"]["default"]) == (d["min_replicas"], d["max_replicas"])
    assert (spec["up_after"]["default"], spec["down_after"]["default"], spec["cooldown"]["default"]) == (
        d["up_after_s"], d["down_after_s"], d["cooldown_s"])
    assert spec["max_step_up"].get("default") is None and spec["max_step_down"]["default"] == d["max_step_down"]
    assert spec["login_password"]["no_log"] is True


def _change(path, when, after):
    record = _oplog.make_record("scale", after - 1, after, "test", "changed", _oplog.make_actor(user="t"),
                                host="h", now=when)
    _oplog.append(str(path), record)


def test_the_last_change_is_found_in_the_rotated_log_after_a_rotation(tmp_path):
    log = tmp_path / "operations.jsonl"
    warnings = []
    assert mod.last_recorded_change(str(log), warnings.append) is None
    _change(str(log) + ".1", datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc), 3)
    assert mod.last_recorded_change(str(log), warnings.append)["after"] == 3  # the current log is missing
    log.write_text("")  # rotated, nothing recorded since
    assert mod.last_recorded_change(str(log), warnings.append)["after"] == 3
    _change(log, datetime(2026, 12, 2, 0, 0, tzinfo=timezone.utc), 5)
    assert mod.last_recorded_change(str(log), warnings.append)["after"] == 5  # the current log wins
    with open(log, "a") as handle:
        handle.write("torn line\n")
    assert mod.last_recorded_change(str(log), warnings.append)["after"] == 5
    assert len(warnings) == 1 and "1 unreadable line" in warnings[0]


def test_a_rotated_log_that_is_not_a_file_is_refused(tmp_path):
    log = tmp_path / "operations.jsonl"
    os.mkfifo(str(log) + ".1")
    with pytest.raises(OSError, match="not a regular file"):
        mod.last_recorded_change(str(log), print)
