"""The verification decision and Engine timestamp parsing, as pure functions."""

from __future__ import annotations

import pytest

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _workers
from ansible_collections.qfieldcloud.ops.plugins.module_utils._workers import (
    VerifyError, evaluate, parse_docker_time, summarize, wait_for_replicas)


def c(name, state="running", started=0.0, restarts=0):
    return {"name": name, "state": state, "started_at": started, "restart_count": restarts, "number": 1, "id": name}


def test_parse_docker_time():
    assert parse_docker_time("2026-11-29T18:16:17.5Z") == pytest.approx(1795976177.5)
    assert parse_docker_time("2026-11-29T18:16:17.003583243Z") == pytest.approx(1795976177.003583)
    assert parse_docker_time("0001-01-01T00:00:00Z") is None


def test_summarize_marks_restarting():
    data = {"Id": "abcdef0123456789", "Name": "/p-worker_wrapper-2", "RestartCount": 3,
            "State": {"Status": "running", "Restarting": True, "StartedAt": "2026-11-29T18:16:17Z"},
            "Config": {"Labels": {"com.docker.compose.container-number": "2"}}}
    s = summarize(data)
    assert (s["id"], s["name"], s["number"], s["state"], s["restart_count"]) == \
        ("abcdef012345", "p-worker_wrapper-2", 2, "restarting", 3)


def test_evaluate_ok_when_all_settled():
    ok, reason, _pause = evaluate([c("a"), c("b")], 2, 1.5, now=10.0)
    assert ok and reason == "2 running"


def test_evaluate_waits_for_young_containers():
    ok, reason, pause = evaluate([c("a"), c("b", started=9.5, restarts=3)], 2, 1.5, now=10.0)
    assert not ok and "1 of them up for less than 1.5s (b restarts: 3)" in reason and pause == pytest.approx(1.0)


def test_evaluate_reports_restarting_and_wrong_counts():
    ok, reason, _pause = evaluate([c("a"), c("b", state="restarting", restarts=4)], 2, 1.5, now=10.0)
    assert not ok and "b restarting (restarts: 4)" in reason
    ok, reason, _pause = evaluate([c("a")], 2, 1.5, now=10.0)
    assert not ok and reason == "1 running"
    ok, _reason, _pause = evaluate([], 0, 1.5, now=10.0)
    assert ok


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_wait_for_replicas_times_out_with_the_reason(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_workers, "snapshot", lambda *a: [c("w1", state="restarting", restarts=2)])
    with pytest.raises(VerifyError) as err:
        wait_for_replicas(None, "p", "worker_wrapper", 1, 5, 1.5, clock=clock, sleep=clock.sleep)
    assert "w1 restarting" in err.value.msg and clock.t >= 104.8
