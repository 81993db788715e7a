"""The decision policy (_policy): alert thresholds and rules, the capacity decision matrix, the recommended worker
count, and the places that must follow it (qfc_queue_facts' options, the monitoring role's threshold names)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from ansible_collections.qfieldcloud.ops.plugins.module_utils import _policy, _queue, _replicas

from tests.support.queue_answer import raw

ROOT = Path(__file__).resolve().parents[4]


def codes(facts, workers, **thresholds):
    t = dict(_policy.DEFAULT_THRESHOLDS, **thresholds)
    return {a["code"]: a["severity"] for a in _policy.alerts(facts, workers, t)}


def test_alerts_quiet_when_healthy():
    assert codes(_queue.shape(raw(), 60), {"configured": 4, "running": 4, "busy": 3}) == {}


def test_alerts_fire_on_each_threshold():
    facts = _queue.shape(raw(by_status={"pending": 12, "queued": 0, "started": 0}, useful_backlog=12,
                             oldest_eligible_age_s=300.0, last_hour_failed=10, last_hour_finished=10,
                             stuck_stale=1, stuck_orphaned_queued=2, stuck_old_pending=3), 60)
    got = codes(facts, {"configured": 4, "running": 3, "busy": 0})
    assert got == {"queue_depth_high": "warning", "workers_idle_with_jobs_waiting": "error",
                   "failure_rate_high": "critical", "stuck_stale": "warning", "stuck_orphaned_queued": "warning",
                   "stuck_old_pending": "warning", "workers_missing": "error"}


def test_idle_alert_waits_for_the_grace_period_and_needs_workers():
    facts = _queue.shape(raw(useful_backlog=1, oldest_eligible_age_s=10.0), 60)
    assert "workers_idle_with_jobs_waiting" not in codes(facts, {"configured": 2, "running": 2, "busy": 0})
    facts = _queue.shape(raw(useful_backlog=1, oldest_eligible_age_s=100.0), 60)
    assert "workers_idle_with_jobs_waiting" in codes(facts, {"configured": 2, "running": 2, "busy": 0})
    assert "workers_idle_with_jobs_waiting" not in codes(facts, {"configured": 2, "running": 2, "busy": 2})
    assert "workers_idle_with_jobs_waiting" not in codes(facts, {"configured": None, "running": None, "busy": 0})


def test_failure_rate_threshold_is_exceeded_not_equalled():
    facts = _queue.shape(raw(last_hour_finished=7, last_hour_failed=3), 60)
    assert "failure_rate_high" not in codes(facts, {"busy": 0})
    assert "failure_rate_high" in codes(facts, {"busy": 0}, failed_ratio_critical=0.25)


@pytest.mark.parametrize("pending, finished, failed, action", [
    (2, 95, 5, "stop"),
    (2, 90, 10, "monitor"),       # success exactly 90% is not > 90%, and depth < 5 is not 5-10
    (2, 99, 1, "stop"),
    (7, 90, 10, "consider"),
    (12, 99, 1, "investigate"),
    (1, 70, 30, "investigate"),
    (2, 0, 0, "monitor"),
    (7, 75, 25, "investigate"),
])
def test_decision_matrix(pending, finished, failed, action):
    facts = _queue.shape(raw(by_status={"pending": pending}, last_hour_finished=finished, last_hour_failed=failed), 60)
    assert _policy.decision(facts)["action"] == action


def test_recommended_replicas_bounds():
    facts = _queue.shape(raw(eligible_projects=6), 60)
    assert _policy.recommended_replicas(facts, {"configured": 2, "running": 2, "busy": 2}, cores=2) == 5
    assert _policy.recommended_replicas(facts, {"configured": 2, "running": 2, "busy": 2}, cores=4) == 8
    idle = _queue.shape(raw(eligible_projects=0), 60)
    assert _policy.recommended_replicas(idle, {"configured": 4, "running": 4, "busy": 0}, cores=4) == 4
    assert _policy.recommended_replicas(idle, {"configured": None, "running": None, "busy": 0}, cores=1) == 1


def test_decision_reasons_of_a_snapshot():
    def reason(pending, finished, failed):
        facts = _queue.shape(raw(by_status={"pending": pending}, last_hour_finished=finished,
                                 last_hour_failed=failed), 60)
        return _policy.decision(facts)["reason"]
    assert reason(2, 95, 5) == "configuration is sufficient (queue < 5, success > 90%)"
    assert reason(7, 90, 10) == "queue 5-10 with success > 80%: consider database indexes or caching"
    assert reason(12, 99, 1) == "queue > 10 or success < 80%: root-cause analysis needed"
    assert reason(2, 0, 0) == "not enough data in the last hour: keep collecting"


def test_snapshot_and_window_decisions_are_one_matrix():
    """qfc_queue_facts (a snapshot) and the capacity report (a window's averages) decide with the same bands."""
    for depth in (0, 4, 4.99, 5, 7, 10, 10.01, 30):
        for rate in (None, 0.0, 0.79, 0.8, 0.81, 0.9, 0.91, 1.0):
            facts = {"queue_depth": depth, "last_hour": {"success_rate": rate}}
            assert _policy.decision(facts)["action"] == _policy.decide(depth, rate)["action"], (depth, rate)


def test_recommended_replicas_follow_the_core_guideline_and_its_ceiling():
    busy = {"configured": 1, "running": 1, "busy": 0}
    crowded = _queue.shape(raw(eligible_projects=500), 60)
    # 3 cores x 2.5 = 7.5: the guideline's count is 7 (as qfc_scale's auto), never 8
    assert _policy.recommended_replicas(crowded, busy, cores=3) == 7 == _replicas.resolve("auto", 3, 2.5, 100)
    # 64 cores x 2.5 = 160, but no host runs more than qfc_scale's hard ceiling
    assert _policy.recommended_replicas(crowded, busy, cores=64) == _replicas.MAX_REPLICAS == 100
    # a guideline below one worker still recommends one
    assert _policy.recommended_replicas(crowded, busy, cores=1, per_core=0.5) == 1
    assert _policy.recommended_replicas(crowded, busy, cores=2, per_core=4) == 8


def test_the_per_core_default_is_defined_once():
    assert _policy.DEFAULT_MAX_REPLICAS_PER_CORE is _replicas.DEFAULT_MAX_REPLICAS_PER_CORE
    # the queue modules' option (qfc_queue_facts, qfc_autoscale_decision) is _queue.argument_spec()'s
    assert "default=_policy.DEFAULT_MAX_REPLICAS_PER_CORE" in (ROOT / "plugins/module_utils/_queue.py").read_text()
    for name in ("qfc_queue_facts", "qfc_autoscale_decision"):
        module = (ROOT / "plugins/modules" / (name + ".py")).read_text()
        assert "2.5" not in module.split('"""')[-1], name  # the code (after the documentation) has no literal
    for util in ("_policy.py", "_queue.py", "_capacity_model.py"):  # (the charts' 2.5 is a bucket gap factor)
        code = (ROOT / "plugins/module_utils" / util).read_text()
        assert "2.5" not in code, util


def test_thresholds_check():
    assert _policy.check_thresholds({}) == _policy.DEFAULT_THRESHOLDS
    assert _policy.check_thresholds({"queue_depth_warning": "5"})["queue_depth_warning"] == 5.0
    with pytest.raises(KeyError, match="bogus, other"):
        _policy.check_thresholds({"other": 1, "bogus": 2, "idle_grace_s": 3})
    for bad in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite and not negative: idle_grace_s="):
            _policy.check_thresholds({"idle_grace_s": bad})
    with pytest.raises(ValueError):
        _policy.check_thresholds({"idle_grace_s": "soon"})


def test_the_monitoring_role_knows_every_threshold():
    names = yaml.safe_load((ROOT / "roles/monitoring/vars/main.yml").read_text())["_qfc_monitoring_threshold_names"]
    assert sorted(names) == sorted(_policy.DEFAULT_THRESHOLDS)
